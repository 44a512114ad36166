//! `recap agent`: the node agent. It loads the probe programs once and keeps them, opens windows
//! on request over a gRPC API on a Unix socket (`api`, from `proto/recap/v1/agent.proto`), runs
//! each with the same `Window` as `recap window`, keeps every window in a history (`history`),
//! serves `/metrics` continuously (every open window's series plus its own), and decides who
//! may open what (`policy`), identifying callers by the socket's peer credentials.
//!
//! - `service`: the API's handlers;
//! - `windows`: the windows the agent runs (start, the run task, cancel, watch);
//! - `self_metrics`: windows opened/open/refused, arm latency, the probes' run time in the
//!   kernel (BPF stats);
//! - `client`: the CLI's side of the socket;
//! - `fleet_node`: the agent's side of fleet windows (its part of each request, opened through
//!   `windows`).

pub(crate) mod audit;
pub mod client;
mod describe;
pub mod fleet_node;
pub mod history;
pub mod policy;
mod self_metrics;
mod service;
pub mod windows;
pub mod wire;

/// The generated gRPC types and services.
pub mod api {
    // A watch event is a live view or the final record, one at a time: not worth a box.
    #![allow(clippy::large_enum_variant)]
    tonic::include_proto!("recap.v1");
}

use std::{
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use tokio::{
    net::UnixListener,
    signal::unix::{signal, SignalKind},
};

use crate::{
    export::prometheus::{self, Published},
    limits::{self, Gate, Limits},
    probes::ProbeEngine,
    window::SharedEngine,
};

/// Where `recap agent` listens unless told otherwise, and where the CLI looks for it.
pub const DEFAULT_SOCKET: &str = "/run/recap/recap.sock";

#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub socket: PathBuf,
    /// The group that may use the socket (mode 0660); root's group if none.
    pub socket_group: Option<String>,
    pub state_dir: PathBuf,
    /// Where capsules of callers other than root write (`<dir>/<uid>/<window-id>/`).
    pub artifacts: PathBuf,
    pub policy: PathBuf,
    /// The CRI socket pod windows use (root's requests may name another).
    pub cri_endpoint: PathBuf,
    pub prometheus: Option<SocketAddr>,
    /// How long an ended window's series stay on `/metrics` (one scrape interval or more).
    pub series_linger: Duration,
    pub retention_age: Duration,
    pub retention_count: u32,
    /// Detach the scheduler and process hooks when no window needs them (slower arming).
    pub detach_idle_hooks: bool,
    /// Where windows without an OTLP endpoint of their own send theirs.
    pub otlp: Option<crate::export::otlp::OtlpConfig>,
    /// Taking part in fleet windows.
    pub fleet: Option<FleetConfig>,
}

#[derive(Clone, Debug)]
pub struct FleetConfig {
    pub node: String,
    pub etcd: crate::fleet::etcd::EtcdConfig,
    /// The caller the policy sees for fleet parts.
    pub uid: u32,
    /// Labels every container of this node carries (added to every request's selector).
    pub scope: Option<crate::fleet::Selector>,
    /// Per etcd user, on this node: windows open at once, requests per minute.
    pub user_limits: crate::fleet::limits::UserLimits,
    /// Take fleet requests even when etcd's auth is off.
    pub allow_no_auth: bool,
}

/// Runs the agent until SIGTERM, SIGINT or SIGHUP: then every open window ends (`interrupted`, summary
/// stored, exports flushed, capsules removed), the programs are unloaded, and it returns.
pub async fn run(config: AgentConfig) -> anyhow::Result<()> {
    // Callers pass through the state directory to their artifacts when those live below it.
    let artifacts = std::path::absolute(&config.artifacts).unwrap_or(config.artifacts.clone());
    let state = std::path::absolute(&config.state_dir).unwrap_or(config.state_dir.clone());
    let state_mode = if artifacts.starts_with(&state) {
        0o711
    } else {
        0o700
    };
    let history = history::History::open_with_mode(&config.state_dir, state_mode)?;
    let lost = history.mark_lost()?;
    if !lost.is_empty() {
        log::warn!(
            "{} window(s) were open when the previous agent stopped; marked lost: {}",
            lost.len(),
            lost.join(", ")
        );
    }
    let policy = policy::Policy::load(&config.policy)?;
    let listener = bind_socket(&config.socket, config.socket_group.as_deref())?;
    let mut engine =
        tokio::task::block_in_place(|| ProbeEngine::load(recap_common::MAX_WINDOWS - 1))
            .context("loading the probes")?;
    engine.keep_idle_hooks(!config.detach_idle_hooks);
    // Loading read the kernel's BTF (megabytes) into buffers that are free now: hand the
    // memory back, or a long-lived agent keeps it as resident for its whole life.
    // SAFETY: malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
    // Capsules that a killed agent left behind.
    if let Ok(docker) = crate::docker::connect().await {
        if let Err(e) = crate::capsule::reaper::reap_orphans(&docker).await {
            log::warn!("looking for orphan capsules: {e:#}");
        }
    }
    let stats = self_metrics::BpfStats::enable();
    let published = Published::default();
    let agent = Arc::new(windows::Agent::new(
        SharedEngine::loaded(engine),
        history,
        policy,
        published.clone(),
        config.clone(),
    ));
    let endpoint = match config.prometheus {
        Some(addr) => Some(
            prometheus::Endpoint::bind_with(
                addr,
                published,
                vec![Arc::new(self_metrics::AgentCollector::new(
                    agent.clone(),
                    stats,
                ))],
            )
            .await?,
        ),
        None => None,
    };
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let shutdown = agent.shutdown_token();
    // Every connection is capped, timed and pinged (crate::limits): no local user can hold
    // the agent's descriptors or its attention, and root always has a way in.
    let incoming = limits::unix_incoming(listener, Gate::new("the API socket", Limits::API));
    let (ping_every, ping_answer) = limits::API_KEEPALIVE;
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(ping_every))
        .http2_keepalive_timeout(Some(ping_answer))
        // `--selector` waits on one window per container over one connection, and its cancel
        // on Ctrl-C must not queue behind them.
        .max_concurrent_streams(Some(2 * policy::MAX_WINDOWS_TOTAL as u32 + 16))
        .add_service(api::agent_server::AgentServer::new(service::Service::new(
            agent.clone(),
        )))
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned());
    eprintln!(
        "recap: agent listening on {}{}",
        config.socket.display(),
        endpoint
            .as_ref()
            .map(|e| format!(", metrics at http://{}/metrics", e.addr))
            .unwrap_or_default()
    );
    let pruner = tokio::spawn(prune_now_and_hourly(agent.clone()));
    let fleet = match &config.fleet {
        Some(fleet) => Some(start_fleet(fleet, agent.clone()).await?),
        None => None,
    };
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => result.context("serving the API")?,
        _ = term.recv() => log::info!("SIGTERM: ending every open window"),
        _ = int.recv() => log::info!("SIGINT: ending every open window"),
        _ = hup.recv() => log::info!("SIGHUP: ending every open window"),
    }
    pruner.abort();
    agent.shut_down().await;
    if let Some(fleet) = fleet {
        // Parts whose windows just ended publish their results (for a moment at most: etcd may
        // be away, and the next agent reports such parts as lost).
        let _ = tokio::time::timeout(Duration::from_secs(2), fleet).await;
    }
    // Let the server answer the waits and watches that the shutdown just ended.
    let _ = tokio::time::timeout(Duration::from_millis(500), server).await;
    let _ = std::fs::remove_file(&config.socket);
    drop(endpoint);
    agent.unload();
    eprintln!("recap: agent stopped");
    Ok(())
}

/// Serves fleet requests until the agent shuts down: options are checked now (a mistake stops
/// the agent), etcd is connected in the background (an etcd that is not up yet is waited for,
/// the agent's local windows run meanwhile).
async fn start_fleet(
    fleet: &FleetConfig,
    agent: Arc<windows::Agent>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    crate::fleet::etcd::Etcd::check(&fleet.etcd)?;
    eprintln!(
        "recap: fleet node {} (etcd {})",
        fleet.node,
        fleet.etcd.endpoints.join(",")
    );
    let fleet = fleet.clone();
    let stop = agent.shutdown_token();
    Ok(tokio::spawn(async move {
        let mut delay = Duration::from_millis(500);
        let coordinator = loop {
            match crate::fleet::etcd::Etcd::connect(&fleet.etcd).await {
                Ok(c) => break c,
                Err(e) => log::warn!("fleet: {e:#}; trying again in {delay:?}"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        };
        let coordinator = Arc::new(coordinator);
        let rejoining = coordinator.clone();
        let rejoin_stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = rejoin_stop.cancelled() => {}
                _ = rejoining.rejoin_members() => {}
            }
        });
        let node = Arc::new(fleet_node::FleetNode {
            node: fleet.node.clone(),
            coordinator,
            stop,
            parts: tokio_util::task::TaskTracker::new(),
            scope: fleet.scope.clone(),
            agent,
            caller: policy::Caller {
                uid: fleet.uid,
                gid: fleet.uid,
                pid: None,
                origin: None,
                groups: None,
            },
            limits: crate::fleet::limits::UserLedger::new(fleet.user_limits),
            allow_no_auth: fleet.allow_no_auth,
            auth: Default::default(),
        });
        node.run().await;
    }))
}

async fn prune_now_and_hourly(agent: Arc<windows::Agent>) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        every.tick().await;
        agent.prune();
    }
}

/// Binds the API socket: its directory made if needed, a stale socket (no agent answers on it)
/// replaced, mode 0660 with the configured group.
fn bind_socket(path: &Path, group: Option<&str>) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        // The socket's mode and group are set by path: nobody else may be able to plant a link
        // there.
        crate::capsule::artifacts::SafeDir::open_trusted(dir, 0o755)
            .with_context(|| format!("the socket directory {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "an agent already listens on {}; stop it first, or give another --socket",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale socket {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    if let Some(group) = group {
        let gid = group_id(group)?;
        std::os::unix::fs::chown(path, None, Some(gid))
            .with_context(|| format!("giving {} to group {group}", path.display()))?;
    }
    Ok(listener)
}

/// A group by name or number, from /etc/group.
fn group_id(group: &str) -> anyhow::Result<u32> {
    if let Ok(gid) = group.parse() {
        return Ok(gid);
    }
    let groups = std::fs::read_to_string("/etc/group").context("reading /etc/group")?;
    groups
        .lines()
        .find_map(|l| {
            let mut fields = l.split(':');
            (fields.next() == Some(group))
                .then(|| fields.nth(1)?.parse().ok())
                .flatten()
        })
        .ok_or_else(|| anyhow::anyhow!("no group `{group}` in /etc/group (--socket-group)"))
}
