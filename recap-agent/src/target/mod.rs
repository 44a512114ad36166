//! What a window looks at: resolved from the user's `--cgroup` / `--pid` into a cgroup v2
//! directory and its id (the value `bpf_get_current_cgroup_id()` returns for its tasks).
//! Containers and pods will resolve into the same `Target`.

pub mod cgroup;

use std::path::PathBuf;

use serde::Serialize;
use thiserror::Error;

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TargetSpec {
    Cgroup { path: PathBuf },
    Pid { pid: u32 },
}

/// A resolved target.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    #[serde(flatten)]
    pub spec: TargetSpec,
    /// The cgroup v2 directory whose tasks are counted.
    pub cgroup_dir: PathBuf,
    /// Its inode number (the kernel's cgroup id).
    pub cgroup_id: u64,
    /// Child cgroups at resolution time: their tasks are not counted by task-based families.
    pub child_cgroups: usize,
}

#[derive(Debug, Error)]
pub enum TargetError {
    #[error("no cgroup v2 hierarchy is mounted (looked for a `cgroup2` line in /proc/self/mountinfo); mount one with `mount -t cgroup2 none /sys/fs/cgroup/unified`")]
    NoCgroup2Mount,
    #[error("{path} does not exist; give a cgroup v2 directory under {root} (e.g. `{root}/docker/<id>`), or use --pid")]
    NoSuchPath { path: PathBuf, root: PathBuf },
    #[error("{path} is not a cgroup v2 directory (it is not under the cgroup2 mount {root}); cgroup v1 hierarchies are not supported")]
    NotCgroup2 { path: PathBuf, root: PathBuf },
    #[error("no process with PID {pid}; `ps -e` lists them")]
    NoSuchPid { pid: u32 },
    #[error("reading {what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl Target {
    pub fn resolve(spec: &TargetSpec) -> Result<Target, TargetError> {
        let root = cgroup::cgroup2_mount()?;
        let cgroup_dir = match spec {
            TargetSpec::Cgroup { path } => cgroup::check_cgroup_dir(&root, path)?,
            TargetSpec::Pid { pid } => cgroup::cgroup_of_pid(&root, *pid)?,
        };
        let cgroup_id = cgroup::cgroup_id(&cgroup_dir)?;
        let child_cgroups = cgroup::child_cgroups(&cgroup_dir);
        Ok(Target {
            spec: spec.clone(),
            cgroup_dir,
            cgroup_id,
            child_cgroups,
        })
    }

    /// Whether the target still exists (a process target: the process is alive).
    pub fn is_alive(&self) -> bool {
        match &self.spec {
            TargetSpec::Pid { pid } => cgroup::process_running(*pid),
            TargetSpec::Cgroup { .. } => self.cgroup_dir.exists(),
        }
    }

    pub fn describe(&self) -> String {
        match &self.spec {
            TargetSpec::Cgroup { .. } => format!("cgroup {}", self.cgroup_dir.display()),
            TargetSpec::Pid { pid } => format!("pid {pid} (cgroup {})", self.cgroup_dir.display()),
        }
    }
}
