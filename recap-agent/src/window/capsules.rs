//! The window's capsules as a group: started concurrently (with each other and with the
//! probes), stopped together, and reported whether they started or not.

use std::path::{Path, PathBuf};

use bollard::Docker;
use futures_util::future::join_all;

use crate::{
    capsule::{
        artifacts, image,
        sidecar::{Capsule, CapsuleContext},
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
}

/// Capsules that started, and reports for those that did not.
pub struct RunningCapsules {
    pub running: Vec<Capsule>,
    pub failed: Vec<CapsuleReport>,
}

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
    specs: Vec<CapsuleSpec>,
    window_id: String,
    target: Target,
    artifact_dir: PathBuf,
    max_bytes: u64,
) -> RunningCapsules {
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
    };
    let started = join_all(specs.iter().map(|spec| Capsule::start(&docker, spec, &ctx))).await;
    let mut out = RunningCapsules {
        running: Vec::new(),
        failed: Vec::new(),
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
