//! What a window looks at: resolved from the user's `--cgroup` / `--pid` into a cgroup v2
//! directory and its id (the value `bpf_get_current_cgroup_id()` returns for its tasks).
//! Containers (Docker) and pods (CRI) resolve into the same `Target`.

pub mod cgroup;
pub mod container;
pub mod liveness;
pub mod pod;

#[cfg(test)]
mod layout_tests;

use std::path::PathBuf;

use container::ContainerMeta;

use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TargetSpec {
    Cgroup {
        path: PathBuf,
    },
    Pid {
        pid: u32,
    },
    Container {
        name_or_id: String,
    },
    /// A Kubernetes pod (and optionally one of its containers), through the runtime's CRI API.
    Pod {
        namespace: String,
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        container: Option<String>,
        cri_endpoint: PathBuf,
    },
}

/// A resolved target.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Target {
    #[serde(flatten)]
    pub spec: TargetSpec,
    /// The cgroup v2 directory whose tasks are counted.
    pub cgroup_dir: PathBuf,
    /// Its inode number (the kernel's cgroup id).
    pub cgroup_id: u64,
    /// Child cgroups at resolution time: their tasks are not counted by task-based families.
    pub child_cgroups: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerMeta>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<pod::PodMeta>,
    /// The target cgroup alone, not the cgroups below it (`--target-only`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub target_only: bool,
}

#[derive(Debug, Error)]
pub enum TargetError {
    #[error("no cgroup v2 hierarchy is mounted (looked for a `cgroup2` line in /proc/self/mountinfo); mount one with `mount -t cgroup2 none /sys/fs/cgroup/unified`")]
    NoCgroup2Mount,
    #[error("the cgroup of PID {pid} ({cgroup} in /proc/{pid}/cgroup) is not below the cgroup2 mount {root}, whose root is the cgroup {mount_root}: recap runs in another cgroup namespace than its target; run it in the host's (`docker run --cgroupns=host`, `nsenter --cgroup --target 1`)")]
    OutsideCgroupMount {
        pid: u32,
        cgroup: String,
        root: PathBuf,
        mount_root: String,
    },
    #[error("{what} is in the root cgroup of the cgroup v2 hierarchy ({root}): a window there would watch the whole host. Its runtime put it in cgroup v1 hierarchies only (a host in legacy cgroup mode?); RECap needs it in a v2 cgroup of its own (a hybrid or pure cgroup v2 host)")]
    InRootCgroup { what: String, root: PathBuf },
    #[error("{path} does not exist; give a cgroup v2 directory under {root} (e.g. `{root}/docker/<id>`), or use --pid")]
    NoSuchPath { path: PathBuf, root: PathBuf },
    #[error("{path} is not a cgroup v2 directory (it is not under the cgroup2 mount {root}); cgroup v1 hierarchies are not supported")]
    NotCgroup2 { path: PathBuf, root: PathBuf },
    #[error("{path} is under the cgroup v2 mount but is not a cgroup directory (it has no cgroup.threads); give its directory")]
    NotACgroupDir { path: PathBuf },
    #[error("no process with PID {pid}; `ps -e` lists them")]
    NoSuchPid { pid: u32 },
    #[error("PID {pid} is a zombie (it has exited and waits for its parent to reap it): there is nothing left to watch")]
    ZombiePid { pid: u32 },
    #[error("PID {pid} is a kernel thread: it has no cgroup of its own (a window on it would watch the root cgroup, i.e. the whole host); give a user-space process, a cgroup or a container")]
    KernelThread { pid: u32 },
    #[error("give a container name or id (`docker ps` lists them); an empty name matches nothing")]
    EmptyContainerName,
    #[error("no container `{wanted}`; `docker ps` lists the running ones")]
    NoSuchContainer { wanted: String },
    #[error("`{wanted}` matches several containers ({matches}); give more of the id, or the name")]
    AmbiguousContainer { wanted: String, matches: String },
    #[error(
        "container {name} is not running (status: {status}); start it with `docker start {name}`"
    )]
    ContainerNotRunning { name: String, status: String },
    #[error(transparent)]
    Docker(crate::docker::DockerError),
    #[error("{0}")]
    Cri(String),
    #[error("no ready pod `{wanted}` on this node (ready pods: {known}); give NAMESPACE/NAME")]
    NoSuchPod { wanted: String, known: String },
    #[error("pod {pod} has no running container `{wanted}` (running: {known})")]
    NoSuchPodContainer {
        pod: String,
        wanted: String,
        known: String,
    },
    #[error("pod {pod} has no cgroup of its own (it was made without a cgroup parent); give --container NAME for one of its containers")]
    PodWithoutCgroup { pod: String },
    #[error("reading {what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl Target {
    /// Resolves a cgroup or PID target. Container targets need the engine: `resolve_with_docker`.
    pub fn resolve(spec: &TargetSpec) -> Result<Target, TargetError> {
        let root = cgroup::cgroup2_mount()?;
        let cgroup_dir = match spec {
            TargetSpec::Cgroup { path } => cgroup::check_cgroup_dir(&root, path)?,
            TargetSpec::Pid { pid } => {
                cgroup::check_user_process(*pid)?;
                cgroup::cgroup_of_pid(&root, *pid)?
            }
            TargetSpec::Container { .. } | TargetSpec::Pod { .. } => {
                unreachable!("container and pod targets resolve through their runtime")
            }
        };
        Self::in_cgroup(spec, cgroup_dir, None)
    }

    /// Resolves a pod target through the runtime's CRI API.
    pub async fn resolve_pod(spec: &TargetSpec) -> Result<Target, TargetError> {
        let TargetSpec::Pod {
            namespace,
            name,
            container,
            cri_endpoint,
        } = spec
        else {
            return Self::resolve(spec);
        };
        let (dir, meta) = pod::resolve(cri_endpoint, namespace, name, container.as_deref()).await?;
        let mut target = Self::in_cgroup(spec, dir, None)?;
        target.pod = Some(meta);
        Ok(target)
    }

    pub async fn resolve_with_docker(
        spec: &TargetSpec,
        docker: &bollard::Docker,
    ) -> Result<Target, TargetError> {
        let TargetSpec::Container { name_or_id } = spec else {
            return Self::resolve(spec);
        };
        if name_or_id.trim().is_empty() {
            return Err(TargetError::EmptyContainerName);
        }
        let meta = container::resolve(docker, name_or_id).await?;
        let root = cgroup::cgroup2_mount()?;
        // The container's own cgroup (`docker/<id>`, `docker-<id>.scope`), also when its init
        // sits in a cgroup below it (systemd in a container: `.../init.scope`).
        let cgroup_dir =
            cgroup::container_dir(&root, &cgroup::cgroup_of_pid(&root, meta.pid)?, &meta.id);
        if cgroup_dir == root {
            return Err(TargetError::InRootCgroup {
                what: format!("container {}", meta.name),
                root,
            });
        }
        Self::in_cgroup(spec, cgroup_dir, Some(meta))
    }

    fn in_cgroup(
        spec: &TargetSpec,
        cgroup_dir: PathBuf,
        container: Option<ContainerMeta>,
    ) -> Result<Target, TargetError> {
        let cgroup_id = cgroup::cgroup_id(&cgroup_dir)?;
        let child_cgroups = cgroup::child_cgroups(&cgroup_dir);
        Ok(Target {
            spec: spec.clone(),
            cgroup_dir,
            cgroup_id,
            child_cgroups,
            container,
            pod: None,
            target_only: false,
        })
    }

    /// Whether recap itself runs in the target cgroup (its sockets then count as the target's).
    pub fn contains_recap(&self) -> bool {
        let Ok(root) = cgroup::cgroup2_mount() else {
            return false;
        };
        cgroup::cgroup_of_pid(&root, std::process::id()).is_ok_and(|own| own == self.cgroup_dir)
    }

    /// Whether the target still exists (a process target: the process is alive; a cgroup: the
    /// same cgroup, not one re-created under its name since).
    pub fn is_alive(&self) -> bool {
        match &self.spec {
            TargetSpec::Pid { pid } => cgroup::process_running(*pid),
            TargetSpec::Cgroup { .. } => {
                cgroup::cgroup_id(&self.cgroup_dir).is_ok_and(|id| id == self.cgroup_id)
            }
            TargetSpec::Container { .. } => self
                .container
                .as_ref()
                .is_some_and(|c| cgroup::process_running(c.pid)),
            TargetSpec::Pod { .. } => self
                .pod
                .as_ref()
                .is_some_and(|p| cgroup::process_running(p.pid)),
        }
    }

    pub fn describe(&self) -> String {
        match &self.spec {
            TargetSpec::Cgroup { .. } => format!("cgroup {}", self.cgroup_dir.display()),
            TargetSpec::Pid { pid } => format!("pid {pid} (cgroup {})", self.cgroup_dir.display()),
            TargetSpec::Container { .. } => match &self.container {
                Some(c) => format!(
                    "container {} ({}, image {})",
                    c.name,
                    &c.id[..12.min(c.id.len())],
                    c.image
                ),
                None => format!("container (cgroup {})", self.cgroup_dir.display()),
            },
            TargetSpec::Pod {
                namespace,
                name,
                container,
                ..
            } => match container {
                Some(c) => format!("pod {namespace}/{name} container {c}"),
                None => format!(
                    "pod {namespace}/{name} (cgroup {})",
                    self.cgroup_dir.display()
                ),
            },
        }
    }
}
