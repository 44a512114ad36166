//! The Docker engine, through bollard: connecting with an error that says what to do.

use bollard::Docker;
use thiserror::Error;

pub const SOCKET: &str = "/var/run/docker.sock";

#[derive(Debug, Error)]
pub enum DockerError {
    #[error("no Docker engine answers at unix://{SOCKET} ({reason}); start one (`dockerd &`, or `systemctl start docker`) and try again")]
    NoEngine { reason: String },
    #[error("{op}")]
    Api {
        op: String,
        #[source]
        source: bollard::errors::Error,
    },
}

/// Connects to the local engine and checks that it answers.
pub async fn connect() -> Result<Docker, DockerError> {
    if !std::path::Path::new(SOCKET).exists() {
        return Err(DockerError::NoEngine {
            reason: "the socket does not exist".into(),
        });
    }
    let docker =
        Docker::connect_with_unix(SOCKET, 10, bollard::API_DEFAULT_VERSION).map_err(|e| {
            DockerError::NoEngine {
                reason: e.to_string(),
            }
        })?;
    match tokio::time::timeout(std::time::Duration::from_secs(3), docker.ping()).await {
        Ok(Ok(_)) => Ok(docker),
        Ok(Err(e)) => Err(DockerError::NoEngine {
            reason: e.to_string(),
        }),
        Err(_) => Err(DockerError::NoEngine {
            reason: "no answer within 3 s".into(),
        }),
    }
}

pub fn api(op: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> DockerError {
    let op = op.into();
    move |source| DockerError::Api { op, source }
}

/// Whether an API error is Docker's "not found".
pub fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}
