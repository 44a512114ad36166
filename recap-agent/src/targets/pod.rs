//! Kubernetes pods as targets, through the CRI API of the node's container runtime (containerd's
//! CRI plugin: the interface the kubelet itself uses). A pod resolves to its pod cgroup, with
//! every container's cgroup beneath it (a window covers the subtree); `--container NAME` with
//! `--pod` narrows it to that container's cgroup.

use std::path::{Path, PathBuf};

use k8s_cri::v1::{
    runtime_service_client::RuntimeServiceClient, ContainerFilter, ContainerStatusRequest,
    ListContainersRequest, ListPodSandboxRequest, PodSandboxStatusRequest,
};
use serde::{Deserialize, Serialize};
use tokio::net::UnixStream;
use tonic::transport::Channel;

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

pub(crate) async fn connect(endpoint: &Path) -> Result<RuntimeServiceClient<Channel>, TargetError> {
    UnixStream::connect(endpoint)
        .await
        .map_err(|e| cri_error(endpoint, "connecting", e))?;
    let channel = crate::unix_grpc::unix_channel(endpoint, "cri.runtime")
        .await
        .map_err(|e| cri_error(endpoint, "connecting", e))?;
    Ok(RuntimeServiceClient::new(channel))
}

/// A verbose CRI status's `info` document, parsed once.
struct StatusInfo(serde_json::Value);

impl StatusInfo {
    fn of(info: &std::collections::HashMap<String, String>) -> Self {
        StatusInfo(
            info.get("info")
                .and_then(|i| serde_json::from_str(i).ok())
                .unwrap_or_default(),
        )
    }

    fn pid(&self) -> Option<u32> {
        self.0["pid"].as_u64().map(|p| p as u32).filter(|&p| p > 0)
    }

    /// The cgroup parent the pod was made with ("" when none).
    fn cgroup_parent(&self) -> &str {
        self.0
            .pointer("/config/linux/cgroup_parent")
            .and_then(|p| p.as_str())
            .unwrap_or_default()
    }
}

/// The process a verbose status names (`what`: "the container", "the pod").
fn status_pid(endpoint: &Path, info: &StatusInfo, what: &str) -> Result<u32, TargetError> {
    info.pid().ok_or_else(|| {
        cri_error(
            endpoint,
            &format!("finding {what}'s process"),
            "no pid in its status",
        )
    })
}

/// A CRI call's error as ours, naming what was being done.
fn call_error<'a>(
    endpoint: &'a Path,
    what: &'a str,
) -> impl FnOnce(tonic::Status) -> TargetError + 'a {
    move |e| cri_error(endpoint, what, e.message())
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
        .map_err(call_error(endpoint, "listing pods"))?
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
        .map_err(call_error(endpoint, "listing the pod's containers"))?
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
                .map_err(call_error(endpoint, "reading the container's status"))?
                .into_inner();
            let pid = status_pid(endpoint, &StatusInfo::of(&status.info), "the container")?;
            let dir = cgroup::container_dir(&root, &cgroup::cgroup_of_pid(&root, pid)?, id);
            if dir == root {
                return Err(TargetError::InRootCgroup {
                    what: format!("container {wanted} of pod {namespace}/{name}"),
                    root,
                });
            }
            (dir, pid)
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
                .map_err(call_error(endpoint, "reading the pod's status"))?
                .into_inner();
            let info = StatusInfo::of(&status.info);
            let pid = status_pid(endpoint, &info, "the pod")?;
            // A pod made without a cgroup parent shares its containers' parent with every such
            // pod: that is no pod cgroup.
            if info.cgroup_parent().trim_matches('/').is_empty() {
                return Err(TargetError::PodWithoutCgroup {
                    pod: format!("{namespace}/{name}"),
                });
            }
            // `kubepods-<qos>-pod<uid>.slice` (systemd driver) or `pod<uid>` (cgroupfs).
            let sandbox_dir = cgroup::cgroup_of_pid(&root, pid)?;
            let pod_dir = cgroup::pod_dir(&root, &sandbox_dir, &meta.uid).ok_or_else(|| {
                TargetError::PodWithoutCgroup {
                    pod: format!("{namespace}/{name}"),
                }
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
