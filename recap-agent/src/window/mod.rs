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
    export::{
        otlp::{Exporter, OtlpConfig},
        prometheus,
    },
    families::{Family, FamilyStatus},
    probes::{ProbeEngine, RawCounts, WindowProbes},
    report::{rfc3339_utc, WindowMeta, WindowStatus, WindowSummary},
    targets::{Target, TargetSpec},
};

#[derive(Clone, Debug, PartialEq)]
pub struct WindowSpec {
    pub target: TargetSpec,
    pub duration: Duration,
    pub families: Vec<Family>,
    pub capsules: CapsuleOptions,
    pub export: ExportOptions,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct ExportOptions {
    pub prometheus: Option<std::net::SocketAddr>,
    /// How long `/metrics` stays up after the window, so a scrape sees the final values.
    pub prometheus_linger: Duration,
    pub otlp: Option<OtlpConfig>,
}

/// A finished window: its summary, and the Prometheus endpoint still serving it (if any).
pub struct WindowOutcome {
    pub summary: WindowSummary,
    pub prometheus: Option<prometheus::Endpoint>,
}

struct Signals {
    int: Signal,
    term: Signal,
}

/// Runs a window to its end and returns its summary. `tty_live` asks for the redrawn live view
/// on a terminal; progress otherwise goes to stderr as plain lines.
pub async fn run(spec: WindowSpec, tty_live: bool) -> anyhow::Result<WindowOutcome> {
    let command_started = Instant::now();
    // Signals first, so a Ctrl-C while arming still ends the window cleanly.
    let mut signals = Signals {
        int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
    };
    let window_id = new_window_id();
    // Bound before anything is attached: a busy port fails the window with nothing to undo.
    let endpoint = match spec.export.prometheus {
        Some(addr) => Some(prometheus::Endpoint::bind(addr).await?),
        None => None,
    };
    let mut otlp = spec.export.otlp.clone().map(Exporter::new).transpose()?;
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
    let info = WindowInfo {
        window_id,
        armed_at,
        target,
        started_at: rfc3339_utc(SystemTime::now()),
        requested: spec.duration,
        arm_ms: ms(armed_at - command_started),
        families: probes.families.clone(),
    };
    live::announce(
        &info.window_id,
        &info.target,
        &info.families,
        capsules.as_ref(),
        spec.duration,
        info.arm_ms,
    );
    if let Some(endpoint) = &endpoint {
        eprintln!(
            "recap: Prometheus metrics at http://{}/metrics",
            endpoint.addr
        );
    }
    let mut exporting = Exports {
        endpoint: endpoint.as_ref(),
        otlp: otlp.as_mut(),
        pending: Vec::new(),
        next_otlp: armed_at,
    };
    if let Some(otlp) = exporting.otlp.as_deref_mut() {
        let open = info.summary(
            WindowStatus::Open,
            armed_at,
            0.0,
            &RawCounts::zeroed(),
            Vec::new(),
        );
        otlp.export_log(&open, "start", 1).await;
    }

    let status = watch(
        &mut engine,
        &probes,
        &info,
        &mut signals,
        armed_at + spec.duration,
        tty_live,
        &mut exporting,
    )
    .await;
    let ended = Instant::now();
    let closed = engine.close(probes).context("closing the window");
    drop(engine); // unloads every program and map
    let capsule_reports = stop_capsules(docker.as_ref(), capsules).await;
    let teardown_ms = ms(ended.elapsed());
    let counts = closed?;
    let mut summary = info.summary(status, ended, teardown_ms, &counts, capsule_reports);
    if info.target.contains_recap() {
        summary.warnings.push(
            "recap itself runs in the target cgroup: its own threads are left out of syscalls/proc/cpu, but its sockets (exports, Docker API) count in tcp/net; run recap from another cgroup".into(),
        );
    }
    exporting.finish(&mut summary).await;
    Ok(WindowOutcome {
        summary,
        prometheus: endpoint,
    })
}

/// What a window knows about itself once armed; builds summaries (live snapshots and the last).
struct WindowInfo {
    window_id: String,
    armed_at: Instant,
    target: Target,
    started_at: String,
    requested: Duration,
    arm_ms: f64,
    families: std::collections::BTreeMap<Family, FamilyStatus>,
}

impl WindowInfo {
    fn summary(
        &self,
        status: WindowStatus,
        until: Instant,
        teardown_ms: f64,
        counts: &RawCounts,
        capsules: Vec<crate::capsule::CapsuleReport>,
    ) -> WindowSummary {
        let meta = WindowMeta {
            window_id: self.window_id.clone(),
            target: self.target.clone(),
            started_at: self.started_at.clone(),
            requested_duration_s: self.requested.as_secs_f64(),
            duration_s: (until - self.armed_at).as_secs_f64(),
            arm_ms: self.arm_ms,
            teardown_ms,
            status,
            families: self.families.clone(),
            capsules,
        };
        WindowSummary::build(meta, counts)
    }
}

/// Where snapshots go while the window is open, and the final flush.
struct Exports<'a> {
    endpoint: Option<&'a prometheus::Endpoint>,
    otlp: Option<&'a mut Exporter>,
    pending: Vec<tokio::task::JoinHandle<Option<String>>>,
    next_otlp: Instant,
}

impl Exports<'_> {
    /// Whether anything consumes live snapshots (building one is not free).
    fn active(&self) -> bool {
        self.endpoint.is_some() || self.otlp.is_some()
    }

    fn publish(&mut self, snapshot: &WindowSummary) {
        if let Some(endpoint) = self.endpoint {
            endpoint.publish(snapshot);
        }
        if let Some(otlp) = self.otlp.as_deref() {
            if Instant::now() >= self.next_otlp {
                // In the background: a slow collector must not hold up the window.
                self.pending.push(otlp.spawn_metrics(snapshot));
                self.next_otlp = Instant::now() + otlp.config().interval;
            }
        }
    }

    async fn finish(&mut self, summary: &mut WindowSummary) {
        if let Some(endpoint) = self.endpoint {
            endpoint.publish(summary);
        }
        let Some(otlp) = self.otlp.as_deref_mut() else {
            return;
        };
        for task in self.pending.drain(..) {
            otlp.absorb(task.await.ok().flatten());
        }
        otlp.export_metrics(summary, 2).await;
        otlp.export_log(summary, "end", 2).await;
        if let Some(warning) = otlp.undelivered() {
            eprintln!("recap: warning: {warning}");
            summary.warnings.push(warning);
        }
    }
}

/// The open window: ends on the deadline, a signal, or the target going away.
async fn watch(
    engine: &mut ProbeEngine,
    probes: &WindowProbes,
    info: &WindowInfo,
    signals: &mut Signals,
    deadline: Instant,
    tty_live: bool,
    exports: &mut Exports<'_>,
) -> WindowStatus {
    let (target, duration) = (&info.target, info.requested);
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
                engine.flush_logs();
                match engine.sync_tasks(probes) {
                    Ok((0, 0)) => {}
                    Ok((added, removed)) => log::debug!("resync: {added} thread(s) added, {removed} removed"),
                    Err(e) => log::warn!("resyncing the target's threads: {e:#}"),
                }
                match engine.read(probes) {
                    Ok(counts) => {
                        view.update(started.elapsed(), &counts, &probes.families);
                        if exports.active() {
                            exports.publish(&info.summary(WindowStatus::Open, Instant::now(), 0.0, &counts, Vec::new()));
                        }
                    }
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
