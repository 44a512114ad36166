//! `cpu`: on-CPU time, context switches (voluntary and involuntary, as the kernel counts them
//! per task), and the run-queue latency histogram in the kernel's log2 buckets (kernel side:
//! `recap-ebpf/src/probes/cpu.rs`). Costs a few ns per context switch and wakeup.
//!
//! On-CPU time is the kernel's own figure for the cgroup (`cpu.stat` `usage_usec`, the sum of
//! its tasks' scheduler runtime), taken at the window's start and at each read. Adding up
//! stints between `sched_switch` events was tried first: with the scheduler's task clock it
//! agreed with `cpu.stat` to the microsecond in most runs, but under contention about one run
//! in twenty saw one timeslice fewer than the kernel counted (with no missed program runs),
//! and a window that closes while a thread is on a CPU misses that stint; with `ktime` it was
//! off both ways by IRQ and steal time. The kernel's per-cgroup sum has none of these issues
//! (and covers the subtree, as `tcp`/`net` do).

use std::{fmt::Write, path::Path, sync::Arc};

use recap_common::{maps, programs, Counter, RUNQ_BUCKETS};
use serde::{Deserialize, Serialize};

use super::{
    log2::{self, fmt_ns, histogram, Histogram},
    row, FamilyReport, Hooks, ProbeFamily, SlotArray, TaskHook,
};
use crate::{
    families::raw::RawCounts,
    metric,
    metrics::{Attr, MetricDef, Sample, Value},
    targets::cgroup,
};

pub struct Cpu;

metric!(
    CPU_TIME,
    "recap_cpu_time_seconds_total",
    "recap.cpu.time",
    Counter,
    "s",
    "On-CPU time of the target's threads.",
    []
);
/// OpenTelemetry's `process.context_switch.type`: `voluntary` (the thread blocked) or
/// `involuntary` (it was preempted).
const SWITCH_TYPE: Attr = Attr {
    otel: "process.context_switch.type",
    prom: "context_switch_type",
};

metric!(
    CPU_SWITCHES,
    "recap_cpu_context_switches_total",
    "recap.cpu.context_switches",
    Counter,
    "{context_switch}",
    "Context switches of the target's threads (as /proc's voluntary_ctxt_switches and nonvoluntary_ctxt_switches count them).",
    [SWITCH_TYPE]
);
metric!(
    RUNQ_LATENCY,
    "recap_runqueue_latency_seconds",
    "recap.cpu.runqueue.latency",
    Histogram,
    "s",
    "Time the target's threads waited runnable before running (log2 buckets as in the kernel).",
    []
);

metric!(
    CPU_THROTTLED_TIME,
    "recap_cpu_throttled_seconds_total",
    "recap.cpu.throttled_time",
    Counter,
    "s",
    "Time the target's CPU controller held it throttled by its quota (cpu.stat throttled_usec / throttled_time).",
    []
);
metric!(
    CPU_THROTTLED_PERIODS,
    "recap_cpu_throttled_periods_total",
    "recap.cpu.throttled_periods",
    Counter,
    "{period}",
    "Enforcement periods in which the target was throttled (cpu.stat nr_throttled).",
    []
);

/// `RUNQ_HIST[slot][bucket]`.
const RUNQ: SlotArray = SlotArray {
    map: maps::RUNQ_HIST,
    len: RUNQ_BUCKETS,
};

static METRICS: [&MetricDef; 5] = [
    &CPU_TIME,
    &CPU_SWITCHES,
    &RUNQ_LATENCY,
    &CPU_THROTTLED_TIME,
    &CPU_THROTTLED_PERIODS,
];

/// The target's CPU bandwidth control: its version (1: its v2 directory, whose `cpu.stat`
/// counts periods when the cpu controller is on; 2: the v1 `cpu` hierarchy's directory at its
/// path, on hybrid hosts) and periods, throttled periods, throttled ns, quota µs (0: none),
/// period µs. Each file read once.
fn throttling(dir: &Path) -> Option<(u64, [u64; 5])> {
    let v2 = std::fs::read_to_string(dir.join("cpu.stat")).unwrap_or_default();
    if v2.lines().any(|l| l.starts_with("nr_periods ")) {
        let value = |key: &str| cgroup::stat_value(&v2, key);
        // cpu.max: "QUOTA PERIOD" or "max PERIOD".
        let max = std::fs::read_to_string(dir.join("cpu.max")).unwrap_or_default();
        let mut parts = max.split_whitespace();
        let quota = parts.next().and_then(|q| q.parse().ok()).unwrap_or(0);
        let period = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        return Some((
            1,
            [
                value("nr_periods"),
                value("nr_throttled"),
                value("throttled_usec") * 1000,
                quota,
                period,
            ],
        ));
    }
    let v1 = cgroup::v1_dir_at_same_path(dir, "cpu")?;
    let stat = std::fs::read_to_string(v1.join("cpu.stat")).ok()?;
    let value = |key: &str| cgroup::stat_value(&stat, key);
    let read = |f: &str| -> Option<i64> {
        std::fs::read_to_string(v1.join(f))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    Some((
        2,
        [
            value("nr_periods"),
            value("nr_throttled"),
            value("throttled_time"),
            read("cpu.cfs_quota_us").filter(|&q| q > 0).unwrap_or(0) as u64,
            read("cpu.cfs_period_us").unwrap_or(0).max(0) as u64,
        ],
    ))
}

/// A baseline figure the target does not have.
const ABSENT: u64 = u64::MAX;

/// `cpu.pressure` totals: the kernel's for the cgroup with those below it, so none for a
/// window on the target alone.
fn pressure(dir: &Path, subtree: bool) -> Option<(u64, u64)> {
    subtree
        .then(|| cgroup::pressure_totals(dir, "cpu.pressure"))
        .flatten()
}

/// The cgroup's CPU time: with the cgroups below it, or its own tasks' alone.
fn usage(dir: &Path, subtree: bool) -> Option<u64> {
    if subtree {
        cgroup::cpu_usage_ns(dir)
    } else {
        cgroup::cpu_usage_ns_alone(dir)
    }
}

impl ProbeFamily for Cpu {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn hooks(&self) -> Hooks {
        Hooks::Tasks(&[
            TaskHook {
                program: programs::SCHED_SWITCH,
                tracepoint: "sched_switch",
                hot_path: false,
                btf_typed: false,
            },
            TaskHook {
                program: programs::SCHED_WAKEUP,
                tracepoint: "sched_wakeup",
                hot_path: false,
                btf_typed: false,
            },
            TaskHook {
                program: programs::SCHED_WAKEUP_NEW,
                tracepoint: "sched_wakeup_new",
                hot_path: false,
                btf_typed: false,
            },
        ])
    }

    fn slot_arrays(&self) -> &'static [SlotArray] {
        &[RUNQ]
    }

    /// `[cpu time, periods, throttled periods, throttled ns, pressure some, full]` when the
    /// window opens (`ABSENT` where the target has none).
    fn cgroup_baseline(&self, cgroup_dir: &Path, subtree: bool) -> Option<Vec<u64>> {
        let mut base = vec![usage(cgroup_dir, subtree)?];
        match throttling(cgroup_dir) {
            Some((_, t)) => base.extend(&t[..3]),
            None => base.extend([ABSENT; 3]),
        }
        match pressure(cgroup_dir, subtree) {
            Some((some, full)) => base.extend([some, full]),
            None => base.extend([ABSENT; 2]),
        }
        Some(base)
    }

    fn cgroup_share(
        &self,
        cgroup_dir: &Path,
        baseline: &[u64],
        subtree: bool,
    ) -> Option<Vec<(Counter, u64)>> {
        let now = usage(cgroup_dir, subtree)?;
        let start = baseline.first().copied().unwrap_or(now);
        let mut out = vec![(Counter::CpuOnCpuNs, now.saturating_sub(start))];
        if let (Some((version, [periods, throttled, throttled_ns, quota, period])), Some(base)) = (
            throttling(cgroup_dir),
            baseline.get(1..4).filter(|b| b[0] != ABSENT),
        ) {
            out.extend([
                (Counter::CpuThrottleKept, version),
                (Counter::CpuPeriods, periods.saturating_sub(base[0])),
                (
                    Counter::CpuThrottledPeriods,
                    throttled.saturating_sub(base[1]),
                ),
                (
                    Counter::CpuThrottledNs,
                    throttled_ns.saturating_sub(base[2]),
                ),
                (Counter::CpuQuotaUs, quota),
                (Counter::CpuPeriodUs, period),
            ]);
        }
        if let (Some((some, full)), Some(base)) = (
            pressure(cgroup_dir, subtree),
            baseline.get(4..6).filter(|b| b[0] != ABSENT),
        ) {
            out.extend([
                (Counter::CpuPressureKept, 1),
                (Counter::CpuPressureSomeUs, some.saturating_sub(base[0])),
                (Counter::CpuPressureFullUs, full.saturating_sub(base[1])),
            ]);
        }
        Some(out)
    }

    fn summarise(&self, counts: &RawCounts) -> Arc<dyn FamilyReport> {
        Arc::new(summarise(counts))
    }

    fn report_from_json(&self, v: serde_json::Value) -> serde_json::Result<Arc<dyn FamilyReport>> {
        super::report_from_json::<CpuSummary>(v)
    }

    fn live(&self, c: &RawCounts) -> String {
        format!("on-CPU {:.3}s", c.get(Counter::CpuOnCpuNs) as f64 / 1e9)
    }

    fn metrics(&self) -> &'static [&'static MetricDef] {
        &METRICS
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CpuSummary {
    pub on_cpu_ns: u64,
    /// Times a target thread left a CPU because it blocked.
    pub voluntary_switches: u64,
    /// Times a target thread was preempted.
    pub involuntary_switches: u64,
    pub runq_latency: Histogram,
    /// CPU bandwidth control in the window (None: the target has no CPU controller of its
    /// own, as a plain cgroup v2 directory on a hybrid host).
    #[serde(default)]
    pub throttling: Option<Throttling>,
    /// CPU pressure (PSI) of the target in the window (None: not kept, or a window on the
    /// target alone: the kernel's figure includes the cgroups below).
    #[serde(default)]
    pub pressure: Option<Pressure>,
}

/// Pressure stall time (PSI) in the window, µs: some of the target's tasks waiting, all.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Pressure {
    pub some_us: u64,
    pub full_us: u64,
}

/// The kernel's own `cpu.stat` figures for the window, and the quota.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Throttling {
    /// `cgroup v2` or `cgroup v1`.
    pub accounting: String,
    /// CPUs the quota allows (quota / period); None: no quota.
    pub quota_cpus: Option<String>,
    pub periods: u64,
    pub throttled_periods: u64,
    pub throttled_ns: u64,
}

pub fn summarise(c: &RawCounts) -> CpuSummary {
    let kept = c.get(Counter::CpuThrottleKept);
    let (quota, period) = (c.get(Counter::CpuQuotaUs), c.get(Counter::CpuPeriodUs));
    CpuSummary {
        on_cpu_ns: c.get(Counter::CpuOnCpuNs),
        voluntary_switches: c.get(Counter::CpuSwitchesVoluntary),
        involuntary_switches: c.get(Counter::CpuSwitchesInvoluntary),
        runq_latency: histogram(c.array(RUNQ.map), c.get(Counter::CpuRunqWaitNs)),
        throttling: (kept != 0).then(|| Throttling {
            accounting: if kept == 1 { "cgroup v2" } else { "cgroup v1" }.into(),
            quota_cpus: (quota > 0 && period > 0)
                .then(|| format!("{:.2}", quota as f64 / period as f64)),
            periods: c.get(Counter::CpuPeriods),
            throttled_periods: c.get(Counter::CpuThrottledPeriods),
            throttled_ns: c.get(Counter::CpuThrottledNs),
        }),
        pressure: (c.get(Counter::CpuPressureKept) != 0).then(|| Pressure {
            some_us: c.get(Counter::CpuPressureSomeUs),
            full_us: c.get(Counter::CpuPressureFullUs),
        }),
    }
}

impl FamilyReport for CpuSummary {
    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    fn table(&self, o: &mut String, _top: usize) {
        o.push_str("\ncpu\n");
        let _ = writeln!(
            o,
            "  {:<40} {:>14.3}",
            "on-CPU seconds",
            self.on_cpu_ns as f64 / 1e9
        );
        row(o, "context switches, voluntary", self.voluntary_switches);
        row(
            o,
            "context switches, involuntary",
            self.involuntary_switches,
        );
        if let Some(p) = &self.pressure {
            let _ = writeln!(
                o,
                "  CPU pressure: some waiting {}, all waiting {}",
                fmt_ns(p.some_us * 1000),
                fmt_ns(p.full_us * 1000)
            );
        }
        if let Some(t) = &self.throttling {
            let _ = writeln!(
                o,
                "  throttled ({}, quota {} CPUs): {} of {} periods, {}",
                t.accounting,
                t.quota_cpus.as_deref().unwrap_or("none"),
                t.throttled_periods,
                t.periods,
                fmt_ns(t.throttled_ns)
            );
        }
        let h = &self.runq_latency;
        let q = |v: Option<u64>| v.map_or("-".to_string(), fmt_ns);
        let _ = writeln!(
            o,
            "  run-queue latency: {} waits, p50 ≤ {}, p99 ≤ {}",
            h.count,
            q(h.p50_le_ns),
            q(h.p99_le_ns)
        );
        let max = h.buckets.iter().map(|b| b.count).max().unwrap_or(1).max(1);
        for b in &h.buckets {
            let bar = "#".repeat(((b.count * 40).div_ceil(max)) as usize);
            let hi = b.lt_ns.map_or("inf".to_string(), fmt_ns);
            let _ = writeln!(
                o,
                "    {:>8} .. {:<8} {:>10} {bar}",
                fmt_ns(b.ge_ns),
                hi,
                b.count
            );
        }
    }

    fn samples(&self) -> Vec<Sample> {
        let mut out = vec![
            Sample::new(
                &CPU_TIME,
                vec![],
                Value::Seconds(self.on_cpu_ns as f64 / 1e9),
            ),
            Sample::new(
                &CPU_SWITCHES,
                vec![(SWITCH_TYPE, "voluntary".into())],
                Value::Count(self.voluntary_switches),
            ),
            Sample::new(
                &CPU_SWITCHES,
                vec![(SWITCH_TYPE, "involuntary".into())],
                Value::Count(self.involuntary_switches),
            ),
            log2::sample(&RUNQ_LATENCY, &self.runq_latency, RUNQ_BUCKETS),
        ];
        if let Some(t) = &self.throttling {
            out.push(Sample::new(
                &CPU_THROTTLED_TIME,
                vec![],
                Value::Seconds(t.throttled_ns as f64 / 1e9),
            ));
            out.push(Sample::new(
                &CPU_THROTTLED_PERIODS,
                vec![],
                Value::Count(t.throttled_periods),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::families::log2::Bucket;

    #[test]
    fn histogram_buckets_and_quantiles() {
        let mut runq = vec![0u64; RUNQ_BUCKETS as usize];
        runq[0] = 1; // [0, 2)
        runq[10] = 98; // [1024, 2048)
        runq[31] = 1; // [2^31, inf)
        let h = histogram(&runq, 123_456);
        assert_eq!(h.count, 100);
        assert_eq!(h.p50_le_ns, Some(2048));
        assert_eq!(h.p99_le_ns, Some(2048));
        assert_eq!(h.buckets.len(), 3);
        assert_eq!(
            h.buckets[0],
            Bucket {
                ge_ns: 0,
                lt_ns: Some(2),
                count: 1
            }
        );
        assert_eq!(
            h.buckets[2],
            Bucket {
                ge_ns: 1 << 31,
                lt_ns: None,
                count: 1
            }
        );
        assert_eq!(h.sum_ns, 123_456);
        assert_eq!(histogram(&[0; 32], 0).p50_le_ns, None);
    }

    #[test]
    fn runq_bounds_match_the_kernel_buckets() {
        let b = log2::bounds_s(RUNQ_BUCKETS);
        assert_eq!(b.len(), RUNQ_BUCKETS as usize - 1);
        assert_eq!(b[0], 2e-9);
        assert_eq!(b[9], 1024e-9, "bucket 9 holds [512, 1024) ns");
    }

    #[test]
    fn exported_buckets_are_the_kernel_buckets() {
        let mut c = RawCounts::zeroed();
        let mut runq = vec![0u64; RUNQ_BUCKETS as usize];
        runq[3] = 2;
        runq[31] = 1;
        c.arrays.insert(RUNQ.map, runq.clone());
        let samples = summarise(&c).samples();
        let Some(Value::Histogram { counts, count, .. }) = samples
            .iter()
            .map(|s| &s.value)
            .find(|v| matches!(v, Value::Histogram { .. }))
        else {
            panic!("no histogram");
        };
        assert_eq!((counts, *count), (&runq, 3));
    }
}
