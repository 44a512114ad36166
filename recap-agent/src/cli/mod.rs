//! The `recap` command line: each subcommand owns its arguments and `run`.

pub mod duration;
pub mod window;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "recap", version, about = "Time-boxed, cgroup-scoped eBPF windows into a running workload")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Open a time-boxed window on one target, show it live, print what it measured.
    Window(window::WindowArgs),
}
