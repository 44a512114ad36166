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
    export::catalog::{Attr, MetricDef, Sample, Value},
    metric,
    probes::RawCounts,
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

/// `RUNQ_HIST[slot][bucket]`.
const RUNQ: SlotArray = SlotArray {
    map: maps::RUNQ_HIST,
    len: RUNQ_BUCKETS,
};

static METRICS: [&MetricDef; 3] = [&CPU_TIME, &CPU_SWITCHES, &RUNQ_LATENCY];

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

    fn cgroup_baseline(&self, cgroup_dir: &Path, subtree: bool) -> Option<u64> {
        usage(cgroup_dir, subtree)
    }

    fn cgroup_share(
        &self,
        cgroup_dir: &Path,
        baseline: u64,
        subtree: bool,
    ) -> Option<(Counter, u64)> {
        let now = usage(cgroup_dir, subtree)?;
        Some((Counter::CpuOnCpuNs, now.saturating_sub(baseline)))
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
}

pub fn summarise(c: &RawCounts) -> CpuSummary {
    CpuSummary {
        on_cpu_ns: c.get(Counter::CpuOnCpuNs),
        voluntary_switches: c.get(Counter::CpuSwitchesVoluntary),
        involuntary_switches: c.get(Counter::CpuSwitchesInvoluntary),
        runq_latency: histogram(c.array(RUNQ.map), c.get(Counter::CpuRunqWaitNs)),
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
        vec![
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
        ]
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
