//! One window, start to end: resolve the target, arm the probes, watch the clock, the signals
//! and the target, then tear down and summarise. Teardown happens on every path out: the probe
//! links are owned values, so even an error or a panic detaches them.

mod live;

use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use tokio::{
    signal::unix::{signal, SignalKind},
    time::{interval, sleep_until, MissedTickBehavior},
};

use crate::{
    probes::{Family, ProbeEngine},
    report::{rfc3339_utc, WindowMeta, WindowStatus, WindowSummary},
    target::{Target, TargetSpec},
};

#[derive(Clone, Debug, PartialEq)]
pub struct WindowSpec {
    pub target: TargetSpec,
    pub duration: Duration,
    pub families: Vec<Family>,
}

/// Runs a window to its end and returns its summary. `tty_live` asks for the redrawn live view
/// on a terminal; progress otherwise goes to stderr as plain lines.
pub async fn run(spec: WindowSpec, tty_live: bool) -> anyhow::Result<WindowSummary> {
    let command_started = Instant::now();
    // Signals first, so a Ctrl-C while arming still ends the window cleanly.
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;

    let target = Target::resolve(&spec.target)?;
    let mut engine = ProbeEngine::load()?;
    let probes = engine
        .open(&target, &spec.families)
        .context("arming the window")?;
    let armed = Instant::now();
    let started_at = rfc3339_utc(SystemTime::now());
    let window_id = new_window_id();
    let arm_ms = ms(armed - command_started);
    live::announce(&window_id, &target, &probes.families, spec.duration, arm_ms);

    let deadline = tokio::time::Instant::from_std(armed + spec.duration);
    let mut tick = interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut view = live::LiveView::new(tty_live, spec.duration);
    let status = loop {
        tokio::select! {
            _ = sleep_until(deadline) => break WindowStatus::Completed,
            _ = sigint.recv() => break WindowStatus::Interrupted,
            _ = sigterm.recv() => break WindowStatus::Interrupted,
            _ = tick.tick() => {
                if !target.is_alive() {
                    break WindowStatus::TargetExited;
                }
                if let Err(e) = engine.sync_tasks(&probes) {
                    log::warn!("resyncing the target's threads: {e:#}");
                }
                match engine.read(probes.slot) {
                    Ok(counts) => view.update(armed.elapsed(), &counts, &probes.families),
                    Err(e) => log::warn!("reading counters: {e:#}"),
                }
            }
        }
    };
    let ended = Instant::now();
    let families = probes.families.clone();
    let counts = engine.close(probes).context("closing the window")?;
    drop(engine); // unloads every program and map
    let teardown_ms = ms(ended.elapsed());
    view.finish();
    let meta = WindowMeta {
        window_id,
        target,
        started_at,
        requested_duration_s: spec.duration.as_secs_f64(),
        duration_s: (ended - armed).as_secs_f64(),
        arm_ms,
        teardown_ms,
        status,
        families,
    };
    Ok(WindowSummary::build(meta, &counts))
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
