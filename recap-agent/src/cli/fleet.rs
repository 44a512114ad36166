//! `recap fleet`: windows on every instance of a service across nodes, through the node
//! agents registered with etcd (`recap agent --node NAME --etcd URL...`).

use std::{path::PathBuf, time::Duration};

use clap::{Args, Subcommand};

use super::{usage, window::Output};
use crate::fleet::{
    client::{run_fleet_window, FleetWindowSpec},
    etcd::{Etcd, EtcdConfig},
    Coordinator, FleetWindow, Selector,
};
use crate::text::units::{format_duration, parse_duration};

/// How to reach etcd; shared by `recap agent` and `recap fleet`.
#[derive(Debug, Args, Clone)]
pub struct EtcdArgs {
    /// etcd's client endpoints, comma-separated (http://... or https://...).
    #[arg(
        long,
        value_name = "URL,...",
        value_delimiter = ',',
        env = "RECAP_ETCD"
    )]
    pub etcd: Vec<String>,
    /// Where RECap's keys live.
    #[arg(long, value_name = "PREFIX", default_value = "/recap/")]
    pub etcd_prefix: String,
    /// The etcd user (its password from RECAP_ETCD_PASSWORD or --etcd-password-file).
    #[arg(long, value_name = "USER", env = "RECAP_ETCD_USER")]
    pub etcd_user: Option<String>,
    #[arg(long, value_name = "FILE")]
    pub etcd_password_file: Option<PathBuf>,
    /// CA certificate(s) that signed etcd's server certificates (turns TLS on).
    #[arg(long, value_name = "FILE")]
    pub etcd_ca: Option<PathBuf>,
    /// Client certificate and key, for an etcd that asks for one.
    #[arg(long, value_name = "FILE", requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,
    #[arg(long, value_name = "FILE", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
    /// Go on when etcd's auth is off (by default an agent refuses fleet requests and `recap
    /// fleet window` refuses to run: without auth anyone who reaches etcd can request windows
    /// on every node and forge results).
    #[arg(long)]
    pub etcd_allow_no_auth: bool,
    /// A node's registration lasts this long after its agent stops renewing it.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub etcd_lease_ttl: Duration,
}

impl EtcdArgs {
    pub fn config(&self) -> anyhow::Result<EtcdConfig> {
        let user = match &self.etcd_user {
            None => None,
            Some(user) => {
                let password = match (&self.etcd_password_file, std::env::var("RECAP_ETCD_PASSWORD")) {
                    (Some(file), _) => std::fs::read_to_string(file)
                        .map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))?
                        .trim_end_matches(['\n', '\r'])
                        .to_string(),
                    (None, Ok(p)) => p,
                    (None, Err(_)) => usage!(
                        "--etcd-user {user}: give its password in RECAP_ETCD_PASSWORD or --etcd-password-file"
                    ),
                };
                Some((user.clone(), password))
            }
        };
        Ok(EtcdConfig {
            endpoints: self.etcd.clone(),
            prefix: self.etcd_prefix.clone(),
            user,
            ca: self.etcd_ca.clone(),
            cert: self.etcd_cert.clone(),
            key: self.etcd_key.clone(),
            lease_ttl: self.etcd_lease_ttl,
        })
    }
}

#[derive(Debug, Args)]
pub struct FleetCommand {
    #[command(subcommand)]
    pub action: FleetAction,
}

#[derive(Debug, Subcommand)]
pub enum FleetAction {
    /// Open a window on every container matching --selector on every registered node, follow
    /// the nodes, print one merged summary (totals, per node, per target).
    Window(Box<FleetWindowArgs>),
    /// List the nodes whose agents are registered.
    Nodes(EtcdOnly),
}

#[derive(Debug, Args)]
pub struct EtcdOnly {
    #[command(flatten)]
    pub etcd: EtcdArgs,
}

#[derive(Debug, Args)]
pub struct FleetWindowArgs {
    /// Containers whose labels hold every KEY=VALUE (Docker labels).
    #[arg(long, value_name = "KEY=VALUE,...")]
    pub selector: Selector,
    /// How long the windows stay open; they end at the same moment on every node.
    #[arg(long, short = 'd', default_value = "30s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub duration: Duration,
    /// Probe families (as for `recap window`).
    #[arg(long, value_delimiter = ',', value_name = "FAMILIES")]
    pub probes: Vec<String>,
    /// A capsule per target (as for `recap window`).
    #[arg(long, value_name = "TOOL[=ARGS]", value_parser = clap::value_parser!(crate::capsule::CapsuleSpec))]
    pub capsule: Vec<crate::capsule::CapsuleSpec>,
    /// Each capsule stops when its artifact reaches this size.
    #[arg(long, value_name = "SIZE", value_parser = crate::text::units::parse_size)]
    pub capsule_max_size: Option<u64>,
    /// Not for fleet windows (hidden): its value would be stored in clear in etcd. Taken only
    /// to say so.
    #[arg(long, value_name = "KEY=VALUE", hide = true)]
    pub otlp_header: Vec<String>,
    /// Give up on a node that has not claimed its part this long after the request.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub claim_timeout: Duration,
    /// Wait this long past the deadline for the nodes' results.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub result_grace: Duration,
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(flatten)]
    pub etcd: EtcdArgs,
}

pub async fn run(command: FleetCommand) -> anyhow::Result<()> {
    match command.action {
        FleetAction::Nodes(args) => {
            let etcd = Etcd::connect(&args.etcd.config()?).await?;
            for node in etcd.nodes().await? {
                println!("{node}");
            }
            Ok(())
        }
        FleetAction::Window(args) => {
            let args = *args;
            if args.duration.is_zero() {
                usage!("--duration must be more than 0 (e.g. --duration 30s)");
            }
            if args.duration > Duration::from_secs(3600) {
                usage!(
                    "--duration {} is over the maximum 1h",
                    format_duration(args.duration)
                );
            }
            if !args.otlp_header.is_empty() {
                usage!(
                    "--otlp-header cannot be used in a fleet window: its value would be stored in clear in etcd, readable by every agent; set OTLP headers on the nodes (OTEL_EXPORTER_OTLP_HEADERS in the agent's environment)"
                );
            }
            let window = FleetWindow {
                families: if args.probes.is_empty() {
                    Vec::new()
                } else {
                    super::window::parse_families(&args.probes)?
                },
                capsules: args.capsule,
                capsule_max_bytes: args.capsule_max_size.unwrap_or(0),
            };
            // Checked here as every agent will check it, so that a mistake is said once rather
            // than by every node (the target stands in for each node's).
            let probe = crate::agent::wire::fleet_part(
                &window,
                Some(&crate::targets::TargetSpec::Container {
                    name_or_id: "each".into(),
                }),
                args.duration,
            );
            if let Err(e) = crate::agent::wire::from_wire(probe) {
                usage!("{e}");
            }
            let etcd = Etcd::connect(&args.etcd.config()?).await?;
            // Without auth, anyone who reaches etcd could have written the results read back.
            if !etcd.auth_on().await? && !args.etcd.etcd_allow_no_auth {
                anyhow::bail!(
                    "etcd's auth is off: anyone who reaches etcd could request windows on every node and forge the results this would print; turn auth on (users and roles as the README says), or pass --etcd-allow-no-auth to go on anyway"
                );
            }
            let spec = FleetWindowSpec {
                selector: args.selector,
                duration: args.duration,
                window,
                claim_timeout: args.claim_timeout,
                result_grace: args.result_grace,
            };
            let outcome = run_fleet_window(&etcd, etcd.user(), spec).await?;
            match args.output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&outcome.to_json())?),
                Output::Table => print!("{}", outcome.table()),
            }
            if !outcome.succeeded() {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
