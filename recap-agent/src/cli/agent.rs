//! `recap agent`: run the node agent in the foreground (deploy/recap-agent.service runs it
//! under systemd).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Args;

use crate::text::units::parse_duration;
use crate::{
    agent::{self, AgentConfig, DEFAULT_SOCKET},
    export::{otlp, prometheus},
};

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The API socket (gRPC over a Unix socket, mode 0660).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET, env = "RECAP_SOCKET")]
    pub socket: PathBuf,
    /// The group whose members may use the socket (a name or a gid).
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,
    /// Where the window history (SQLite) is kept.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/recap")]
    pub state_dir: PathBuf,
    /// Where capsules of callers other than root write (`<DIR>/<uid>/<window-id>/`).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/recap/artifacts")]
    pub artifacts: PathBuf,
    /// Who may open what (TOML); without the file, only root may open windows.
    #[arg(long, value_name = "FILE", default_value = "/etc/recap/policy.toml")]
    pub policy: PathBuf,
    /// The container runtime's CRI socket for pod windows. Only root's requests may name
    /// another (`--cri-endpoint` in a request): the agent connects wherever it is told.
    #[arg(long, value_name = "PATH", default_value = crate::targets::pod::DEFAULT_CRI_ENDPOINT)]
    pub cri_endpoint: PathBuf,
    /// Serve every open window's series and the agent's own at ADDR/metrics (`9464` and
    /// `:9464` mean 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR", value_parser = prometheus::parse_addr)]
    pub prometheus: Option<SocketAddr>,
    /// How long an ended window's series stay on /metrics (at least one scrape interval).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub series_linger: Duration,
    /// Windows older than this are forgotten, their artifacts removed.
    #[arg(long, default_value = "168h", value_parser = parse_duration)]
    pub keep_for: Duration,
    /// At most this many windows are kept in the history.
    #[arg(long, default_value_t = 10_000)]
    pub keep_count: u32,
    /// Detach the scheduler and process hooks when no window needs them. By default they stay
    /// attached once a window used them (a few ns per context switch, exec, fork and exit on
    /// the host) so that a window arms in about a millisecond; the per-syscall hook of
    /// `syscalls` is always detached with its last window.
    #[arg(long)]
    pub detach_idle_hooks: bool,
    /// Send every window's metrics and start/end logs over OTLP, unless its request names an
    /// endpoint of its own (default from OTEL_EXPORTER_OTLP_ENDPOINT; the other OTEL_*
    /// variables apply as for `recap window`).
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// grpc or http/protobuf (default from OTEL_EXPORTER_OTLP_PROTOCOL, else grpc).
    #[arg(long, value_name = "PROTOCOL")]
    pub otlp_protocol: Option<otlp::Protocol>,
    /// Take part in fleet windows as this node (needs --etcd): registered while the agent
    /// runs, it opens its part of every request (`recap fleet window`).
    #[arg(long, value_name = "NAME", requires = "etcd")]
    pub node: Option<String>,
    /// Only containers carrying these labels are this node's in fleet windows (KEY=VALUE,...;
    /// for agents that share one Docker engine, as in tests).
    #[arg(long, value_name = "KEY=VALUE,...", requires = "node")]
    pub fleet_scope: Option<crate::fleet::Selector>,
    /// The uid the policy sees as the caller of fleet windows (root: only the agent's limits
    /// apply; give a uid of its own and a rule for it to restrict them).
    #[arg(long, value_name = "UID", default_value_t = 0)]
    pub fleet_uid: u32,
    /// Fleet windows one etcd user may hold open on this node at once (every fleet part runs
    /// as --fleet-uid, whose policy rule applies as well: give it room for several users).
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub fleet_user_max_windows: usize,
    /// Fleet requests of one etcd user this node takes per minute; more are refused.
    #[arg(long, value_name = "N", default_value_t = 30)]
    pub fleet_user_requests_per_minute: usize,
    #[command(flatten)]
    pub etcd: super::fleet::EtcdArgs,
}

pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let otlp = otlp::config(args.otlp_endpoint, args.otlp_protocol, &[], &[], |k| {
        std::env::var(k).ok()
    })
    .map_err(|e| anyhow::Error::new(super::UsageError(e)))?;
    let fleet = match &args.node {
        Some(node) => {
            if node.is_empty() || node.contains('/') || node.len() > 128 {
                super::usage!("--node: a name of 1 to 128 characters without `/`");
            }
            if args.fleet_user_max_windows == 0 || args.fleet_user_requests_per_minute == 0 {
                super::usage!(
                    "--fleet-user-max-windows and --fleet-user-requests-per-minute must be at least 1"
                );
            }
            let etcd = args.etcd.config()?;
            // Before anything is loaded: a mistake here is the command line's.
            if let Err(e) = crate::fleet::etcd::Etcd::check(&etcd) {
                super::usage!("{e:#}");
            }
            Some(agent::FleetConfig {
                node: node.clone(),
                etcd,
                uid: args.fleet_uid,
                scope: args.fleet_scope.clone(),
                user_limits: crate::fleet::limits::UserLimits {
                    max_windows: args.fleet_user_max_windows,
                    requests_per_minute: args.fleet_user_requests_per_minute,
                },
                allow_no_auth: args.etcd.etcd_allow_no_auth,
            })
        }
        None => None,
    };
    agent::run(AgentConfig {
        fleet,
        otlp,
        detach_idle_hooks: args.detach_idle_hooks,
        socket: args.socket,
        socket_group: args.socket_group,
        state_dir: args.state_dir,
        artifacts: args.artifacts,
        policy: args.policy,
        cri_endpoint: args.cri_endpoint,
        prometheus: args.prometheus,
        series_linger: args.series_linger,
        retention_age: args.keep_for,
        retention_count: args.keep_count,
    })
    .await
}
