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
}
