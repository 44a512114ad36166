//! Whether a window's target still exists: held as a handle taken when the window arms, so
//! that the question costs one cheap syscall and no path walk (with 128 idle windows, the
//! path-based check was 14 % of the agent's samples).
//! A process target holds a pidfd (which also cannot be fooled by a recycled PID): the window
//! awaits its readiness (`exited`), so the kernel says when the process exits and nothing
//! polls. A cgroup target holds its directory, in which the kernel refuses every lookup once it
//! is removed (a cgroup re-created under the same name is another directory), and its
//! `cgroup.events` open: polling that file flags an error once it is removed, or when its
//! contents changed since it was last read; only then is the directory looked in (a lookup in
//! kernfs costs ~8× a poll). Removing a cgroup wakes no poller (neither epoll on
//! `cgroup.events` nor inotify on the directory: tried), so a cgroup is asked with each read.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::{Target, TargetSpec};

pub struct Liveness {
    kind: Kind,
}

enum Kind {
    /// A pidfd: readable once the process has exited.
    Process(OwnedFd),
    /// The cgroup directory, opened `O_PATH`, and its `cgroup.events`.
    Cgroup { dir: OwnedFd, events: std::fs::File },
    /// No handle could be taken (an old kernel without pidfds): the target's own check.
    ByPath(Box<Target>),
    /// Already gone when the window armed.
    Gone,
}

impl Liveness {
    pub fn of(target: &Target) -> Liveness {
        let pid = match &target.spec {
            TargetSpec::Pid { pid } => Some(*pid),
            TargetSpec::Container { .. } => target.container.as_ref().map(|c| c.pid),
            TargetSpec::Pod { .. } => target.pod.as_ref().map(|p| p.pid),
            TargetSpec::Cgroup { .. } => None,
        };
        let kind = match pid {
            Some(pid) => match pidfd_open(pid) {
                Ok(fd) => Kind::Process(fd),
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Kind::Gone,
                Err(_) => Kind::ByPath(Box::new(target.clone())),
            },
            None => cgroup_handles(target),
        };
        Liveness { kind }
    }

    /// A future that completes when the kernel says the target has gone, for a target the
    /// kernel tells of (a process); `None` when `is_alive` has to be asked.
    pub fn exited(
        &self,
    ) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> {
        let Kind::Process(fd) = &self.kind else {
            return None;
        };
        let fd = fd.try_clone().ok()?;
        use tokio::io::{unix::AsyncFd, Interest};
        // SAFETY: an OwnedFd, moved into the AsyncFd: open, and the same file, until dropped.
        let ready = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.ok()?;
        Some(Box::pin(async move {
            // Readable once the process has exited; an error (never seen) counts as gone too.
            let _ = ready.readable().await;
        }))
    }

    pub fn is_alive(&self) -> bool {
        match &self.kind {
            Kind::Process(fd) => poll_now(fd.as_raw_fd(), libc::POLLIN) == 0,
            Kind::Cgroup { dir, events } => {
                if poll_now(events.as_raw_fd(), libc::POLLPRI) & libc::POLLERR == 0 {
                    return true;
                }
                let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
                // SAFETY: a NUL-terminated name relative to an open directory; `st` is written
                // by the kernel and never read here.
                let present = unsafe {
                    libc::fstatat(
                        dir.as_raw_fd(),
                        c"cgroup.procs".as_ptr(),
                        st.as_mut_ptr(),
                        libc::AT_SYMLINK_NOFOLLOW,
                    ) == 0
                };
                if present {
                    // Its contents changed (populated, frozen): reading it clears the flag.
                    use std::os::unix::fs::FileExt;
                    let _ = events.read_at(&mut [0u8; 256], 0);
                }
                present
            }
            Kind::ByPath(target) => target.is_alive(),
            Kind::Gone => false,
        }
    }
}

/// `poll(2)` of one descriptor without waiting: the events it has now.
fn poll_now(fd: std::os::fd::RawFd, events: libc::c_short) -> libc::c_short {
    let mut poll = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one pollfd, valid for the call; a timeout of 0 never blocks.
    match unsafe { libc::poll(&mut poll, 1, 0) } {
        1 => poll.revents,
        _ => 0,
    }
}

fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor the kernel just returned, owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The cgroup's directory (`O_PATH`) and its `cgroup.events`, opened in that directory: both
/// are the target's only if the directory is still the cgroup the window resolved.
fn cgroup_handles(target: &Target) -> Kind {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let Ok(dir) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(&target.cgroup_dir)
    else {
        return Kind::Gone;
    };
    if dir.metadata().map(|m| m.ino()).ok() != Some(target.cgroup_id) {
        return Kind::Gone;
    }
    // SAFETY: a NUL-terminated name relative to a directory descriptor we hold.
    let events = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c"cgroup.events".as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if events < 0 {
        return Kind::ByPath(Box::new(target.clone()));
    }
    Kind::Cgroup {
        dir: dir.into(),
        // SAFETY: a descriptor the kernel just returned, owned by no one else.
        events: unsafe { std::fs::File::from_raw_fd(events) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::cgroup;

    #[test]
    fn a_child_process_is_alive_until_it_exits() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let fd = pidfd_open(child.id()).unwrap();
        let live = Liveness {
            kind: Kind::Process(fd),
        };
        assert!(live.is_alive());
        child.kill().unwrap();
        // Exited (a zombie until reaped): already not alive.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while live.is_alive() {
            assert!(std::time::Instant::now() < deadline, "still alive");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        child.wait().unwrap();
        assert!(!live.is_alive());
    }

    /// The window awaits a process target's exit instead of asking each second.
    #[tokio::test]
    async fn a_process_targets_exit_is_told_by_the_kernel() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let live = Liveness {
            kind: Kind::Process(pidfd_open(child.id()).unwrap()),
        };
        let mut exited = live.exited().expect("a pidfd is awaited");
        let early = tokio::time::timeout(std::time::Duration::from_millis(300), &mut exited);
        assert!(early.await.is_err(), "told of an exit while it runs");
        child.kill().unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), exited)
            .await
            .expect("not told of the exit");
        child.wait().unwrap();
    }

    /// A cgroup stays alive while processes come and go (`cgroup.events` changes), and is
    /// gone once removed. Needs root and a cgroup2 mount; skipped without them.
    #[test]
    fn a_cgroup_is_alive_through_changes_until_removed() {
        let Ok(root) = cgroup::cgroup2_mount() else {
            return;
        };
        let dir = root.join(format!("recap-unit-liveness-{}", std::process::id()));
        if std::fs::create_dir(&dir).is_err() {
            return; // not root
        }
        let target = Target {
            spec: TargetSpec::Cgroup { path: dir.clone() },
            cgroup_dir: dir.clone(),
            cgroup_id: cgroup::cgroup_id(&dir).unwrap(),
            child_cgroups: 0,
            container: None,
            pod: None,
            target_only: false,
        };
        let live = Liveness::of(&target);
        assert!(matches!(live.kind, Kind::Cgroup { .. }));
        assert!(live.is_alive());
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        std::fs::write(dir.join("cgroup.procs"), child.id().to_string()).unwrap();
        assert!(live.is_alive(), "populated");
        assert!(live.is_alive(), "populated, read again");
        child.kill().unwrap();
        child.wait().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::remove_dir(&dir).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "could not remove the cgroup"
            );
            assert!(live.is_alive(), "emptied, not removed");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!live.is_alive(), "removed");
        std::fs::create_dir(&dir).unwrap();
        assert!(!live.is_alive(), "another cgroup under its name");
        std::fs::remove_dir(&dir).unwrap();
    }
}
