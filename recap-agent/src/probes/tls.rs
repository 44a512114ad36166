//! `http` over TLS, user side: uprobes on the TLS code of the target's processes
//! (`recap-ebpf/src/probes/tls.rs`), attached per process, so that a process outside the
//! target never traps on them, even when it runs the same shared `libssl`. An attachment is
//! shared by the windows that count the process and detached when the last one lets go, or
//! when the process is gone or has exec'd another program.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    num::NonZeroU32,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::{
    maps::MapData,
    programs::{
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLink, UProbeScope},
        ProgramError, UProbe,
    },
    Ebpf,
};
use recap_common::maps;
use serde::{Deserialize, Serialize};

use super::tls_code::{self, LinkedCache, Point, TlsCode};
use crate::targets::cgroup;

/// Processes of a window looked at, at most.
const MAX_PROCESSES: usize = 1024;
/// Programs a window remembers the TLS code of, at most.
const MAX_PROGRAMS: usize = 1024;

/// TLS code found in a window's processes, as the summary reports it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TlsSeen {
    /// `OpenSSL (libssl.so.3)`, `OpenSSL in node`, `Go crypto/tls in server`.
    pub code: String,
    /// The processes whose calls into it are read (uprobes attached for them).
    pub read: Vec<u32>,
    /// The processes that run it but whose calls are not read, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_read: Vec<NotRead>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NotRead {
    pub pid: u32,
    pub reason: String,
}

/// One window's view: the processes it looked at and what they run.
struct Watch {
    cgroup_dir: PathBuf,
    subtree: bool,
    checked: HashMap<u32, Checked>,
    /// The TLS code each program (by its executable's inode) was found running in this
    /// window: a new process of a program seen before is probed at its exec, before the
    /// dynamic loader has mapped its libraries.
    programs: HashMap<(u64, u64), Vec<TlsCode>>,
    /// By code, each process that runs it and why it is not read (None: it is).
    seen: BTreeMap<String, BTreeMap<u32, Option<String>>>,
}

/// A process as it was when looked at: a changed start time (the pid was reused) or
/// executable (it exec'd) makes it a process to look at again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Identity {
    start: u64,
    /// The executable's `(st_dev, st_ino)`.
    exe: (u64, u64),
}

struct Checked {
    identity: Identity,
    /// This window holds a reference on the process's attachments.
    holds: bool,
    /// Times looked at: a process with no TLS code yet is looked at again for its first
    /// seconds (Python loads `ssl` when it imports it).
    looks: u8,
}

/// Ticks a process without TLS code is looked at again.
const LOOKS: u8 = 5;

/// A process that exec'd with no TLS code mapped yet, to be looked at again soon: the dynamic
/// loader maps a program's libraries after the exec, before `main`.
struct Recheck {
    due: Instant,
    slot: u32,
    pid: u32,
    tries: u8,
}

/// After an exec: 2, 10, 50, 250 ms.
const RECHECK_DELAYS_MS: [u64; 4] = [2, 10, 50, 250];

/// The attachments of every instrumented process, each window's view, and what was learned of
/// each file.
#[derive(Default)]
pub struct TlsProbes {
    procs: HashMap<u32, Instrumented>,
    windows: HashMap<u32, Watch>,
    rechecks: Vec<Recheck>,
    /// The probes of each file (`st_dev`, `st_ino`), or why there are none.
    offsets: HashMap<(u64, u64), Result<Vec<Point>, String>>,
    linked: LinkedCache,
}

struct Instrumented {
    identity: Identity,
    windows: usize,
    /// The files whose functions are probed.
    files: BTreeSet<(u64, u64)>,
    /// Detached by `detach` (or by their `Drop`).
    links: Vec<UProbeLink>,
}

impl TlsProbes {
    /// Starts watching a window's processes, and instruments the ones there now.
    pub fn open(&mut self, ebpf: &mut Ebpf, slot: u32, cgroup_dir: &Path, subtree: bool) {
        self.windows.insert(
            slot,
            Watch {
                cgroup_dir: cgroup_dir.to_path_buf(),
                subtree,
                checked: HashMap::new(),
                programs: HashMap::new(),
                seen: BTreeMap::new(),
            },
        );
        self.sync(ebpf, slot);
    }

    /// Looks at the window's processes that are new to it (or changed), instruments the TLS
    /// code they run, and lets go of the ones that left; once a second. Returns how many
    /// processes it looked at.
    pub fn sync(&mut self, ebpf: &mut Ebpf, slot: u32) -> usize {
        let Some(watch) = self.windows.get(&slot) else {
            return 0;
        };
        let pids = if watch.subtree {
            cgroup::subtree_procs(&watch.cgroup_dir)
        } else {
            cgroup::procs(&watch.cgroup_dir)
        };
        // Unreadable for a moment (or gone): nothing is let go on that account.
        let Ok(pids) = pids else {
            return 0;
        };
        let present: BTreeSet<u32> = pids.iter().copied().take(MAX_PROCESSES).collect();
        let gone: Vec<(u32, Identity)> = watch
            .checked
            .iter()
            .filter(|(pid, c)| !present.contains(pid) && c.holds)
            .map(|(pid, c)| (*pid, c.identity))
            .collect();
        for (pid, identity) in gone {
            self.release(ebpf, pid, identity);
        }
        let watch = self.windows.get_mut(&slot).expect("looked up above");
        watch.checked.retain(|pid, _| present.contains(pid));
        let mut looked = 0;
        for pid in present {
            let again = self.windows[&slot]
                .checked
                .get(&pid)
                .is_none_or(|c| Some(c.identity) != identity(pid) || (!c.holds && c.looks < LOOKS));
            if again {
                self.look_at(ebpf, slot, pid);
                looked += 1;
            }
        }
        looked
    }

    /// The target's new processes (exec, fork) told by the kernel: instrumented now, before
    /// they get far; an exec'd one with no TLS code mapped yet is looked at again shortly.
    /// Returns when the next look is due.
    pub fn on_new_processes(
        &mut self,
        ebpf: &mut Ebpf,
        pids: &[u32],
        slot_of: impl Fn(u32) -> u32,
    ) -> Option<Instant> {
        for &pid in pids {
            let slot = slot_of(pid);
            if self.windows.contains_key(&slot) && !self.look_at(ebpf, slot, pid) {
                self.rechecks.push(Recheck {
                    due: Instant::now() + Duration::from_millis(RECHECK_DELAYS_MS[0]),
                    slot,
                    pid,
                    tries: 1,
                });
            }
        }
        let now = Instant::now();
        let (due, later): (Vec<Recheck>, Vec<Recheck>) = std::mem::take(&mut self.rechecks)
            .into_iter()
            .partition(|r| r.due <= now);
        self.rechecks = later;
        for r in due {
            if !self.windows.contains_key(&r.slot) || self.look_at(ebpf, r.slot, r.pid) {
                continue;
            }
            if let Some(ms) = RECHECK_DELAYS_MS.get(r.tries as usize) {
                self.rechecks.push(Recheck {
                    due: now + Duration::from_millis(*ms),
                    tries: r.tries + 1,
                    ..r
                });
            }
        }
        self.rechecks.iter().map(|r| r.due).min()
    }

    /// Stops watching a window, letting go of everything it holds.
    pub fn close(&mut self, ebpf: &mut Ebpf, slot: u32) {
        self.rechecks.retain(|r| r.slot != slot);
        mark_window(ebpf, slot, false);
        if let Some(watch) = self.windows.remove(&slot) {
            for (pid, checked) in watch.checked {
                if checked.holds {
                    self.release(ebpf, pid, checked.identity);
                }
            }
        }
    }

    /// What the window found so far.
    pub fn seen(&self, slot: u32) -> Vec<TlsSeen> {
        let Some(watch) = self.windows.get(&slot) else {
            return Vec::new();
        };
        watch
            .seen
            .iter()
            .map(|(code, pids)| TlsSeen {
                code: code.clone(),
                read: pids
                    .iter()
                    .filter(|(_, r)| r.is_none())
                    .map(|(p, _)| *p)
                    .collect(),
                not_read: pids
                    .iter()
                    .filter_map(|(p, r)| {
                        r.as_ref().map(|r| NotRead {
                            pid: *p,
                            reason: r.clone(),
                        })
                    })
                    .collect(),
            })
            .collect()
    }

    /// Looks at one process of a window and instruments its TLS code; true if it has code
    /// `http` reads.
    fn look_at(&mut self, ebpf: &mut Ebpf, slot: u32, pid: u32) -> bool {
        let Some(identity) = identity(pid) else {
            return false;
        };
        let Some(mut watch) = self.windows.remove(&slot) else {
            return false;
        };
        let before = watch.checked.remove(&pid);
        let (held, looks) = match before {
            Some(c) if c.identity == identity => (c.holds, c.looks),
            Some(c) => {
                if c.holds {
                    self.release(ebpf, pid, c.identity);
                }
                (false, 0)
            }
            None => (false, 0),
        };
        let mut code = tls_code::of_process(pid, &mut self.linked);
        for known in watch.programs.get(&identity.exe).into_iter().flatten() {
            if code.iter().all(|c| c.file != known.file) {
                code.push(known.in_process(pid));
            }
        }
        let readable: Vec<&TlsCode> = code.iter().filter(|c| c.unread.is_none()).collect();
        if !readable.is_empty() {
            if watch.programs.len() >= MAX_PROGRAMS {
                watch.programs.clear();
            }
            let program = readable.iter().map(|c| (*c).clone()).collect();
            watch.programs.insert(identity.exe, program);
        }
        let mut refused = None;
        let mut holds = held;
        if !readable.is_empty() {
            match self.ensure(ebpf, pid, identity, &readable, !held) {
                Ok(()) => {
                    holds = true;
                    mark_window(ebpf, slot, true);
                }
                Err(reason) => refused = Some(reason),
            }
        }
        for c in &code {
            let reason = c
                .unread
                .map(str::to_string)
                .or_else(|| refused.clone())
                .or_else(|| self.unreadable(c));
            let pids = watch.seen.entry(c.what.clone()).or_default();
            if pids.len() < MAX_PROCESSES {
                pids.insert(pid, reason);
            }
        }
        watch.checked.insert(
            pid,
            Checked {
                identity,
                holds,
                looks: looks.saturating_add(1),
            },
        );
        self.windows.insert(slot, watch);
        !readable.is_empty()
    }

    /// Why a file whose functions were looked for cannot be read (they were not found).
    fn unreadable(&self, code: &TlsCode) -> Option<String> {
        match self.offsets.get(&code.file) {
            Some(Err(e)) => Some(e.clone()),
            _ => None,
        }
    }

    /// Probes `code` for process `pid` (the files not probed for it yet); `new_ref`: a window
    /// takes a reference on the process's probes.
    fn ensure(
        &mut self,
        ebpf: &mut Ebpf,
        pid: u32,
        identity: Identity,
        code: &[&TlsCode],
        new_ref: bool,
    ) -> Result<(), String> {
        if self.procs.get(&pid).is_some_and(|p| p.identity != identity) {
            // Another process under a reused pid, or another program after exec.
            if let Some(p) = self.procs.remove(&pid) {
                detach(p.links);
                mark(ebpf, pid, false);
            }
        }
        let scope = UProbeScope::OneProcess(NonZeroU32::new(pid).ok_or("pid 0")?);
        let entry = self.procs.entry(pid).or_insert_with(|| Instrumented {
            identity,
            windows: 0,
            files: BTreeSet::new(),
            links: Vec::new(),
        });
        let mut last_error = None;
        for c in code {
            if entry.files.contains(&c.file) {
                continue;
            }
            if self.offsets.len() > MAX_PROGRAMS {
                self.offsets.clear();
            }
            let offsets = self
                .offsets
                .entry(c.file)
                .or_insert_with(|| tls_code::attach_points(c))
                .clone();
            let offsets = match offsets {
                Ok(o) => o,
                Err(e) => {
                    last_error = Some(format!("{}: {e}", c.what));
                    continue;
                }
            };
            match attach_file(ebpf, c, &offsets, scope) {
                Ok(mut l) => {
                    entry.links.append(&mut l);
                    entry.files.insert(c.file);
                }
                Err(e) => last_error = Some(format!("{}: {e}", c.what)),
            }
        }
        if entry.links.is_empty() {
            self.procs.remove(&pid);
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return Err("the process exited before it could be instrumented".into());
            }
            return Err(last_error.unwrap_or_else(|| "no TLS functions found".into()));
        }
        if new_ref {
            entry.windows += 1;
        }
        mark(ebpf, pid, true);
        Ok(())
    }

    fn release(&mut self, ebpf: &mut Ebpf, pid: u32, identity: Identity) {
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        if p.identity != identity {
            return;
        }
        p.windows = p.windows.saturating_sub(1);
        if p.windows == 0 {
            if let Some(p) = self.procs.remove(&pid) {
                detach(p.links);
                mark(ebpf, pid, false);
            }
        }
    }
}

/// The probes `points` of one file, for one process; all or none. Attached through the file
/// as opened and checked (`/proc/self/fd/N`), so the kernel probes that file and no other the
/// path may lead to now.
fn attach_file(
    ebpf: &mut Ebpf,
    code: &TlsCode,
    points: &[Point],
    scope: UProbeScope,
) -> Result<Vec<UProbeLink>, String> {
    use std::os::fd::AsRawFd;
    let file = code.open().map_err(|e| format!("opening it: {e}"))?;
    let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    let mut links = Vec::new();
    for &Point {
        program,
        cookie,
        offset,
    } in points
    {
        {
            let prog: &mut UProbe = ebpf
                .program_mut(program)
                .ok_or_else(|| format!("program {program} missing from the eBPF object"))?
                .try_into()
                .map_err(|e: ProgramError| e.to_string())?;
            let t = std::time::Instant::now();
            match prog.load() {
                Ok(()) | Err(ProgramError::AlreadyLoaded) => {}
                Err(e) => return Err(format!("loading {program}: {e}")),
            }
            log::debug!("load {program} {:?}", t.elapsed());
            let t = std::time::Instant::now();
            let id = prog
                .attach(
                    UProbeAttachPoint {
                        location: UProbeAttachLocation::AbsoluteOffset(offset),
                        cookie,
                    },
                    &path,
                    scope,
                )
                .map_err(|e| {
                    format!(
                        "attaching a uprobe: {}",
                        super::program_set::error_chain(&e)
                    )
                })?;
            links.push(prog.take_link(id).map_err(|e| e.to_string())?);
            log::debug!("attach {program} {:?}", t.elapsed());
        }
    }
    Ok(links)
}

/// Tells the kernel side whether a process's TLS code is instrumented (`TLS_PROCS`).
fn mark(ebpf: &mut Ebpf, pid: u32, on: bool) {
    let Some(map) = ebpf.map_mut(maps::TLS_PROCS) else {
        return;
    };
    let Ok(mut procs) = aya::maps::HashMap::<&mut MapData, u32, u8>::try_from(map) else {
        return;
    };
    let done = if on {
        procs.insert(pid, 1, 0)
    } else {
        procs.remove(&pid)
    };
    if let Err(e) = done {
        log::debug!("TLS_PROCS for {pid}: {e}");
    }
}

/// Tells the socket programs whether a window has TLS code instrumented (`TLS_WINDOWS`).
fn mark_window(ebpf: &mut Ebpf, slot: u32, on: bool) {
    let Some(map) = ebpf.map_mut(maps::TLS_WINDOWS) else {
        return;
    };
    if let Ok(mut windows) = aya::maps::Array::<&mut MapData, u32>::try_from(map) {
        if let Err(e) = windows.set(slot, u32::from(on), 0) {
            log::debug!("TLS_WINDOWS[{slot}]: {e}");
        }
    }
}

/// Detaches uprobes off the caller's path: each detach waits for the kernel to be done with
/// the probe (~85 ms here, one after the other), and a window's close should not wait
/// for them. A program that runs twice for a while (a process instrumented again before its
/// old probes are gone) counts once: the second return finds its call already taken.
fn detach(links: Vec<UProbeLink>) {
    static DETACHER: std::sync::OnceLock<
        std::sync::Mutex<std::sync::mpsc::Sender<Vec<UProbeLink>>>,
    > = std::sync::OnceLock::new();
    let sender = DETACHER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Vec<UProbeLink>>();
        let spawned = std::thread::Builder::new()
            .name("recap-uprobe-detach".into())
            .spawn(move || {
                for links in rx {
                    let t = std::time::Instant::now();
                    let n = links.len();
                    drop(links);
                    log::debug!("{n} TLS uprobes detached in {:?}", t.elapsed());
                }
            });
        if let Err(e) = spawned {
            log::warn!("no thread for detaching uprobes ({e}): detaching inline");
        }
        std::sync::Mutex::new(tx)
    });
    // If the thread is gone, the links come back in the error and are dropped here.
    if let Ok(tx) = sender.lock() {
        let _ = tx.send(links);
    }
}

/// A process's start time (`/proc/PID/stat` field 22) and executable's inode.
fn identity(pid: u32) -> Option<Identity> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces and parentheses): state is field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let start = rest.split(' ').nth(19)?.parse().ok()?;
    let meta = std::fs::metadata(format!("/proc/{pid}/exe")).ok()?;
    let exe = (meta.dev(), meta.ino());
    Some(Identity { start, exe })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_identified_by_its_start_and_its_program() {
        let me = identity(std::process::id()).unwrap();
        assert_eq!(identity(std::process::id()), Some(me));
        assert!(me.start > 0 && me.exe.1 > 0);
        assert_eq!(identity(0), None);
    }
}
