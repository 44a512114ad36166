//! The windows an agent runs: admitted by the policy, armed with the same `Window` as the CLI,
//! each then running in a task of its own until its deadline, a cancel or the agent's shutdown;
//! recorded in the history from start to end, watched through a channel of live views.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use tokio::sync::watch;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    api::{self, WindowRecord},
    audit,
    history::{now_s, History},
    policy::{Caller, Policy},
    wire, AgentConfig,
};
use crate::{
    export::prometheus::Published,
    families::raw::RawCounts,
    metrics::Value,
    report::WindowSummary,
    targets::TargetSpec,
    window::{
        live::{announce, render},
        new_window_id, ArmedWindow, SharedEngine, Window, WindowObserver, WindowSpec,
    },
};

/// What a refused or failed request gets: the gRPC code and a message that says what to do.
#[derive(Debug)]
pub enum StartError {
    /// The request is malformed (the same messages `recap window` gives).
    Invalid(String),
    /// The policy says no.
    Refused(String),
    /// It could not be armed (no such target, a kernel refusal, ...).
    Failed(String),
}

/// What a watcher sees: the live lines, then the final record.
#[derive(Clone, Debug, Default)]
pub struct Live {
    pub lines: Vec<String>,
    pub elapsed: Duration,
    /// The counts as numbers, made only while someone watches (building them is not free).
    pub samples: Vec<api::LiveSample>,
    pub ended: Option<WindowRecord>,
}

struct OpenWindow {
    requester: u32,
    cancel: CancellationToken,
    live: watch::Receiver<Live>,
}

#[derive(Default)]
pub struct Counters {
    pub opened: AtomicU64,
    pub refused: AtomicU64,
    pub failed: AtomicU64,
    /// Sum and count of arm latencies (request to counting), in microseconds.
    pub arm_us_sum: AtomicU64,
    pub arm_count: AtomicU64,
}

pub struct Agent {
    engine: SharedEngine,
    history: History,
    policy: Policy,
    published: Published,
    config: AgentConfig,
    open: Mutex<HashMap<String, OpenWindow>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    pub counters: Counters,
}

impl Agent {
    pub fn new(
        engine: SharedEngine,
        history: History,
        policy: Policy,
        published: Published,
        config: AgentConfig,
    ) -> Self {
        Agent {
            engine,
            history,
            policy,
            published,
            config,
            open: Mutex::new(HashMap::new()),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            counters: Counters::default(),
        }
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The policy every request is held to (the fleet side names in a part's claim only the
    /// containers it lets the fleet caller watch).
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The node runtime's CRI socket (`--cri-endpoint` of the agent).
    pub fn cri_endpoint(&self) -> &std::path::Path {
        &self.config.cri_endpoint
    }

    /// Whether `caller` may see others' windows (the policy's `read_all`, or root).
    pub fn may_read_all(&self, caller: &Caller) -> bool {
        self.policy.may_read_all(caller)
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    fn open_windows(&self) -> std::sync::MutexGuard<'_, HashMap<String, OpenWindow>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn open_count(&self) -> usize {
        self.open_windows().len()
    }

    /// The runtime sockets a request makes the agent connect to: the agent's own for callers
    /// other than root (a request naming another is refused), whatever root names.
    fn runtime_endpoints(&self, caller: &Caller, spec: &mut WindowSpec) -> Result<(), String> {
        if let TargetSpec::Pod { cri_endpoint, .. } = &mut spec.target {
            let default = std::path::Path::new(crate::targets::pod::DEFAULT_CRI_ENDPOINT);
            if cri_endpoint == default || *cri_endpoint == self.config.cri_endpoint {
                *cri_endpoint = self.config.cri_endpoint.clone();
            } else if !caller.is_root() {
                return Err(format!(
                    "--cri-endpoint {}: only root may point the agent at another runtime socket than its own ({})",
                    cri_endpoint.display(),
                    self.config.cri_endpoint.display()
                ));
            }
        }
        Ok(())
    }

    /// Checks, arms and starts a window; answers once it counts.
    pub async fn start(
        self: &Arc<Self>,
        caller: Caller,
        request: api::WindowSpec,
    ) -> Result<(String, Vec<String>), StartError> {
        let started = Instant::now();
        // Over its limits: refused before anything of it is copied, rendered or logged.
        if let Err(e) = wire::bounded(&request) {
            audit::log(
                &caller,
                &format!(
                    "start [a request over its limits]: invalid: {}",
                    audit::message(&e)
                ),
            );
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            return Err(StartError::Invalid(e));
        }
        let stored = wire::redacted(&request);
        let command_line = wire::command_line(&stored);
        let request_line = audit::args_line(&command_line);
        // A refusal may repeat a value it could not take: never a secret's.
        let secrets = wire::secret_values(&request);
        let audit = |decision: &str| {
            audit::log(
                &caller,
                &format!(
                    "start {request_line}: {}",
                    audit::message(&audit::scrub(decision, &secrets))
                ),
            )
        };
        // A request turned down before it opens anything: audited and counted.
        let reject = |what: &str, e: StartError| {
            let (StartError::Invalid(m) | StartError::Refused(m) | StartError::Failed(m)) = &e;
            audit(&format!("{what}: {m}"));
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            e
        };
        let wire::Request {
            mut spec,
            artifacts_given,
        } = wire::from_wire(request).map_err(|e| reject("invalid", StartError::Invalid(e)))?;
        self.runtime_endpoints(&caller, &mut spec)
            .map_err(|refusal| reject("refused", StartError::Refused(refusal)))?;
        // The agent's own artifact directory unless root named another: `<artifacts>/<uid>/`
        // for callers other than root, `<artifacts>/` itself for root.
        if !caller.is_root() {
            spec.capsules.artifacts = self.config.artifacts.join(caller.uid.to_string());
        } else if !artifacts_given {
            spec.capsules.artifacts = self.config.artifacts.clone();
        }
        // The caller gets its captures (the agent's environment says nothing about it).
        spec.capsules.owner = (!caller.is_root()).then_some((caller.uid, caller.gid));
        if !caller.is_root() && !spec.capsules.specs.is_empty() {
            if let Err(e) = caller_artifact_dir(&self.config.artifacts, &caller) {
                return Err(StartError::Failed(format!("{e:#}")));
            }
        }
        let own_otlp = spec.export.otlp.is_some();
        // What the caller's earlier captures take on disk: read before taking the lock (it is
        // I/O), and only when the quota can matter (a caller other than root, with capsules).
        let artifacts_used = if caller.is_root() || spec.capsules.specs.is_empty() {
            0
        } else {
            let dir = self.config.artifacts.join(caller.uid.to_string());
            tokio::task::spawn_blocking(move || disk_usage(&dir))
                .await
                .unwrap_or(0)
        };
        let window_id = new_window_id();
        let (live_tx, live_rx) = watch::channel(Live::default());
        let cancel = self.shutdown.child_token();
        // Admission and registration under one lock: two requests cannot both take the last
        // place a limit leaves.
        {
            let mut open = self.open_windows();
            let by_caller = open.values().filter(|w| w.requester == caller.uid).count();
            if self.shutdown.is_cancelled() {
                return Err(StartError::Refused("the agent is shutting down".into()));
            }
            if let Err(refusal) = self.policy.admit(
                &caller,
                &spec,
                artifacts_given,
                artifacts_used,
                by_caller,
                open.len(),
            ) {
                return Err(reject("refused", StartError::Refused(refusal.0)));
            }
            open.insert(
                window_id.clone(),
                OpenWindow {
                    requester: caller.uid,
                    cancel: cancel.clone(),
                    live: live_rx,
                },
            );
        }
        audit(&format!("admitted as window {window_id}"));
        if !own_otlp {
            spec.export.otlp = self.config.otlp.clone();
        }
        let record = WindowRecord {
            window_id: window_id.clone(),
            requester_uid: caller.uid,
            target: describe_spec(&spec.target),
            spec: Some(stored),
            command_line,
            started_unix_s: now_s(),
            status: api::WindowStatus::Open as i32,
            origin: caller.origin.clone().unwrap_or_default(),
            ..Default::default()
        };
        let observers: Vec<Box<dyn WindowObserver>> = vec![
            Box::new(LiveChannel {
                tx: live_tx.clone(),
                duration: spec.duration,
            }),
            Box::new(self.published.clone()),
        ];
        let policy_check = |target: &crate::targets::Target| {
            self.policy
                .admit_target(&caller, target)
                .map_err(|r| anyhow::anyhow!(r.0))
        };
        let armed = Window::arm(
            &spec,
            window_id.clone(),
            self.engine.clone(),
            observers,
            started,
            &policy_check,
        )
        .await;
        let window = match armed {
            Ok(window) => window,
            Err(e) => {
                let message = format!("{e:#}");
                audit(&format!("window {window_id} failed: {message}"));
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                self.open_windows().remove(&window_id);
                return Err(StartError::Failed(message));
            }
        };
        // Recorded once it counts: a request that never armed leaves no window behind (the
        // audit log has it).
        if let Err(e) = self.history.insert_open(&record) {
            log::warn!("recording window {window_id}: {e:#}");
        }
        self.counters.opened.fetch_add(1, Ordering::Relaxed);
        self.counters
            .arm_us_sum
            .fetch_add((window.info.arm_ms * 1000.0) as u64, Ordering::Relaxed);
        self.counters.arm_count.fetch_add(1, Ordering::Relaxed);
        let armed_lines = announce(&window.info);
        let agent = self.clone();
        let id = window_id.clone();
        self.tasks
            .spawn(async move { agent.run_window(id, window, cancel, live_tx).await });
        Ok((window_id, armed_lines))
    }

    async fn run_window(
        self: Arc<Self>,
        window_id: String,
        mut window: Window,
        cancel: CancellationToken,
        live: watch::Sender<Live>,
    ) {
        let status = window.run_until(cancel.cancelled()).await;
        let (status, summary, error) = match window.close(status, std::future::pending()).await {
            Ok(summary) => {
                let json = serde_json::to_string(&summary).unwrap_or_default();
                (
                    summary.meta.status.name().to_string(),
                    Some((summary, json)),
                    String::new(),
                )
            }
            Err(e) => ("failed".to_string(), None, format!("{e:#}")),
        };
        let artifacts: Vec<String> = summary
            .as_ref()
            .map(|(s, _)| s.meta.capsules.iter().map(|c| c.artifact.clone()).collect())
            .unwrap_or_default();
        let json = summary.as_ref().map(|(_, j)| j.as_str()).unwrap_or("");
        if let Err(e) = self
            .history
            .finish(&window_id, &status, json, &artifacts, &error)
        {
            log::warn!("recording the end of window {window_id}: {e:#}");
        }
        self.end_live(&window_id, &live);
        self.open_windows().remove(&window_id);
        // The final values stay on /metrics for a scrape or two, then the series go.
        let published = self.published.clone();
        let linger = self.config.series_linger;
        tokio::spawn(async move {
            tokio::time::sleep(linger).await;
            published.remove(&window_id);
        });
    }

    fn end_live(&self, window_id: &str, live: &watch::Sender<Live>) {
        let record = self
            .history
            .get(window_id)
            .ok()
            .flatten()
            .unwrap_or_default();
        live.send_modify(|l| l.ended = Some(record));
    }

    /// A window's record (open or ended).
    pub fn get(&self, window_id: &str) -> Option<WindowRecord> {
        self.history.get(window_id).ok().flatten()
    }

    /// The live channel of an open window, if it is open.
    pub fn watch(&self, window_id: &str) -> Option<watch::Receiver<Live>> {
        self.open_windows().get(window_id).map(|w| w.live.clone())
    }

    /// Ends a window early. Only its requester or root may.
    pub fn cancel(&self, caller: &Caller, window_id: &str) -> Result<(), StartError> {
        let open = self.open_windows();
        let not_open = || {
            StartError::Invalid(format!(
                "window {window_id} is not open; `recap window list` shows the windows"
            ))
        };
        let Some(w) = open.get(window_id) else {
            return Err(not_open());
        };
        if !caller.is_root() && w.requester != caller.uid {
            // Whose it is, only to those who may see others' windows anyway.
            return Err(if self.policy.may_read_all(caller) {
                StartError::Refused(format!(
                    "window {window_id} belongs to uid {}; only it or root may cancel it",
                    w.requester
                ))
            } else {
                not_open()
            });
        }
        audit::log(caller, &format!("cancels window {window_id}"));
        w.cancel.cancel();
        Ok(())
    }

    /// Ends every window and waits until each has stored its summary.
    pub async fn shut_down(&self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    pub fn prune(&self) {
        match self
            .history
            .prune(self.config.retention_age, self.config.retention_count)
        {
            Ok(0) => {}
            Ok(n) => log::info!("pruned {n} old window(s) and their artifacts"),
            Err(e) => log::warn!("pruning the window history: {e:#}"),
        }
    }

    pub fn unload(&self) {
        self.engine.unload();
    }
}

/// `<artifacts>/<uid>/`, where the caller's windows' directories are made: root's, 0711, like
/// `<artifacts>` itself. The caller can reach its windows' directories (handed to it when their
/// capsules end) but cannot rename anything in the directories the agent writes into: the
/// engine bind-mounts a window's directory by path.
fn caller_artifact_dir(base: &std::path::Path, caller: &Caller) -> anyhow::Result<()> {
    let base = crate::capsule::artifacts::SafeDir::open_trusted(base, 0o711)?;
    // Callers pass through it whatever the umask made of it.
    base.make_private(0o711)?;
    base.reclaim_child(&caller.uid.to_string(), 0o711)?;
    Ok(())
}

/// Bytes of the caller's captures: the files of each window directory in `dir`
/// (`<artifacts>/<uid>/<window-id>/<file>`), two levels and no more, nothing followed (the
/// caller owns its window directories once handed over and may put anything there), at most
/// `MAX_ENTRIES` entries looked at.
fn disk_usage(dir: &std::path::Path) -> u64 {
    const MAX_ENTRIES: usize = 100_000;
    let Ok(windows) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut seen = 0;
    let mut total = 0;
    // `dir` is root's and closed to others, so a window directory's entry cannot be swapped;
    // inside one, entries are only lstat'ed.
    for window in windows.filter_map(Result::ok) {
        if !window.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let Ok(files) = std::fs::read_dir(window.path()) else {
            continue;
        };
        for file in files.filter_map(Result::ok) {
            seen += 1;
            if seen > MAX_ENTRIES {
                return total;
            }
            if let Ok(meta) = file.metadata() {
                if meta.is_file() {
                    total += meta.len();
                }
            }
        }
    }
    total
}

fn describe_spec(target: &TargetSpec) -> String {
    match target {
        TargetSpec::Cgroup { path } => format!("cgroup {}", path.display()),
        TargetSpec::Pid { pid } => format!("pid {pid}"),
        TargetSpec::Container { name_or_id } => format!("container {name_or_id}"),
        TargetSpec::Pod {
            namespace, name, ..
        } => format!("pod {namespace}/{name}"),
    }
}

/// Feeds `recap window watch`: the live lines each second.
struct LiveChannel {
    tx: watch::Sender<Live>,
    duration: Duration,
}

impl LiveChannel {
    /// A watcher holds a receiver of its own (the agent keeps one per open window).
    fn watched(&self) -> bool {
        self.tx.receiver_count() > 1
    }
}

impl WindowObserver for LiveChannel {
    fn tick(&mut self, elapsed: Duration, counts: &RawCounts, window: &ArmedWindow) {
        // Lines only while someone watches or waits (the agent keeps one receiver per open
        // window): rendering and waking for every window every second was part of what idle
        // windows cost the agent. Unwatched, the elapsed time is kept without a wake-up; a new
        // watcher sees the lines from the next tick.
        if !self.watched() {
            self.tx.send_if_modified(|l| {
                l.elapsed = elapsed;
                false
            });
            return;
        }
        let lines = render(elapsed, self.duration, counts, &window.families);
        self.tx.send_modify(|l| {
            l.lines = lines;
            l.elapsed = elapsed;
        });
    }

    fn wants_snapshots(&self) -> bool {
        self.watched()
    }

    /// Someone watching sees every second's counts, idle window or not.
    fn due(&self) -> bool {
        self.watched()
    }

    fn snapshot(&mut self, summary: &WindowSummary) {
        let samples = live_samples(summary);
        self.tx.send_modify(|l| l.samples = samples);
    }
}

/// A summary's samples as the live view carries them: one number each (a histogram as its
/// count and its sum, `.count` and `.sum` after its name).
fn live_samples(summary: &WindowSummary) -> Vec<api::LiveSample> {
    let mut out = Vec::new();
    for s in crate::export::catalog::samples(summary) {
        let attributes: Vec<api::KeyValue> = s
            .attrs
            .iter()
            .map(|(a, v)| api::KeyValue {
                key: a.otel.to_string(),
                value: v.clone(),
            })
            .collect();
        let mut push = |metric: String, value: f64| {
            out.push(api::LiveSample {
                metric,
                attributes: attributes.clone(),
                value,
            })
        };
        match s.value {
            Value::Count(n) => push(s.def.otel.to_string(), n as f64),
            Value::Seconds(x) => push(s.def.otel.to_string(), x),
            Value::Histogram { count, sum_s, .. } => {
                push(format!("{}.count", s.def.otel), count as f64);
                push(format!("{}.sum", s.def.otel), sum_s);
            }
        }
    }
    out
}
