//! The Docker engine, through bollard: connecting with an error that says what to do.

use bollard::Docker;
use thiserror::Error;

pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

#[derive(Debug, Error)]
pub enum DockerError {
    #[error("no Docker engine answers at unix://{socket} ({reason}); start one (`dockerd &`, or `systemctl start docker`) and try again")]
    NoEngine { socket: String, reason: String },
    #[error("{op}")]
    Api {
        op: String,
        #[source]
        source: bollard::errors::Error,
    },
}

/// The engine's socket: `DOCKER_HOST=unix://PATH` if set, else the default.
pub fn socket() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_owned))
        .unwrap_or_else(|| DEFAULT_SOCKET.to_owned())
}

/// Connects to the local engine and checks that it answers.
pub async fn connect() -> Result<Docker, DockerError> {
    let socket = socket();
    let no_engine = |reason: String| DockerError::NoEngine {
        socket: socket.clone(),
        reason,
    };
    if !std::path::Path::new(&socket).exists() {
        return Err(no_engine("the socket does not exist".into()));
    }
    let docker = Docker::connect_with_unix(&socket, 10, bollard::API_DEFAULT_VERSION)
        .map_err(|e| no_engine(e.to_string()))?;
    match tokio::time::timeout(std::time::Duration::from_secs(3), docker.ping()).await {
        Ok(Ok(_)) => Ok(docker),
        Ok(Err(e)) => Err(no_engine(e.to_string())),
        Err(_) => Err(no_engine("no answer within 3 s".into())),
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
