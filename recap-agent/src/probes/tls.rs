//! `http` over TLS, user side: uprobes on the TLS code of the target's processes
//! (`recap-ebpf/src/probes/tls.rs`), attached per process, so that a process outside the
//! target never traps on them, even when it runs the same shared `libssl`. An attachment is
//! shared by the windows that count the process and detached when the last one lets go, or
//! when the process is gone or has exec'd another program.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    num::NonZeroU32,
    os::unix::fs::MetadataExt,
    path::Path,
};

use aya::{
    maps::MapData,
    programs::{
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLink, UProbeScope},
        ProgramError, UProbe,
    },
    Ebpf,
};
use recap_common::{maps, programs, TLS_FUNCTIONS};
use serde::{Deserialize, Serialize};

use super::tls_code::{self, TlsCode};
use crate::targets::cgroup;

/// Processes of a window looked at, at most.
const MAX_PROCESSES: usize = 1024;

/// TLS code found in a window's processes, as the summary reports it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TlsSeen {
    /// `OpenSSL (libssl.so.3)`, `OpenSSL in node`, `Go crypto/tls in server`.
    pub code: String,
    /// The processes that run it.
    pub pids: Vec<u32>,
    /// Its plaintext is read (uprobes attached for those processes).
    pub read: bool,
    /// Why not, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One window's view: the processes it looked at and what they run.
#[derive(Default)]
pub struct TlsWatch {
    checked: HashMap<u32, Checked>,
    seen: BTreeMap<String, (BTreeSet<u32>, Option<String>)>,
}

/// A process as it was when looked at: a changed start time (the pid was reused) or
/// executable (it exec'd) makes it a process to look at again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Identity {
    start: u64,
    exe: u64,
}

struct Checked {
    identity: Identity,
    /// This window holds a reference on the process's attachments.
    holds: bool,
}

impl TlsWatch {
    pub fn report(&self) -> Vec<TlsSeen> {
        self.seen
            .iter()
            .map(|(code, (pids, reason))| TlsSeen {
                code: code.clone(),
                pids: pids.iter().copied().collect(),
                read: reason.is_none(),
                reason: reason.clone(),
            })
            .collect()
    }
}

/// The attachments of every instrumented process, and what was learned of each file.
#[derive(Default)]
pub struct TlsProbes {
    procs: HashMap<u32, Instrumented>,
    /// `TLS_FUNCTIONS` offsets by file (`st_dev`, `st_ino`), or why they are not known.
    offsets: HashMap<(u64, u64), Result<[u64; 4], String>>,
}

struct Instrumented {
    identity: Identity,
    windows: usize,
    /// Detached by `detach` (or by their `Drop`).
    links: Vec<UProbeLink>,
}

impl TlsProbes {
    /// Looks at the window's processes that are new to it (or changed), instruments the TLS
    /// code they run, and lets go of the ones that left. Returns how many processes were
    /// newly instrumented.
    pub fn sync(
        &mut self,
        ebpf: &mut Ebpf,
        watch: &mut TlsWatch,
        cgroup_dir: &Path,
        subtree: bool,
    ) -> usize {
        let pids = if subtree {
            cgroup::subtree_procs(cgroup_dir)
        } else {
            cgroup::procs(cgroup_dir)
        }
        .unwrap_or_default();
        let present: BTreeSet<u32> = pids.iter().copied().take(MAX_PROCESSES).collect();
        let gone: Vec<u32> = watch
            .checked
            .keys()
            .filter(|pid| !present.contains(pid))
            .copied()
            .collect();
        for pid in gone {
            if watch.checked.remove(&pid).is_some_and(|c| c.holds) {
                self.release(ebpf, pid);
            }
        }
        let mut added = 0;
        for pid in present {
            let Some(identity) = identity(pid) else {
                continue;
            };
            match watch.checked.get(&pid) {
                Some(c) if c.identity == identity => continue,
                Some(c) if c.holds => self.release(ebpf, pid),
                _ => {}
            }
            let code = tls_code::of_process(pid);
            let readable: Vec<&TlsCode> = code.iter().filter(|c| c.unread.is_none()).collect();
            let mut refused = None;
            let holds = !readable.is_empty()
                && match self.acquire(ebpf, pid, identity, &readable) {
                    Ok(()) => true,
                    Err(reason) => {
                        refused = Some(reason);
                        false
                    }
                };
            added += usize::from(holds);
            for c in &code {
                let reason = c
                    .unread
                    .map(str::to_string)
                    .or_else(|| refused.clone())
                    .or_else(|| self.unreadable(c));
                let entry = watch
                    .seen
                    .entry(c.what.clone())
                    .or_insert_with(|| (BTreeSet::new(), None));
                entry.0.insert(pid);
                if reason.is_some() {
                    entry.1 = reason;
                }
            }
            watch.checked.insert(pid, Checked { identity, holds });
        }
        added
    }

    /// Lets go of everything the window holds.
    pub fn release_all(&mut self, ebpf: &mut Ebpf, watch: &mut TlsWatch) {
        for (pid, checked) in watch.checked.drain() {
            if checked.holds {
                self.release(ebpf, pid);
            }
        }
    }

    /// Why a file whose functions were looked for cannot be read (they were not found).
    fn unreadable(&self, code: &TlsCode) -> Option<String> {
        match self.offsets.get(&code.file) {
            Some(Err(e)) => Some(e.clone()),
            _ => None,
        }
    }

    fn acquire(
        &mut self,
        ebpf: &mut Ebpf,
        pid: u32,
        identity: Identity,
        code: &[&TlsCode],
    ) -> Result<(), String> {
        if let Some(p) = self.procs.get_mut(&pid) {
            if p.identity == identity {
                p.windows += 1;
                return Ok(());
            }
            // Another process under a reused pid, or another program after exec.
            if let Some(p) = self.procs.remove(&pid) {
                detach(p.links);
            }
        }
        let scope = UProbeScope::OneProcess(NonZeroU32::new(pid).ok_or("pid 0")?);
        let mut links = Vec::new();
        let mut attached_any = false;
        let mut last_error = None;
        for c in code {
            let offsets = self
                .offsets
                .entry(c.file)
                .or_insert_with(|| tls_code::function_offsets(&c.path))
                .clone();
            let Ok(offsets) = offsets else {
                continue;
            };
            match attach_file(ebpf, &c.path, &offsets, scope) {
                Ok(mut l) => {
                    links.append(&mut l);
                    attached_any = true;
                }
                Err(e) => last_error = Some(format!("{}: {e}", c.what)),
            }
        }
        if !attached_any {
            return Err(last_error.unwrap_or_else(|| "no TLS functions found".into()));
        }
        mark(ebpf, pid, true);
        self.procs.insert(
            pid,
            Instrumented {
                identity,
                windows: 1,
                links,
            },
        );
        Ok(())
    }

    fn release(&mut self, ebpf: &mut Ebpf, pid: u32) {
        if let Some(p) = self.procs.get_mut(&pid) {
            p.windows -= 1;
            if p.windows == 0 {
                if let Some(p) = self.procs.remove(&pid) {
                    detach(p.links);
                    mark(ebpf, pid, false);
                }
            }
        }
    }
}

/// The entry and return probes of every function in `offsets`, for one process; all or none.
fn attach_file(
    ebpf: &mut Ebpf,
    path: &Path,
    offsets: &[u64; 4],
    scope: UProbeScope,
) -> Result<Vec<UProbeLink>, String> {
    let mut links = Vec::new();
    for (&(_, function), &offset) in TLS_FUNCTIONS.iter().zip(offsets) {
        for (program, cookie) in [
            (programs::TLS_CALL, None),
            (programs::TLS_RETURN, Some(function)),
        ] {
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
                    path,
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

/// Detaches uprobes side by side: each detach waits for the kernel to be done with the probe
/// (~100 ms here), and those waits overlap.
fn detach(links: Vec<UProbeLink>) {
    let t = std::time::Instant::now();
    let n = links.len();
    std::thread::scope(|s| {
        for link in links {
            s.spawn(move || drop(link));
        }
    });
    log::debug!("{n} TLS uprobes detached in {:?}", t.elapsed());
}

/// A process's start time (`/proc/PID/stat` field 22) and executable's inode.
fn identity(pid: u32) -> Option<Identity> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces and parentheses): state is field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let start = rest.split(' ').nth(19)?.parse().ok()?;
    let exe = std::fs::metadata(format!("/proc/{pid}/exe")).ok()?.ino();
    Some(Identity { start, exe })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_identified_by_its_start_and_its_program() {
        let me = identity(std::process::id()).unwrap();
        assert_eq!(identity(std::process::id()), Some(me));
        assert!(me.start > 0 && me.exe > 0);
        assert_eq!(identity(0), None);
    }
}
