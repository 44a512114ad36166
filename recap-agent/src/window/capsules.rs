//! The window's capsules as a group: started concurrently (with each other and with the
//! probes), stopped together, and reported whether they started or not.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use bollard::Docker;
use futures_util::future::join_all;

use crate::{
    capsule::{
        artifacts, image,
        sidecar::{Capsule, CapsuleContext, LIFELINE},
        CapsuleOutcome, CapsuleReport, CapsuleSpec,
    },
    targets::Target,
};

#[derive(Clone, Debug, PartialEq)]
pub struct CapsuleOptions {
    pub specs: Vec<CapsuleSpec>,
    /// Artifacts go to `<artifacts>/<window-id>/`.
    pub artifacts: PathBuf,
    pub max_bytes: u64,
    /// Who gets the artifacts (uid, gid): the sudo caller, or the agent's caller.
    pub owner: Option<(u32, u32)>,
}

/// Capsules that started, and reports for those that did not.
pub struct RunningCapsules {
    pub running: Vec<Capsule>,
    pub failed: Vec<CapsuleReport>,
    /// The owner's end of the capsules' lifeline (see `sidecar::LIFELINE`), held until they stop.
    lifeline: Option<Lifeline>,
}

/// The owner's end of the lifeline FIFO; removed from the artifact directory when dropped.
struct Lifeline {
    path: PathBuf,
    _fd: std::fs::File,
}

impl Lifeline {
    fn create(artifact_dir: &Path) -> std::io::Result<Self> {
        use std::os::unix::ffi::OsStrExt;
        let path = artifact_dir.join(LIFELINE);
        let _ = std::fs::remove_file(&path);
        let c_path =
            std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
        // SAFETY: mkfifo with a valid NUL-terminated path.
        if unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // Read-write: opening a FIFO so never blocks, and this descriptor is the writer whose
        // closing (the owner's exit, however it happens) gives the capsules their end of file.
        let fd = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)?;
        Ok(Lifeline { path, _fd: fd })
    }
}

impl Drop for Lifeline {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// How long a capsule may outlive its window's planned end if nobody stops it.
const GRACE: Duration = Duration::from_secs(5);

/// Makes the artifact directory and the image (once per RECap version) before the window.
pub async fn prepare(
    docker: &Docker,
    options: &CapsuleOptions,
    window_id: &str,
) -> anyhow::Result<PathBuf> {
    let dir = artifacts::window_dir(&options.artifacts, window_id)?;
    if image::ensure(docker).await? {
        log::warn!(
            "built the capsule image {} from this host's tools (once per RECap version)",
            image::reference()
        );
    }
    Ok(dir)
}

pub async fn start_all(
    docker: Docker,
    options: CapsuleOptions,
    window_id: String,
    target: Target,
    artifact_dir: PathBuf,
    window_duration: Duration,
) -> RunningCapsules {
    let CapsuleOptions {
        specs,
        max_bytes,
        owner,
        ..
    } = options;
    let container = target
        .container
        .clone()
        .expect("capsules need a container target");
    let ctx = CapsuleContext {
        window_id: &window_id,
        target: &container,
        cgroup_dir: &target.cgroup_dir,
        artifact_dir: &artifact_dir,
        max_bytes,
        owner,
        deadline: window_duration + GRACE,
    };
    let lifeline = match Lifeline::create(&artifact_dir) {
        Ok(lifeline) => Some(lifeline),
        Err(e) => {
            let reason = format!(
                "creating the capsules' lifeline in {}: {e}",
                artifact_dir.display()
            );
            return RunningCapsules {
                running: Vec::new(),
                failed: specs
                    .iter()
                    .map(|spec| failed_report(spec, &window_id, &artifact_dir, reason.clone()))
                    .collect(),
                lifeline: None,
            };
        }
    };
    let started = join_all(specs.iter().map(|spec| Capsule::start(&docker, spec, &ctx))).await;
    let mut out = RunningCapsules {
        running: Vec::new(),
        failed: Vec::new(),
        lifeline,
    };
    for (spec, result) in specs.iter().zip(started) {
        match result {
            Ok(capsule) => out.running.push(capsule),
            Err(e) => out.failed.push(failed_report(
                spec,
                &window_id,
                &artifact_dir,
                format!("{e:#}"),
            )),
        }
    }
    out
}

pub async fn stop_all(docker: &Docker, capsules: RunningCapsules) -> Vec<CapsuleReport> {
    let mut reports = join_all(capsules.running.into_iter().map(|c| c.stop(docker))).await;
    reports.extend(capsules.failed);
    drop(capsules.lifeline);
    reports
}

fn failed_report(spec: &CapsuleSpec, window_id: &str, dir: &Path, reason: String) -> CapsuleReport {
    CapsuleReport {
        capsule: spec.to_string(),
        container_name: format!("recap-{window_id}-{}", spec.tool.name()),
        artifact: dir.join(spec.tool.artifact()).display().to_string(),
        artifact_bytes: 0,
        outcome: CapsuleOutcome::Failed { reason },
    }
}
