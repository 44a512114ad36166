//! Running commands, with the command line in every error.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context};

/// The workspace root (xtask lives one level down).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace());
    cmd
}

/// Runs a command to completion; fails with the command line if it fails.
pub fn status(cmd: &mut Command) -> anyhow::Result<()> {
    let line = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {line}"))?;
    if !status.success() {
        bail!("{line} failed ({status})");
    }
    Ok(())
}

/// Runs a command and returns its stdout, or None if it could not run or failed.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub use recap_harness::root::require_root;

/// What the demo, the benchmark and the capsule images start from: root, the machine set up,
/// and release builds of `recap` and the test binaries. Returns `target/release`.
pub fn release_binaries(what: &str) -> anyhow::Result<PathBuf> {
    require_root(what)?;
    crate::setup::run()?;
    status(cargo().args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "recap-agent",
        "-p",
        "recap-tests",
        "--bins",
    ]))?;
    Ok(workspace().join("target/release"))
}
