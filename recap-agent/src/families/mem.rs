//! `mem`: the target's page faults, OOM kills and memory usage (kernel side:
//! `recap-ebpf/src/probes/mem.rs` and the exit hook of `tasks.rs`). Costs nothing on any
//! path a process outside the target takes: one hook on OOM kills, two reads at a target
//! thread's exit.
//!
//! Page faults are the kernel's own per-thread counts (`min_flt`, `maj_flt`, what
//! `/proc/PID/stat` shows), so they are exact for any target, also a cgroup with no memory
//! controller: the live threads' counts now less their counts when the window opened, plus
//! the totals of the threads that exited meanwhile (added by the kernel at each exit; a
//! thread born in the window starts at 0). A thread moved into or out of the target during
//! the window brings or takes its whole count.
//!
//! Memory usage is the target's memory cgroup's own accounting: its v2 directory when it has
//! the memory controller, else, on a hybrid host, the v1 memory hierarchy's directory at the
//! same path (Docker and systemd make matching paths in every hierarchy). A target without
//! either (a plain cgroup v2 directory on a hybrid host) has no usage figures, and says so;
//! the host's figure is never shown under the target's name. The peak is the highest usage
//! read during the window (each second and at its end).

use std::{
    fmt::Write,
    path::{Path, PathBuf},
    sync::Arc,
};

use aya::{
    maps::{HashMap as BpfHashMap, MapData},
    Ebpf,
};
use recap_common::{maps, programs, Counter, OomVictim, RUNQ_BUCKETS};
use serde::{Deserialize, Serialize};

use super::{
    log2::{self, fmt_ns, histogram, Histogram},
    proc::comm_to_string,
    row, FamilyReport, Hooks, Named, ProbeFamily, SlotArray, TaskHook,
};
use crate::{
    families::{
        engine_error::{map_err, missing_map, EngineError},
        raw::RawCounts,
    },
    metric,
    metrics::{Attr, MetricDef, Sample, Value},
    targets::cgroup,
    text::terminal::safe,
};

pub struct Mem;

/// OpenTelemetry's `process.paging.fault_type`: `major` (the page was read from storage) or
/// `minor`.
const FAULT_TYPE: Attr = Attr {
    otel: "process.paging.fault_type",
    prom: "fault_type",
};

metric!(
    PAGE_FAULTS,
    "process_paging_faults_total",
    "process.paging.faults",
    Counter,
    "{fault}",
    "Page faults of the target's threads, as the kernel counts them per thread (minflt, majflt).",
    [FAULT_TYPE]
);
metric!(
    MEMORY_USAGE,
    "container_memory_usage_bytes",
    "container.memory.usage",
    Gauge,
    "By",
    "Memory the target's memory cgroup is charged for (memory.current, or v1 memory.usage_in_bytes).",
    []
);
metric!(
    MEMORY_LIMIT,
    "recap_memory_limit_bytes",
    "recap.memory.limit",
    Gauge,
    "By",
    "The target's memory cgroup limit (absent: none).",
    []
);
metric!(
    OOM_KILLS,
    "recap_memory_oom_kills_total",
    "recap.memory.oom_kills",
    Counter,
    "{process}",
    "Processes of the target the OOM killer chose.",
    []
);

metric!(
    RECLAIM_STALLS,
    "recap_memory_reclaim_stall_seconds",
    "recap.memory.reclaim.stall",
    Histogram,
    "s",
    "Time the target's threads spent in direct or memory-cgroup reclaim, per stall (log2 buckets as in the kernel).",
    []
);

static METRICS: [&MetricDef; 5] = [
    &PAGE_FAULTS,
    &MEMORY_USAGE,
    &MEMORY_LIMIT,
    &OOM_KILLS,
    &RECLAIM_STALLS,
];

const fn hook(program: &'static str, tracepoint: &'static str) -> TaskHook {
    TaskHook {
        program,
        tracepoint,
        hot_path: false,
        btf_typed: false,
    }
}

/// OOM kills; reclaim, direct and within a memory cgroup, begin and end. None is on a path
/// a process takes often (reclaim runs only under memory pressure).
static HOOKS: [TaskHook; 5] = [
    hook(programs::MEM_OOM, "mark_victim"),
    hook(programs::MEM_RECLAIM_IN, "mm_vmscan_direct_reclaim_begin"),
    hook(programs::MEM_RECLAIM_OUT, "mm_vmscan_direct_reclaim_end"),
    hook(programs::MEM_CG_RECLAIM_IN, "mm_vmscan_memcg_reclaim_begin"),
    hook(programs::MEM_CG_RECLAIM_OUT, "mm_vmscan_memcg_reclaim_end"),
];

/// `RECLAIM_HIST[slot][bucket]`.
const RECLAIM: SlotArray = SlotArray {
    map: maps::RECLAIM_HIST,
    len: RUNQ_BUCKETS,
};

/// Where `MemAccounted` says the usage figures came from.
const ACCOUNTED_V2: u64 = 1;
const ACCOUNTED_V1: u64 = 2;
/// A baseline with no usage figure.
const NO_USAGE: u64 = u64::MAX;

/// A v1 limit at or above this is "no limit" (the kernel shows `PAGE_COUNTER_MAX` pages).
const V1_UNLIMITED: u64 = 1 << 62;

/// The target's memory accounting directory and its version (`ACCOUNTED_V2`/`_V1`).
fn memory_dir(dir: &Path) -> Option<(PathBuf, u64)> {
    if dir.join("memory.current").is_file() {
        return Some((dir.to_path_buf(), ACCOUNTED_V2));
    }
    let v1 = cgroup::v1_dir_at_same_path(dir, "memory")?;
    v1.join("memory.usage_in_bytes")
        .is_file()
        .then_some((v1, ACCOUNTED_V1))
}

/// `memory.pressure` totals (PSI: the kernel's for the cgroup with those below it, so none
/// for a window on the target alone).
fn pressure(dir: &Path, subtree: bool) -> Option<(u64, u64)> {
    subtree
        .then(|| cgroup::pressure_totals(dir, "memory.pressure"))
        .flatten()
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Usage now and its breakdown: usage, limit (0: none), anon, file, shmem, kernel, and the
/// kernel's peak since the cgroup was created (0: not kept).
fn usage(dir: &Path, version: u64) -> Option<[u64; 7]> {
    if version == ACCOUNTED_V2 {
        let current = read_u64(&dir.join("memory.current"))?;
        let peak = read_u64(&dir.join("memory.peak")).unwrap_or(0);
        let limit = read_u64(&dir.join("memory.max")).unwrap_or(0); // "max": none
        let stat = std::fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
        return Some([
            current,
            limit,
            cgroup::stat_value(&stat, "anon"),
            cgroup::stat_value(&stat, "file"),
            cgroup::stat_value(&stat, "shmem"),
            cgroup::stat_value(&stat, "kernel"),
            peak,
        ]);
    }
    let current = read_u64(&dir.join("memory.usage_in_bytes"))?;
    let peak = read_u64(&dir.join("memory.max_usage_in_bytes")).unwrap_or(0);
    let limit = read_u64(&dir.join("memory.limit_in_bytes"))
        .filter(|&l| l < V1_UNLIMITED)
        .unwrap_or(0);
    let stat = std::fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
    let (anon, cache, shmem) = (
        cgroup::stat_value(&stat, "rss"),
        cgroup::stat_value(&stat, "cache"),
        cgroup::stat_value(&stat, "shmem"),
    );
    // v1's `cache` includes shmem; what usage holds beyond anon and cache is the kernel's.
    Some([
        current,
        limit,
        anon,
        cache.saturating_sub(shmem),
        shmem,
        current.saturating_sub(anon + cache),
        peak,
    ])
}

/// The target's live threads' page faults (minor, major), from `/proc/TID/task/TID/stat`;
/// zombies are left out (their counts were added at their exit). `None` if the cgroup is gone.
fn live_faults(dir: &Path, subtree: bool) -> Option<(u64, u64)> {
    let threads = if subtree {
        cgroup::subtree_threads(dir)
    } else {
        cgroup::threads(dir)
    }
    .ok()?;
    let mut sum = (0u64, 0u64);
    for tid in threads {
        if let Some((minor, major)) = thread_faults(tid) {
            sum.0 += minor;
            sum.1 += major;
        }
    }
    Some(sum)
}

fn thread_faults(tid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{tid}/task/{tid}/stat")).ok()?;
    parse_faults(&stat)
}

/// (minflt, majflt) of a `stat` line: fields 10 and 12, counted after the command's `)`.
fn parse_faults(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    Some((fields.get(7)?.parse().ok()?, fields.get(9)?.parse().ok()?))
}

impl ProbeFamily for Mem {
    fn name(&self) -> &'static str {
        "mem"
    }

    fn hooks(&self) -> Hooks {
        Hooks::Tasks(&HOOKS)
    }

    fn slot_arrays(&self) -> &'static [SlotArray] {
        &[RECLAIM]
    }

    fn read_named(&self, ebpf: &Ebpf, slot: u32) -> Result<Vec<Named>, EngineError> {
        let map = ebpf
            .map(maps::OOM_VICTIMS)
            .ok_or_else(|| missing_map(maps::OOM_VICTIMS))?;
        let victims: BpfHashMap<&MapData, u32, OomVictim> =
            BpfHashMap::try_from(map).map_err(map_err("opening OOM_VICTIMS"))?;
        let mut out: Vec<Named> = victims
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, v)| v.slot == slot)
            .map(|(_, v)| (comm_to_string(&v.comm), vec![v.pid as u64, v.rss_bytes]))
            .collect();
        out.sort_by_key(|(_, v)| v[0]);
        Ok(out)
    }

    fn clear_named(&self, ebpf: &mut Ebpf, slot: u32) -> Result<(), EngineError> {
        let map = ebpf
            .map_mut(maps::OOM_VICTIMS)
            .ok_or_else(|| missing_map(maps::OOM_VICTIMS))?;
        let mut victims: BpfHashMap<&mut MapData, u32, OomVictim> =
            BpfHashMap::try_from(map).map_err(map_err("opening OOM_VICTIMS"))?;
        let stale: Vec<u32> = victims
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, v)| v.slot == slot)
            .map(|(pid, _)| pid)
            .collect();
        for pid in stale {
            let _ = victims.remove(&pid);
        }
        Ok(())
    }

    /// `[minor faults, major faults, usage, pressure some, full]` when the window opens
    /// (`NO_USAGE` where the target has none).
    fn cgroup_baseline(&self, cgroup_dir: &Path, subtree: bool) -> Option<Vec<u64>> {
        let (minor, major) = live_faults(cgroup_dir, subtree)?;
        let start = memory_dir(cgroup_dir)
            .and_then(|(dir, v)| usage(&dir, v))
            .map_or(NO_USAGE, |u| u[0]);
        let (some, full) = pressure(cgroup_dir, subtree).unwrap_or((NO_USAGE, NO_USAGE));
        Some(vec![minor, major, start, some, full])
    }

    fn cgroup_share(
        &self,
        cgroup_dir: &Path,
        baseline: &[u64],
        subtree: bool,
    ) -> Option<Vec<(Counter, u64)>> {
        let (minor, major) = live_faults(cgroup_dir, subtree)?;
        let base = |i: usize| baseline.get(i).copied().unwrap_or(0);
        // Wrapping: the kernel's counter holds the exited threads' totals, which include
        // what their baselines hold.
        let mut out = vec![
            (Counter::MemMinorFaults, minor.wrapping_sub(base(0))),
            (Counter::MemMajorFaults, major.wrapping_sub(base(1))),
        ];
        if let (Some((some, full)), false) = (pressure(cgroup_dir, subtree), base(3) == NO_USAGE) {
            out.extend([
                (Counter::MemPressureKept, 1),
                (Counter::MemPressureSomeUs, some.saturating_sub(base(3))),
                (Counter::MemPressureFullUs, full.saturating_sub(base(4))),
            ]);
        }
        if let Some((dir, version)) = memory_dir(cgroup_dir) {
            if let Some([now, limit, anon, file, shmem, kernel, peak]) = usage(&dir, version) {
                let start = match base(2) {
                    NO_USAGE => now,
                    s => s,
                };
                out.extend([
                    (Counter::MemAccounted, version),
                    (Counter::MemUsageStart, start),
                    (Counter::MemUsage, now),
                    (Counter::MemUsagePeak, now.max(start)),
                    (Counter::MemCgroupPeak, peak),
                    (Counter::MemLimit, limit),
                    (Counter::MemAnon, anon),
                    (Counter::MemFile, file),
                    (Counter::MemShmem, shmem),
                    (Counter::MemKernel, kernel),
                ]);
            }
        }
        Some(out)
    }

    fn peak_counters(&self) -> &'static [Counter] {
        &[Counter::MemUsagePeak]
    }

    fn summarise(&self, counts: &RawCounts) -> Arc<dyn FamilyReport> {
        Arc::new(summarise(counts))
    }

    fn report_from_json(&self, v: serde_json::Value) -> serde_json::Result<Arc<dyn FamilyReport>> {
        super::report_from_json::<MemSummary>(v)
    }

    fn live(&self, c: &RawCounts) -> String {
        let mut line = format!(
            "faults {} minor, {} major",
            c.get(Counter::MemMinorFaults),
            c.get(Counter::MemMajorFaults)
        );
        if c.get(Counter::MemAccounted) != 0 {
            let _ = write!(line, ", {} MiB", c.get(Counter::MemUsage) >> 20);
        }
        if c.get(Counter::MemOomKills) > 0 {
            let _ = write!(line, ", {} OOM kills", c.get(Counter::MemOomKills));
        }
        line
    }

    fn metrics(&self) -> &'static [&'static MetricDef] {
        &METRICS
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct OomKill {
    pub pid: u64,
    pub command: String,
    /// Its resident memory when it was chosen (file, anon and shmem), bytes; 0 if unknown.
    pub rss_bytes: u64,
}

/// The target's memory cgroup's figures, bytes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemUsage {
    /// `cgroup v2` or `cgroup v1` (on a hybrid host: the memory hierarchy's directory at the
    /// target's path).
    pub accounting: String,
    pub start_bytes: u64,
    pub end_bytes: u64,
    /// The highest usage read during the window (each second and at its end).
    pub peak_bytes: u64,
    /// The kernel's own peak since the cgroup was created (`memory.peak`, v1
    /// `memory.max_usage_in_bytes`), which a spike between two reads cannot escape; 0: not
    /// kept.
    pub cgroup_peak_bytes: u64,
    /// None: no limit.
    pub limit_bytes: Option<u64>,
    /// Limit less usage at the end.
    pub headroom_bytes: Option<u64>,
    pub anon_bytes: u64,
    pub file_bytes: u64,
    pub shmem_bytes: u64,
    pub kernel_bytes: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemSummary {
    pub minor_faults: u64,
    pub major_faults: u64,
    pub oom_kills: u64,
    pub oom_victims: Vec<OomKill>,
    /// Stalls of the target's threads in direct or memory-cgroup reclaim (log2 ns buckets).
    pub reclaim_stalls: Histogram,
    /// None: the target has no memory cgroup of its own (said in `usage_unavailable`).
    pub usage: Option<MemUsage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_unavailable: Option<String>,
    /// Memory pressure (PSI) in the window: time some / all of the target's tasks stalled
    /// on memory (reclaim, swap-in, refaults), µs; None: not kept, or a window on the target
    /// alone (the kernel's figure includes the cgroups below).
    #[serde(default)]
    pub pressure: Option<super::cpu::Pressure>,
}

pub fn summarise(c: &RawCounts) -> MemSummary {
    let accounted = c.get(Counter::MemAccounted);
    let usage = (accounted != 0).then(|| {
        let limit = Some(c.get(Counter::MemLimit)).filter(|&l| l > 0);
        let end = c.get(Counter::MemUsage);
        MemUsage {
            accounting: if accounted == ACCOUNTED_V2 {
                "cgroup v2".into()
            } else {
                "cgroup v1".into()
            },
            start_bytes: c.get(Counter::MemUsageStart),
            end_bytes: end,
            peak_bytes: c.get(Counter::MemUsagePeak),
            cgroup_peak_bytes: c.get(Counter::MemCgroupPeak),
            limit_bytes: limit,
            headroom_bytes: limit.map(|l| l.saturating_sub(end)),
            anon_bytes: c.get(Counter::MemAnon),
            file_bytes: c.get(Counter::MemFile),
            shmem_bytes: c.get(Counter::MemShmem),
            kernel_bytes: c.get(Counter::MemKernel),
        }
    });
    MemSummary {
        minor_faults: c.get(Counter::MemMinorFaults),
        major_faults: c.get(Counter::MemMajorFaults),
        oom_kills: c.get(Counter::MemOomKills),
        reclaim_stalls: histogram(c.array(RECLAIM.map), c.get(Counter::MemReclaimNs)),
        oom_victims: c
            .named("mem")
            .iter()
            .map(|(command, v)| OomKill {
                pid: v.first().copied().unwrap_or(0),
                command: command.clone(),
                rss_bytes: v.get(1).copied().unwrap_or(0),
            })
            .collect(),
        pressure: (c.get(Counter::MemPressureKept) != 0).then(|| super::cpu::Pressure {
            some_us: c.get(Counter::MemPressureSomeUs),
            full_us: c.get(Counter::MemPressureFullUs),
        }),
        usage_unavailable: usage.is_none().then(|| {
            "the target has no memory cgroup of its own (no memory controller on its cgroup v2 directory, no v1 memory cgroup at its path): usage is not shown rather than the host's".into()
        }),
        usage,
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

impl FamilyReport for MemSummary {
    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    fn table(&self, o: &mut String, _top: usize) {
        o.push_str("\nmem\n");
        row(o, "page faults, minor", self.minor_faults);
        row(o, "page faults, major", self.major_faults);
        row(o, "OOM kills", self.oom_kills);
        for v in &self.oom_victims {
            let _ = writeln!(
                o,
                "  OOM killed: PID {} {} ({} resident)",
                v.pid,
                safe(&v.command),
                mib(v.rss_bytes)
            );
        }
        let h = &self.reclaim_stalls;
        if h.count > 0 {
            let q = |v: Option<u64>| v.map_or("-".to_string(), fmt_ns);
            let _ = writeln!(
                o,
                "  reclaim stalls: {}, {} in all, p50 ≤ {}, p99 ≤ {}",
                h.count,
                fmt_ns(h.sum_ns),
                q(h.p50_le_ns),
                q(h.p99_le_ns)
            );
        }
        if let Some(p) = &self.pressure {
            let _ = writeln!(
                o,
                "  memory pressure: some stalled {} µs, all stalled {} µs",
                p.some_us, p.full_us
            );
        }
        match &self.usage {
            Some(u) => {
                let limit = u.limit_bytes.map_or("none".to_string(), mib);
                let _ = writeln!(
                    o,
                    "  usage ({}): {} at start, {} at end, peak {} ({} since the cgroup began), limit {limit}",
                    u.accounting,
                    mib(u.start_bytes),
                    mib(u.end_bytes),
                    mib(u.peak_bytes),
                    mib(u.cgroup_peak_bytes)
                );
                let _ = writeln!(
                    o,
                    "  at end: anon {}, file {}, shmem {}, kernel {}",
                    mib(u.anon_bytes),
                    mib(u.file_bytes),
                    mib(u.shmem_bytes),
                    mib(u.kernel_bytes)
                );
            }
            None => {
                let _ = writeln!(o, "  usage: not shown (no memory cgroup of its own)");
            }
        }
    }

    fn samples(&self) -> Vec<Sample> {
        let mut out = vec![
            Sample::new(
                &PAGE_FAULTS,
                vec![(FAULT_TYPE, "minor".into())],
                Value::Count(self.minor_faults),
            ),
            Sample::new(
                &PAGE_FAULTS,
                vec![(FAULT_TYPE, "major".into())],
                Value::Count(self.major_faults),
            ),
            Sample::new(&OOM_KILLS, vec![], Value::Count(self.oom_kills)),
            log2::sample(&RECLAIM_STALLS, &self.reclaim_stalls, RUNQ_BUCKETS),
        ];
        if let Some(u) = &self.usage {
            out.push(Sample::new(
                &MEMORY_USAGE,
                vec![],
                Value::Count(u.end_bytes),
            ));
            if let Some(l) = u.limit_bytes {
                out.push(Sample::new(&MEMORY_LIMIT, vec![], Value::Count(l)));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_read_after_the_command_whatever_it_holds() {
        let stat = "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 1234 0 56 0 3 1 0 0 20 0 1 0 100";
        assert_eq!(parse_faults(stat), Some((1234, 56)));
        let zombie = "4243 (x) Z 1 4243 4243 0 -1 4194560 7 0 0 0 0 0 0 0 20 0 1 0 100";
        assert_eq!(parse_faults(zombie), None);
    }
}
