//! cgroup v2 facts read from procfs and the cgroup filesystem.

use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use super::TargetError;

/// The cgroup2 mount point: `/sys/fs/cgroup` on pure v2 hosts, `/sys/fs/cgroup/unified` on
/// hybrid ones. Never hard-coded.
pub fn cgroup2_mount() -> Result<PathBuf, TargetError> {
    let mountinfo = mountinfo().map_err(|source| TargetError::Io {
        what: "/proc/self/mountinfo".into(),
        source,
    })?;
    parse_cgroup2_mount(&mountinfo).ok_or(TargetError::NoCgroup2Mount)
}

/// A number that changes when the agent's mount table does: the families' cgroup figures look
/// up mounts for every window at each read, and the kernel formats the whole table for each
/// read of it, so what was found in it is kept until then. Polling an open
/// `/proc/self/mountinfo` flags a change since the last poll (`mounts_poll`); without that file,
/// the number moves every 10 s instead.
fn mount_generation() -> u64 {
    use std::{
        os::fd::AsRawFd,
        sync::{LazyLock, Mutex},
        time::Instant,
    };
    static WATCH: LazyLock<Option<fs::File>> =
        LazyLock::new(|| fs::File::open("/proc/self/mountinfo").ok());
    static STARTED: LazyLock<Instant> = LazyLock::new(Instant::now);
    static GENERATION: Mutex<u64> = Mutex::new(0);
    let Some(watch) = WATCH.as_ref() else {
        return STARTED.elapsed().as_secs() / 10;
    };
    let mut poll = libc::pollfd {
        fd: watch.as_raw_fd(),
        events: libc::POLLPRI,
        revents: 0,
    };
    // Under the lock: the poll clears the flag it reports.
    let mut generation = GENERATION.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: one pollfd, valid for the call; a timeout of 0 never blocks.
    let changed = unsafe { libc::poll(&mut poll, 1, 0) } == 1
        && poll.revents & (libc::POLLPRI | libc::POLLERR) != 0;
    // The first call counts as a change: nothing was read before it.
    if changed || *generation == 0 {
        *generation += 1;
    }
    *generation
}

/// `/proc/self/mountinfo`, read again when the mount table has changed since the last read.
fn mountinfo() -> std::io::Result<std::sync::Arc<str>> {
    use std::sync::{Arc, Mutex};
    static CACHE: Mutex<Option<(u64, Arc<str>)>> = Mutex::new(None);
    let generation = mount_generation();
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((at, text)) = cache.as_ref() {
        if *at == generation {
            return Ok(text.clone());
        }
    }
    let text: Arc<str> = fs::read_to_string("/proc/self/mountinfo")?.into();
    *cache = Some((generation, text.clone()));
    Ok(text)
}

/// A `cgroup2` mount: where it is, and which cgroup is its root (`/` for the whole
/// hierarchy; a bind mount of a subtree, or a mount seen from a cgroup namespace, shows another
/// path there).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgroup2Mount {
    pub mount_point: PathBuf,
    /// Field 4 of the mountinfo line, unescaped (e.g. `/`, `/docker/<id>`, `/../..`).
    pub root: String,
}

/// The cgroup2 mount of mountinfo text: the first one whose root is the whole hierarchy
/// (`/sys/fs/cgroup` on pure v2 hosts, `/sys/fs/cgroup/unified` on hybrid ones), else the
/// first one.
pub fn parse_cgroup2_mount_entry(mountinfo: &str) -> Option<Cgroup2Mount> {
    let mut mounts = mountinfo.lines().filter_map(|line| {
        // "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPER"
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mut fields = left.split_whitespace();
        let root = fields.nth(3)?;
        let mount_point = fields.next()?;
        (fstype == "cgroup2").then(|| Cgroup2Mount {
            mount_point: PathBuf::from(unescape_mount_path(mount_point)),
            root: unescape_mount_path(root),
        })
    });
    let first = mounts.next()?;
    if first.root == "/" {
        return Some(first);
    }
    Some(mounts.find(|m| m.root == "/").unwrap_or(first))
}

/// The cgroup2 mount point of mountinfo text (see `parse_cgroup2_mount_entry`).
pub fn parse_cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    parse_cgroup2_mount_entry(mountinfo).map(|m| m.mount_point)
}

/// The root cgroup of the cgroup2 mount at `mount_point` (`/` unless mountinfo says otherwise).
fn mount_root_of(mount_point: &Path) -> String {
    mountinfo()
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let (left, right) = line.split_once(" - ")?;
                let mut fields = left.split_whitespace();
                let root = fields.nth(3)?;
                let point = fields.next()?;
                (right.split_whitespace().next()? == "cgroup2"
                    && Path::new(&unescape_mount_path(point)) == mount_point)
                    .then(|| unescape_mount_path(root))
            })
        })
        .unwrap_or_else(|| "/".into())
}

/// On a hybrid host, the directory of the v1 hierarchy with `controller` at the path the v2
/// directory `dir` has (Docker and systemd make matching paths in every hierarchy): where the
/// target's memory or CPU limits are kept. `None` for the v2 root (that is the host).
/// Found once per (directory, controller) until the mount table changes: families ask for
/// every window at each read.
pub fn v1_dir_at_same_path(dir: &Path, controller: &str) -> Option<PathBuf> {
    use std::{collections::HashMap, sync::Mutex};
    type Found = HashMap<(PathBuf, String), Option<PathBuf>>;
    static CACHE: Mutex<Option<(u64, Found)>> = Mutex::new(None);
    let generation = mount_generation();
    let key = (dir.to_path_buf(), controller.to_string());
    {
        let cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, found)) = cache.as_ref() {
            if *at == generation {
                if let Some(found) = found.get(&key) {
                    return found.clone();
                }
            }
        }
    }
    let found = find_v1_dir_at_same_path(dir, controller);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let (at, entries) = cache.get_or_insert_with(|| (generation, HashMap::new()));
    // A new mount table forgets what the old one said; bounded (removed cgroups' entries go
    // with the next change of the mount table, or all at once here).
    if *at != generation || entries.len() >= 4096 {
        *at = generation;
        entries.clear();
    }
    entries.insert(key, found.clone());
    found
}

fn find_v1_dir_at_same_path(dir: &Path, controller: &str) -> Option<PathBuf> {
    find_v1_dir_in(&mountinfo().ok()?, dir, controller)
}

/// `v1_dir_at_same_path` against the mount table `mountinfo`, uncached: the directory of the v1
/// hierarchy with `controller` at the path the v2 directory `dir` has, if it exists. `None` on
/// a pure v2 host (no v1 hierarchy has the controller), for the v2 root, for a `dir` outside
/// the cgroup2 mount, and where that path has no v1 directory (e.g. a plain cgroup made in v2
/// alone on a hybrid host).
pub fn find_v1_dir_in(mountinfo: &str, dir: &Path, controller: &str) -> Option<PathBuf> {
    let v2 = parse_cgroup2_mount_entry(mountinfo)?;
    let relative = dir.strip_prefix(&v2.mount_point).ok()?;
    // The cgroup's path in the hierarchy, whatever part of it each mount shows.
    let cgroup = Path::new(&v2.root).join(relative);
    let cgroup = cgroup.to_str()?;
    if cgroup.trim_matches('/').is_empty() {
        return None;
    }
    let (mount_point, root) = parse_v1_mount_entry(mountinfo, controller)?;
    let v1 = v2_dir(&mount_point, &root, cgroup)?;
    v1.is_dir().then_some(v1)
}

/// The value of `key` in a flat-keyed cgroup file (`memory.stat`, `cpu.stat`: `key value`
/// lines), 0 if it has none.
pub fn stat_value(stat: &str, key: &str) -> u64 {
    stat.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

/// The `some` and `full` stall totals (µs) of a cgroup v2 pressure file (`memory.pressure`,
/// `cpu.pressure`): the kernel's own for the cgroup and those below it. `None` without PSI.
pub fn pressure_totals(dir: &Path, file: &str) -> Option<(u64, u64)> {
    let text = fs::read_to_string(dir.join(file)).ok()?;
    let total = |kind: &str| -> Option<u64> {
        text.lines()
            .find(|l| l.starts_with(kind))?
            .split_whitespace()
            .find_map(|f| f.strip_prefix("total="))?
            .parse()
            .ok()
    };
    Some((total("some ")?, total("full ").unwrap_or(0)))
}

/// Where the v1 hierarchy with `controller` (e.g. `memory`) is mounted, on a hybrid host.
pub fn v1_mount(controller: &str) -> Option<PathBuf> {
    parse_v1_mount(&mountinfo().ok()?, controller)
}

/// The first `cgroup` (v1) mount whose super options name `controller` (`memory`; `cpu` is
/// found in a `cpu,cpuacct` mount). `None` on a pure v2 host.
pub fn parse_v1_mount(mountinfo: &str, controller: &str) -> Option<PathBuf> {
    parse_v1_mount_entry(mountinfo, controller).map(|(mount_point, _)| mount_point)
}

/// `parse_v1_mount` with the mount's root cgroup (`/`, or `/docker/<id>` inside a container).
pub fn parse_v1_mount_entry(mountinfo: &str, controller: &str) -> Option<(PathBuf, String)> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut fields = right.split_whitespace();
        let (fstype, options) = (fields.next()?, fields.nth(1)?);
        let mut left = left.split_whitespace();
        let root = left.nth(3)?;
        let mount_point = left.next()?;
        (fstype == "cgroup" && options.split(',').any(|o| o == controller)).then(|| {
            (
                PathBuf::from(unescape_mount_path(mount_point)),
                unescape_mount_path(root),
            )
        })
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal `\ooo`.
fn unescape_mount_path(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let oct: String = chars.by_ref().take(3).collect();
            if let Ok(b) = u8::from_str_radix(&oct, 8) {
                out.push(b as char);
                continue;
            }
            out.push('\\');
            out.push_str(&oct);
        } else {
            out.push(c);
        }
    }
    out
}

/// Checks that `path` is a directory of the cgroup2 hierarchy mounted at `root`.
pub fn check_cgroup_dir(root: &Path, path: &Path) -> Result<PathBuf, TargetError> {
    let canonical = path.canonicalize().map_err(|_| TargetError::NoSuchPath {
        path: path.to_owned(),
        root: root.to_owned(),
    })?;
    if !canonical.starts_with(root) {
        return Err(TargetError::NotCgroup2 {
            path: path.to_owned(),
            root: root.to_owned(),
        });
    }
    if !canonical.join("cgroup.threads").is_file() {
        return Err(TargetError::NotACgroupDir {
            path: path.to_owned(),
        });
    }
    Ok(canonical)
}

/// The cgroup v2 directory of a process, from the `0::/path` line of /proc/PID/cgroup.
pub fn cgroup_of_pid(root: &Path, pid: u32) -> Result<PathBuf, TargetError> {
    cgroup_of_pid_in(Path::new("/proc"), root, &mount_root_of(root), pid)
}

/// `cgroup_of_pid` with the proc filesystem at `proc` and the cgroup2 mount at `root` whose
/// root cgroup is `mount_root` (mountinfo's field 4, `/` for the whole hierarchy).
pub fn cgroup_of_pid_in(
    proc: &Path,
    root: &Path,
    mount_root: &str,
    pid: u32,
) -> Result<PathBuf, TargetError> {
    let text = fs::read_to_string(proc.join(pid.to_string()).join("cgroup"))
        .map_err(|_| TargetError::NoSuchPid { pid })?;
    let rel = parse_v2_cgroup_line(&text).ok_or(TargetError::NoCgroup2Mount)?;
    v2_dir(root, mount_root, rel).ok_or_else(|| TargetError::OutsideCgroupMount {
        pid,
        cgroup: rel.to_string(),
        root: root.to_owned(),
        mount_root: mount_root.to_string(),
    })
}

/// The path of the `0::` line of /proc/PID/cgroup: the process's cgroup in the v2 hierarchy
/// (the only line on a pure v2 host; after the v1 lines on a hybrid one; none on a v1-only one).
pub fn parse_v2_cgroup_line(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup.lines().find_map(|l| l.strip_prefix("0::"))
}

/// The path in the v1 hierarchy with `controller` of /proc/PID/cgroup text (`N:cpu,cpuacct:/x`
/// lines; `name=systemd` counts as the controller `name=systemd`). `None` on a pure v2 host.
pub fn parse_v1_cgroup_line<'a>(proc_cgroup: &'a str, controller: &str) -> Option<&'a str> {
    proc_cgroup.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| !c.is_empty() && c == controller)
            .then_some(path)
    })
}

/// The directory of the cgroup `cgroup` (a /proc/PID/cgroup path) under the cgroup2 mount at
/// `mount_point` whose root cgroup is `mount_root`. `None` when that cgroup is not below the
/// mount's root: a path that climbs (`/../x`: the process is outside the reader's cgroup
/// namespace) or a subtree mount that does not hold it.
pub fn v2_dir(mount_point: &Path, mount_root: &str, cgroup: &str) -> Option<PathBuf> {
    fn parts(p: &str) -> Vec<&str> {
        p.split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect()
    }
    let (base, path) = (parts(mount_root), parts(cgroup));
    let below = path.strip_prefix(base.as_slice())?;
    if below.contains(&"..") {
        return None;
    }
    Some(
        below
            .iter()
            .fold(mount_point.to_path_buf(), |d, c| d.join(c)),
    )
}

/// The cgroup named for container `id` that holds `dir` (a process's cgroup), or `dir` itself
/// when none of its ancestors under `root` is: Docker's cgroupfs driver `.../docker/<id>`,
/// its systemd driver `.../docker-<id>.scope`, containerd's CRI `.../cri-containerd-<id>.scope`
/// (systemd) or `.../pod<uid>/<id>` (cgroupfs), CRI-O's `crio-<id>.scope`, Podman's
/// `libpod-<id>.scope`. A container whose init made cgroups of its own (systemd in a
/// container: `docker-<id>.scope/init.scope`) is so watched whole.
pub fn container_dir(root: &Path, dir: &Path, id: &str) -> PathBuf {
    if id.is_empty() {
        return dir.to_path_buf();
    }
    dir.ancestors()
        .take_while(|d| d.starts_with(root) && *d != root)
        .find(|d| {
            d.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| names_container(n, id))
        })
        .unwrap_or(dir)
        .to_path_buf()
}

/// Whether a cgroup's directory name is the one a runtime gives container `id`: the id itself,
/// or `<prefix>-<id>.scope` (systemd drivers).
pub fn names_container(name: &str, id: &str) -> bool {
    name == id
        || name
            .strip_suffix(".scope")
            .and_then(|n| n.strip_suffix(id))
            .is_some_and(|prefix| prefix.ends_with('-') && prefix.len() > 1)
}

/// Whether a cgroup's directory name is the kubelet's pod cgroup for pod `uid`: `pod<uid>`
/// (cgroupfs driver) or `kubepods[-<qos>]-pod<uid with _ for ->.slice` (systemd driver).
pub fn names_pod(name: &str, uid: &str) -> bool {
    if uid.is_empty() {
        return false;
    }
    if name.strip_prefix("pod") == Some(uid) {
        return true;
    }
    let systemd_uid = uid.replace('-', "_");
    name.strip_suffix(".slice")
        .and_then(|n| n.strip_suffix(systemd_uid.as_str()))
        .and_then(|n| n.strip_suffix("-pod"))
        .is_some_and(|n| n == "kubepods" || n.starts_with("kubepods-"))
}

/// The pod cgroup above a pod's sandbox cgroup `sandbox_dir`: the ancestor the kubelet named
/// for pod `uid`, else the sandbox's parent (a runtime's own naming). `None` when that would
/// be `root` or outside it (a pod with no cgroup of its own).
pub fn pod_dir(root: &Path, sandbox_dir: &Path, uid: &str) -> Option<PathBuf> {
    let below_root = |d: &&Path| d.starts_with(root) && *d != root;
    sandbox_dir
        .ancestors()
        .skip(1)
        .take_while(below_root)
        .find(|d| {
            d.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| names_pod(n, uid))
        })
        .or_else(|| sandbox_dir.parent().filter(below_root))
        .map(Path::to_path_buf)
}

/// The kernel's cgroup id: the inode number of the cgroup's directory.
pub fn cgroup_id(dir: &Path) -> Result<u64, TargetError> {
    fs::metadata(dir)
        .map(|m| m.ino())
        .map_err(|source| TargetError::Io {
            what: dir.display().to_string(),
            source,
        })
}

/// Thread ids directly in the cgroup (`cgroup.threads`).
pub fn threads(dir: &Path) -> std::io::Result<Vec<u32>> {
    ids(dir, "cgroup.threads")
}

/// The threads of a cgroup and of every cgroup below it. The target cgroup must be readable;
/// a descendant removed meanwhile is skipped.
pub fn subtree_threads(dir: &Path) -> std::io::Result<Vec<u32>> {
    subtree_ids(dir, "cgroup.threads")
}

/// Process ids directly in the cgroup (`cgroup.procs`).
pub fn procs(dir: &Path) -> std::io::Result<Vec<u32>> {
    ids(dir, "cgroup.procs")
}

/// The processes of a cgroup and of every cgroup below it (`cgroup.procs`), likewise.
pub fn subtree_procs(dir: &Path) -> std::io::Result<Vec<u32>> {
    subtree_ids(dir, "cgroup.procs")
}

fn ids(dir: &Path, file: &str) -> std::io::Result<Vec<u32>> {
    Ok(fs::read_to_string(dir.join(file))?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect())
}

fn subtree_ids(dir: &Path, file: &str) -> std::io::Result<Vec<u32>> {
    let mut out = ids(dir, file)?;
    let mut pending: Vec<std::path::PathBuf> = subdirs(dir);
    while let Some(child) = pending.pop() {
        if let Ok(found) = ids(&child, file) {
            out.extend(found);
        }
        pending.extend(subdirs(&child));
    }
    Ok(out)
}

/// The child cgroups of `dir`. Their type comes with the directory listing (kernfs gives it):
/// a stat of each of a cgroup's ~30 files was most of an idle window's cost to its agent.
fn subdirs(dir: &Path) -> Vec<std::path::PathBuf> {
    fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(is_directory)
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

fn is_directory(entry: &fs::DirEntry) -> bool {
    entry.file_type().is_ok_and(|t| t.is_dir())
}

/// A PID that can be a target: a live user-space process (not a zombie, not a kernel thread).
pub fn check_user_process(pid: u32) -> Result<(), TargetError> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|_| TargetError::NoSuchPid { pid })?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return Err(TargetError::ZombiePid { pid });
    }
    // Field 9 of /proc/PID/stat (index 6 after the state): the task's flags.
    const PF_KTHREAD: u64 = 0x0020_0000;
    let flags: u64 = fields.get(6).and_then(|f| f.parse().ok()).unwrap_or(0);
    if flags & PF_KTHREAD != 0 {
        return Err(TargetError::KernelThread { pid });
    }
    Ok(())
}

/// Whether a process exists and has not exited (a zombie, state Z or X, has exited).
pub fn process_running(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "PID (comm) STATE ...": comm may hold spaces and parentheses, so look after the last ')'.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z") | Some("X") | None)
}

/// A process's start time (clock ticks since boot, field 22 of /proc/PID/stat): with the PID,
/// it names one process for good, since PIDs are reused.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after "(comm)" start at field 3, so starttime (22) is the 20th of them.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

pub fn child_cgroups(dir: &Path) -> usize {
    fs::read_dir(dir)
        .map(|d| d.filter_map(Result::ok).filter(is_directory).count())
        .unwrap_or(0)
}

/// The cgroup's CPU time so far, in ns (cgroup v2 `cpu.stat` `usage_usec`: the scheduler's
/// runtime of its tasks and its descendants' tasks, kept by the kernel for every cgroup).
pub fn cpu_usage_ns(dir: &Path) -> Option<u64> {
    let stat = fs::read_to_string(dir.join("cpu.stat")).ok()?;
    let usec: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))?
        .trim()
        .parse()
        .ok()?;
    Some(usec * 1000)
}

/// CPU time of the cgroup's own tasks, without the cgroups below it (whose `cpu.stat` the
/// cgroup's own includes).
pub fn cpu_usage_ns_alone(dir: &Path) -> Option<u64> {
    let below: u64 = subdirs(dir).iter().filter_map(|d| cpu_usage_ns(d)).sum();
    Some(cpu_usage_ns(dir)?.saturating_sub(below))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_keys_match_whole_words() {
        let stat = "anon 4096\nanon_thp 0\nfile 8192\nshmem 0\nkernel 100\n";
        assert_eq!(stat_value(stat, "anon"), 4096);
        assert_eq!(stat_value(stat, "file"), 8192);
        assert_eq!(stat_value(stat, "kernel"), 100);
        assert_eq!(stat_value(stat, "sock"), 0);
    }

    #[test]
    fn finds_a_v1_controllers_mount() {
        let hybrid = "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
                      44 31 0:41 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory\n\
                      45 31 0:42 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        assert_eq!(
            parse_v1_mount(hybrid, "memory"),
            Some(PathBuf::from("/sys/fs/cgroup/memory"))
        );
        assert_eq!(
            parse_v1_mount(hybrid, "cpu"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(parse_v1_mount(hybrid, "blkio"), None);
    }

    #[test]
    fn finds_hybrid_and_pure_v2_mounts() {
        let hybrid = "25 30 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
                      41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            parse_cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let pure = "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            parse_cgroup2_mount(pure),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(
            parse_cgroup2_mount("1 2 0:1 / / rw - ext4 /dev/vda rw\n"),
            None
        );
        let escaped = "41 31 0:38 / /mnt/my\\040cg rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            parse_cgroup2_mount(escaped),
            Some(PathBuf::from("/mnt/my cg"))
        );
    }

    #[test]
    fn zombies_and_missing_processes_are_not_running() {
        assert!(process_running(std::process::id()));
        assert!(!process_running(u32::MAX));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        std::thread::sleep(std::time::Duration::from_millis(200)); // exited, not yet reaped
        assert!(!process_running(pid));
        child.wait().unwrap();
    }

    #[test]
    fn reads_the_v2_line_of_proc_cgroup() {
        let text = "12:pids:/docker/abc\n1:name=systemd:/docker/abc\n0::/docker/abc\n";
        assert_eq!(parse_v2_cgroup_line(text), Some("/docker/abc"));
        assert_eq!(parse_v2_cgroup_line("3:cpu:/x\n"), None);
    }
}
