//! gRPC over a Unix socket: the agent's API and the container runtime's CRI both listen on one.

use std::path::Path;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

/// A channel whose every connection goes to the socket at `path`. `authority` only fills the
/// URI tonic requires (`http://<authority>`); nothing resolves it.
pub async fn unix_channel(
    path: &Path,
    authority: &'static str,
) -> Result<Channel, tonic::transport::Error> {
    let path = path.to_path_buf();
    Endpoint::from_shared(format!("http://{authority}"))
        .expect("a static authority is a valid URI")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await
}
