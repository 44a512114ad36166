//! One loaded program set, many windows.
//!
//! Programs are loaded once, lazily per family (~tens of ms each, incl. the verifier). Opening a
//! window takes a slot, marks the target's threads in `TASK_SLOTS`, takes a reference on the
//! global hooks its families need (attached on first use, detached when the last window using
//! them closes) and attaches the cgroup programs to the target's cgroup, tagging each
//! attachment with the slot. Nothing is pinned: if the process dies, the kernel drops it all.

use std::{collections::BTreeMap, fs::File};

#[allow(deprecated)]
// per-attachment cgroup storage (CGRP_STORAGE is per cgroup, not per attachment)
use aya::{
    maps::{
        Array, CgroupStorage, CgroupStorageKey, HashMap, MapData, MapError, PerCpuArray,
        PerCpuHashMap, PerCpuValues,
    },
    programs::{
        cgroup_skb::CgroupSkbLink, raw_trace_point::RawTracePointLink, sock_ops::SockOpsLink,
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, ProgramError, RawTracePoint, SockOps,
    },
    util::nr_cpus,
    Ebpf, EbpfError, EbpfLoader,
};
use recap_common::{
    counter_index, maps, programs, syscall_index, Counter, ExecKey, TaskSlotChunk, WindowTag,
    MAX_SYSCALLS, MAX_WINDOWS, RUNQ_BUCKETS, TIDS_PER_ENTRY,
};
use thiserror::Error;

use super::{btf, counts::RawCounts, task_slots, Family, FamilyStatus};
use crate::targets::Target;

/// The eBPF object built by build.rs.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/recap"));

// uapi `enum bpf_attach_type`: the cgroup storage of an attachment is keyed by it.
const BPF_CGROUP_INET_INGRESS: u32 = 0;
const BPF_CGROUP_INET_EGRESS: u32 = 1;
const BPF_CGROUP_SOCK_OPS: u32 = 3;

/// aya passes the mode as `bpf_link_create` flags, and the kernel wants 0 there: cgroup links
/// always run alongside other programs on the cgroup (a container's own filters keep working).
const LINK_MODE: CgroupAttachMode = CgroupAttachMode::Single;

/// Raw tracepoints that keep `TASK_SLOTS` exact; needed by every task-based family.
const TASK_TRACKING: [(&str, &str); 3] = [
    (programs::PROC_FORK, "sched_process_fork"),
    (programs::PROC_EXIT, "sched_process_exit"),
    (programs::CGROUP_MOVE, "cgroup_attach_task"),
];

/// The global raw tracepoints of a task-based family: (program, tracepoint).
fn global_hooks(family: Family) -> &'static [(&'static str, &'static str)] {
    match family {
        Family::Syscalls => &[(programs::SYS_EXIT, "sys_exit")],
        Family::Proc => &[(programs::PROC_EXEC, "sched_process_exec")],
        Family::Cpu => &[
            (programs::SCHED_SWITCH, "sched_switch"),
            (programs::SCHED_WAKEUP, "sched_wakeup"),
            (programs::SCHED_WAKEUP_NEW, "sched_wakeup_new"),
        ],
        Family::Tcp | Family::Net => &[],
    }
}

#[derive(Debug, Error)]
pub enum EngineError {
    #[error("recap needs root, or the capabilities CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN, to load eBPF programs; run it with sudo")]
    NotPrivileged,
    #[error("loading RECap's eBPF object")]
    Load(#[source] EbpfError),
    #[error("all {max} window slots are in use; close a window first", max = MAX_WINDOWS - 1)]
    NoFreeSlot,
    #[error("{op}")]
    Map {
        op: String,
        #[source]
        source: MapError,
    },
    #[error("opening the target cgroup {path} for attaching")]
    CgroupOpen {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn map_err(op: impl Into<String>) -> impl FnOnce(MapError) -> EngineError {
    let op = op.into();
    move |source| EngineError::Map { op, source }
}

struct GlobalHook {
    _link: RawTracePointLink,
    users: usize,
}

/// Held only for its `Drop`, which detaches the program from the cgroup.
#[allow(dead_code)]
enum CgroupLink {
    Skb(CgroupSkbLink),
    SockOps(SockOpsLink),
}

/// The probes of one open window. Dropping it detaches its cgroup programs; `close` also
/// releases its global hooks and returns the final counts.
pub struct WindowProbes {
    pub slot: u32,
    pub cgroup_id: u64,
    cgroup_dir: std::path::PathBuf,
    pub families: BTreeMap<Family, FamilyStatus>,
    cgroup_links: Vec<CgroupLink>,
    hooks: Vec<&'static str>,
    tracks_tasks: bool,
}

pub struct ProbeEngine {
    ebpf: Ebpf,
    /// Kernel-side log records (aya-log), forwarded to `log` by `flush_logs`. Kept for the
    /// engine's life: dropping it closes the log map that the programs write to.
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    hooks: BTreeMap<&'static str, GlobalHook>,
    free_slots: Vec<u32>,
    /// Slots whose counters hold a previous window's numbers.
    dirty_slots: Vec<u32>,
    /// Why task-based families cannot run here (no BTF), if they cannot.
    task_families_blocked: Option<String>,
}

impl ProbeEngine {
    /// Loads the eBPF object (maps and BTF; programs load on first use).
    pub fn load() -> Result<Self, EngineError> {
        if !privileged() {
            return Err(EngineError::NotPrivileged);
        }
        // BPF memory is charged to the memcg on 6.x; older kernels need the rlimit.
        // SAFETY: plain setrlimit call with a valid struct.
        let unlimited = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
            log::debug!("setrlimit(RLIMIT_MEMLOCK) failed; fine on kernels that charge BPF memory to the memcg");
        }
        let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(4_194_304);
        let t = std::time::Instant::now();
        let offsets = btf::kernel_offsets();
        log::debug!("kernel offsets from BTF in {:?}", t.elapsed());
        let mut loader = EbpfLoader::new();
        // No kernel BTF for aya: the object has no CO-RE relocations (offsets come from
        // `btf::kernel_offsets`) and no BTF-typed programs, and aya's parse costs ~15 ms.
        loader.btf(None);
        loader
            .map_max_entries(maps::TASK_SLOTS, pid_max.div_ceil(TIDS_PER_ENTRY))
            .map_max_entries(maps::COUNTERS, MAX_WINDOWS * Counter::COUNT)
            .map_max_entries(maps::SYSCALLS, MAX_WINDOWS * MAX_SYSCALLS * 2)
            .map_max_entries(maps::RUNQ_HIST, MAX_WINDOWS * RUNQ_BUCKETS);
        if let Ok(offsets) = &offsets {
            for (name, value) in offsets {
                loader.override_global(name, value, true);
            }
        }
        let t = std::time::Instant::now();
        let mut ebpf = loader.load(EBPF_OBJECT).map_err(EngineError::Load)?;
        log::debug!("eBPF object loaded (maps created) in {:?}", t.elapsed());
        let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(logger) => Some(logger),
            Err(e) => {
                log::debug!("no kernel-side log records: {e}");
                None
            }
        };
        Ok(ProbeEngine {
            ebpf,
            logger,
            hooks: BTreeMap::new(),
            free_slots: (1..MAX_WINDOWS).rev().collect(),
            dirty_slots: Vec::new(),
            task_families_blocked: offsets.err().map(|e| e.to_string()),
        })
    }

    /// Opens a window on `target` with `families`. A family that cannot run here is reported in
    /// the returned `families` as unavailable; it does not fail the window.
    pub fn open(
        &mut self,
        target: &Target,
        families: &[Family],
    ) -> Result<WindowProbes, EngineError> {
        let slot = self.free_slots.pop().ok_or(EngineError::NoFreeSlot)?;
        let mut window = WindowProbes {
            slot,
            cgroup_id: target.cgroup_id,
            cgroup_dir: target.cgroup_dir.clone(),
            families: BTreeMap::new(),
            cgroup_links: Vec::new(),
            hooks: Vec::new(),
            tracks_tasks: false,
        };
        // From here on, an error returns the window through `close`, which undoes every step.
        match self.arm(&mut window, target, families) {
            Ok(()) => Ok(window),
            Err(e) => {
                let _ = self.close(window);
                Err(e)
            }
        }
    }

    fn arm(
        &mut self,
        w: &mut WindowProbes,
        target: &Target,
        families: &[Family],
    ) -> Result<(), EngineError> {
        if self.dirty_slots.contains(&w.slot) {
            self.zero_slot(w.slot)?;
        }
        let task_families: Vec<Family> = families
            .iter()
            .copied()
            .filter(|f| f.is_task_based())
            .collect();
        if !task_families.is_empty() {
            let tracking = match &self.task_families_blocked {
                Some(reason) => Err(reason.clone()),
                None => self.acquire_hooks(&TASK_TRACKING, w),
            };
            match tracking {
                Ok(()) => {
                    w.tracks_tasks = true;
                    let mut cgroups = self.window_cgroups()?;
                    cgroups
                        .insert(target.cgroup_id, w.slot, 0)
                        .map_err(map_err("registering the target cgroup"))?;
                    self.sync_tasks(w)?;
                    for family in task_families {
                        let status = match self.acquire_hooks(global_hooks(family), w) {
                            Ok(()) => FamilyStatus::Ok,
                            Err(reason) => FamilyStatus::Unavailable { reason },
                        };
                        w.families.insert(family, status);
                    }
                }
                Err(reason) => {
                    for family in task_families {
                        w.families.insert(
                            family,
                            FamilyStatus::Unavailable {
                                reason: reason.clone(),
                            },
                        );
                    }
                }
            }
        }
        let socket_families: Vec<Family> = families
            .iter()
            .copied()
            .filter(|f| !f.is_task_based())
            .collect();
        if !socket_families.is_empty() {
            let cgroup =
                File::open(&target.cgroup_dir).map_err(|source| EngineError::CgroupOpen {
                    path: target.cgroup_dir.display().to_string(),
                    source,
                })?;
            for family in socket_families {
                let status = match self.attach_cgroup_family(family, &cgroup, w) {
                    Ok(()) => FamilyStatus::Ok,
                    Err(reason) => FamilyStatus::Unavailable { reason },
                };
                w.families.insert(family, status);
            }
        }
        Ok(())
    }

    /// Re-marks the window's threads from its cgroup; called at open and once a second.
    pub fn sync_tasks(&mut self, w: &WindowProbes) -> Result<(usize, usize), EngineError> {
        if !w.tracks_tasks {
            return Ok((0, 0));
        }
        let mut slots = self.task_slots()?;
        task_slots::sync(&mut slots, &w.cgroup_dir, w.slot).map_err(map_err("updating TASK_SLOTS"))
    }

    /// Forwards what the programs logged since the last call (called once a second).
    pub fn flush_logs(&mut self) {
        if let Some(logger) = &mut self.logger {
            logger.flush();
        }
    }

    /// Detaches the window's probes and returns its final counts.
    pub fn close(&mut self, mut w: WindowProbes) -> Result<RawCounts, EngineError> {
        // Detach first so the numbers read below are final.
        w.cgroup_links.clear();
        for name in std::mem::take(&mut w.hooks) {
            self.release_hook(name);
        }
        let counts = self.read(&w);
        let mut cleanup = Ok(());
        if w.tracks_tasks {
            if let Ok(mut cgroups) = self.window_cgroups() {
                let _ = cgroups.remove(&w.cgroup_id);
            }
            cleanup = self.task_slots().and_then(|mut s| {
                task_slots::clear(&mut s, w.slot).map_err(map_err("clearing TASK_SLOTS"))
            });
        }
        self.dirty_slots.push(w.slot);
        self.free_slots.push(w.slot);
        cleanup?;
        counts
    }

    /// The window's counts so far (per-CPU values summed).
    /// Only the maps of families the window runs are read: this runs every second, and the
    /// syscall table alone is 1,024 lookups.
    pub fn read(&self, w: &WindowProbes) -> Result<RawCounts, EngineError> {
        let (slot, ran) = (w.slot, |f: Family| {
            w.families.get(&f) == Some(&FamilyStatus::Ok)
        });
        let mut out = RawCounts::zeroed();
        let counters = self.per_cpu_array(maps::COUNTERS)?;
        for (i, value) in out.counters.iter_mut().enumerate() {
            let index = slot * Counter::COUNT + i as u32;
            *value = sum(counters
                .get(&index, 0)
                .map_err(map_err("reading COUNTERS"))?);
        }
        if ran(Family::Syscalls) {
            self.read_syscalls(slot, &mut out)?;
        }
        if ran(Family::Cpu) {
            let runq = self.per_cpu_array(maps::RUNQ_HIST)?;
            for (b, value) in out.runq.iter_mut().enumerate() {
                *value = sum(runq
                    .get(&(slot * RUNQ_BUCKETS + b as u32), 0)
                    .map_err(map_err("reading RUNQ_HIST"))?);
            }
        }
        if ran(Family::Proc) {
            out.execs = self.read_execs(slot)?;
        }
        Ok(out)
    }

    fn read_syscalls(&self, slot: u32, out: &mut RawCounts) -> Result<(), EngineError> {
        let syscalls = self.per_cpu_array(maps::SYSCALLS)?;
        for nr in 0..MAX_SYSCALLS {
            let calls = sum(syscalls
                .get(&syscall_index(slot, nr, 0), 0)
                .map_err(map_err("reading SYSCALLS"))?);
            if calls > 0 {
                let errors = sum(syscalls
                    .get(&syscall_index(slot, nr, 1), 0)
                    .map_err(map_err("reading SYSCALLS"))?);
                out.syscalls[nr as usize] = (calls, errors);
            }
        }
        Ok(())
    }

    fn read_execs(&self, slot: u32) -> Result<Vec<(String, u64)>, EngineError> {
        let execs: PerCpuHashMap<&MapData, ExecKey, u64> =
            PerCpuHashMap::try_from(self.map(maps::EXECS)?).map_err(map_err("opening EXECS"))?;
        let mut names: BTreeMap<String, u64> = BTreeMap::new();
        for entry in execs.iter() {
            let (key, values) = entry.map_err(map_err("reading EXECS"))?;
            if key.slot == slot {
                *names.entry(comm_to_string(&key.comm)).or_default() += sum(values);
            }
        }
        Ok(names.into_iter().collect())
    }

    fn zero_slot(&mut self, slot: u32) -> Result<(), EngineError> {
        let cpus = nr_cpus().map_err(|(_, e)| EngineError::Map {
            op: "counting CPUs".into(),
            source: MapError::SyscallError(aya::sys::SyscallError {
                call: "nr_cpus",
                io_error: e,
            }),
        })?;
        let zero = || PerCpuValues::try_from(vec![0u64; cpus]).expect("non-empty");
        let ranges = [
            (
                maps::COUNTERS,
                counter_index(slot, Counter::TcpConnectAttempts),
                Counter::COUNT,
            ),
            (maps::SYSCALLS, syscall_index(slot, 0, 0), MAX_SYSCALLS * 2),
            (maps::RUNQ_HIST, slot * RUNQ_BUCKETS, RUNQ_BUCKETS),
        ];
        for (name, start, len) in ranges {
            let mut array: PerCpuArray<&mut MapData, u64> =
                PerCpuArray::try_from(self.map_mut(name)?)
                    .map_err(map_err(format!("opening {name}")))?;
            for index in start..start + len {
                array
                    .set(index, zero(), 0)
                    .map_err(map_err(format!("zeroing {name}")))?;
            }
        }
        let mut execs: PerCpuHashMap<&mut MapData, ExecKey, u64> =
            PerCpuHashMap::try_from(self.map_mut(maps::EXECS)?)
                .map_err(map_err("opening EXECS"))?;
        let stale: Vec<ExecKey> = execs
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.slot == slot)
            .collect();
        for key in stale {
            let _ = execs.remove(&key);
        }
        self.dirty_slots.retain(|&s| s != slot);
        Ok(())
    }

    /// Takes a reference on each global hook, attaching it if no window holds it yet.
    /// All or nothing: on failure the hooks taken by this call are released.
    fn acquire_hooks(
        &mut self,
        hooks: &[(&'static str, &str)],
        w: &mut WindowProbes,
    ) -> Result<(), String> {
        let mut taken = Vec::new();
        for &(program, tracepoint) in hooks {
            match self.acquire_hook(program, tracepoint) {
                Ok(()) => taken.push(program),
                Err(reason) => {
                    for name in taken {
                        self.release_hook(name);
                    }
                    return Err(reason);
                }
            }
        }
        w.hooks.extend(taken);
        Ok(())
    }

    fn acquire_hook(&mut self, program: &'static str, tracepoint: &str) -> Result<(), String> {
        if let Some(hook) = self.hooks.get_mut(program) {
            hook.users += 1;
            return Ok(());
        }
        let prog: &mut RawTracePoint = self
            .ebpf
            .program_mut(program)
            .ok_or_else(|| format!("program {program} missing from the eBPF object"))?
            .try_into()
            .map_err(|e: ProgramError| e.to_string())?;
        let t = std::time::Instant::now();
        load_once(prog).map_err(|e| describe_program_error(program, &e))?;
        log::debug!("{program} loaded in {:?}", t.elapsed());
        let link_id = prog.attach(tracepoint).map_err(|e| {
            format!(
                "this kernel refused raw tracepoint `{tracepoint}`: {}",
                error_chain(&e)
            )
        })?;
        let link = prog.take_link(link_id).map_err(|e| e.to_string())?;
        self.hooks.insert(
            program,
            GlobalHook {
                _link: link,
                users: 1,
            },
        );
        Ok(())
    }

    fn release_hook(&mut self, program: &'static str) {
        if let Some(hook) = self.hooks.get_mut(program) {
            hook.users -= 1;
            if hook.users == 0 {
                self.hooks.remove(program); // dropping the link detaches it
            }
        }
    }

    fn attach_cgroup_family(
        &mut self,
        family: Family,
        cgroup: &File,
        w: &mut WindowProbes,
    ) -> Result<(), String> {
        match family {
            Family::Tcp => {
                let prog: &mut SockOps = self.program(programs::TCP_SOCK_OPS)?;
                load_once(prog).map_err(|e| describe_program_error(programs::TCP_SOCK_OPS, &e))?;
                let id = prog.attach(cgroup, LINK_MODE).map_err(|e| {
                    format!("attaching sock_ops to the cgroup: {}", error_chain(&e))
                })?;
                w.cgroup_links.push(CgroupLink::SockOps(
                    prog.take_link(id).map_err(|e| e.to_string())?,
                ));
                self.tag(w, BPF_CGROUP_SOCK_OPS)
            }
            Family::Net => {
                for (program, direction, attach_type) in [
                    (
                        programs::SKB_INGRESS,
                        CgroupSkbAttachType::Ingress,
                        BPF_CGROUP_INET_INGRESS,
                    ),
                    (
                        programs::SKB_EGRESS,
                        CgroupSkbAttachType::Egress,
                        BPF_CGROUP_INET_EGRESS,
                    ),
                ] {
                    let prog: &mut CgroupSkb = self.program(program)?;
                    load_once(prog).map_err(|e| describe_program_error(program, &e))?;
                    let id = prog.attach(cgroup, direction, LINK_MODE).map_err(|e| {
                        format!("attaching cgroup_skb to the cgroup: {}", error_chain(&e))
                    })?;
                    w.cgroup_links.push(CgroupLink::Skb(
                        prog.take_link(id).map_err(|e| e.to_string())?,
                    ));
                    self.tag(w, attach_type)?;
                }
                Ok(())
            }
            _ => unreachable!("task-based family {family} is not cgroup-attached"),
        }
    }

    /// Writes the window's slot into the cgroup storage of a fresh attachment; the program
    /// counts nothing until then.
    fn tag(&mut self, w: &WindowProbes, attach_type: u32) -> Result<(), String> {
        let map = self.map_mut(maps::WINDOW_TAGS).map_err(|e| e.to_string())?;
        #[allow(deprecated)]
        let mut tags: CgroupStorage<&mut MapData, WindowTag> =
            CgroupStorage::try_from(map).map_err(|e| e.to_string())?;
        tags.insert(
            CgroupStorageKey::new(w.cgroup_id, attach_type),
            WindowTag {
                slot: w.slot,
                _pad: 0,
            },
            0,
        )
        .map_err(|e| format!("tagging the cgroup attachment: {}", error_chain(&e)))
    }

    fn program<'a, P>(&'a mut self, name: &str) -> Result<&'a mut P, String>
    where
        &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
    {
        self.ebpf
            .program_mut(name)
            .ok_or_else(|| format!("program {name} missing from the eBPF object"))?
            .try_into()
            .map_err(|e: ProgramError| e.to_string())
    }

    fn map(&self, name: &str) -> Result<&aya::maps::Map, EngineError> {
        self.ebpf.map(name).ok_or_else(|| missing_map(name))
    }

    fn map_mut(&mut self, name: &str) -> Result<&mut aya::maps::Map, EngineError> {
        self.ebpf.map_mut(name).ok_or_else(|| missing_map(name))
    }

    fn per_cpu_array(&self, name: &str) -> Result<PerCpuArray<&MapData, u64>, EngineError> {
        PerCpuArray::try_from(self.map(name)?).map_err(map_err(format!("opening {name}")))
    }

    fn task_slots(&mut self) -> Result<Array<&mut MapData, TaskSlotChunk>, EngineError> {
        Array::try_from(self.map_mut(maps::TASK_SLOTS)?).map_err(map_err("opening TASK_SLOTS"))
    }

    fn window_cgroups(&mut self) -> Result<HashMap<&mut MapData, u64, u32>, EngineError> {
        HashMap::try_from(self.map_mut(maps::WINDOW_CGROUPS)?)
            .map_err(map_err("opening WINDOW_CGROUPS"))
    }
}

fn missing_map(name: &str) -> EngineError {
    EngineError::Map {
        op: format!("map {name} missing from the eBPF object"),
        source: MapError::InvalidName { name: name.into() },
    }
}

/// Loads a program unless an earlier window already did.
fn load_once<P: Loadable>(prog: &mut P) -> Result<(), ProgramError> {
    match prog.load_prog() {
        Err(ProgramError::AlreadyLoaded) => Ok(()),
        other => other,
    }
}

trait Loadable {
    fn load_prog(&mut self) -> Result<(), ProgramError>;
}
impl Loadable for RawTracePoint {
    fn load_prog(&mut self) -> Result<(), ProgramError> {
        self.load()
    }
}
impl Loadable for SockOps {
    fn load_prog(&mut self) -> Result<(), ProgramError> {
        self.load()
    }
}
impl Loadable for CgroupSkb {
    fn load_prog(&mut self) -> Result<(), ProgramError> {
        self.load()
    }
}

/// A load error, with the end of the verifier log when there is one.
fn describe_program_error(program: &str, e: &ProgramError) -> String {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            let tail: Vec<&str> = log.lines().rev().take(6).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!(
                "the kernel refused to load {program}: {io_error}; verifier: {}",
                tail.join(" | ")
            )
        }
        other => format!("loading {program}: {}", error_chain(other)),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

fn sum(values: PerCpuValues<u64>) -> u64 {
    values.iter().sum()
}

fn comm_to_string(comm: &[u8]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

/// Root, or the capabilities the loader and the attachments need.
fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    [CAP_NET_ADMIN, CAP_PERFMON, CAP_BPF]
        .iter()
        .all(|&c| cap_eff & (1 << c) != 0)
}
