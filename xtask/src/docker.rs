//! The Docker engine for the demo and the capsule images: started if none answers.

use std::process::Command;

use anyhow::{bail, Context};
pub use recap_harness::docker::{ask, cli};

use crate::run::{release_binaries, status};

pub fn ensure_engine() -> anyhow::Result<()> {
    recap_harness::docker::ensure_engine(std::path::Path::new("/tmp/recap-dockerd.log"))
}

/// `cargo xtask capsule-images`.
pub fn capsule_images() -> anyhow::Result<()> {
    let bin = release_binaries("building capsule images")?;
    ensure_engine()?;
    status(Command::new(bin.join("recap")).args(["capsule-image", "--rebuild"]))
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
