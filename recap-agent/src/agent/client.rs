//! The CLI's side of the agent's socket.

use std::path::{Path, PathBuf};

use tokio::net::UnixStream;
use tonic::transport::Channel;

use super::api::agent_client::AgentClient;

pub type Client = AgentClient<Channel>;

/// Why no agent could be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Nothing listens there: run in-process instead (or start `recap agent`).
    #[error("no agent listens on {0}")]
    NoAgent(PathBuf),
    #[error("no permission to use the agent's socket {0}; ask for its group (recap agent --socket-group), or use sudo")]
    Denied(PathBuf),
    #[error("connecting to the agent on {path}")]
    Other {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Connects to the agent on `socket`, if one answers there.
pub async fn connect(socket: &Path) -> Result<Client, ConnectError> {
    // Tried once directly, so "nothing there" and "not allowed" are told apart clearly.
    match UnixStream::connect(socket).await {
        Ok(_) => {}
        Err(e) => {
            return Err(match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                    ConnectError::NoAgent(socket.to_path_buf())
                }
                std::io::ErrorKind::PermissionDenied => ConnectError::Denied(socket.to_path_buf()),
                _ => ConnectError::Other {
                    path: socket.to_path_buf(),
                    source: e,
                },
            })
        }
    }
    let channel = crate::unix_grpc::unix_channel(socket, "recap.agent")
        .await
        .map_err(|e| ConnectError::Other {
            path: socket.to_path_buf(),
            source: std::io::Error::other(e),
        })?;
    Ok(AgentClient::new(channel))
}
