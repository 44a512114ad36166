//! A cgroup v2 directory made for a demo or benchmark run, removed (processes killed) on drop.

use std::{path::PathBuf, thread, time::Duration};

use anyhow::Context;

pub struct ScratchCgroup {
    pub dir: PathBuf,
}

impl ScratchCgroup {
    pub fn create(prefix: &str) -> anyhow::Result<Self> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
        let root = mountinfo
            .lines()
            .find(|l| {
                l.split(" - ")
                    .nth(1)
                    .is_some_and(|r| r.starts_with("cgroup2 "))
            })
            .and_then(|l| l.split_whitespace().nth(4))
            .context("no cgroup2 mount in /proc/self/mountinfo")?;
        let dir = PathBuf::from(root).join(format!("{prefix}-{}", std::process::id()));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(ScratchCgroup { dir })
    }

    pub fn id(&self) -> anyhow::Result<u64> {
        use std::os::unix::fs::MetadataExt;
        Ok(std::fs::metadata(&self.dir)?.ino())
    }
}

impl Drop for ScratchCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.dir.join("cgroup.kill"), "1");
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}
