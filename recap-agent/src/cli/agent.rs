//! `recap agent`: run the node agent in the foreground (deploy/recap-agent.service runs it
//! under systemd).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Args;

use super::units::parse_duration;
use crate::{
    agent::{self, AgentConfig, DEFAULT_SOCKET},
    export::prometheus,
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
}

pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    agent::run(AgentConfig {
        socket: args.socket,
        socket_group: args.socket_group,
        state_dir: args.state_dir,
        artifacts: args.artifacts,
        policy: args.policy,
        prometheus: args.prometheus,
        series_linger: args.series_linger,
        retention_age: args.keep_for,
        retention_count: args.keep_count,
    })
    .await
}
