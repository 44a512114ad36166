//! The Docker engine for the demo and the capsule images: started if none answers.

use std::{
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

use crate::run::{release_binaries, status};

pub fn ensure_engine() -> anyhow::Result<()> {
    if answers() {
        return Ok(());
    }
    eprintln!("xtask: starting dockerd (log: /tmp/recap-dockerd.log)");
    let log = std::fs::File::create("/tmp/recap-dockerd.log")?;
    Command::new("dockerd")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !answers() {
        if Instant::now() > deadline {
            bail!("dockerd did not answer within 30 s; see /tmp/recap-dockerd.log");
        }
        thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn answers() -> bool {
    Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `cargo xtask capsule-images`.
pub fn capsule_images() -> anyhow::Result<()> {
    let bin = release_binaries("building capsule images")?;
    ensure_engine()?;
    status(Command::new(bin.join("recap")).args(["capsule-image", "--rebuild"]))
}

/// Runs the docker CLI; (success, trimmed stdout). Its errors go to our stderr.
pub fn cli(args: &[&str]) -> (bool, String) {
    cli_with_stderr(args, Stdio::inherit())
}

/// `cli` for a question whose "no" is normal (`image inspect` of an image not built yet): its
/// error message is not shown, so it does not read as a failure.
pub fn ask(args: &[&str]) -> bool {
    cli_with_stderr(args, Stdio::null()).0
}

fn cli_with_stderr(args: &[&str], stderr: Stdio) -> (bool, String) {
    match Command::new("docker").args(args).stderr(stderr).output() {
        Ok(out) => (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        ),
        Err(_) => (false, String::new()),
    }
}

/// A container without a network for a demo or benchmark target, removed on drop.
pub struct ScratchContainer {
    pub name: String,
    pub id: String,
}

impl ScratchContainer {
    pub fn run(prefix: &str, image: &str, command: &[&str]) -> anyhow::Result<Self> {
        let name = format!("{prefix}-{}", std::process::id());
        let mut args = vec!["run", "-d", "--name", &name, "--network", "none", image];
        args.extend(command);
        let (ok, id) = cli(&args);
        if !ok {
            bail!("docker run {image} failed");
        }
        Ok(ScratchContainer { name, id })
    }

    /// The container's init process, as the host sees it.
    pub fn pid(&self) -> anyhow::Result<String> {
        let (ok, pid) = cli(&["inspect", "-f", "{{.State.Pid}}", &self.id]);
        if !ok {
            bail!("docker inspect {} failed", self.name);
        }
        pid.parse::<u32>()
            .with_context(|| format!("container {} has no running init process", self.name))?;
        Ok(pid)
    }
}

impl Drop for ScratchContainer {
    fn drop(&mut self) {
        let _ = cli(&["rm", "-f", &self.id]);
    }
}
