//! One loaded program set, many windows.
//!
//! Opening a window takes a slot, marks the target's threads in `TASK_SLOTS`, takes a reference
//! on the global hooks its task families need and attaches its cgroup families' programs to the
//! target's cgroup, tagging each attachment with the slot. Closing undoes it in reverse. The
//! engine never names a family: it asks each for its hooks and maps.

use std::{collections::BTreeMap, fs::File};

use aya::maps::{HashMap, MapData, RingBuf};

static NEXT_ENGINE_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
use recap_common::{maps, programs, WINDOW_TARGET_ONLY};

use super::{
    http2_frames::{Http2Frames, SharedFrames},
    map_err, missing_map,
    program_set::{CgroupLink, ProgramSet},
    reader,
    slots::{Slots, Stale},
    task_slots::TaskSlots,
    tls::{TlsProbes, TlsSeen},
    EngineError, RawCounts,
};
use crate::{
    families::{Family, FamilyStatus, Hooks, TaskHook},
    targets::Target,
};

/// Raw tracepoints that keep `TASK_SLOTS` exact; needed by every task-based family.
const TASK_TRACKING: [TaskHook; 3] = [
    TaskHook {
        program: programs::PROC_FORK,
        tracepoint: "sched_process_fork",
        hot_path: false,
        btf_typed: false,
    },
    TaskHook {
        program: programs::PROC_EXIT,
        tracepoint: "sched_process_exit",
        hot_path: false,
        btf_typed: false,
    },
    TaskHook {
        program: programs::CGROUP_MOVE,
        tracepoint: "cgroup_attach_task",
        hot_path: false,
        btf_typed: false,
    },
];

/// A family's per-cgroup kernel figure (`ProbeFamily::cgroup_baseline`): its value when the
/// window opened, and the last share read (kept if the cgroup goes away).
struct CgroupFigure {
    family: Family,
    baseline: Vec<u64>,
    /// The shares last read (kept when a read fails; peaks kept at their highest).
    last: std::cell::RefCell<Vec<(recap_common::Counter, u64)>>,
}

/// The probes of one open window. Dropping it detaches its cgroup programs; `close` also
/// releases its global hooks and returns the final counts.
pub struct WindowProbes {
    pub slot: u32,
    pub cgroup_id: u64,
    cgroup_dir: std::path::PathBuf,
    /// The target cgroup alone, not the cgroups below it.
    target_only: bool,
    pub families: BTreeMap<Family, FamilyStatus>,
    cgroup_links: Vec<CgroupLink>,
    hooks: Vec<&'static str>,
    tracks_tasks: bool,
    /// Per-cgroup kernel figures of running families.
    cgroup_figures: Vec<CgroupFigure>,
    /// `http` runs: the TLS code of the target's processes is instrumented (`TlsProbes`).
    watches_tls: bool,
}

impl WindowProbes {
    /// The families that run (not the unavailable ones).
    pub fn running(&self) -> Vec<Family> {
        self.families
            .iter()
            .filter(|(_, s)| **s == FamilyStatus::Ok)
            .map(|(f, _)| *f)
            .collect()
    }
}

pub struct ProbeEngine {
    programs: ProgramSet,
    slots: Slots,
    task_slots: TaskSlots,
    tls: TlsProbes,
    /// The target's new processes, told by the kernel (`TLS_NEW_PROCS`).
    new_processes: Option<RingBuf<MapData>>,
    /// HTTP/2 frames, decoded as they come (`HTTP2_FRAMES`).
    http2: Option<SharedFrames>,
    /// Tells this engine from one loaded before or after it.
    pub id: u64,
}

impl ProbeEngine {
    /// Loads the eBPF object (maps and BTF; programs load on first use) for up to `windows`
    /// windows open at once.
    pub fn load(windows: u32) -> Result<Self, EngineError> {
        let windows = windows.clamp(1, recap_common::MAX_WINDOWS - 1);
        let mut programs = ProgramSet::load(windows)?;
        let new_processes = programs
            .ebpf
            .take_map(maps::TLS_NEW_PROCS)
            .and_then(|m| RingBuf::try_from(m).ok());
        let http2 = programs
            .ebpf
            .take_map(maps::HTTP2_FRAMES)
            .and_then(|m| RingBuf::try_from(m).ok())
            .map(Http2Frames::new);
        let map = programs
            .ebpf
            .map(maps::TASK_SLOTS)
            .ok_or_else(|| missing_map(maps::TASK_SLOTS))?;
        let task_slots = TaskSlots::map(map).map_err(|e| EngineError::Map {
            op: "mapping TASK_SLOTS into memory".into(),
            source: aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                call: "mmap",
                io_error: e,
            }),
        })?;
        Ok(ProbeEngine {
            programs,
            slots: Slots::new(windows),
            task_slots,
            tls: TlsProbes::default(),
            new_processes,
            http2,
            id: NEXT_ENGINE_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// For a long-lived agent: keep the hooks that cost only on scheduler and process events
    /// attached between windows (see `ProgramSet::keep_idle_hooks`).
    pub fn keep_idle_hooks(&mut self, keep: bool) {
        self.programs.keep_idle_hooks = keep;
    }

    /// Windows open on this engine.
    pub fn open_windows(&self) -> usize {
        self.slots.open()
    }

    /// Opens a window on `target` with `families`. A family that cannot run here is reported in
    /// the returned `families` as unavailable; it does not fail the window.
    pub fn open(
        &mut self,
        target: &Target,
        families: &[Family],
    ) -> Result<WindowProbes, EngineError> {
        let (slot, stale) = self
            .slots
            .take(families)
            .ok_or(EngineError::NoFreeSlot(self.slots.capacity()))?;
        let mut window = WindowProbes {
            slot,
            cgroup_id: target.cgroup_id,
            cgroup_dir: target.cgroup_dir.clone(),
            target_only: target.target_only,
            families: BTreeMap::new(),
            cgroup_links: Vec::new(),
            hooks: Vec::new(),
            tracks_tasks: false,
            cgroup_figures: Vec::new(),
            watches_tls: false,
        };
        // From here on, an error returns the window through `close`, which undoes every step.
        match self.arm(&mut window, stale, target, families) {
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
        stale: Stale,
        target: &Target,
        families: &[Family],
    ) -> Result<(), EngineError> {
        if stale.counters {
            reader::zero(&mut self.programs.ebpf, w.slot, &stale.families)?;
        }
        let mut usable = Vec::new();
        for family in families {
            match family.arm(
                &mut self.programs.ebpf,
                w.slot,
                &target.cgroup_dir,
                !target.target_only,
            ) {
                Ok(()) => usable.push(*family),
                Err(reason) => {
                    w.families
                        .insert(*family, FamilyStatus::Unavailable { reason });
                }
            }
        }
        let families = &usable[..];
        let task_families: Vec<Family> = families
            .iter()
            .copied()
            .filter(|f| f.is_task_based())
            .collect();
        if !task_families.is_empty() {
            self.arm_task_families(w, target, &task_families)?;
        }
        let mut cgroup = None;
        for family in families {
            let Hooks::Cgroup(hooks) = family.hooks() else {
                continue;
            };
            if cgroup.is_none() {
                cgroup = Some(File::open(&target.cgroup_dir).map_err(|source| {
                    EngineError::CgroupOpen {
                        path: target.cgroup_dir.display().to_string(),
                        source,
                    }
                })?);
            }
            let cgroup = cgroup.as_ref().expect("opened above");
            let mut status = FamilyStatus::Ok;
            for hook in hooks {
                match self.programs.attach_cgroup(
                    hook,
                    cgroup,
                    target.cgroup_id,
                    w.slot,
                    target.target_only,
                ) {
                    Ok(link) => w.cgroup_links.push(link),
                    Err(reason) => {
                        status = FamilyStatus::Unavailable { reason };
                        break;
                    }
                }
            }
            w.families.insert(*family, status);
        }
        // Baselines last: what the kernel charges the cgroup from here on is this window's.
        for family in w.running() {
            if let Some(baseline) = family.cgroup_baseline(&w.cgroup_dir, !w.target_only) {
                w.cgroup_figures.push(CgroupFigure {
                    family,
                    baseline,
                    last: std::cell::RefCell::new(Vec::new()),
                });
            }
        }
        Ok(())
    }

    fn arm_task_families(
        &mut self,
        w: &mut WindowProbes,
        target: &Target,
        families: &[Family],
    ) -> Result<(), EngineError> {
        // A thread counts for one window at a time (`TASK_SLOTS` holds one slot per thread):
        // a second window on the same cgroup would silently take the first one's threads.
        let taken_by = self
            .window_cgroups()?
            .get(&target.cgroup_id, 0)
            .ok()
            .map(|window| window & 0xff);
        let tracking = match (&self.programs.task_families_blocked, taken_by) {
            (Some(reason), _) => Err(reason.clone()),
            (None, Some(slot)) => Err(format!(
                "another open window (slot {slot}) already counts this cgroup's threads, and a thread counts for one window at a time"
            )),
            (None, None) => self.programs.acquire(&TASK_TRACKING),
        };
        let taken = match tracking {
            Ok(taken) => taken,
            Err(reason) => {
                for family in families {
                    w.families.insert(
                        *family,
                        FamilyStatus::Unavailable {
                            reason: reason.clone(),
                        },
                    );
                }
                return Ok(());
            }
        };
        w.hooks.extend(taken);
        w.tracks_tasks = true;
        let mut cgroups = self.window_cgroups()?;
        let window = w.slot | if w.target_only { WINDOW_TARGET_ONLY } else { 0 };
        cgroups
            .insert(target.cgroup_id, window, 0)
            .map_err(map_err("registering the target cgroup"))?;
        self.sync_tasks(w)?;
        for family in families {
            let Hooks::Tasks(hooks) = family.hooks() else {
                continue;
            };
            let status = match self.programs.acquire(hooks) {
                Ok(taken) => {
                    w.hooks.extend(taken);
                    FamilyStatus::Ok
                }
                Err(reason) => FamilyStatus::Unavailable { reason },
            };
            w.families.insert(*family, status);
        }
        if w.families.get(&Family::HTTP) == Some(&FamilyStatus::Ok) {
            w.watches_tls = true;
            let t = std::time::Instant::now();
            self.tls.open(
                &mut self.programs.ebpf,
                w.slot,
                &w.cgroup_dir,
                !w.target_only,
            );
            log::debug!("TLS code of the target instrumented in {:?}", t.elapsed());
        }
        Ok(())
    }

    /// Re-marks the window's threads from its cgroup and instruments the TLS code of its new
    /// processes; called at open and once a second.
    pub fn sync_tasks(&mut self, w: &WindowProbes) -> Result<(usize, usize), EngineError> {
        if !w.tracks_tasks {
            return Ok((0, 0));
        }
        let synced = self.task_slots.sync(&w.cgroup_dir, w.slot, !w.target_only);
        if w.watches_tls {
            self.tls.sync(&mut self.programs.ebpf, w.slot);
        }
        Ok(synced)
    }

    /// The TLS code found in the window's processes so far, and whether `http` reads it.
    pub fn tls_seen(&self, w: &WindowProbes) -> Vec<TlsSeen> {
        self.tls.seen(w.slot)
    }

    /// What to poll for the target's new processes (readable when the kernel told some).
    pub fn new_processes_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.new_processes.as_ref().map(|r| r.as_fd())
    }

    /// Instruments the TLS code of the target's new processes the kernel told of; returns
    /// when to call again (processes looked at again shortly after their exec).
    pub fn on_new_processes(&mut self) -> Option<std::time::Instant> {
        let mut pids = Vec::new();
        if let Some(ring) = &mut self.new_processes {
            while let Some(item) = ring.next() {
                if let Ok(bytes) = <[u8; 4]>::try_from(&item[..]) {
                    pids.push(u32::from_ne_bytes(bytes));
                }
            }
        }
        if !pids.is_empty() {
            log::debug!("new processes in targets: {pids:?}");
        }
        let task_slots = &self.task_slots;
        self.tls
            .on_new_processes(&mut self.programs.ebpf, &pids, |pid| {
                u32::from(task_slots.get(pid))
            })
    }

    /// Forwards what the programs logged since the last call (called once a second).
    pub fn flush_logs(&mut self) {
        self.programs.flush_logs();
    }

    /// Detaches the window's probes and returns its final counts.
    pub fn close(&mut self, mut w: WindowProbes) -> Result<RawCounts, EngineError> {
        // Detach first so the numbers read below are final.
        if !w.cgroup_links.is_empty() {
            w.cgroup_links.clear();
            self.programs.untag(w.cgroup_id, w.slot);
        }
        if w.watches_tls {
            self.tls.close(&mut self.programs.ebpf, w.slot);
        }
        for name in std::mem::take(&mut w.hooks) {
            self.programs.release(name);
        }
        let counts = self.read(&w);
        if w.tracks_tasks {
            if let Ok(mut cgroups) = self.window_cgroups() {
                let _ = cgroups.remove(&w.cgroup_id);
            }
            self.task_slots.clear(w.slot);
        }
        for family in w.running() {
            family.disarm(&mut self.programs.ebpf, w.slot);
        }
        self.slots.give_back(w.slot, &w.running());
        counts
    }

    /// `http`: how many distinct gRPC paths the window tells apart (`other` beyond).
    pub fn set_grpc_paths(&self, w: &WindowProbes, n: usize) {
        let (Some(frames), true) = (&self.http2, w.running().contains(&Family::HTTP)) else {
            return;
        };
        if let (Ok(epoch), Ok(mut frames)) =
            (reader::epoch(&self.programs.ebpf, w.slot), frames.lock())
        {
            frames.set_paths_limit(w.slot, epoch, n);
        }
    }

    /// The window's counts so far: its maps, and its share of the per-cgroup kernel figures.
    pub fn read(&self, w: &WindowProbes) -> Result<RawCounts, EngineError> {
        let running = w.running();
        let mut counts = reader::read(&self.programs.ebpf, w.slot, &running)?;
        if running.contains(&Family::HTTP) {
            if let Some(frames) = &self.http2 {
                let epoch = reader::epoch(&self.programs.ebpf, w.slot)?;
                if let Ok(mut frames) = frames.lock() {
                    frames.merge_into(w.slot, epoch, &mut counts);
                }
            }
        }
        for figure in &w.cgroup_figures {
            let family = figure.family;
            if let Some(mut shares) =
                family.cgroup_share(&w.cgroup_dir, &figure.baseline, !w.target_only)
            {
                let mut last = figure.last.borrow_mut();
                for (counter, value) in &mut shares {
                    if family.peak_counters().contains(counter) {
                        if let Some((_, before)) = last.iter().find(|(c, _)| c == counter) {
                            *value = (*value).max(*before);
                        }
                    }
                }
                *last = shares;
            }
            for &(counter, value) in figure.last.borrow().iter() {
                if let Some(c) = counts.counters.get_mut(counter as usize) {
                    *c = c.wrapping_add(value);
                }
            }
        }
        Ok(counts)
    }

    fn window_cgroups(&mut self) -> Result<HashMap<&mut MapData, u64, u32>, EngineError> {
        let map = self
            .programs
            .ebpf
            .map_mut(maps::WINDOW_CGROUPS)
            .ok_or_else(|| missing_map(maps::WINDOW_CGROUPS))?;
        HashMap::try_from(map).map_err(map_err("opening WINDOW_CGROUPS"))
    }
}
