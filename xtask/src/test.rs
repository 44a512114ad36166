//! `cargo xtask test`: `cargo fmt --check` and clippy with warnings denied, unit tests (no root
//! needed), then the privileged integration tests, one at a time, since each asserts that
//! nothing of ours is loaded when it ends.

use clap::Args;

use crate::{
    run::{cargo, require_root, status},
    setup,
};

#[derive(Args)]
pub struct TestArgs {
    /// Only integration tests whose name contains this.
    filter: Option<String>,
}

pub fn run(args: TestArgs) -> anyhow::Result<()> {
    setup::run()?;
    require_root("the integration tests")?;
    if args.filter.is_none() {
        // The gates: formatting, lints of the user-space crates, and of the eBPF crate with its
        // own toolchain and target (it builds for nothing else).
        status(cargo().args(["fmt", "--all", "--check"]))?;
        status(cargo().args([
            "clippy",
            "--quiet",
            "-p",
            "recap-common",
            "-p",
            "recap-agent",
            "-p",
            "recap-tests",
            "-p",
            "xtask",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
        status(
            // The rustup proxy, not $CARGO (this toolchain's cargo knows no `+toolchain`).
            std::process::Command::new("cargo")
                .current_dir(crate::run::workspace().join("recap-ebpf"))
                .env_remove("RUSTC")
                .env_remove("RUSTUP_TOOLCHAIN")
                .args([
                    &format!("+{}", setup::EBPF_TOOLCHAIN),
                    "clippy",
                    "--quiet",
                    "--target",
                    "bpfel-unknown-none",
                    "-Z",
                    "build-std=core",
                    "--release",
                    "--",
                    "-D",
                    "warnings",
                ]),
        )?;
    }
    status(cargo().args(["test", "--quiet"]))?;
    // The binary under test, built the way users get it.
    status(cargo().args(["build", "--quiet", "-p", "recap-agent"]))?;
    let mut integration = cargo();
    integration.args([
        "test",
        "--quiet",
        "-p",
        "recap-tests",
        "--",
        "--test-threads=1",
    ]);
    if let Some(filter) = &args.filter {
        integration.arg(filter);
    }
    status(&mut integration)
}

#[derive(Args)]
pub struct StormArgs {
    /// How many windows to kill.
    #[arg(long, default_value_t = 500)]
    windows: usize,
}

/// `cargo xtask storm`: the whole kill storm (CI runs 12 windows of it).
pub fn storm(args: StormArgs) -> anyhow::Result<()> {
    long_test(
        "the kill storm",
        "storm",
        &[],
        &[("RECAP_STORM_WINDOWS", args.windows.to_string())],
    )
}

#[derive(Args)]
pub struct SoakArgs {
    /// Consecutive windows.
    #[arg(long, default_value_t = 60)]
    windows: usize,
    /// Each window's length, in seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
}

/// `cargo xtask soak`: consecutive windows on a busy target through one agent, each exact, the
/// agent's memory flat (about an hour by default; not part of `cargo xtask test`).
pub fn soak(args: SoakArgs) -> anyhow::Result<()> {
    long_test(
        "the soak",
        "soak",
        &["--ignored"],
        &[
            ("RECAP_SOAK_WINDOWS", args.windows.to_string()),
            ("RECAP_SOAK_SECONDS", args.seconds.to_string()),
        ],
    )
}

/// `cargo xtask bench --only fleet`: the fleet benchmark, an ignored test of its own (it needs
/// the test harness's etcd cluster, agents and containers), with the release `recap`.
pub fn fleet_bench(bin: &std::path::Path) -> anyhow::Result<()> {
    long_test(
        "the fleet benchmark",
        "fleet_bench",
        &["--ignored"],
        &[("RECAP_BIN", bin.join("recap").display().to_string())],
    )
}

/// `cargo xtask bench --only capsule`, its CRI row: an ignored test of its own (it needs the
/// test harness's containerd and pods), with the release `recap`.
pub fn pod_capsule_bench(bin: &std::path::Path, reps: usize) -> anyhow::Result<()> {
    long_test(
        "the pod capsule benchmark",
        "capsule_bench",
        &["--ignored"],
        &[
            ("RECAP_BIN", bin.join("recap").display().to_string()),
            ("RECAP_BENCH_REPS", reps.to_string()),
        ],
    )
}

/// One integration test file run on its own, with its output shown and sized by variables.
fn long_test(what: &str, test: &str, extra: &[&str], env: &[(&str, String)]) -> anyhow::Result<()> {
    setup::run()?;
    require_root(what)?;
    status(cargo().args(["build", "--quiet", "-p", "recap-agent"]))?;
    let mut cmd = cargo();
    cmd.args(["test", "--quiet", "-p", "recap-tests", "--test", test, "--"])
        .args(extra)
        .arg("--nocapture")
        .envs(env.iter().map(|(k, v)| (k, v)));
    status(&mut cmd)
}
