//! One window, start to end, the same for the CLI and the agent: `Window::arm` resolves the
//! target, arms the probes (and starts the capsules alongside), `tick` reads and reports once a
//! second, `close` tears down and summarises; `run` drives them until the deadline, a stop
//! request or the target going away. What a window reports goes to its observers (the live
//! view, exporters, the agent's history); signals and the terminal belong to the process.
//!
//! Teardown happens on every path out: probe links are owned values, so even an error or a
//! panic detaches them, and every path after the capsules started goes through `stop_capsules`.

mod capsules;
pub mod live;
mod otlp;
mod unread;

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context;
use capsules::RunningCapsules;
pub use capsules::{CapsuleOptions, DEFAULT_ARTIFACTS, DEFAULT_CAPSULE_MAX_BYTES};
use tokio::time::{interval_at, sleep_until, MissedTickBehavior};

use crate::{
    capsule::{reaper, CapsuleReport},
    docker,
    export::{otlp::OtlpConfig, prometheus::Published},
    families::raw::RawCounts,
    families::{Family, FamilyStatus},
    probes::{ProbeEngine, TlsSeen, WindowProbes},
    report::{WindowMeta, WindowStatus, WindowSummary},
    targets::{liveness::Liveness, Target, TargetSpec},
    text::time::rfc3339_utc,
};

#[derive(Clone, Debug, PartialEq)]
pub struct WindowSpec {
    pub target: TargetSpec,
    /// The target cgroup alone, not the cgroups below it.
    pub target_only: bool,
    pub duration: Duration,
    pub families: Vec<Family>,
    pub capsules: CapsuleOptions,
    pub export: ExportOptions,
    /// `http`: distinct gRPC paths per window before `other`.
    pub grpc_paths: usize,
}

impl WindowSpec {
    /// What every window must hold, however it was asked for (the command line's flags, the
    /// agent's API): a mistake is refused with what to do, before anything is resolved.
    pub fn check(&self) -> Result<(), String> {
        if self.duration.is_zero() {
            return Err("--duration must be more than 0 (e.g. --duration 30s)".into());
        }
        if self.families.is_empty() {
            return Err("--probes is empty; give families such as tcp,net".into());
        }
        match &self.target {
            TargetSpec::Container { name_or_id } if name_or_id.trim().is_empty() => {
                return Err("--container: give a container name or id (`docker ps` lists them); an empty name matches nothing".into());
            }
            TargetSpec::Pod {
                namespace,
                name,
                container,
                ..
            } => {
                if namespace.is_empty()
                    || name.is_empty()
                    || [namespace, name].iter().any(|p| p.contains('/'))
                {
                    return Err(format!(
                        "--pod {namespace}/{name}: give NAMESPACE/NAME (e.g. --pod default/checkout-7d9f)"
                    ));
                }
                if container.as_deref().is_some_and(|c| c.trim().is_empty()) {
                    return Err("--container: give the name of one of the pod's containers".into());
                }
            }
            _ => {}
        }
        let capsules = &self.capsules.specs;
        if !capsules.is_empty()
            && !matches!(
                self.target,
                TargetSpec::Container { .. } | TargetSpec::Pod { .. }
            )
        {
            return Err("capsules join a container's namespaces: use --container NAME (Docker) or --pod NS/NAME [--container NAME] with --capsule".into());
        }
        let mut tools: Vec<_> = capsules.iter().map(|c| c.tool.name()).collect();
        tools.sort();
        tools.dedup();
        if tools.len() != capsules.len() {
            return Err("give each capsule tool once".into());
        }
        if self.capsules.max_bytes < 4096 {
            return Err("--capsule-max-size must be at least 4KiB: below that a capture cannot hold its own file header and a packet (e.g. --capsule-max-size 10MiB)".into());
        }
        // The engine takes the cap as a signed number: above this it would read as "no cap".
        if self.capsules.max_bytes > i64::MAX as u64 {
            return Err(format!(
                "--capsule-max-size must be at most {} bytes",
                i64::MAX
            ));
        }
        if !(1..=1024).contains(&self.grpc_paths) {
            return Err("--grpc-paths must be from 1 to 1024".into());
        }
        if let Some(otlp) = &self.export.otlp {
            crate::export::otlp::check(otlp)?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct ExportOptions {
    pub prometheus: Option<std::net::SocketAddr>,
    /// How long `/metrics` stays up after the window, so a scrape sees the final values.
    pub prometheus_linger: Duration,
    pub otlp: Option<OtlpConfig>,
}

/// The probe engine a process shares between its windows: loaded up front and kept loaded
/// (the agent), or loaded by the window that needs it and unloaded when no window is left
/// (the CLI), so a one-shot window detaches and unloads everything as it closes.
#[derive(Clone)]
pub struct SharedEngine {
    engine: Arc<Mutex<Option<ProbeEngine>>>,
    /// Windows' reads take turns here, asynchronously, before they lock the engine: see
    /// `read_turn`.
    readers: Arc<tokio::sync::Mutex<()>>,
    unload_when_idle: bool,
    /// How many windows the engine is loaded for (when loaded on demand).
    windows: u32,
}

impl SharedEngine {
    pub fn loaded(engine: ProbeEngine) -> Self {
        let shared = SharedEngine {
            engine: Arc::new(Mutex::new(Some(engine))),
            readers: Arc::default(),
            unload_when_idle: false,
            windows: 0,
        };
        if let Ok(guard) = shared.lock() {
            if let Some(engine) = guard.as_ref() {
                watch_new_processes(&shared.engine, engine);
            }
        }
        shared
    }

    /// Loaded by the first window, for up to `windows` open at once; unloaded when the last
    /// one closes.
    pub fn on_demand(windows: usize) -> Self {
        SharedEngine {
            engine: Arc::new(Mutex::new(None)),
            readers: Arc::default(),
            unload_when_idle: true,
            windows: windows.try_into().unwrap_or(u32::MAX),
        }
    }

    /// Runs `f` on the engine, loading it first if needed. Blocking (map syscalls, and the
    /// first load): call from a blocking context.
    pub fn with<T>(
        &self,
        f: impl FnOnce(&mut ProbeEngine) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let mut guard = self.lock()?;
        if guard.is_none() {
            let engine = ProbeEngine::load(self.windows)?;
            watch_new_processes(&self.engine, &engine);
            *guard = Some(engine);
        }
        f(guard.as_mut().expect("loaded above"))
    }

    /// `with`, for a window's read (a fraction of a millisecond), from async code, holding its
    /// `read_turn`: on this thread when the engine is free and loaded, else through
    /// `block_in_place` (an arm or a close holds it for up to hundreds of milliseconds).
    /// Handing the runtime's worker to another thread for every read kept a thread per read
    /// of the last 10 s alive (128 with 128 idle windows), each woken for it: most of what
    /// idle windows cost the agent.
    pub fn with_briefly<T>(
        &self,
        _turn: &ReadTurn,
        f: impl FnOnce(&mut ProbeEngine) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        // A statement of its own: the guard it may hold is dropped before `with` locks again.
        match self.engine.try_lock() {
            Ok(mut guard) => {
                if let Some(engine) = guard.as_mut() {
                    return f(engine);
                }
            }
            Err(std::sync::TryLockError::Poisoned(_)) => {
                anyhow::bail!("the probe engine's lock is poisoned")
            }
            Err(std::sync::TryLockError::WouldBlock) => {}
        }
        tokio::task::block_in_place(|| self.with(f))
    }

    /// A window's turn to read: windows read on the same second, and wait for each other here
    /// without holding a runtime worker.
    pub async fn read_turn(&self) -> ReadTurn {
        ReadTurn {
            _held: self.readers.clone().lock_owned().await,
        }
    }

    /// Unloads every program and map (the agent, when it stops).
    pub fn unload(&self) {
        if let Ok(mut guard) = self.lock() {
            guard.take();
        }
    }

    fn lock(&self) -> anyhow::Result<std::sync::MutexGuard<'_, Option<ProbeEngine>>> {
        self.engine
            .lock()
            .map_err(|_| anyhow::anyhow!("the probe engine's lock is poisoned"))
    }

    /// Closes a window's probes; an on-demand engine with no window left is unloaded.
    fn close(&self, probes: WindowProbes) -> anyhow::Result<RawCounts> {
        let mut guard = self.lock()?;
        let engine = guard
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("the probe engine is not loaded"))?;
        let counts = engine.close(probes).context("closing the window");
        if self.unload_when_idle && engine.open_windows() == 0 {
            guard.take(); // unloads every program and map
        }
        counts
    }
}

/// A thread that instruments the TLS code of the targets' new processes as the kernel tells
/// of them (`ProbeEngine::on_new_processes`), so that a short-lived process is covered too.
/// It ends when the engine it was started for is unloaded.
fn watch_new_processes(shared: &Arc<Mutex<Option<ProbeEngine>>>, engine: &ProbeEngine) {
    let Some(fd) = engine
        .new_processes_fd()
        .and_then(|fd| fd.try_clone_to_owned().ok())
    else {
        return;
    };
    let id = engine.id;
    let shared = Arc::downgrade(shared);
    let spawned = std::thread::Builder::new()
        .name("recap-new-procs".into())
        .spawn(move || {
            use std::os::fd::AsRawFd;
            let mut next: Option<Instant> = None;
            loop {
                let wait = next
                    .map(|t| t.saturating_duration_since(Instant::now()))
                    .unwrap_or(Duration::from_secs(1));
                let mut poll = libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                let ms = wait.as_millis().clamp(1, 1000) as i32;
                // SAFETY: one valid pollfd, for the duration of the call.
                unsafe { libc::poll(&mut poll, 1, ms) };
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                let Ok(mut guard) = shared.lock() else {
                    return;
                };
                match guard.as_mut() {
                    Some(engine) if engine.id == id => next = engine.on_new_processes(),
                    _ => return,
                }
            }
        });
    if let Err(e) = spawned {
        log::warn!("no thread for the targets' new processes ({e}): their TLS code is instrumented at the next tick");
    }
}

/// A window's turn to read the engine (`SharedEngine::read_turn`).
pub struct ReadTurn {
    _held: tokio::sync::OwnedMutexGuard<()>,
}

/// What a window reports while it runs. Every method has a default, so an observer takes only
/// what it needs.
pub trait WindowObserver: Send {
    /// The probes count (and the capsules, if any, have started or failed).
    fn armed(&mut self, _window: &ArmedWindow) {}
    /// Once a second with the counts so far.
    fn tick(&mut self, _elapsed: Duration, _counts: &RawCounts, _window: &ArmedWindow) {}
    /// The window as it stands once armed (all zeros), for an observer that reports its start.
    fn opened(&mut self, _open: &WindowSummary) {}
    /// Whether it wants a full summary snapshot this second (building one is not free).
    fn wants_snapshots(&self) -> bool {
        false
    }
    /// Whether it wants the counts read this second even if the window is idle (a periodic
    /// export is due).
    fn due(&self) -> bool {
        false
    }
    fn snapshot(&mut self, _summary: &WindowSummary) {}
    /// The window is closing: what it still has to send, before `closed`. Its result is a
    /// warning for the summary, if any.
    fn flush(&mut self, _summary: &WindowSummary) -> Option<Flush> {
        None
    }
    /// The window ended; its final summary.
    fn closed(&mut self, _summary: &WindowSummary) {}
}

/// An observer's last sends, bounded by its own deadline; the window's close may also cut them
/// short (a second Ctrl-C), and then says `cut_short`.
pub struct Flush {
    pub done: std::pin::Pin<Box<dyn Future<Output = Option<String>> + Send>>,
    pub cut_short: String,
}

/// Prometheus exposition: the window's latest snapshot, then its final summary.
impl WindowObserver for Published {
    fn wants_snapshots(&self) -> bool {
        true
    }
    fn snapshot(&mut self, summary: &WindowSummary) {
        self.publish(summary);
    }
    fn closed(&mut self, summary: &WindowSummary) {
        self.publish(summary);
    }
}

/// What an armed window knows about itself.
pub struct ArmedWindow {
    pub window_id: String,
    pub target: Target,
    pub started_at: String,
    pub requested: Duration,
    pub arm_ms: f64,
    pub families: BTreeMap<Family, FamilyStatus>,
    /// Capsules running, by `tool=args` and container name; and reports of those that failed.
    pub capsules_running: Vec<(String, String)>,
    pub capsules_failed: Vec<CapsuleReport>,
    armed_at: Instant,
}

impl ArmedWindow {
    pub fn deadline(&self) -> Instant {
        self.armed_at + self.requested
    }

    fn summary(
        &self,
        status: WindowStatus,
        until: Instant,
        teardown_ms: f64,
        counts: &RawCounts,
        capsules: Vec<CapsuleReport>,
        tls: Vec<TlsSeen>,
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
            tls,
        };
        WindowSummary::build(meta, counts)
    }
}

/// An armed window: its probes, capsules and exporters.
pub struct Window {
    pub info: ArmedWindow,
    /// Whether the target is still there, asked every second.
    alive: Liveness,
    engine: SharedEngine,
    probes: Option<WindowProbes>,
    /// `http`: the TLS code found in the target's processes, as of the last tick.
    tls_seen: Vec<TlsSeen>,
    capsules: Option<RunningCapsules>,
    observers: Vec<Box<dyn WindowObserver>>,
    last_counts: RawCounts,
    /// Seconds ticked, and reads in a row that found nothing changed (see `IDLE_AFTER`).
    ticks: u64,
    unchanged_reads: u32,
}

/// Reads in a row without a change after which a window counts as idle, and how often (in
/// ticks of a second) an idle window is read when no one watches it (a live view or a
/// waiting client is due every second): its Prometheus figures then lag by up to this much
/// once it moves again.
const IDLE_AFTER: u32 = 3;
const IDLE_EVERY: u64 = 10;
/// How often (in ticks of a second) an idle window's reads also resync its threads and look
/// at its processes' TLS code: with every read, the subtree's `cgroup.threads` and the
/// processes' maps were a quarter of what 128 idle windows cost the agent.
const IDLE_RESYNC_EVERY: u64 = 60;

impl Window {
    /// Resolves the target and arms the probes (capsules start alongside). `started` is when
    /// the request came in: arm time is measured from it. `admit` sees the resolved target
    /// before anything starts or attaches (the agent's policy), and may refuse it.
    pub async fn arm(
        spec: &WindowSpec,
        window_id: String,
        engine: SharedEngine,
        mut observers: Vec<Box<dyn WindowObserver>>,
        started: Instant,
        admit: &(dyn Fn(&Target) -> anyhow::Result<()> + Sync),
    ) -> anyhow::Result<Window> {
        if let Some(config) = &spec.export.otlp {
            observers.push(Box::new(otlp::OtlpObserver::start(config.clone())?));
        }
        let docker = match spec.target {
            TargetSpec::Container { .. } => Some(docker::connect().await?),
            _ => None,
        };
        if let Some(docker) = &docker {
            if let Err(e) = reaper::reap_orphans(docker).await {
                log::warn!("looking for orphan capsules: {e:#}");
            }
        }
        let mut target = match (&docker, &spec.target) {
            (Some(docker), _) => Target::resolve_with_docker(&spec.target, docker).await?,
            (None, TargetSpec::Pod { .. }) => Target::resolve_pod(&spec.target).await?,
            (None, _) => Target::resolve(&spec.target)?,
        };
        target.target_only = spec.target_only;
        admit(&target)?;
        // As for Docker: what killed owners left in the runtime's pods goes first (once the
        // caller is let in: a refused request sweeps nothing).
        if let TargetSpec::Pod { cri_endpoint, .. } = &spec.target {
            if let Err(e) = crate::capsule::cri::reap_orphans(cri_endpoint).await {
                log::warn!("looking for orphan capsules in pods: {e:#}");
            }
        }

        // Capsules start in the background while this thread loads and attaches the probes.
        let capsule_task = if spec.capsules.specs.is_empty() {
            None
        } else {
            let (runtime, joined) =
                capsules::runtime_for(&spec.target, &target, docker.as_ref(), &window_id).await?;
            let artifact_dir = capsules::prepare(&runtime, &spec.capsules, &window_id).await?;
            Some(tokio::spawn(capsules::start_all(
                runtime,
                spec.capsules.clone(),
                window_id.clone(),
                joined,
                artifact_dir,
                spec.duration,
            )))
        };
        let armed = tokio::task::block_in_place(|| {
            engine.with(|e| {
                let probes = e
                    .open(&target, &spec.families)
                    .context("arming the window")?;
                e.set_grpc_paths(&probes, spec.grpc_paths);
                Ok(probes)
            })
        });
        let capsules = match capsule_task {
            Some(task) => Some(task.await.context("starting capsules")?),
            None => None,
        };
        let probes = match armed {
            Ok(probes) => probes,
            Err(e) => {
                stop_capsules(capsules).await;
                return Err(e);
            }
        };
        let armed_at = Instant::now();
        let alive = Liveness::of(&target);
        let info = ArmedWindow {
            window_id,
            target,
            started_at: rfc3339_utc(SystemTime::now()),
            requested: spec.duration,
            arm_ms: ms(armed_at - started),
            families: probes.families.clone(),
            capsules_running: capsules
                .iter()
                .flat_map(|c| &c.running)
                .map(|c| (c.spec.to_string(), c.name.clone()))
                .collect(),
            capsules_failed: capsules.iter().flat_map(|c| c.failed.clone()).collect(),
            armed_at,
        };
        for observer in &mut observers {
            observer.armed(&info);
        }
        let mut window = Window {
            info,
            alive,
            engine,
            probes: Some(probes),
            capsules,
            observers,
            last_counts: RawCounts::zeroed(),
            ticks: 0,
            unchanged_reads: 0,
            tls_seen: Vec::new(),
        };
        if window.observers.iter().any(|o| o.wants_snapshots()) {
            let open = window.snapshot(&RawCounts::zeroed());
            for observer in &mut window.observers {
                observer.opened(&open);
            }
        }
        Ok(window)
    }

    fn snapshot(&self, counts: &RawCounts) -> WindowSummary {
        let tls = self.tls_seen.clone();
        self.info.summary(
            WindowStatus::Open,
            Instant::now(),
            0.0,
            counts,
            Vec::new(),
            tls,
        )
    }

    /// Reads the counts and reports them. `Some(status)` when the window must end now.
    /// `ask_alive`: whether the target's liveness is asked with the read (the kernel tells of a
    /// process's exit by itself: see `run_until`).
    async fn tick(&mut self, ask_alive: bool) -> Option<WindowStatus> {
        self.probes.as_ref()?;
        self.ticks += 1;
        let due = self.observers.iter().any(|o| o.due());
        // An idle window (nothing moved in its last IDLE_AFTER reads) is looked at every
        // IDLE_EVERY-th second: its observers still tick, the summary's last read is always
        // made, and a second on which an export is due is read. Skipped with the read: the
        // threads' resync (a safety net: the kernel's fork, exit and cgroup-move hooks keep a
        // window's threads as they change) and the TLS look at its processes (new ones are
        // told by the kernel at once). Those cgroup and /proc reads were most of what 128 idle
        // windows cost their agent (a profile of 2026-12-03: 36 % of its samples); an idle
        // window's reads make them every IDLE_RESYNC_EVERY-th second.
        if self.unchanged_reads >= IDLE_AFTER && !self.ticks.is_multiple_of(IDLE_EVERY) && !due {
            self.tick_observers();
            return None;
        }
        // A cgroup removed while idle ends its window within IDLE_EVERY seconds.
        if ask_alive && !self.alive.is_alive() {
            return Some(WindowStatus::TargetExited);
        }
        let resync =
            self.unchanged_reads < IDLE_AFTER || self.ticks.is_multiple_of(IDLE_RESYNC_EVERY);
        let turn = self.engine.read_turn().await;
        let probes = self.probes.as_ref()?;
        let tls_seen = &mut self.tls_seen;
        let read = self.engine.with_briefly(&turn, |engine| {
            engine.flush_logs();
            if resync {
                match engine.sync_tasks(probes) {
                    Ok((0, 0)) => {}
                    Ok((added, removed)) => {
                        log::debug!("resync: {added} thread(s) added, {removed} removed")
                    }
                    Err(e) => log::warn!("resyncing the target's threads: {e:#}"),
                }
                *tls_seen = engine.tls_seen(probes);
            }
            Ok(engine.read(probes)?)
        });
        drop(turn);
        match read {
            Ok(counts) => {
                if counts == self.last_counts {
                    self.unchanged_reads += 1;
                } else {
                    self.unchanged_reads = 0;
                }
                self.last_counts = counts;
                self.tick_observers();
                if self.observers.iter().any(|o| o.wants_snapshots()) {
                    let snapshot = self.snapshot(&self.last_counts);
                    for observer in &mut self.observers {
                        if observer.wants_snapshots() {
                            observer.snapshot(&snapshot);
                        }
                    }
                }
            }
            Err(e) => log::warn!("reading counters: {e:#}"),
        }
        None
    }

    /// The observers' tick of the second, with the last counts read.
    fn tick_observers(&mut self) {
        let elapsed = self.info.armed_at.elapsed();
        for observer in &mut self.observers {
            observer.tick(elapsed, &self.last_counts, &self.info);
        }
    }

    /// Runs the window until its deadline, `stop`, or its target going away.
    pub async fn run_until(&mut self, stop: impl Future<Output = ()>) -> WindowStatus {
        let mut tick = interval_at(next_shared_second(), Duration::from_secs(1));
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let deadline = tokio::time::Instant::from_std(self.info.deadline());
        tokio::pin!(stop);
        // A process target's exit wakes the window; a cgroup's removal is asked at each read.
        let exited = self.alive.exited();
        let ask_alive = exited.is_none();
        let mut exited = exited.unwrap_or_else(|| Box::pin(std::future::pending()));
        if !self.alive.is_alive() {
            return WindowStatus::TargetExited;
        }
        loop {
            tokio::select! {
                _ = sleep_until(deadline) => break WindowStatus::Completed,
                _ = &mut stop => break WindowStatus::Interrupted,
                _ = &mut exited => break WindowStatus::TargetExited,
                _ = tick.tick() => {
                    if let Some(status) = self.tick(ask_alive).await {
                        break status;
                    }
                }
            }
        }
    }

    /// Detaches everything, stops the capsules, flushes the exports and returns the summary.
    /// `skip_flush` (a second Ctrl-C, say) cuts the OTLP flush short; detaching and stopping
    /// the capsules always run to their end.
    pub async fn close(
        mut self,
        status: WindowStatus,
        skip_flush: impl Future<Output = ()>,
    ) -> anyhow::Result<WindowSummary> {
        let ended = Instant::now();
        let mut tls = std::mem::take(&mut self.tls_seen);
        let closed = match self.probes.take() {
            Some(probes) => tokio::task::block_in_place(|| {
                if let Ok(seen) = self.engine.with(|e| Ok(e.tls_seen(&probes))) {
                    tls = seen;
                }
                self.engine.close(probes)
            }),
            None => Ok(self.last_counts.clone()),
        };
        // Reports of the capsules that ran, and of those that failed to start.
        let capsule_reports = stop_capsules(self.capsules.take()).await;
        let teardown_ms = ms(ended.elapsed());
        let counts = closed?;
        let mut summary =
            self.info
                .summary(status, ended, teardown_ms, &counts, capsule_reports, tls);
        // A silent 0 would read as "no requests": say what http could not read.
        summary
            .warnings
            .extend(unread::tls_warning(&summary.meta.tls));
        summary.warnings.extend(unread::oom_warning(
            self.info.families.get(&Family::MEM) == Some(&FamilyStatus::Ok),
        ));
        summary.warnings.extend(unread::http2_warning(
            counts.get(recap_common::Counter::Http2Lost),
            counts.get(recap_common::Counter::Http2Desync),
        ));
        summary.warnings.extend(unread::grpc_paths_warning(
            counts.get(recap_common::Counter::GrpcOtherCalls),
            counts.get(recap_common::Counter::GrpcPathsLimit),
        ));
        summary.warnings.extend(unread::http2_joined_warning(
            counts.get(recap_common::Counter::Http2Joined),
            counts.get(recap_common::Counter::Http2Unknown),
        ));
        if self.info.target.contains_recap() {
            summary.warnings.push(
                "recap itself runs in the target cgroup: its own threads are left out of syscalls/proc/cpu, but its sockets (exports, Docker API) count in tcp/net; run recap from another cgroup".into(),
            );
        }
        let flushes: Vec<Flush> = self
            .observers
            .iter_mut()
            .filter_map(|o| o.flush(&summary))
            .collect();
        if !flushes.is_empty() {
            let (cut_short, done): (Vec<String>, Vec<_>) =
                flushes.into_iter().map(|f| (f.cut_short, f.done)).unzip();
            tokio::select! {
                warnings = futures_util::future::join_all(done) => {
                    summary.warnings.extend(warnings.into_iter().flatten());
                }
                _ = skip_flush => summary.warnings.extend(cut_short),
            }
        }
        for observer in &mut self.observers {
            observer.closed(&summary);
        }
        Ok(summary)
    }
}

async fn stop_capsules(capsules: Option<RunningCapsules>) -> Vec<CapsuleReport> {
    match capsules {
        Some(capsules) => capsules::stop_all(capsules).await,
        None => Vec::new(),
    }
}

/// The next whole second of a clock every window of this process shares: windows tick
/// together, so that the runtime wakes once a second for all of them, not once per window
/// (an idle tick is cheap; each wake-up of the runtime is not: with 128 idle windows, one
/// timer each, it was a third of the agent's samples).
fn next_shared_second() -> tokio::time::Instant {
    static EPOCH: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(tokio::time::Instant::now);
    let since = epoch.elapsed();
    epoch + Duration::from_secs(since.as_secs() + 1)
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// 12 hex digits from the kernel's random pool: unique enough to name artifacts and series.
pub fn new_window_id() -> String {
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
