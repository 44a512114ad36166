//! A cgroup v2 directory made for a test, the demo or a benchmark run, under the cgroup2
//! mount, removed (its processes killed) on drop.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::Duration,
};

use anyhow::Context;

/// Where cgroup2 is mounted (`/sys/fs/cgroup/unified` on hybrid hosts, `/sys/fs/cgroup` on pure
/// v2 ones), from this process's mount table.
pub fn cgroup2_mount() -> anyhow::Result<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    mountinfo
        .lines()
        .find(|l| {
            l.split(" - ")
                .nth(1)
                .is_some_and(|r| r.starts_with("cgroup2 "))
        })
        .and_then(|l| l.split_whitespace().nth(4))
        .map(PathBuf::from)
        .context("no cgroup2 mount in /proc/self/mountinfo")
}

pub struct ScratchCgroup {
    pub dir: PathBuf,
}

impl ScratchCgroup {
    /// `<cgroup2 mount>/<prefix>-<our pid>`.
    pub fn create(prefix: &str) -> anyhow::Result<Self> {
        let dir = cgroup2_mount()?.join(format!("{prefix}-{}", std::process::id()));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(ScratchCgroup { dir })
    }

    /// For a test: `recap-test-<name>-<our pid>`, or a panic that says why not.
    pub fn new(name: &str) -> Self {
        let prefix = format!("recap-test-{name}");
        let dir = cgroup2_mount()
            .expect("a cgroup2 mount")
            .join(format!("{prefix}-{}", std::process::id()));
        // Left by an earlier run of this test process id: take it over.
        if dir.join("cgroup.procs").exists() {
            return ScratchCgroup { dir };
        }
        Self::create(&prefix).unwrap_or_else(|e| panic!("could not create a cgroup: {e:#}"))
    }

    /// Its cgroup id (the directory's inode on cgroup2).
    pub fn id(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&self.dir).map_or(0, |m| m.ino())
    }

    /// Total CPU time of its tasks so far (`cpu.stat` `usage_usec`).
    pub fn cpu_usage(&self) -> Duration {
        let stat = std::fs::read_to_string(self.dir.join("cpu.stat")).unwrap_or_default();
        let usec: u64 = stat
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        Duration::from_micros(usec)
    }

    /// Moves a running process into it.
    pub fn adopt(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", self.dir.display()));
    }

    /// A command whose process starts inside it (it joins before `exec`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        let procs = self.dir.join("cgroup.procs");
        // SAFETY: the closure only writes a file, which is async-signal-safe enough here
        // (no locks are taken by std::fs::write on an already-known path).
        unsafe {
            cmd.pre_exec(move || std::fs::write(&procs, "0"));
        }
        cmd
    }

    pub fn path(&self) -> &Path {
        &self.dir
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
