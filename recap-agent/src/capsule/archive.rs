//! `--capsule archive=PATH[,PATH...]`: a size-capped tar of paths in the target's filesystem
//! (logs, configs, core files), made when the window ends. Read through the target's own root
//! (`/proc/PID/root`) with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS)`, then directory by
//! directory relative to descriptors: a symbolic link is never followed — one inside a
//! directory goes into the tar as a link, one on the way to a path given is refused, said so.
//! Only directories, regular files and links are stored: every entry is opened as a path
//! (`O_PATH`: nothing is opened for I/O, so a device node the container made is never opened
//! on the host, a FIFO never blocks) and only regular files and directories are reopened to be
//! read. The process whose root is read is pinned by its `/proc` directory and checked to be in
//! the target's cgroup then (a PID reused by another process is refused).

use std::{
    ffi::{CString, OsStr},
    fs::File,
    io::{Read, Write},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
};

/// Paths per archive capsule, at most.
pub const MAX_PATHS: usize = 16;
/// Directory depth followed below a path given, and entries stored, at most.
const MAX_DEPTH: usize = 32;
const MAX_ENTRIES: u64 = 100_000;

/// What went into the tar, and what did not.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Archived {
    pub entries: u64,
    pub bytes: u64,
    /// Paths given that were not archived, each with why.
    pub refused: Vec<String>,
    /// Entries left out below the paths (special files), and whether the cap cut it short.
    pub skipped: u64,
    pub capped: bool,
}

/// `archive=` paths: absolute, without `..` (they name places in the target's tree).
pub fn check_paths(paths: &[String]) -> Result<(), String> {
    if paths.is_empty() || paths.len() > MAX_PATHS {
        return Err(format!(
            "the archive capsule takes 1 to {MAX_PATHS} absolute paths: archive=/var/log/app,/etc/app"
        ));
    }
    for p in paths {
        if !p.starts_with('/') || p.len() > 4096 || p.contains('\0') {
            return Err(format!(
                "archive path `{}` is not an absolute path in the target (e.g. /var/log)",
                p.escape_debug()
            ));
        }
        if p.split('/').any(|part| part == "..") {
            return Err(format!("archive path `{}`: no `..`", p.escape_debug()));
        }
    }
    Ok(())
}

/// Writes the tar of `paths` (as the process `pid` sees its filesystem) into `out`, stopping
/// before it would pass `max_bytes`. `pid` must be in the cgroup whose `/proc/PID/cgroup` line
/// ends with `cgroup` (its v2 path) when its root is taken.
pub fn write(
    pid: u32,
    cgroup: &str,
    paths: &[String],
    out: File,
    max_bytes: u64,
) -> std::io::Result<Archived> {
    // The process's /proc directory first: if the process goes and its PID is reused, what is
    // opened through this descriptor fails instead of naming the newcomer.
    let proc_dir = open_dir_path(&format!("/proc/{pid}"))?;
    let membership = read_at(&proc_dir, "cgroup")?;
    let in_target = membership
        .lines()
        .any(|l| l.starts_with("0::") && l.trim_end().ends_with(cgroup));
    if !in_target {
        return Err(std::io::Error::other(format!(
            "process {pid} is no longer in the target's cgroup: nothing archived"
        )));
    }
    let root = open_at(&proc_dir, "root", libc::O_PATH | libc::O_DIRECTORY)?;
    let mut tar = Tar {
        builder: tar::Builder::new(CountingWriter {
            inner: out,
            written: 0,
        }),
        max_bytes,
        done: Archived::default(),
    };
    for path in paths {
        let relative = path.trim_start_matches('/');
        let name = if relative.is_empty() { "." } else { relative };
        match open_in_root(&root, name) {
            // O_PATH with O_NOFOLLOW opens a final link as itself: it is refused too.
            Ok(fd) if fstat(&fd)?.st_mode & libc::S_IFMT == libc::S_IFLNK => tar
                .done
                .refused
                .push(format!("{path}: a symbolic link at the end, not followed")),
            Ok(fd) => tar.add(fd, name, 0)?,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => tar.done.refused.push(format!(
                "{path}: a symbolic link on the way or at the end, not followed"
            )),
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => tar.done.refused.push(format!(
                "{path}: leads out of the target's root, not followed"
            )),
            Err(e) => tar.done.refused.push(format!("{path}: {e}")),
        }
        if tar.done.capped {
            break;
        }
    }
    let mut done = std::mem::take(&mut tar.done);
    let mut writer = tar.builder.into_inner()?;
    writer.flush()?;
    done.bytes = writer.written;
    Ok(done)
}

struct Tar {
    builder: tar::Builder<CountingWriter>,
    max_bytes: u64,
    done: Archived,
}

impl Tar {
    /// Whether `more` bytes still fit under the cap (with the two closing blocks).
    fn fits(&mut self, more: u64) -> bool {
        let used = self.builder.get_ref().written;
        let fits = used + more + 1024 <= self.max_bytes && self.done.entries < MAX_ENTRIES;
        self.done.capped |= !fits;
        fits
    }

    /// `fd` is an `O_PATH` descriptor: only a regular file or a directory is reopened to be
    /// read (through this process's own descriptor).
    fn add(&mut self, fd: OwnedFd, name: &str, depth: usize) -> std::io::Result<()> {
        let st = fstat(&fd)?;
        let kind = st.st_mode & libc::S_IFMT;
        if kind != libc::S_IFDIR && kind != libc::S_IFREG {
            self.done.skipped += 1;
            return Ok(());
        }
        let fd = reopen(&fd, kind == libc::S_IFDIR)?;
        let mut header = tar::Header::new_gnu();
        header.set_mode(st.st_mode & 0o7777);
        header.set_uid(st.st_uid as u64);
        header.set_gid(st.st_gid as u64);
        header.set_mtime(st.st_mtime.max(0) as u64);
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => {
                if !self.fits(512) {
                    return Ok(());
                }
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                self.builder
                    .append_data(&mut header, format!("{name}/"), std::io::empty())?;
                self.done.entries += 1;
                if depth >= MAX_DEPTH {
                    self.done.skipped += 1;
                    return Ok(());
                }
                for child in entries(&fd)? {
                    if self.done.capped {
                        break;
                    }
                    let path = format!("{name}/{}", child.to_string_lossy());
                    self.add_child(&fd, &child, &path, depth + 1)?;
                }
            }
            libc::S_IFREG => {
                let size = st.st_size.max(0) as u64;
                if !self.fits(512 + size.div_ceil(512) * 512) {
                    return Ok(());
                }
                // A growing log: what it held when it was opened, no more.
                let mut data = Vec::with_capacity(size as usize);
                File::from(fd).take(size).read_to_end(&mut data)?;
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(data.len() as u64);
                self.builder
                    .append_data(&mut header, name, data.as_slice())?;
                self.done.entries += 1;
            }
            _ => self.done.skipped += 1,
        }
        Ok(())
    }

    /// An entry of the directory `dir`: a link is stored as a link (never followed), the rest
    /// opened relative to `dir` without following anything.
    fn add_child(
        &mut self,
        dir: &OwnedFd,
        child: &OsStr,
        path: &str,
        depth: usize,
    ) -> std::io::Result<()> {
        let c = CString::new(child.as_bytes())?;
        // SAFETY: libc::stat is plain integers; all zeroes is a valid value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a valid directory descriptor, a NUL-terminated name, a stat buffer.
        if unsafe {
            libc::fstatat(
                dir.as_raw_fd(),
                c.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        } != 0
        {
            self.done.skipped += 1; // gone meanwhile
            return Ok(());
        }
        if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
            let mut target = vec![0u8; 4096];
            // SAFETY: as above, with a buffer of its length.
            let n = unsafe {
                libc::readlinkat(
                    dir.as_raw_fd(),
                    c.as_ptr(),
                    target.as_mut_ptr().cast(),
                    target.len(),
                )
            };
            if n < 0 || !self.fits(1536) {
                self.done.skipped += (n < 0) as u64;
                return Ok(());
            }
            target.truncate(n as usize);
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            header.set_mtime(st.st_mtime.max(0) as u64);
            self.builder
                .append_link(&mut header, path, OsStr::from_bytes(&target))?;
            self.done.entries += 1;
            return Ok(());
        }
        // SAFETY: as above.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                c.as_ptr(),
                libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            self.done.skipped += 1; // replaced meanwhile, or gone
            return Ok(());
        }
        // SAFETY: openat returned a new descriptor that nothing else owns.
        self.add(unsafe { OwnedFd::from_raw_fd(fd) }, path, depth)
    }
}

/// A writer that counts what went through it.
struct CountingWriter {
    inner: File,
    written: u64,
}

impl Write for CountingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A readable descriptor for what the `O_PATH` descriptor `fd` names (the same file: opened
/// through this process's own `/proc/self/fd` entry, never a path of the target's).
fn reopen(fd: &OwnedFd, directory: bool) -> std::io::Result<OwnedFd> {
    let mut flags = libc::O_RDONLY | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC;
    if directory {
        flags |= libc::O_DIRECTORY;
    }
    let c = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    // SAFETY: a NUL-terminated path.
    let new = unsafe { libc::open(c.as_ptr(), flags) };
    if new < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: open returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// `openat(dir, name, flags)` (without following a final link).
fn open_at(dir: &OwnedFd, name: &str, flags: libc::c_int) -> std::io::Result<OwnedFd> {
    let c = CString::new(name)?;
    // SAFETY: a valid directory descriptor and a NUL-terminated name.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A small file of a `/proc/PID` directory, read through its descriptor.
fn read_at(dir: &OwnedFd, name: &str) -> std::io::Result<String> {
    let mut text = String::new();
    File::from(open_at(dir, name, libc::O_RDONLY)?)
        .take(64 << 10)
        .read_to_string(&mut text)?;
    Ok(text)
}

fn open_dir_path(path: &str) -> std::io::Result<OwnedFd> {
    let c = CString::new(path)?;
    // SAFETY: a NUL-terminated path.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: open returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens `name` below `root` as if `root` were `/`, following no link of any kind.
fn open_in_root(root: &OwnedFd, name: &str) -> std::io::Result<OwnedFd> {
    let c = CString::new(name)?;
    // SAFETY: open_how is plain integers: all zeros is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: a valid directory descriptor, a NUL-terminated path, `how` and its size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn fstat(fd: &OwnedFd) -> std::io::Result<libc::stat> {
    // SAFETY: libc::stat is plain integers; all zeroes is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and a stat buffer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st)
}

/// The names in the directory `dir` (read through a descriptor of our own), sorted.
fn entries(dir: &OwnedFd) -> std::io::Result<Vec<std::ffi::OsString>> {
    // This process's own descriptor: nothing of the target's is followed to get there.
    let mut names: Vec<_> = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_absolute_and_bounded() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_paths(&p(&["/var/log", "/etc/app.conf"])).is_ok());
        assert!(check_paths(&p(&[])).is_err());
        assert!(check_paths(&p(&["var/log"])).is_err());
        assert!(check_paths(&p(&["/var/../etc"])).is_err());
        assert!(check_paths(&vec!["/a".to_string(); MAX_PATHS + 1]).is_err());
    }

    #[test]
    fn links_are_stored_not_followed_and_a_linked_path_is_refused() {
        let dir = std::env::temp_dir().join(format!("recap-archive-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data/sub")).unwrap();
        std::fs::write(dir.join("data/app.log"), "hello\n").unwrap();
        std::fs::write(dir.join("data/sub/x"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", dir.join("data/etc")).unwrap();
        std::os::unix::fs::symlink("/etc", dir.join("escape")).unwrap();
        // This process's root is `/`: archive the test directory's paths through it.
        let base = dir.strip_prefix("/").unwrap().display().to_string();
        let out = dir.join("out.tar");
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let cgroup = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap()
            .to_string();
        assert!(write(
            std::process::id(),
            "/not/ours",
            &[],
            File::create(&out).unwrap(),
            1 << 20
        )
        .is_err());
        let done = write(
            std::process::id(),
            &cgroup,
            &[format!("/{base}/data"), format!("/{base}/escape")],
            File::create(&out).unwrap(),
            1 << 20,
        )
        .unwrap();
        assert_eq!(done.refused.len(), 1, "{done:?}");
        assert!(
            done.refused[0].contains("escape: a symbolic link"),
            "{done:?}"
        );
        let mut names = Vec::new();
        let mut archive = tar::Archive::new(File::open(&out).unwrap());
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            let path = path.trim_start_matches(&base).to_string();
            if path.ends_with("app.log") {
                let mut text = String::new();
                entry.read_to_string(&mut text).unwrap();
                assert_eq!(text, "hello\n");
            }
            if path.ends_with("/etc") {
                assert_eq!(entry.header().entry_type(), tar::EntryType::Symlink);
            }
            names.push(path);
        }
        assert_eq!(
            names,
            [
                "/data/",
                "/data/app.log",
                "/data/etc",
                "/data/sub/",
                "/data/sub/x"
            ]
        );
        assert_eq!(done.entries, 5);
        assert_eq!(done.bytes, std::fs::metadata(&out).unwrap().len());
        // A cap smaller than the tree: cut short, said so.
        let small = write(
            std::process::id(),
            &cgroup,
            &[format!("/{base}/data")],
            File::create(&out).unwrap(),
            2048,
        )
        .unwrap();
        assert!(small.capped && small.entries < 5, "{small:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
