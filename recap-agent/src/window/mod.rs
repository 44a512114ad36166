//! One window, start to end: resolve the target, arm the probes (and start the capsules
//! alongside), watch the clock, the signals and the target, then tear down and summarise.
//! Teardown happens on every path out: probe links are owned values, so even an error or a
//! panic detaches them, and every path after the capsules started goes through `stop_all`.

mod capsules;
mod live;

use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use bollard::Docker;
pub use capsules::CapsuleOptions;
use capsules::RunningCapsules;
use tokio::{
    signal::unix::{signal, Signal, SignalKind},
    time::{interval, sleep_until, MissedTickBehavior},
};

use crate::{
    capsule::reaper,
    docker,
    probes::{Family, ProbeEngine, WindowProbes},
    report::{rfc3339_utc, WindowMeta, WindowStatus, WindowSummary},
    target::{Target, TargetSpec},
};

#[derive(Clone, Debug, PartialEq)]
pub struct WindowSpec {
    pub target: TargetSpec,
    pub duration: Duration,
    pub families: Vec<Family>,
    pub capsules: CapsuleOptions,
}

struct Signals {
    int: Signal,
    term: Signal,
}

/// Runs a window to its end and returns its summary. `tty_live` asks for the redrawn live view
/// on a terminal; progress otherwise goes to stderr as plain lines.
pub async fn run(spec: WindowSpec, tty_live: bool) -> anyhow::Result<WindowSummary> {
    let command_started = Instant::now();
    // Signals first, so a Ctrl-C while arming still ends the window cleanly.
    let mut signals = Signals {
        int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
    };
    let window_id = new_window_id();
    let needs_docker = matches!(spec.target, TargetSpec::Container { .. });
    let docker = if needs_docker {
        Some(docker::connect().await?)
    } else {
        None
    };
    if let Some(docker) = &docker {
        if let Err(e) = reaper::reap_orphans(docker).await {
            log::warn!("looking for orphan capsules: {e:#}");
        }
    }
    let target = match &docker {
        Some(docker) => Target::resolve_with_docker(&spec.target, docker).await?,
        None => Target::resolve(&spec.target)?,
    };

    // Capsules start in the background while this thread loads and attaches the probes.
    let capsule_task = match (&docker, spec.capsules.specs.is_empty()) {
        (Some(docker), false) => {
            let artifact_dir = capsules::prepare(docker, &spec.capsules, &window_id).await?;
            Some(tokio::spawn(capsules::start_all(
                docker.clone(),
                spec.capsules.specs.clone(),
                window_id.clone(),
                target.clone(),
                artifact_dir,
                spec.capsules.max_bytes,
            )))
        }
        _ => None,
    };
    let armed = tokio::task::block_in_place(|| -> anyhow::Result<(ProbeEngine, WindowProbes)> {
        let mut engine = ProbeEngine::load()?;
        let probes = engine
            .open(&target, &spec.families)
            .context("arming the window")?;
        Ok((engine, probes))
    });
    let capsules = match capsule_task {
        Some(task) => Some(task.await.context("starting capsules")?),
        None => None,
    };
    let (mut engine, probes) = match armed {
        Ok(armed) => armed,
        Err(e) => {
            stop_capsules(docker.as_ref(), capsules).await;
            return Err(e);
        }
    };
    let armed_at = Instant::now();
    let started_at = rfc3339_utc(SystemTime::now());
    let arm_ms = ms(armed_at - command_started);
    live::announce(
        &window_id,
        &target,
        &probes.families,
        capsules.as_ref(),
        spec.duration,
        arm_ms,
    );

    let watched = watch(
        &mut engine,
        &probes,
        &target,
        &mut signals,
        armed_at + spec.duration,
        tty_live,
        spec.duration,
    )
    .await;
    let ended = Instant::now();
    let families = probes.families.clone();
    let closed = engine.close(probes).context("closing the window");
    drop(engine); // unloads every program and map
    let capsule_reports = stop_capsules(docker.as_ref(), capsules).await;
    let teardown_ms = ms(ended.elapsed());
    let counts = closed?;
    let meta = WindowMeta {
        window_id,
        target,
        started_at,
        requested_duration_s: spec.duration.as_secs_f64(),
        duration_s: (ended - armed_at).as_secs_f64(),
        arm_ms,
        teardown_ms,
        status: watched,
        families,
        capsules: capsule_reports,
    };
    Ok(WindowSummary::build(meta, &counts))
}

/// The open window: ends on the deadline, a signal, or the target going away.
async fn watch(
    engine: &mut ProbeEngine,
    probes: &WindowProbes,
    target: &Target,
    signals: &mut Signals,
    deadline: Instant,
    tty_live: bool,
    duration: Duration,
) -> WindowStatus {
    let started = Instant::now();
    let mut tick = interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut view = live::LiveView::new(tty_live, duration);
    let status = loop {
        tokio::select! {
            _ = sleep_until(tokio::time::Instant::from_std(deadline)) => break WindowStatus::Completed,
            _ = signals.int.recv() => break WindowStatus::Interrupted,
            _ = signals.term.recv() => break WindowStatus::Interrupted,
            _ = tick.tick() => {
                if !target.is_alive() {
                    break WindowStatus::TargetExited;
                }
                if let Err(e) = engine.sync_tasks(probes) {
                    log::warn!("resyncing the target's threads: {e:#}");
                }
                match engine.read(probes.slot) {
                    Ok(counts) => view.update(started.elapsed(), &counts, &probes.families),
                    Err(e) => log::warn!("reading counters: {e:#}"),
                }
            }
        }
    };
    view.finish();
    status
}

async fn stop_capsules(
    docker: Option<&Docker>,
    capsules: Option<RunningCapsules>,
) -> Vec<crate::capsule::CapsuleReport> {
    match (docker, capsules) {
        (Some(docker), Some(capsules)) => capsules::stop_all(docker, capsules).await,
        _ => Vec::new(),
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// 12 hex digits from the kernel's random pool: unique enough to name artifacts and series.
fn new_window_id() -> String {
    let mut bytes = [0u8; 6];
    // SAFETY: getrandom writes at most `len` bytes into the buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        bytes.copy_from_slice(&nanos.to_le_bytes()[..6]);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
