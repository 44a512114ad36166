//! The loaded eBPF object: maps created at load, programs loaded on first use (~tens of ms
//! each, incl. the verifier), global raw tracepoints shared by every window that needs them
//! (attached on first use, detached when the last user releases them), and cgroup attachments
//! tagged with their window's slot. Nothing is pinned: if the process dies, the kernel drops it
//! all.

use std::{collections::BTreeMap, fs::File};

#[allow(deprecated)]
// per-attachment cgroup storage (CGRP_STORAGE is per cgroup, not per attachment)
use aya::maps::{CgroupStorage, CgroupStorageKey};
use aya::{
    maps::MapData,
    programs::{
        cgroup_skb::CgroupSkbLink, raw_trace_point::RawTracePointLink, sock_ops::SockOpsLink,
        tp_btf::BtfTracePointLink, BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType,
        ProgramError, RawTracePoint, SockOps,
    },
    Btf, Ebpf, EbpfLoader,
};
use recap_common::{
    maps, programs, Counter, WindowTag, MAX_WINDOWS, TIDS_PER_ENTRY, WINDOW_TARGET_ONLY,
};

use super::{btf, missing_map, EngineError};
use crate::families::{CgroupHook, Family, TaskHook};

/// The eBPF object built by build.rs.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/recap"));

// uapi `enum bpf_attach_type`: the cgroup storage of an attachment is keyed by it.
const BPF_CGROUP_INET_INGRESS: u32 = 0;
const BPF_CGROUP_INET_EGRESS: u32 = 1;
const BPF_CGROUP_SOCK_OPS: u32 = 3;

/// aya passes the mode as `bpf_link_create` flags, and the kernel wants 0 there: cgroup links
/// always run alongside other programs on the cgroup (a container's own filters keep working).
const LINK_MODE: CgroupAttachMode = CgroupAttachMode::Single;

/// Held only for its `Drop`, which detaches the program from the cgroup.
#[allow(dead_code)]
pub enum CgroupLink {
    Skb(CgroupSkbLink),
    SockOps(SockOpsLink),
}

/// Held only for its `Drop`, which detaches the program from the tracepoint.
#[allow(dead_code)]
enum HookLink {
    Raw(RawTracePointLink),
    Typed(BtfTracePointLink),
}

struct SharedHook {
    _link: HookLink,
    users: usize,
    /// May stay attached with no user (see `ProgramSet::keep_idle_hooks`).
    keepable: bool,
}

pub struct ProgramSet {
    pub ebpf: Ebpf,
    /// Kernel-side log records (aya-log), forwarded to `log` by `flush_logs`. Kept for the
    /// set's life: dropping it closes the log map that the programs write to.
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    hooks: BTreeMap<&'static str, SharedHook>,
    /// Keep hooks attached when their last window closes, except hot-path ones (every syscall,
    /// every socket send/receive): a long-lived agent then arms windows with map updates and
    /// cgroup attachments only
    /// (re-attaching a raw tracepoint costs milliseconds), at a price of a few ns per context
    /// switch, exec, fork and exit on the host while it runs.
    pub keep_idle_hooks: bool,
    /// Why task-based families cannot run here (no BTF), if they cannot.
    pub task_families_blocked: Option<String>,
    /// The kernel's BTF as aya reads it, for `tp_btf` programs: parsed on first use (~15 ms).
    kernel_btf: Option<Btf>,
}

impl ProgramSet {
    /// Loads the eBPF object (maps and BTF; programs load on first use), with room in the
    /// per-window maps for slots 1..=`windows` (`ProbeEngine::load` bounds it).
    pub fn load(windows: u32) -> Result<Self, EngineError> {
        if !privileged() {
            return Err(EngineError::NotPrivileged);
        }
        // BPF memory is charged to the memcg on 6.x; older kernels need the rlimit.
        let unlimited = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: plain setrlimit call with a valid struct.
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
        // No kernel BTF for aya's loader: the object has no CO-RE relocations (offsets come from
        // `btf::kernel_offsets`), and aya's parse costs ~15 ms: the `tp_btf` programs that need
        // it parse it when first used.
        loader.btf(None);
        // Per-window maps sized for the slots this process will use (slot 0 is "none"): the
        // agent's 128, or a one-shot command's one (per-CPU arrays cost time to create per
        // entry: the syscall table for 128 windows alone took ~80 ms).
        let slots = windows + 1;
        loader
            .map_max_entries(maps::TASK_SLOTS, pid_max.div_ceil(TIDS_PER_ENTRY))
            .map_max_entries(maps::COUNTERS, slots * Counter::COUNT)
            .map_max_entries(maps::WINDOW_CGROUPS, MAX_WINDOWS)
            .map_max_entries(maps::WINDOW_EPOCH, slots)
            .map_max_entries(maps::TLS_WINDOWS, slots);
        for family in Family::ALL {
            for array in family.slot_arrays() {
                loader.map_max_entries(array.map, slots * array.len);
            }
        }
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
        Ok(ProgramSet {
            ebpf,
            logger,
            hooks: BTreeMap::new(),
            keep_idle_hooks: false,
            task_families_blocked: offsets.err().map(|e| e.to_string()),
            kernel_btf: None,
        })
    }

    /// Forwards what the programs logged since the last call.
    pub fn flush_logs(&mut self) {
        if let Some(logger) = &mut self.logger {
            logger.flush();
        }
    }

    /// Takes a reference on each hook, attaching it if no window holds it yet. All or
    /// nothing: on failure the hooks taken by this call are released. Returns the programs
    /// taken, for `release`.
    pub fn acquire(&mut self, hooks: &[TaskHook]) -> Result<Vec<&'static str>, String> {
        self.verify_in_parallel(hooks);
        let mut taken = Vec::new();
        for hook in hooks {
            match self.acquire_one(hook) {
                Ok(()) => taken.push(hook.program),
                Err(reason) => {
                    for name in taken {
                        self.release(name);
                    }
                    return Err(reason);
                }
            }
        }
        Ok(taken)
    }

    /// Loads the BTF-typed programs of `hooks` that no window holds yet, each on a thread of
    /// its own: the kernel verifies a program in the thread that loads it, and `http`'s two
    /// socket programs take ~150 and ~125 ms to verify here, the largest part of a one-shot
    /// arm. What fails here is left unloaded, and `acquire_one` loads it again and says why.
    fn verify_in_parallel(&mut self, hooks: &[TaskHook]) {
        let wanted: Vec<(&str, &str)> = hooks
            .iter()
            .filter(|h| h.btf_typed && !self.hooks.contains_key(h.program))
            .map(|h| (h.program, h.tracepoint))
            .collect();
        if wanted.len() < 2 {
            return;
        }
        // Without it `acquire_one` says why.
        if self.read_kernel_btf(wanted[0].0).is_err() {
            return;
        }
        let Some(btf) = &self.kernel_btf else { return };
        let programs: Vec<(&str, &mut BtfTracePoint)> = self
            .ebpf
            .programs_mut()
            .filter_map(|(name, program)| {
                let (_, tracepoint) = wanted.iter().find(|(n, _)| *n == name)?;
                let program: &mut BtfTracePoint = program.try_into().ok()?;
                Some((*tracepoint, program))
            })
            .collect();
        std::thread::scope(|scope| {
            for (tracepoint, program) in programs {
                let spawned = std::thread::Builder::new()
                    .name("recap-verify".into())
                    .spawn_scoped(scope, move || {
                        let _ = program.load(tracepoint, btf);
                    });
                // No thread: loaded one after the other by `acquire_one`.
                drop(spawned);
            }
        });
    }

    /// Reads the running kernel's BTF into `kernel_btf` unless it is there (the typed
    /// tracepoints' programs load against it), for `program`'s sake.
    fn read_kernel_btf(&mut self, program: &str) -> Result<(), String> {
        if self.kernel_btf.is_none() {
            let btf = Btf::from_sys_fs()
                .map_err(|e| format!("reading the kernel's BTF for {program}: {e}"))?;
            self.kernel_btf = Some(btf);
        }
        Ok(())
    }

    fn acquire_one(&mut self, hook: &TaskHook) -> Result<(), String> {
        if let Some(shared) = self.hooks.get_mut(hook.program) {
            shared.users += 1;
            return Ok(());
        }
        let program = hook.program;
        let refused = |e: ProgramError| {
            format!(
                "this kernel refused tracepoint `{}`: {}",
                hook.tracepoint,
                error_chain(&e)
            )
        };
        let t = std::time::Instant::now();
        let link = if hook.btf_typed {
            self.read_kernel_btf(program)?;
            let btf = self.kernel_btf.take().expect("just read");
            let prog: Result<&mut BtfTracePoint, String> = self.program(program);
            let loaded = prog.and_then(|prog| {
                match prog.load(hook.tracepoint, &btf) {
                    Err(ProgramError::AlreadyLoaded) | Ok(()) => {}
                    // The usual reason on an older kernel: the tracepoint is newer than it.
                    Err(_) if !btf::has_tracepoint(hook.tracepoint) => {
                        return Err(missing_tracepoint(hook.tracepoint))
                    }
                    Err(e) => return Err(describe_program_error(program, &e)),
                }
                let id = prog.attach().map_err(refused)?;
                prog.take_link(id).map_err(|e| e.to_string())
            });
            self.kernel_btf = Some(btf);
            HookLink::Typed(loaded?)
        } else {
            let prog: &mut RawTracePoint = self.program(program)?;
            load_once(prog).map_err(|e| describe_program_error(program, &e))?;
            let id = prog.attach(hook.tracepoint).map_err(refused)?;
            HookLink::Raw(prog.take_link(id).map_err(|e| e.to_string())?)
        };
        log::debug!("{program} loaded and attached in {:?}", t.elapsed());
        if program == programs::SCHED_SWITCH {
            self.set_sched_hooked(true);
        }
        self.hooks.insert(
            program,
            SharedHook {
                _link: link,
                users: 1,
                keepable: !hook.hot_path,
            },
        );
        Ok(())
    }

    pub fn release(&mut self, program: &'static str) {
        if let Some(hook) = self.hooks.get_mut(program) {
            hook.users -= 1;
            if hook.users == 0 && !(self.keep_idle_hooks && hook.keepable) {
                if program == programs::SCHED_SWITCH {
                    // Before detaching: from now on the exit hook clears exiting threads itself.
                    self.set_sched_hooked(false);
                }
                self.hooks.remove(program); // dropping the link detaches it
            }
        }
    }

    /// Tells the exit hook whether `sched_switch` will see exiting threads' last switch-out.
    fn set_sched_hooked(&mut self, on: bool) {
        let Some(map) = self.ebpf.map_mut(maps::SCHED_HOOKED) else {
            return;
        };
        match aya::maps::Array::<&mut MapData, u32>::try_from(map) {
            Ok(mut flag) => {
                if let Err(e) = flag.set(0, u32::from(on), 0) {
                    log::warn!("setting SCHED_HOOKED: {e}");
                }
            }
            Err(e) => log::warn!("opening SCHED_HOOKED: {e}"),
        }
    }

    /// Attaches `hook` to the cgroup and tags the attachment with the window's slot; the
    /// program counts nothing until it is tagged.
    pub fn attach_cgroup(
        &mut self,
        hook: &CgroupHook,
        cgroup: &File,
        cgroup_id: u64,
        slot: u32,
        target_only: bool,
    ) -> Result<CgroupLink, String> {
        let attach_type = match *hook {
            CgroupHook::SockOps { .. } => BPF_CGROUP_SOCK_OPS,
            CgroupHook::Skb { ingress: true, .. } => BPF_CGROUP_INET_INGRESS,
            CgroupHook::Skb { ingress: false, .. } => BPF_CGROUP_INET_EGRESS,
        };
        if let Some(other) = self.held_by_other(cgroup_id, attach_type, slot) {
            return Err(format!(
                "another open window (slot {other}) already counts this cgroup's sockets, and a cgroup's socket programs count for one window at a time"
            ));
        }
        let (link, attach_type) = match *hook {
            CgroupHook::SockOps { program } => {
                let prog: &mut SockOps = self.program(program)?;
                load_once(prog).map_err(|e| describe_program_error(program, &e))?;
                let id = prog.attach(cgroup, LINK_MODE).map_err(|e| {
                    format!("attaching sock_ops to the cgroup: {}", error_chain(&e))
                })?;
                let link = CgroupLink::SockOps(prog.take_link(id).map_err(|e| e.to_string())?);
                (link, BPF_CGROUP_SOCK_OPS)
            }
            CgroupHook::Skb { program, ingress } => {
                let (direction, attach_type) = if ingress {
                    (CgroupSkbAttachType::Ingress, BPF_CGROUP_INET_INGRESS)
                } else {
                    (CgroupSkbAttachType::Egress, BPF_CGROUP_INET_EGRESS)
                };
                let prog: &mut CgroupSkb = self.program(program)?;
                load_once(prog).map_err(|e| describe_program_error(program, &e))?;
                let id = prog.attach(cgroup, direction, LINK_MODE).map_err(|e| {
                    format!("attaching cgroup_skb to the cgroup: {}", error_chain(&e))
                })?;
                let link = CgroupLink::Skb(prog.take_link(id).map_err(|e| e.to_string())?);
                (link, attach_type)
            }
        };
        let tag = WindowTag {
            slot,
            flags: if target_only { WINDOW_TARGET_ONLY } else { 0 },
            cgroup_id,
        };
        self.tag(cgroup_id, attach_type, tag)?;
        Ok(link)
    }

    /// The slot of the window whose programs of `attach_type` are on the cgroup, if another's.
    /// The tag storage is the cgroup's, per attach type, shared by every attachment of ours
    /// there: a second window's tag would make the first window's programs count into the
    /// second's slot (and twice). So a cgroup's socket programs of one attach type count for one
    /// window at a time, checked before anything is attached.
    fn held_by_other(&mut self, cgroup_id: u64, attach_type: u32, slot: u32) -> Option<u32> {
        let map = self.ebpf.map_mut(maps::WINDOW_TAGS)?;
        #[allow(deprecated)]
        let tags: CgroupStorage<&mut MapData, WindowTag> = CgroupStorage::try_from(map).ok()?;
        let held = tags
            .get(CgroupStorageKey::new(cgroup_id, attach_type), 0)
            .ok()?;
        (held.slot != 0 && held.slot != slot).then_some(held.slot)
    }

    /// Clears the window's tags on the cgroup once its links are gone: the kernel may keep a
    /// cgroup's storage after the last detach, and a stale tag would refuse the next window.
    pub fn untag(&mut self, cgroup_id: u64, slot: u32) {
        for attach_type in [
            BPF_CGROUP_INET_INGRESS,
            BPF_CGROUP_INET_EGRESS,
            BPF_CGROUP_SOCK_OPS,
        ] {
            let Some(map) = self.ebpf.map_mut(maps::WINDOW_TAGS) else {
                return;
            };
            #[allow(deprecated)]
            let Ok(mut tags) = CgroupStorage::<&mut MapData, WindowTag>::try_from(map) else {
                return;
            };
            let key = CgroupStorageKey::new(cgroup_id, attach_type);
            if tags.get(key, 0).is_ok_and(|t| t.slot == slot) {
                let _ = tags.insert(
                    key,
                    WindowTag {
                        slot: 0,
                        flags: 0,
                        cgroup_id,
                    },
                    0,
                );
            }
        }
    }

    fn tag(&mut self, cgroup_id: u64, attach_type: u32, tag: WindowTag) -> Result<(), String> {
        let map = self
            .ebpf
            .map_mut(maps::WINDOW_TAGS)
            .ok_or_else(|| missing_map(maps::WINDOW_TAGS).to_string())?;
        #[allow(deprecated)]
        let mut tags: CgroupStorage<&mut MapData, WindowTag> =
            CgroupStorage::try_from(map).map_err(|e| e.to_string())?;
        tags.insert(CgroupStorageKey::new(cgroup_id, attach_type), tag, 0)
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
/// Tracepoints RECap uses that are newer than the oldest kernels it loads on.
const NEWER_TRACEPOINTS: &[(&str, &str)] =
    &[("sock_send_length", "6.3"), ("sock_recv_length", "6.3")];

fn missing_tracepoint(name: &str) -> String {
    let since = NEWER_TRACEPOINTS
        .iter()
        .find(|(t, _)| *t == name)
        .map(|(_, v)| format!(", added in Linux {v}"))
        .unwrap_or_default();
    format!("this kernel has no tracepoint `{name}`{since}")
}

/// BPF helpers RECap's programs call that older kernels lack: (id, name, first kernel).
const NEWER_HELPERS: &[(u32, &str, &str)] = &[
    (107, "bpf_sk_storage_get", "5.2"),
    (112, "bpf_probe_read_user", "5.5"),
    (130, "bpf_ringbuf_output", "5.8"),
    (131, "bpf_ringbuf_reserve", "5.8"),
    (132, "bpf_ringbuf_submit", "5.8"),
    (137, "bpf_skc_to_tcp_sock", "5.9"),
    (158, "bpf_get_current_task_btf", "5.11"),
    (175, "bpf_task_pt_regs", "5.15"),
    (181, "bpf_loop", "5.17"),
];

/// The helper a verifier log says the kernel does not know (`unknown func bpf_loop#181`, or
/// `unknown func unknown#181` where the kernel does not even know its name), as a sentence.
fn missing_helper(log: &str) -> Option<String> {
    let rest = &log[log.find("unknown func ")? + "unknown func ".len()..];
    let token = rest.split_whitespace().next()?;
    let (name, id) = token.rsplit_once('#')?;
    let id: u32 = id.parse().ok()?;
    Some(match NEWER_HELPERS.iter().find(|(i, ..)| *i == id) {
        Some((_, name, since)) => {
            format!(
                "it needs the BPF helper `{name}` (Linux {since}), which this kernel does not have"
            )
        }
        None => {
            format!("it needs the BPF helper `{name}` (#{id}), which this kernel does not have")
        }
    })
}

fn describe_program_error(program: &str, e: &ProgramError) -> String {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            if let Some(missing) = missing_helper(&log) {
                return format!("the kernel refused to load {program}: {missing}");
            }
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

pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
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

#[cfg(test)]
mod tests {
    use object::{Object, ObjectSymbol};
    use recap_common::{maps, offsets, programs};

    use super::{btf::has_tracepoint, missing_helper, missing_tracepoint, EBPF_OBJECT};

    /// Map and program names are string literals on both sides: the built object must hold
    /// every one user space opens, and every offset global it writes.
    #[test]
    fn the_built_object_holds_every_map_program_and_global_by_name() {
        let obj = object::File::parse(EBPF_OBJECT).expect("the eBPF object parses");
        let names: std::collections::BTreeSet<&str> =
            obj.symbols().filter_map(|s| s.name().ok()).collect();
        let globals = [
            offsets::TASK_PID,
            offsets::CGROUP_KN,
            offsets::TASK_MIN_FLT,
            offsets::PERCPU_COUNTER_SIZE,
            "RECAP_OFF_TASK_TGID",
        ];
        for name in programs::ALL.iter().chain(&maps::ALL).chain(&globals) {
            assert!(names.contains(name), "{name} is not in the eBPF object");
        }
    }

    #[test]
    fn a_missing_helper_or_tracepoint_is_named_with_its_kernel() {
        assert_eq!(
            missing_helper(
                "0: (85) call unknown#181\nunknown func bpf_loop#181\nprocessed 3 insns"
            )
            .as_deref(),
            Some(
                "it needs the BPF helper `bpf_loop` (Linux 5.17), which this kernel does not have"
            )
        );
        assert!(missing_helper("unknown func unknown#175")
            .unwrap()
            .contains("`bpf_task_pt_regs` (Linux 5.15)"));
        assert!(missing_helper("unknown func bpf_new#999")
            .unwrap()
            .contains("`bpf_new` (#999)"));
        assert_eq!(missing_helper("R1 invalid mem access 'scalar'"), None);
        assert_eq!(
            missing_tracepoint("sock_send_length"),
            "this kernel has no tracepoint `sock_send_length`, added in Linux 6.3"
        );
        assert!(has_tracepoint("sched_switch"));
        assert!(!has_tracepoint("no_such_tracepoint_here"));
    }
}
