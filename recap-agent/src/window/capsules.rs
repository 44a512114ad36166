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
        archive,
        artifacts::{self, SafeDir},
        cri::PodSite,
        image,
        sidecar::{Capsule, CapsuleContext, Runtime, LIFELINE},
        snapshot, CapsuleOutcome, CapsuleReport, CapsuleSpec, Tool,
    },
    targets::{Target, TargetSpec},
};

/// Where capsules write unless told otherwise (`--artifacts`).
pub const DEFAULT_ARTIFACTS: &str = "/var/tmp/recap";
/// Each capsule's artifact cap unless told otherwise (`--capsule-max-size`).
pub const DEFAULT_CAPSULE_MAX_BYTES: u64 = 100 << 20;

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
    /// Archives to make when the window ends, from the root of a process of this cgroup then.
    archives: Vec<(CapsuleSpec, PathBuf)>,
    /// Snapshots taken when the window opened, with the cgroup to take the last one of.
    snapshots: Vec<(CapsuleSpec, snapshot::Snapshot, PathBuf)>,
    max_bytes: u64,
    /// The owner's end of the capsules' lifeline (see `sidecar::LIFELINE`), held until they stop.
    lifeline: Option<Lifeline>,
    /// `<artifacts>/<window-id>`, held open: everything in it is done through this descriptor.
    artifact_dir: Arc<SafeDir>,
    owner: Option<(u32, u32)>,
    runtime: Runtime,
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
    runtime: &Runtime,
    options: &CapsuleOptions,
    window_id: &str,
) -> anyhow::Result<SafeDir> {
    let dir = artifacts::window_dir(&options.artifacts, window_id)?;
    for theirs in options.specs.iter().filter_map(|s| s.custom_image()) {
        match runtime {
            Runtime::Docker(docker) => image::present(docker, theirs).await?,
            Runtime::Cri(site) => image::present_cri(&site.endpoint, theirs).await?,
        }
    }
    let images: std::collections::BTreeSet<image::Image> = options
        .specs
        .iter()
        .filter_map(|s| s.tool.image())
        .collect();
    for wanted in images {
        let built = match runtime {
            Runtime::Docker(docker) => image::ensure(docker, wanted).await?,
            Runtime::Cri(site) => image::ensure_cri(&site.endpoint, wanted).await?,
        };
        if built {
            log::warn!(
                "built the capsule image {} from this host's tools (once per RECap version and runtime)",
                wanted.reference()
            );
        }
    }
    Ok(dir)
}

/// The container the capsules join, and its cgroup.
pub struct CapsuleTarget {
    pub id: String,
    pub cgroup_dir: PathBuf,
}

/// Where the window's capsules run and whom they join: beside the Docker container, or in the
/// pod's sandbox (its one container, or the one `--container` named).
pub async fn runtime_for(
    spec: &TargetSpec,
    target: &Target,
    docker: Option<&Docker>,
    window_id: &str,
) -> anyhow::Result<(Runtime, CapsuleTarget)> {
    if let (Some(docker), Some(container)) = (docker, &target.container) {
        let joined = CapsuleTarget {
            id: container.id.clone(),
            cgroup_dir: target.cgroup_dir.clone(),
        };
        return Ok((Runtime::Docker(docker.clone()), joined));
    }
    let (TargetSpec::Pod { cri_endpoint, .. }, Some(pod)) = (spec, &target.pod) else {
        anyhow::bail!("capsules join a container: give --container NAME (Docker) or --pod NS/NAME");
    };
    let site = PodSite::resolve(cri_endpoint, pod, window_id).await?;
    let joined = CapsuleTarget {
        id: site.container_id.clone(),
        cgroup_dir: site.cgroup_dir.clone(),
    };
    Ok((Runtime::Cri(Arc::new(site)), joined))
}

pub async fn start_all(
    runtime: Runtime,
    options: CapsuleOptions,
    window_id: String,
    target: CapsuleTarget,
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
    let ctx = CapsuleContext {
        window_id: &window_id,
        target_id: &target.id,
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
                runtime,
                archives: Vec::new(),
                snapshots: Vec::new(),
                max_bytes,
            };
        }
    };
    let (in_recap, containers): (Vec<_>, Vec<_>) = specs.iter().partition(|s| s.tool.in_recap());
    let started = join_all(
        containers
            .iter()
            .map(|spec| Capsule::start(&runtime, spec, &ctx)),
    )
    .await;
    let mut out = RunningCapsules {
        running: Vec::new(),
        failed: Vec::new(),
        lifeline,
        artifact_dir: artifact_dir.clone(),
        owner,
        runtime: runtime.clone(),
        archives: Vec::new(),
        snapshots: Vec::new(),
        max_bytes,
    };
    for spec in in_recap.iter().filter(|s| s.tool == Tool::Snapshot) {
        match take_snapshot(&target.cgroup_dir).await {
            Some(first) => out
                .snapshots
                .push(((*spec).clone(), first, target.cgroup_dir.clone())),
            None => out.failed.push(failed_report(
                spec,
                &window_id,
                artifact_dir.path(),
                "the first snapshot took longer than 20 s".into(),
            )),
        }
    }
    for spec in in_recap.into_iter().filter(|s| s.tool == Tool::Archive) {
        out.archives.push((spec.clone(), target.cgroup_dir.clone()));
    }
    for (spec, result) in containers.into_iter().zip(started) {
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

/// A process of the cgroup (as the host numbers it): its root is the target's filesystem.
fn first_process(cgroup_dir: &Path) -> Option<u32> {
    std::fs::read_to_string(cgroup_dir.join("cgroup.procs"))
        .ok()?
        .lines()
        .find_map(|l| l.trim().parse().ok())
}

/// How long an archive or a snapshot may take (a hung network filesystem in the target must
/// not hold the window's end).
const IN_RECAP_TIMEOUT: Duration = Duration::from_secs(60);
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(20);

/// A snapshot of the cgroup, on a blocking thread, or `None` if it took too long.
async fn take_snapshot(cgroup_dir: &Path) -> Option<snapshot::Snapshot> {
    let dir = cgroup_dir.to_path_buf();
    let taken = tokio::task::spawn_blocking(move || snapshot::take(&dir));
    tokio::time::timeout(SNAPSHOT_TIMEOUT, taken)
        .await
        .ok()?
        .ok()
}

/// Makes an archive into the artifact directory, and its report.
fn make_archive(
    spec: &CapsuleSpec,
    cgroup_dir: &Path,
    dir: &SafeDir,
    max_bytes: u64,
    owner: Option<(u32, u32)>,
) -> CapsuleReport {
    let name = spec.tool.artifact();
    let cgroup = crate::targets::cgroup::cgroup2_mount()
        .ok()
        .and_then(|root| {
            cgroup_dir
                .strip_prefix(root)
                .ok()
                .map(|r| format!("/{}", r.display()))
        });
    let made = match (first_process(cgroup_dir), cgroup) {
        (Some(pid), Some(cgroup)) => dir
            .create_new(name)
            .and_then(|file| archive::write(pid, &cgroup, &spec.args, file, max_bytes)),
        _ => Err(std::io::Error::other(
            "the target has no process left whose filesystem could be read",
        )),
    };
    let outcome = match made {
        Err(e) => CapsuleOutcome::Failed {
            reason: format!("making the archive: {e}"),
        },
        Ok(done) if done.capped => CapsuleOutcome::SizeCapReached {
            cap_bytes: max_bytes,
        },
        Ok(done) if !done.refused.is_empty() => CapsuleOutcome::Incomplete {
            reason: done.refused.join("; "),
            dropped_by_kernel: None,
        },
        Ok(_) => CapsuleOutcome::Ok,
    };
    let artifact_bytes = match dir.seal(name, owner) {
        Ok(bytes) => bytes.unwrap_or(0),
        Err(e) => {
            log::warn!("sealing {name}: {e}");
            0
        }
    };
    CapsuleReport {
        capsule: spec.to_string(),
        container_name: "(none: made by RECap)".into(),
        artifact: dir.path().join(name).display().to_string(),
        artifact_bytes,
        outcome,
        note: None,
    }
}

/// The report of a capsule RECap makes itself, before its outcome is known.
fn in_recap_report(spec: &CapsuleSpec, dir: &SafeDir) -> CapsuleReport {
    CapsuleReport {
        capsule: spec.to_string(),
        container_name: "(none: made by RECap)".into(),
        artifact: dir.path().join(spec.tool.artifact()).display().to_string(),
        artifact_bytes: 0,
        outcome: CapsuleOutcome::Ok,
        note: None,
    }
}

/// Writes the two snapshots and what changed into `snapshot.json`, and its report.
fn write_snapshot(
    spec: &CapsuleSpec,
    first: &snapshot::Snapshot,
    last: &snapshot::Snapshot,
    dir: &SafeDir,
    owner: Option<(u32, u32)>,
) -> CapsuleReport {
    let name = spec.tool.artifact();
    let changes = snapshot::changes(first, last);
    let document = serde_json::json!({
        "schema": "recap.snapshot/v1",
        "start": first,
        "end": last,
        "changes": changes,
    });
    let written = dir.create_new(name).and_then(|mut f| {
        use std::io::Write;
        f.write_all(&serde_json::to_vec_pretty(&document)?)
    });
    let outcome = match written {
        Err(e) => CapsuleOutcome::Failed {
            reason: format!("writing the snapshot: {e}"),
        },
        Ok(()) if first.truncated || last.truncated => CapsuleOutcome::Incomplete {
            reason: "the target has more processes or open files than a snapshot holds".into(),
            dropped_by_kernel: None,
        },
        Ok(()) => CapsuleOutcome::Ok,
    };
    CapsuleReport {
        capsule: spec.to_string(),
        container_name: "(none: made by RECap)".into(),
        artifact: dir.path().join(name).display().to_string(),
        artifact_bytes: dir.seal(name, owner).ok().flatten().unwrap_or(0),
        outcome,
        note: Some(changes),
    }
}

pub async fn stop_all(capsules: RunningCapsules) -> Vec<CapsuleReport> {
    let mut reports = join_all(capsules.running.into_iter().map(|c| c.stop())).await;
    // Archives are made at the end: the logs as the window leaves them.
    for (spec, cgroup_dir) in &capsules.archives {
        let (dir, job, cgroup_dir) = (
            capsules.artifact_dir.clone(),
            spec.clone(),
            cgroup_dir.clone(),
        );
        let (owner, max_bytes) = (capsules.owner, capsules.max_bytes);
        let made = tokio::task::spawn_blocking(move || {
            make_archive(&job, &cgroup_dir, &dir, max_bytes, owner)
        });
        match tokio::time::timeout(IN_RECAP_TIMEOUT, made).await {
            Ok(Ok(report)) => reports.push(report),
            _ => reports.push(CapsuleReport {
                outcome: CapsuleOutcome::Failed {
                    reason: "the archive took longer than 60 s (a hung filesystem in the target?)"
                        .into(),
                },
                ..in_recap_report(spec, &capsules.artifact_dir)
            }),
        }
    }
    for (spec, first, cgroup_dir) in capsules.snapshots {
        let Some(last) = take_snapshot(&cgroup_dir).await else {
            reports.push(CapsuleReport {
                outcome: CapsuleOutcome::Failed {
                    reason: "the last snapshot took longer than 20 s".into(),
                },
                ..in_recap_report(&spec, &capsules.artifact_dir)
            });
            continue;
        };
        reports.push(write_snapshot(
            &spec,
            &first,
            &last,
            &capsules.artifact_dir,
            capsules.owner,
        ));
    }
    reports.extend(capsules.failed);
    drop(capsules.lifeline);
    if let Runtime::Cri(site) = &capsules.runtime {
        site.forget_logs();
    }
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
        note: None,
    }
}
