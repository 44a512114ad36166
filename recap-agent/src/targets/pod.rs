//! Kubernetes pods as targets, through the CRI API of the node's container runtime (containerd's
//! CRI plugin: the interface the kubelet itself uses). A pod resolves to its pod cgroup, with
//! every container's cgroup beneath it (a window covers the subtree); `--container NAME` with
//! `--pod` narrows it to that container's cgroup.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::{
    runtime_service_client::RuntimeServiceClient, ContainerFilter, ContainerStatusRequest,
    ListContainersRequest, ListPodSandboxRequest, PodSandboxStatusRequest,
};
use serde::{Deserialize, Serialize};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

use super::{cgroup, TargetError};

/// Where containerd's CRI service listens unless told otherwise.
pub const DEFAULT_CRI_ENDPOINT: &str = "/run/containerd/containerd.sock";

/// CRI pod sandbox state READY, container state RUNNING.
const SANDBOX_READY: i32 = 0;
const CONTAINER_RUNNING: i32 = 1;

/// What the summary says about a pod target.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PodMeta {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub sandbox_id: String,
    /// The pod's containers (name → id) when the window opened.
    pub containers: Vec<(String, String)>,
    /// The container the window is narrowed to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The process whose exit ends the window (the sandbox's, or the container's).
    pub pid: u32,
}

fn cri_error(endpoint: &Path, what: &str, e: impl std::fmt::Display) -> TargetError {
    TargetError::Cri(format!(
        "{what} through the container runtime at {}: {e} (is containerd running with its CRI plugin? --cri-endpoint names another socket)",
        endpoint.display()
    ))
}

async fn connect(endpoint: &Path) -> Result<RuntimeServiceClient<Channel>, TargetError> {
    UnixStream::connect(endpoint)
        .await
        .map_err(|e| cri_error(endpoint, "connecting", e))?;
    let path = endpoint.to_path_buf();
    // The URI is required by tonic but unused: every connection goes to the socket.
    let channel = Endpoint::from_static("http://cri.runtime")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await
        .map_err(|e| cri_error(endpoint, "connecting", e))?;
    Ok(RuntimeServiceClient::new(channel))
}

/// The `pid` of a verbose CRI status's `info` document.
fn info_pid(info: &std::collections::HashMap<String, String>) -> Option<u32> {
    let doc: serde_json::Value = serde_json::from_str(info.get("info")?).ok()?;
    doc["pid"].as_u64().map(|p| p as u32).filter(|&p| p > 0)
}

/// Resolves `namespace/name` (and a container of it) to a cgroup v2 directory.
pub async fn resolve(
    endpoint: &Path,
    namespace: &str,
    name: &str,
    container: Option<&str>,
) -> Result<(PathBuf, PodMeta), TargetError> {
    let mut cri = connect(endpoint).await?;
    let pods = cri
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await
        .map_err(|e| cri_error(endpoint, "listing pods", e.message().to_string()))?
        .into_inner()
        .items;
    let ready: Vec<_> = pods.iter().filter(|p| p.state == SANDBOX_READY).collect();
    let Some(pod) = ready.iter().find(|p| {
        p.metadata
            .as_ref()
            .is_some_and(|m| m.namespace == namespace && m.name == name)
    }) else {
        let mut known: Vec<String> = ready
            .iter()
            .filter_map(|p| {
                p.metadata
                    .as_ref()
                    .map(|m| format!("{}/{}", m.namespace, m.name))
            })
            .collect();
        known.sort();
        known.truncate(8);
        return Err(TargetError::NoSuchPod {
            wanted: format!("{namespace}/{name}"),
            known: if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            },
        });
    };
    let meta = pod.metadata.clone().unwrap_or_default();
    let containers = cri
        .list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                pod_sandbox_id: pod.id.clone(),
                ..Default::default()
            }),
        })
        .await
        .map_err(|e| {
            cri_error(
                endpoint,
                "listing the pod's containers",
                e.message().to_string(),
            )
        })?
        .into_inner()
        .containers;
    let running: Vec<(String, String)> = containers
        .iter()
        .filter(|c| c.state == CONTAINER_RUNNING)
        .map(|c| {
            (
                c.metadata
                    .as_ref()
                    .map(|m| m.name.clone())
                    .unwrap_or_default(),
                c.id.clone(),
            )
        })
        .collect();
    let root = cgroup::cgroup2_mount()?;
    let (dir, pid) = match container {
        Some(wanted) => {
            let Some((_, id)) = running.iter().find(|(n, _)| n == wanted) else {
                return Err(TargetError::NoSuchPodContainer {
                    pod: format!("{namespace}/{name}"),
                    wanted: wanted.to_string(),
                    known: running
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            };
            let status = cri
                .container_status(ContainerStatusRequest {
                    container_id: id.clone(),
                    verbose: true,
                })
                .await
                .map_err(|e| {
                    cri_error(
                        endpoint,
                        "reading the container's status",
                        e.message().to_string(),
                    )
                })?
                .into_inner();
            let pid = info_pid(&status.info).ok_or_else(|| {
                cri_error(
                    endpoint,
                    "finding the container's process",
                    "no pid in its status",
                )
            })?;
            (cgroup::cgroup_of_pid(&root, pid)?, pid)
        }
        None => {
            // The sandbox's own process sits in a cgroup under the pod cgroup, as every
            // container does: the pod cgroup is its parent.
            let status = cri
                .pod_sandbox_status(PodSandboxStatusRequest {
                    pod_sandbox_id: pod.id.clone(),
                    verbose: true,
                })
                .await
                .map_err(|e| {
                    cri_error(
                        endpoint,
                        "reading the pod's status",
                        e.message().to_string(),
                    )
                })?
                .into_inner();
            let pid = info_pid(&status.info).ok_or_else(|| {
                cri_error(
                    endpoint,
                    "finding the pod's process",
                    "no pid in its status",
                )
            })?;
            // A pod made without a cgroup parent shares its containers' parent with every such
            // pod: that is no pod cgroup.
            let parent = status
                .info
                .get("info")
                .and_then(|i| serde_json::from_str::<serde_json::Value>(i).ok())
                .and_then(|i| {
                    i.pointer("/config/linux/cgroup_parent")?
                        .as_str()
                        .map(str::to_string)
                })
                .unwrap_or_default();
            if parent.trim_matches('/').is_empty() {
                return Err(TargetError::PodWithoutCgroup {
                    pod: format!("{namespace}/{name}"),
                });
            }
            let sandbox_dir = cgroup::cgroup_of_pid(&root, pid)?;
            let pod_dir = sandbox_dir
                .parent()
                .filter(|p| p.starts_with(&root) && *p != root)
                .map(Path::to_path_buf)
                .ok_or_else(|| TargetError::PodWithoutCgroup {
                    pod: format!("{namespace}/{name}"),
                })?;
            (pod_dir, pid)
        }
    };
    Ok((
        dir,
        PodMeta {
            namespace: meta.namespace,
            name: meta.name,
            uid: meta.uid,
            sandbox_id: pod.id.clone(),
            containers: running,
            container: container.map(str::to_string),
            pid,
        },
    ))
}
