//! The window's capsules as a group: started concurrently (with each other and with the
//! probes), stopped together, and reported whether they started or not.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use bollard::Docker;
use futures_util::future::join_all;

use crate::{
    capsule::{
        artifacts::{self, SafeDir},
        image,
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
    /// `<artifacts>/<window-id>`, held open: everything in it is done through this descriptor.
    artifact_dir: Arc<SafeDir>,
    owner: Option<(u32, u32)>,
}

/// The owner's end of the lifeline FIFO; removed from the artifact directory when dropped.
struct Lifeline {
    dir: Arc<SafeDir>,
    _fd: std::fs::File,
}

impl Lifeline {
    fn create(dir: Arc<SafeDir>) -> std::io::Result<Self> {
        // Read-write: opening a FIFO so never blocks, and this descriptor is the writer whose
        // closing (the owner's exit, however it happens) gives the capsules their end of file.
        let fd = dir.fifo(LIFELINE)?;
        Ok(Lifeline { dir, _fd: fd })
    }
}

impl Drop for Lifeline {
    fn drop(&mut self) {
        self.dir.remove(LIFELINE);
    }
}

/// How long a capsule may outlive its window's planned end if nobody stops it.
const GRACE: Duration = Duration::from_secs(5);

/// Makes the artifact directory and the image (once per RECap version) before the window.
pub async fn prepare(
    docker: &Docker,
    options: &CapsuleOptions,
    window_id: &str,
) -> anyhow::Result<SafeDir> {
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
    artifact_dir: SafeDir,
    window_duration: Duration,
) -> RunningCapsules {
    let artifact_dir = Arc::new(artifact_dir);
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
    let lifeline = match Lifeline::create(artifact_dir.clone()) {
        Ok(lifeline) => Some(lifeline),
        Err(e) => {
            let reason = format!(
                "creating the capsules' lifeline in {}: {e}",
                artifact_dir.path().display()
            );
            return RunningCapsules {
                running: Vec::new(),
                failed: specs
                    .iter()
                    .map(|spec| {
                        failed_report(spec, &window_id, artifact_dir.path(), reason.clone())
                    })
                    .collect(),
                lifeline: None,
                artifact_dir,
                owner,
            };
        }
    };
    let started = join_all(specs.iter().map(|spec| Capsule::start(&docker, spec, &ctx))).await;
    let mut out = RunningCapsules {
        running: Vec::new(),
        failed: Vec::new(),
        lifeline,
        artifact_dir: artifact_dir.clone(),
        owner,
    };
    for (spec, result) in specs.iter().zip(started) {
        match result {
            Ok(capsule) => out.running.push(capsule),
            Err(e) => out.failed.push(failed_report(
                spec,
                &window_id,
                artifact_dir.path(),
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
    // Nothing more is written there: the caller may have the directory now (to read and remove
    // its captures), through the descriptor the capsules' files were sealed through.
    if let Some(owner) = capsules.owner {
        if let Err(e) = capsules.artifact_dir.hand_to(owner) {
            log::warn!(
                "handing {} to uid {}: {e}",
                capsules.artifact_dir.path().display(),
                owner.0
            );
        }
    }
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
