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

/// `args` without the options `valued` (each with its value, as `--opt v` or `--opt=v`) and
/// the flags `flags`: how a command hands its own arguments on without the ones that were
/// only for it.
fn args_without(args: &[String], valued: &[&str], flags: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut args = args.iter();
    while let Some(a) = args.next() {
        if valued.contains(&a.as_str()) {
            args.next();
            continue;
        }
        let named = a.split_once('=').map_or(a.as_str(), |(name, _)| name);
        if flags.contains(&a.as_str()) || (named != a && valued.contains(&named)) {
            continue;
        }
        out.push(a.clone());
    }
    out
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
}

#[cfg(test)]
mod tests {
    #[test]
    fn options_are_dropped_with_their_values_and_nothing_else() {
        let args: Vec<String> = [
            "--selector",
            "app=web",
            "-d",
            "5s",
            "--selector=tier=x",
            "--selectorx",
            "--local",
            "--tcp",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            super::args_without(&args, &["--selector"], &["--local"]),
            ["-d", "5s", "--selectorx", "--tcp"]
        );
    }
}
