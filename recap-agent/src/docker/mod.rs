//! The Docker engine, through bollard: connecting with an error that says what to do.

use bollard::Docker;
use thiserror::Error;

pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

#[derive(Debug, Error)]
pub enum DockerError {
    #[error("no Docker engine answers at unix://{socket} ({reason}); start one (`dockerd &`, or `systemctl start docker`) and try again")]
    NoEngine { socket: String, reason: String },
    #[error("DOCKER_HOST={host}: only a local engine (unix://PATH) can be used: capsules join a container's namespaces on this machine")]
    NotLocal { host: String },
    #[error("no permission to use the Docker socket {socket}; run recap as root (or as a member of the `docker` group)")]
    Denied { socket: String },
    #[error("{op}")]
    Api {
        op: String,
        #[source]
        source: bollard::errors::Error,
    },
}

/// The engine's socket: `DOCKER_HOST=unix://PATH` if set, else the default. Another scheme is
/// refused rather than ignored: capsules join a container's namespaces, so the engine must be
/// this machine's.
pub fn socket() -> Result<String, DockerError> {
    match std::env::var("DOCKER_HOST") {
        Ok(host) if !host.is_empty() => host
            .strip_prefix("unix://")
            .map(str::to_owned)
            .ok_or(DockerError::NotLocal { host }),
        _ => Ok(DEFAULT_SOCKET.to_owned()),
    }
}

/// Connects to the local engine and checks that it answers.
pub async fn connect() -> Result<Docker, DockerError> {
    let socket = socket()?;
    let no_engine = |reason: String| DockerError::NoEngine {
        socket: socket.clone(),
        reason,
    };
    if !std::path::Path::new(&socket).exists() {
        return Err(no_engine("the socket does not exist".into()));
    }
    // A socket that exists but refuses this user is not a missing engine.
    if let Err(e) = std::os::unix::net::UnixStream::connect(&socket) {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            return Err(DockerError::Denied { socket });
        }
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
