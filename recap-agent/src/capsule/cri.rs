//! Capsules in Kubernetes pods, through the node runtime's CRI API (the interface the kubelet
//! itself uses): the capsule is one more container in the pod's own sandbox, on the pod's
//! network and in the target container's PID namespace (`NamespaceMode::TARGET`, as for an
//! ephemeral container), with the same least privilege, lifeline and deadline as a Docker
//! capsule; it is stopped and removed from the sandbox when the window ends, and `reap_orphans`
//! removes what a killed owner left. CRI has no image import: `image::ensure_cri` puts RECap's
//! capsule image into containerd's store with containerd's own `ctr`.

use std::{
    collections::HashMap,
    os::unix::fs::DirBuilderExt,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context};
use k8s_cri::v1::{
    runtime_service_client::RuntimeServiceClient, Capability, ContainerConfig, ContainerMetadata,
    ContainerStatusRequest, CreateContainerRequest, ImageSpec, LinuxContainerConfig,
    LinuxContainerResources, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, ListContainersRequest, Mount, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata, PodSandboxStatusRequest, RemoveContainerRequest, SecurityProfile,
    StartContainerRequest, StopContainerRequest,
};
use tonic::transport::Channel;

use super::{reaper, reaper::Reaped, LABEL_OWNER, LABEL_WINDOW};
use crate::targets::{cgroup, pod::PodMeta};

/// CRI `NamespaceMode`: the pod's, the node's, another container's.
const NAMESPACE_POD: i32 = 0;
const NAMESPACE_TARGET: i32 = 3;
/// CRI `ContainerState` EXITED.
const CONTAINER_EXITED: i32 = 2;
/// CRI `SecurityProfile.ProfileType` RuntimeDefault: the runtime's default seccomp profile.
const SECCOMP_RUNTIME_DEFAULT: i32 = 0;
/// Where containerd writes the capsules' output (root's only: containerd follows the path).
const LOG_ROOT: &str = "/run/recap/capsule-logs";
/// How long a CRI call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The pod a window's capsules go into: its sandbox, and the container they join.
pub struct PodSite {
    pub endpoint: PathBuf,
    client: RuntimeServiceClient<Channel>,
    sandbox_id: String,
    /// The sandbox's configuration as the runtime keeps it (CRI wants it with each new
    /// container), with the capsules' log directory.
    sandbox: PodSandboxConfig,
    /// The target container: its id, and its cgroup (whose processes strace attaches to).
    pub container_id: String,
    pub cgroup_dir: PathBuf,
    log_dir: PathBuf,
}

fn call(what: &str) -> impl FnOnce(tonic::Status) -> anyhow::Error + '_ {
    move |e| anyhow::anyhow!("{what} through CRI: {}", e.message())
}

impl PodSite {
    /// The pod's sandbox and the container its capsules join: the one `--container` named, or
    /// the pod's only container.
    pub async fn resolve(endpoint: &Path, pod: &PodMeta, window_id: &str) -> anyhow::Result<Self> {
        let mut client = crate::targets::pod::connect(endpoint).await?;
        let (name, container_id) = match &pod.container {
            Some(wanted) => pod
                .containers
                .iter()
                .find(|(n, _)| n == wanted)
                .cloned()
                .with_context(|| {
                    format!(
                        "pod {}/{} has no container `{wanted}`",
                        pod.namespace, pod.name
                    )
                })?,
            None => match pod.containers.as_slice() {
                [only] => only.clone(),
                many => {
                    let mut names: Vec<&str> = many.iter().map(|(n, _)| n.as_str()).collect();
                    names.sort();
                    bail!(
                        "a capsule joins one container of the pod: give --container NAME (pod {}/{} runs {})",
                        pod.namespace,
                        pod.name,
                        names.join(", ")
                    )
                }
            },
        };
        let status = client
            .container_status(ContainerStatusRequest {
                container_id: container_id.clone(),
                verbose: true,
            })
            .await
            .map_err(call("reading the container's status"))?
            .into_inner();
        let pid = info_json(&status.info)["pid"]
            .as_u64()
            .filter(|&p| p > 0)
            .with_context(|| format!("container {name}: no pid in its CRI status"))?;
        let cgroup_dir = cgroup::cgroup_of_pid(&cgroup::cgroup2_mount()?, pid as u32)?;
        let sandbox = client
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: pod.sandbox_id.clone(),
                verbose: true,
            })
            .await
            .map_err(call("reading the pod's status"))?
            .into_inner();
        let log_dir = Path::new(LOG_ROOT).join(window_id);
        let mut config = sandbox_config(&info_json(&sandbox.info)["config"]);
        config.log_directory = log_dir.display().to_string();
        Ok(PodSite {
            endpoint: endpoint.to_path_buf(),
            client,
            sandbox_id: pod.sandbox_id.clone(),
            sandbox: config,
            container_id,
            cgroup_dir,
            log_dir,
        })
    }

    /// Creates the capsule container in the sandbox (not started).
    pub async fn create(&self, new: NewCapsule<'_>) -> anyhow::Result<CriContainer> {
        let NewCapsule {
            name,
            image,
            busybox,
            command,
            capabilities,
            labels,
            out_dir,
        } = new;
        // Made by root, for root: nobody else can put a link where containerd writes.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.log_dir)
            .with_context(|| format!("creating {}", self.log_dir.display()))?;
        let log_file = format!("{name}.log");
        let network = self
            .sandbox
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref())
            .map_or(NAMESPACE_POD, |n| n.network);
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.to_string(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image,
                ..Default::default()
            }),
            command,
            mounts: std::iter::once(Mount {
                container_path: "/out".into(),
                host_path: out_dir.display().to_string(),
                readonly: false,
                ..Default::default()
            })
            .chain(busybox.map(|b| Mount {
                container_path: super::sidecar::CUSTOM_BUSYBOX.into(),
                host_path: b.display().to_string(),
                readonly: true,
                ..Default::default()
            }))
            .collect(),
            labels,
            log_path: log_file.clone(),
            linux: Some(LinuxContainerConfig {
                resources: Some(LinuxContainerResources {
                    cpu_period: 100_000,
                    cpu_quota: 50_000,
                    memory_limit_in_bytes: 256 << 20,
                    ..Default::default()
                }),
                security_context: Some(LinuxContainerSecurityContext {
                    capabilities: Some(Capability {
                        add_capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
                        drop_capabilities: vec!["ALL".into()],
                        ..Default::default()
                    }),
                    namespace_options: Some(NamespaceOption {
                        network,
                        pid: NAMESPACE_TARGET,
                        target_id: self.container_id.clone(),
                        ..Default::default()
                    }),
                    readonly_rootfs: true,
                    // A caller's image may name another user; the artifact directory is root's.
                    run_as_user: Some(k8s_cri::v1::Int64Value { value: 0 }),
                    no_new_privs: true,
                    seccomp: Some(SecurityProfile {
                        profile_type: SECCOMP_RUNTIME_DEFAULT,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        let mut client = self.client.clone();
        let id = tokio::time::timeout(
            CALL_TIMEOUT,
            client.create_container(CreateContainerRequest {
                pod_sandbox_id: self.sandbox_id.clone(),
                config: Some(config),
                sandbox_config: Some(self.sandbox.clone()),
            }),
        )
        .await
        .context("CRI CreateContainer did not answer within 10 s")?
        .map_err(call("creating the capsule container"))?
        .into_inner()
        .container_id;
        Ok(CriContainer {
            client,
            id,
            log: self.log_dir.join(log_file),
        })
    }

    /// Removes the capsules' log directory (their output was read into the reports).
    pub fn forget_logs(&self) {
        let _ = std::fs::remove_dir_all(&self.log_dir);
    }
}

/// What a capsule container is made of: `command` runs as its process, in `image`, with
/// `capabilities` only, `out_dir` at /out (and `busybox` for the supervisor, in a caller's image).
pub struct NewCapsule<'a> {
    pub name: &'a str,
    pub image: String,
    pub busybox: Option<PathBuf>,
    pub command: Vec<String>,
    pub capabilities: &'a [&'a str],
    pub labels: HashMap<String, String>,
    pub out_dir: &'a Path,
}

/// A capsule container in a pod's sandbox.
pub struct CriContainer {
    client: RuntimeServiceClient<Channel>,
    pub id: String,
    log: PathBuf,
}

impl CriContainer {
    pub async fn start(&self) -> anyhow::Result<()> {
        let mut client = self.client.clone();
        tokio::time::timeout(
            CALL_TIMEOUT,
            client.start_container(StartContainerRequest {
                container_id: self.id.clone(),
            }),
        )
        .await
        .context("CRI StartContainer did not answer within 10 s")?
        .map_err(call("starting the capsule container"))?;
        Ok(())
    }

    /// Waits until the tool's output holds `line` (it is attached), for 10 s at most.
    pub async fn wait_for_line(&self, line: &str) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if self.output().contains(line) {
                return Ok(());
            }
            if self.exit_code().await.is_some() {
                bail!("it exited: {}", self.log_tail());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("no `{line}` line within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops it (SIGTERM, SIGKILL after `grace`) and returns its exit code (-1: unknown).
    pub async fn stop(&self, grace: Duration) -> i64 {
        let mut client = self.client.clone();
        let _ = tokio::time::timeout(
            grace + CALL_TIMEOUT,
            client.stop_container(StopContainerRequest {
                container_id: self.id.clone(),
                timeout: grace.as_secs() as i64,
            }),
        )
        .await;
        self.exit_code().await.unwrap_or(-1)
    }

    async fn exit_code(&self) -> Option<i64> {
        let mut client = self.client.clone();
        let status = tokio::time::timeout(
            CALL_TIMEOUT,
            client.container_status(ContainerStatusRequest {
                container_id: self.id.clone(),
                verbose: false,
            }),
        )
        .await
        .ok()?
        .ok()?
        .into_inner()
        .status?;
        (status.state == CONTAINER_EXITED).then_some(status.exit_code as i64)
    }

    pub async fn remove(&self) {
        let mut client = self.client.clone();
        let removed = tokio::time::timeout(
            CALL_TIMEOUT,
            client.remove_container(RemoveContainerRequest {
                container_id: self.id.clone(),
            }),
        )
        .await;
        if !matches!(removed, Ok(Ok(_))) {
            log::warn!("removing capsule container {} through CRI failed", self.id);
        }
    }

    /// The tool's output so far: the text of the runtime's log lines
    /// (`TIMESTAMP STREAM TAG TEXT`), at most the last 64 KiB.
    fn output(&self) -> String {
        let Ok(data) = std::fs::read(&self.log) else {
            return String::new();
        };
        let data = &data[data.len().saturating_sub(64 << 10)..];
        String::from_utf8_lossy(data)
            .lines()
            .filter_map(|l| l.splitn(4, ' ').nth(3))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Its last 5 lines of output, on one line.
    pub fn log_tail(&self) -> String {
        let output = self.output();
        let lines: Vec<&str> = output.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }
}

/// The sandbox configuration CRI wants with each container, rebuilt from the runtime's verbose
/// status (`info.config`, the configuration the pod was made with).
fn sandbox_config(config: &serde_json::Value) -> PodSandboxConfig {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let namespaces = &config["linux"]["security_context"]["namespace_options"];
    let mode = |key: &str| namespaces[key].as_i64().unwrap_or(0) as i32;
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: text(&config["metadata"]["name"]),
            namespace: text(&config["metadata"]["namespace"]),
            uid: text(&config["metadata"]["uid"]),
            attempt: config["metadata"]["attempt"].as_u64().unwrap_or(0) as u32,
        }),
        hostname: text(&config["hostname"]),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: text(&config["linux"]["cgroup_parent"]),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: mode("network"),
                    pid: mode("pid"),
                    ipc: mode("ipc"),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn info_json(info: &HashMap<String, String>) -> serde_json::Value {
    info.get("info")
        .and_then(|i| serde_json::from_str(i).ok())
        .unwrap_or_default()
}

/// Removes capsule containers a killed owner left in any pod of the runtime: RECap's capsule
/// image, RECap's labels, and an owner that is gone (as `reaper::reap_orphans` for Docker).
pub async fn reap_orphans(endpoint: &Path) -> anyhow::Result<Vec<Reaped>> {
    let mut client = crate::targets::pod::connect(endpoint).await?;
    let containers = client
        .list_containers(ListContainersRequest { filter: None })
        .await
        .map_err(call("listing containers"))?
        .into_inner()
        .containers;
    let mut reaped = Vec::new();
    for c in containers {
        let ours = c
            .image
            .as_ref()
            .is_some_and(|i| super::is_capsule(&i.image, &c.labels));
        let abandoned = c
            .labels
            .get(LABEL_OWNER)
            .is_some_and(|owner| reaper::owner_gone(owner));
        let Some(window) = c.labels.get(LABEL_WINDOW).cloned() else {
            continue;
        };
        if !(ours && abandoned) {
            continue;
        }
        let name = c.metadata.map(|m| m.name).unwrap_or_else(|| c.id.clone());
        let _ = client
            .stop_container(StopContainerRequest {
                container_id: c.id.clone(),
                timeout: 0,
            })
            .await;
        client
            .remove_container(RemoveContainerRequest {
                container_id: c.id.clone(),
            })
            .await
            .map_err(call("removing an orphan capsule"))?;
        // Only a window id RECap makes (hex digits) names a directory of ours.
        if !window.is_empty() && window.len() <= 32 && window.bytes().all(|b| b.is_ascii_hexdigit())
        {
            let _ = std::fs::remove_dir_all(Path::new(LOG_ROOT).join(&window));
        }
        log::warn!(
            "removed orphan capsule {name} of window {window} from its pod: the recap process that ran it is gone"
        );
        reaped.push(Reaped { name, window });
    }
    Ok(reaped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sandbox_configuration_is_rebuilt_from_the_runtime_status() {
        let info = serde_json::json!({
            "metadata": {"name": "checkout-0", "namespace": "shop", "uid": "u1", "attempt": 2},
            "hostname": "h",
            "linux": {"cgroup_parent": "/pods/p1", "security_context": {"namespace_options": {"network": 2, "pid": 1}}}
        });
        let c = sandbox_config(&info);
        let m = c.metadata.unwrap();
        assert_eq!(
            (m.name.as_str(), m.namespace.as_str(), m.attempt),
            ("checkout-0", "shop", 2)
        );
        let linux = c.linux.unwrap();
        assert_eq!(linux.cgroup_parent, "/pods/p1");
        let ns = linux.security_context.unwrap().namespace_options.unwrap();
        assert_eq!((ns.network, ns.pid, ns.ipc), (2, 1, 0));
    }
}
