//! Where capsules write: `<artifacts>/<window-id>/`, made private. A pcap or an strace log holds
//! bearer tokens and passwords, so the window's directory is 0700 and each file 0600, handed to
//! the user who asked for the window (the `sudo` caller, or the agent's caller) once the capsules
//! are done.
//!
//! The process doing this is root, and the person asking is not: every step goes through
//! directory descriptors opened without following links (`O_NOFOLLOW`, one component at a time),
//! and ownership and modes are changed on the opened descriptor (`fchown`/`fchmod`), never by
//! path. Every directory on the way to the window's must be one that nobody else can rename
//! things in (owned by root or by us, not writable by others unless sticky), because the engine
//! bind-mounts the window's directory by path: what the path names when it does so must be what
//! we made. The caller gets its window's directory and files after the capsules end, never
//! during, and never a directory the agent writes into.

use std::{
    ffi::CString,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::ffi::{OsStrExt, OsStringExt},
    },
    path::{Component, Path, PathBuf},
};

use anyhow::{bail, Context};

/// One step of a walk: a directory, or a trusted link to follow.
enum Step {
    Dir(SafeDir),
    Link(PathBuf),
}

/// A directory held open, reached without following a link.
#[derive(Debug)]
pub struct SafeDir {
    fd: OwnedFd,
    path: PathBuf,
}

fn cstr(name: &[u8]) -> std::io::Result<CString> {
    CString::new(name).map_err(|_| std::io::Error::other("a path with a NUL byte"))
}

fn cvt(r: libc::c_int) -> std::io::Result<libc::c_int> {
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn fstat(fd: &OwnedFd) -> std::io::Result<libc::stat> {
    // SAFETY: an all-zero `stat` is a valid value; fstat fills it in.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is an open descriptor and `st` a valid out-pointer.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

fn chmod(fd: &impl AsRawFd, mode: u32) -> std::io::Result<()> {
    // SAFETY: `fd` is an open descriptor.
    cvt(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) })?;
    Ok(())
}

fn chown(fd: &impl AsRawFd, uid: u32, gid: u32) -> std::io::Result<()> {
    // SAFETY: `fd` is an open descriptor.
    cvt(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) })?;
    Ok(())
}

/// Whom a directory must belong to, to be trusted: root, or the user this process runs as.
fn trusted_owner(uid: u32) -> bool {
    // SAFETY: geteuid has no preconditions.
    uid == 0 || uid == unsafe { libc::geteuid() }
}

impl SafeDir {
    /// Opens `name` below `parent` as a directory, refusing a link.
    fn open_at(parent: &OwnedFd, name: &[u8]) -> std::io::Result<OwnedFd> {
        let c = cstr(name)?;
        // SAFETY: a valid directory descriptor and NUL-terminated name.
        let fd = cvt(unsafe {
            libc::openat(
                parent.as_raw_fd(),
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        })?;
        // SAFETY: openat returned a new descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn mkdir_at(parent: &OwnedFd, name: &[u8], mode: u32) -> std::io::Result<()> {
        let c = cstr(name)?;
        // SAFETY: a valid directory descriptor and NUL-terminated name.
        cvt(unsafe { libc::mkdirat(parent.as_raw_fd(), c.as_ptr(), mode as libc::mode_t) })?;
        Ok(())
    }

    /// Opens the directory `name` here, making it (with `mode`) if it is missing. A link is
    /// never followed: opening one fails (ELOOP, ENOTDIR), and that error is the caller's.
    fn open_or_create(&self, name: &[u8], mode: u32) -> anyhow::Result<std::io::Result<OwnedFd>> {
        match Self::open_at(&self.fd, name) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                match Self::mkdir_at(&self.fd, name, mode) {
                    Ok(()) => {}
                    // Made by someone else meanwhile: it is checked like any existing one.
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                    Err(e) => {
                        let path = self.path.join(std::ffi::OsStr::from_bytes(name));
                        return Err(e).with_context(|| format!("creating {}", path.display()));
                    }
                }
                Ok(Self::open_at(&self.fd, name))
            }
            other => Ok(other),
        }
    }

    /// Opens (creating what is missing, with `mode`) the directory `path`, one component at a
    /// time without following links, and checks that nobody but root (or us) can change what
    /// any component names. A symbolic link on the way is followed only if it is root's (or
    /// ours) in a trusted directory, so that nobody else can have made or changed it
    /// (`/var/lib/recap -> /data/recap`). A relative path is taken from the current directory.
    pub fn open_trusted(path: &Path, mode: u32) -> anyhow::Result<SafeDir> {
        let path = std::path::absolute(path)
            .with_context(|| format!("resolving the artifact directory {}", path.display()))?;
        let mut todo = Self::components(&path, &path)?;
        let mut dir = Self::root()?;
        let mut hops = 0;
        while let Some(name) = todo.pop_front() {
            match dir.child(name.as_bytes(), mode)? {
                Step::Dir(next) => dir = next,
                Step::Link(target) => {
                    hops += 1;
                    if hops > 16 {
                        bail!("{}: too many symbolic links on the way", path.display());
                    }
                    let target = dir.path.join(target);
                    let mut rest = Self::components(&target, &path)?;
                    rest.extend(todo.drain(..));
                    todo = rest;
                    dir = Self::root()?;
                }
            }
        }
        Ok(dir)
    }

    fn root() -> anyhow::Result<SafeDir> {
        let root = std::fs::File::open("/").context("opening /")?;
        Ok(SafeDir {
            fd: OwnedFd::from(root),
            path: PathBuf::from("/"),
        })
    }

    /// The names in absolute `path` (`..` is refused: it would climb out of what was checked).
    fn components(
        path: &Path,
        asked: &Path,
    ) -> anyhow::Result<std::collections::VecDeque<std::ffi::OsString>> {
        let mut names = std::collections::VecDeque::new();
        for component in path.components() {
            match component {
                Component::RootDir | Component::CurDir => {}
                Component::Normal(name) => names.push_back(name.to_os_string()),
                _ => bail!(
                    "the artifact directory {} has `..` in it (or a link to such a path); give a plain path",
                    asked.display()
                ),
            }
        }
        Ok(names)
    }

    /// The existing or new directory `name` in this one, trusted as `open_trusted` says, or
    /// the target of a trusted link there.
    fn child(&self, name: &[u8], mode: u32) -> anyhow::Result<Step> {
        let path = self.path.join(std::ffi::OsStr::from_bytes(name));
        let fd = match self.open_or_create(name, mode)? {
            Ok(fd) => fd,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) => {
                if let Some(target) = self.trusted_link(name)? {
                    return Ok(Step::Link(target));
                }
                bail!(
                    "{} is a symbolic link someone other than root made, or not a directory: artifacts are only written through trusted directories (give the real path)",
                    path.display()
                )
            }
            Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
        };
        let st = fstat(&fd).with_context(|| format!("checking {}", path.display()))?;
        let writable_by_others = st.st_mode & 0o022 != 0 && st.st_mode & libc::S_ISVTX == 0;
        if !trusted_owner(st.st_uid) || writable_by_others {
            bail!(
                "{} belongs to uid {} with mode {:o}: someone other than root could swap what the artifact directory names; remove it or choose another directory",
                path.display(),
                st.st_uid,
                st.st_mode & 0o7777
            );
        }
        Ok(Step::Dir(SafeDir { fd, path }))
    }

    /// The target of the link `name` here, if it is a link root (or we) made. This directory
    /// is trusted, so nobody else can have replaced it.
    fn trusted_link(&self, name: &[u8]) -> anyhow::Result<Option<PathBuf>> {
        let c = cstr(name)?;
        // SAFETY: an all-zero `stat` is valid; fstatat fills it in.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a valid directory descriptor, NUL-terminated name, valid out-pointer.
        cvt(unsafe {
            libc::fstatat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })?;
        if st.st_mode & libc::S_IFMT != libc::S_IFLNK || !trusted_owner(st.st_uid) {
            return Ok(None);
        }
        let mut buf = vec![0u8; libc::PATH_MAX as usize];
        // SAFETY: a valid directory descriptor and name; `buf` has `buf.len()` bytes.
        let n = unsafe {
            libc::readlinkat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        buf.truncate(n as usize);
        Ok(Some(PathBuf::from(std::ffi::OsString::from_vec(buf))))
    }

    /// The directory `name` in this one, made root's with `mode` whatever it was (an agent's
    /// per-caller directory that an older version handed to the caller is taken back).
    pub fn reclaim_child(&self, name: &str, mode: u32) -> anyhow::Result<SafeDir> {
        let path = self.path.join(name);
        let fd = self
            .open_or_create(name.as_bytes(), mode)?
            .with_context(|| {
                format!(
                    "opening {} (a symbolic link is never followed)",
                    path.display()
                )
            })?;
        let st = fstat(&fd)?;
        if st.st_uid != 0 || st.st_gid != 0 || st.st_mode & 0o7777 != mode {
            log::warn!(
                "{}: was uid {} gid {} mode {:o}; made root's with mode {mode:o}",
                path.display(),
                st.st_uid,
                st.st_gid,
                st.st_mode & 0o7777
            );
            chown(&fd, 0, 0).with_context(|| format!("taking back {}", path.display()))?;
        }
        let dir = SafeDir { fd, path };
        dir.make_private(mode)?;
        Ok(dir)
    }

    /// Makes a new directory `name` (0700) in this one: it must not exist yet.
    pub fn create_private(&self, name: &str) -> anyhow::Result<SafeDir> {
        let path = self.path.join(name);
        Self::mkdir_at(&self.fd, name.as_bytes(), 0o700)
            .with_context(|| format!("creating the artifact directory {}", path.display()))?;
        let fd = Self::open_at(&self.fd, name.as_bytes())
            .with_context(|| format!("opening {}", path.display()))?;
        let dir = SafeDir { fd, path };
        // mkdirat applies the umask; the mode must be exactly 0700.
        dir.make_private(0o700)?;
        Ok(dir)
    }

    /// Sets this directory's mode.
    pub fn make_private(&self, mode: u32) -> anyhow::Result<()> {
        chmod(&self.fd, mode)
            .with_context(|| format!("setting the mode of {}", self.path.display()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the regular file `name` in this directory for reading, refusing a link, anything
    /// but a regular file, and a file with other names (a hard link to something else).
    fn open_file(&self, name: &str) -> std::io::Result<Option<(std::fs::File, libc::stat)>> {
        let c = cstr(name.as_bytes())?;
        // SAFETY: a valid directory descriptor and NUL-terminated name.
        let fd = unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENOENT) => Ok(None),
                Some(libc::ELOOP) => Err(std::io::Error::other(format!(
                    "{} is a symbolic link: not followed, left as it is",
                    self.path.join(name).display()
                ))),
                _ => Err(e),
            };
        }
        // SAFETY: openat returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let st = fstat(&fd)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_nlink != 1 {
            return Err(std::io::Error::other(format!(
                "{} is not a plain file of its own (type {:o}, {} links): left as it is",
                self.path.join(name).display(),
                st.st_mode & libc::S_IFMT,
                st.st_nlink
            )));
        }
        Ok(Some((std::fs::File::from(fd), st)))
    }

    /// Creates the file `name` here with `mode` if it is missing (a link is not followed), so
    /// that whoever writes it next never makes it with a looser mode of its own.
    pub fn create_file(&self, name: &str, mode: u32) -> std::io::Result<()> {
        let c = cstr(name.as_bytes())?;
        // SAFETY: a valid directory descriptor and NUL-terminated name.
        let fd = cvt(unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                libc::O_RDONLY | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        })?;
        // SAFETY: openat returned a new descriptor that nothing else owns.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
        Ok(())
    }

    /// Creates the file `name` here (0600), which must not exist, for writing (never a link).
    pub fn create_new(&self, name: &str) -> std::io::Result<std::fs::File> {
        let c = cstr(name.as_bytes())?;
        // SAFETY: a valid directory descriptor and NUL-terminated name.
        let fd = cvt(unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o600 as libc::c_uint,
            )
        })?;
        // SAFETY: openat returned a new descriptor that nothing else owns.
        Ok(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Makes a finished artifact 0600 and hands it to `owner`, if the window ran on someone's
    /// behalf. Returns its size, or None if the tool wrote nothing.
    pub fn seal(&self, name: &str, owner: Option<(u32, u32)>) -> std::io::Result<Option<u64>> {
        let Some((file, st)) = self.open_file(name)? else {
            return Ok(None);
        };
        chmod(&file, 0o600)?;
        if let Some((uid, gid)) = owner {
            chown(&file, uid, gid)?;
        }
        Ok(Some(st.st_size as u64))
    }

    /// The contents of the artifact `name` (read through the directory, never a link).
    pub fn read(&self, name: &str) -> std::io::Result<Option<Vec<u8>>> {
        use std::io::Read;
        let Some((mut file, _)) = self.open_file(name)? else {
            return Ok(None);
        };
        let mut data = Vec::new();
        file.read_to_end(&mut data)?;
        Ok(Some(data))
    }

    /// Gives the directory itself to `owner` (done once nothing more is written into it).
    pub fn hand_to(&self, owner: (u32, u32)) -> std::io::Result<()> {
        chown(&self.fd, owner.0, owner.1)
    }

    /// Makes the FIFO `name` (0644: a capsule of the caller's image reads it as nobody; it
    /// carries no data, and the directory is closed to others) in this directory, replacing an
    /// old one, and opens it read-write (so the open never blocks).
    pub fn fifo(&self, name: &str) -> std::io::Result<std::fs::File> {
        let c = cstr(name.as_bytes())?;
        // SAFETY: a valid directory descriptor and NUL-terminated name.
        unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), 0) };
        // SAFETY: likewise.
        cvt(unsafe { libc::mkfifoat(self.fd.as_raw_fd(), c.as_ptr(), 0o644) })?;
        // SAFETY: likewise.
        let fd = cvt(unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                libc::O_RDWR | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        })?;
        // SAFETY: openat returned a new descriptor that nothing else owns.
        let fifo = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        // The umask may have taken bits away: set through the descriptor, not the name.
        chmod(&fifo, 0o644)?;
        Ok(fifo)
    }

    /// Removes the entry `name` (not a directory) from this directory.
    pub fn remove(&self, name: &str) {
        if let Ok(c) = cstr(name.as_bytes()) {
            // SAFETY: a valid directory descriptor and NUL-terminated name.
            unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), 0) };
        }
    }
}

/// Creates `<base>/<window_id>` (0700) through trusted directories.
pub fn window_dir(base: &Path, window_id: &str) -> anyhow::Result<SafeDir> {
    SafeDir::open_trusted(base, 0o700)?.create_private(window_id)
}

/// The user who asked for a `recap window` run: `SUDO_UID`/`SUDO_GID` when it runs through
/// sudo. (The agent knows its callers from the socket instead.)
pub fn sudo_requester() -> Option<(u32, u32)> {
    let uid = std::env::var("SUDO_UID").ok()?.parse().ok()?;
    let gid = std::env::var("SUDO_GID").ok()?.parse().ok()?;
    Some((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn scratch(name: &str) -> PathBuf {
        let base =
            std::env::temp_dir().join(format!("recap-artifacts-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        base
    }

    #[test]
    fn window_directories_are_private_and_absolute() {
        let base = scratch("private");
        let dir = window_dir(&base, "abc").unwrap();
        let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert!(dir.path().is_absolute());
        assert!(
            window_dir(&base, "abc").is_err(),
            "a window's directory is always new"
        );
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn only_links_root_made_in_trusted_places_are_followed() {
        let base = scratch("links");
        std::fs::create_dir_all(base.join("real")).unwrap();
        // Root's link in root's directory: followed (`/var/lib/recap -> /data/recap`).
        std::os::unix::fs::symlink("real", base.join("roots")).unwrap();
        let dir = window_dir(&base.join("roots"), "abc").unwrap();
        assert_eq!(dir.path(), base.join("real").join("abc"));
        // Another user's link: never.
        std::os::unix::fs::symlink("/etc", base.join("etc")).unwrap();
        let c = CString::new(base.join("etc").as_os_str().as_bytes()).unwrap();
        // SAFETY: lchown of a path we made, with a NUL-terminated string.
        assert_eq!(unsafe { libc::lchown(c.as_ptr(), 4242, 4242) }, 0);
        let e = window_dir(&base.join("etc"), "abc").unwrap_err();
        assert!(format!("{e:#}").contains("symbolic link"), "{e:#}");
        assert!(!Path::new("/etc/abc").exists());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn directories_others_can_write_in_are_refused() {
        let base = scratch("writable");
        std::fs::create_dir_all(&base).unwrap();
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = window_dir(&base, "abc").unwrap_err();
        assert!(format!("{e:#}").contains("could swap"), "{e:#}");
        // Sticky, like /tmp: others cannot rename what is ours there.
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o1777)).unwrap();
        window_dir(&base, "abc").unwrap();
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn sealing_never_follows_a_planted_link_or_hard_link() {
        let base = scratch("seal");
        let dir = window_dir(&base, "w").unwrap();
        let victim = base.join("victim");
        std::fs::write(&victim, "root's").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("tcpdump.pcap")).unwrap();
        std::fs::hard_link(&victim, dir.path().join("strace.log")).unwrap();
        let e = dir.seal("tcpdump.pcap", Some((4242, 4242))).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let e = dir.seal("strace.log", Some((4242, 4242))).unwrap_err();
        assert!(e.to_string().contains("2 links"), "{e}");
        let meta = std::fs::metadata(&victim).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o644), "untouched");
        assert!(dir.read("tcpdump.pcap").is_err());

        std::fs::write(dir.path().join("real.pcap"), [0u8; 24]).unwrap();
        assert_eq!(dir.seal("real.pcap", Some((4242, 4243))).unwrap(), Some(24));
        let meta = std::fs::metadata(dir.path().join("real.pcap")).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o777),
            (4242, 4243, 0o600)
        );
        assert_eq!(dir.seal("missing", None).unwrap(), None);
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_callers_directory_is_taken_back() {
        let base = scratch("reclaim");
        let trusted = SafeDir::open_trusted(&base, 0o711).unwrap();
        std::fs::create_dir(base.join("4242")).unwrap();
        std::os::unix::fs::chown(base.join("4242"), Some(4242), Some(4242)).unwrap();
        let mine = trusted.reclaim_child("4242", 0o711).unwrap();
        let meta = std::fs::metadata(mine.path()).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o711));
        std::os::unix::fs::symlink("/etc", base.join("4343")).unwrap();
        assert!(trusted.reclaim_child("4343", 0o711).is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
