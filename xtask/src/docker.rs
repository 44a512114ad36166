//! The Docker engine for the demo and the capsule images: started if none answers.

use std::{
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::bail;

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
