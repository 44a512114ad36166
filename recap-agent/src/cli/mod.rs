//! The `recap` command line: each subcommand owns its arguments and `run`.

pub mod agent;
pub mod capsule_image;
pub mod fleet;
mod selected;
mod signals;
pub mod window;
pub mod windows;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "recap",
    version,
    about = "Time-boxed, cgroup-scoped eBPF windows into a running workload"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// A mistake in the command line found after parsing (exit code 2, like clap's own errors).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

macro_rules! usage {
    ($($arg:tt)*) => { return Err(anyhow::Error::new($crate::cli::UsageError(format!($($arg)*)))) };
}
pub(crate) use usage;

#[derive(Debug, clap::Args)]
pub struct FamiliesArgs {
    /// Only the families on by default, comma-separated (for scripts).
    #[arg(long)]
    pub defaults: bool,
}

/// `recap families`: from `Family::ALL`, the one list of them.
pub fn print_families(args: &FamiliesArgs) -> anyhow::Result<()> {
    use crate::families::Family;
    let defaults = Family::defaults();
    let text = if args.defaults {
        let names: Vec<&str> = defaults.iter().map(|f| f.name()).collect();
        format!("{}\n", names.join(","))
    } else {
        Family::ALL
            .iter()
            .map(|f| {
                let on = if defaults.contains(f) {
                    "on by default"
                } else {
                    "opt-in"
                };
                format!("{:<12} {on}\n", f.name())
            })
            .collect()
    };
    window::print_out(&text)
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Open a time-boxed window on one target, show it live, print what it measured (through
    /// the agent when one runs); or manage the agent's windows (start, list, show, cancel,
    /// wait, watch).
    Window(Box<window::WindowCommand>),
    /// Run the node agent: programs loaded once, windows opened through a local API, kept in
    /// a history, metrics served continuously.
    Agent(Box<agent::AgentArgs>),
    /// Build and import the capsule image (tcpdump, strace, busybox from this host) into the
    /// local Docker engine. Windows with capsules do this themselves when it is missing.
    CapsuleImage(capsule_image::CapsuleImageArgs),
    /// Fleet windows: one window per matching container on every node whose agent is
    /// registered with etcd, one merged answer.
    Fleet(Box<fleet::FleetCommand>),
    /// Print the metric catalogue (Markdown), generated from the exporters' definitions.
    MetricsCatalog,
    /// The probe families `--probes` takes, and which are on by default.
    Families(FamiliesArgs),
}
