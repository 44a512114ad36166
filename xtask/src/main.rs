//! `cargo xtask`: what is not a plain build — machine setup, the demo, the privileged tests,
//! and benchmarks.

mod bench;
mod bench_agent;
mod bench_http;
mod bench_uprobe;
mod demo;
mod docker;
mod run;
mod setup;
mod test;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building and testing need (Debian packages, the pinned nightly with
    /// rust-src, bpf-linker). Quick when everything is there.
    Setup,
    /// Build and import the capsule image (tcpdump, strace, busybox) into the local engine,
    /// starting the engine if none answers.
    CapsuleImages,
    /// Set up, build, and open 10 s windows on known workloads: one in a cgroup of its own, one
    /// in a Docker container with tcpdump and strace capsules.
    Demo(demo::DemoArgs),
    /// Set up, then run the unit tests and the privileged integration tests.
    Test(test::TestArgs),
    /// Measure arming/teardown time and the cost of open windows to processes outside them.
    Bench(bench::BenchArgs),
    /// The whole kill storm: windows (some with capsules) SIGKILLed at random moments, then
    /// nothing may be left and the next window must be exact (CI runs 12 of them).
    Storm(test::StormArgs),
    /// Consecutive windows on a busy target through one agent: every one exact, the agent's
    /// memory flat (60 one-minute windows by default).
    Soak(test::SoakArgs),
}

fn main() -> std::process::ExitCode {
    bench_uprobe::child_if_asked();
    let result = match Cli::parse().command {
        Cmd::Setup => setup::run(),
        Cmd::CapsuleImages => docker::capsule_images(),
        Cmd::Demo(args) => demo::run(args),
        Cmd::Test(args) => test::run(args),
        Cmd::Bench(args) => bench::run(args),
        Cmd::Storm(args) => test::storm(args),
        Cmd::Soak(args) => test::soak(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
