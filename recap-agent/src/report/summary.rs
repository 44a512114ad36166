//! The summary model: what a window measured, per family, plus how the window went.

use std::collections::BTreeMap;

use recap_common::{Counter, RUNQ_BUCKETS};
use serde::Serialize;

use super::syscall_names::syscall_name;
use crate::{
    capsule::CapsuleReport,
    probes::{Family, FamilyStatus, RawCounts},
    targets::Target,
};

pub const SCHEMA: &str = "recap.window/v1";

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WindowStatus {
    /// Still open (a live snapshot, as exported while the window runs).
    Open,
    /// Ran for the requested duration.
    Completed,
    /// Ended early by Ctrl-C or SIGTERM.
    Interrupted,
    /// The target (process or cgroup) went away during the window.
    TargetExited,
}

impl WindowStatus {
    pub fn describe(self) -> &'static str {
        match self {
            WindowStatus::Open => "open",
            WindowStatus::Completed => "completed",
            WindowStatus::Interrupted => "interrupted",
            WindowStatus::TargetExited => "target exited",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct WindowSummary {
    pub schema: &'static str,
    /// How the window went; flattened, so its fields sit at the top of the JSON document.
    #[serde(flatten)]
    pub meta: WindowMeta,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub net: Option<NetSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syscalls: Option<SyscallSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proc: Option<ProcSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuSummary>,
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TcpSummary {
    pub connect_attempts: u64,
    pub connect_established: u64,
    pub connect_failed: u64,
    pub accepted: u64,
    /// Connections established in the window and closed in it.
    pub closed: u64,
    /// Connections established in the window and still open at its end.
    pub open_at_end: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq, Default)]
pub struct ByProto {
    pub tcp: u64,
    pub udp: u64,
    pub other: u64,
    pub total: u64,
}

impl ByProto {
    fn new(tcp: u64, udp: u64, other: u64) -> Self {
        ByProto {
            tcp,
            udp,
            other,
            total: tcp + udp + other,
        }
    }
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Traffic {
    /// IP bytes (headers included).
    pub bytes: ByProto,
    /// Packets as the cgroup hook sees them (a GSO/GRO segment counts once).
    pub packets: ByProto,
    /// Transport payload bytes.
    pub payload_bytes: ByProto,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct NetSummary {
    pub rx: Traffic,
    pub tx: Traffic,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SyscallRow {
    pub nr: u32,
    pub name: String,
    pub calls: u64,
    pub errors: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SyscallSummary {
    pub total_calls: u64,
    pub total_errors: u64,
    /// Every syscall seen, most called first.
    pub by_syscall: Vec<SyscallRow>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct NameCount {
    pub name: String,
    pub count: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ProcSummary {
    pub execs: u64,
    /// Process exits (thread group leaders).
    pub exits: u64,
    /// New processes forked (threads not included).
    pub forks: u64,
    /// Exec'd programs by name (the task's comm after exec), most frequent first.
    pub exec_names: Vec<NameCount>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Bucket {
    /// Waits in `[ge_ns, lt_ns)`; the last bucket has no upper bound.
    pub ge_ns: u64,
    pub lt_ns: Option<u64>,
    pub count: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Histogram {
    pub count: u64,
    /// Sum of all waits.
    pub sum_ns: u64,
    /// Upper bound of the bucket holding the quantile (log2 buckets: within 2×).
    pub p50_le_ns: Option<u64>,
    pub p99_le_ns: Option<u64>,
    /// Non-empty buckets only.
    pub buckets: Vec<Bucket>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct CpuSummary {
    pub on_cpu_ns: u64,
    pub switches_in: u64,
    pub runq_latency: Histogram,
}

/// Everything the summary says besides what was counted.
#[derive(Clone, Debug, Serialize)]
pub struct WindowMeta {
    pub window_id: String,
    pub target: Target,
    pub started_at: String,
    pub requested_duration_s: f64,
    pub duration_s: f64,
    /// From the command starting to every probe counting, and from the end to all detached.
    pub arm_ms: f64,
    pub teardown_ms: f64,
    pub status: WindowStatus,
    pub families: BTreeMap<Family, FamilyStatus>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub capsules: Vec<CapsuleReport>,
}

impl WindowSummary {
    pub fn build(meta: WindowMeta, counts: &RawCounts) -> Self {
        let ran = |f: Family| meta.families.get(&f) == Some(&FamilyStatus::Ok);
        let mut warnings = Vec::new();
        if meta.target.child_cgroups > 0 && meta.families.keys().any(|f| f.is_task_based()) {
            warnings.push(format!(
                "the target cgroup has {} child cgroup(s): syscalls/proc/cpu count only tasks directly in it, tcp/net count its whole subtree",
                meta.target.child_cgroups
            ));
        }
        let misses = counts.get(Counter::TaskTrackMisses);
        if misses > 0 {
            warnings.push(format!("{misses} thread(s) could not be tracked (thread id beyond pid_max at load): task counts are low"));
        }
        WindowSummary {
            schema: SCHEMA,
            tcp: ran(Family::Tcp).then(|| tcp(counts)),
            net: ran(Family::Net).then(|| net(counts)),
            syscalls: ran(Family::Syscalls).then(|| syscalls(counts)),
            proc: ran(Family::Proc).then(|| proc(counts)),
            cpu: ran(Family::Cpu).then(|| cpu(counts)),
            meta,
            warnings,
        }
    }
}

pub fn tcp(c: &RawCounts) -> TcpSummary {
    let established = c.get(Counter::TcpConnectEstablished);
    let accepted = c.get(Counter::TcpAccepted);
    let closed = c.get(Counter::TcpClosed);
    TcpSummary {
        connect_attempts: c.get(Counter::TcpConnectAttempts),
        connect_established: established,
        connect_failed: c.get(Counter::TcpConnectFailed),
        accepted,
        closed,
        open_at_end: (established + accepted).saturating_sub(closed),
    }
}

pub fn net(c: &RawCounts) -> NetSummary {
    use Counter::*;
    NetSummary {
        rx: Traffic {
            bytes: ByProto::new(
                c.get(NetRxBytesTcp),
                c.get(NetRxBytesUdp),
                c.get(NetRxBytesOther),
            ),
            packets: ByProto::new(
                c.get(NetRxPacketsTcp),
                c.get(NetRxPacketsUdp),
                c.get(NetRxPacketsOther),
            ),
            payload_bytes: ByProto::new(c.get(NetRxPayloadTcp), c.get(NetRxPayloadUdp), 0),
        },
        tx: Traffic {
            bytes: ByProto::new(
                c.get(NetTxBytesTcp),
                c.get(NetTxBytesUdp),
                c.get(NetTxBytesOther),
            ),
            packets: ByProto::new(
                c.get(NetTxPacketsTcp),
                c.get(NetTxPacketsUdp),
                c.get(NetTxPacketsOther),
            ),
            payload_bytes: ByProto::new(c.get(NetTxPayloadTcp), c.get(NetTxPayloadUdp), 0),
        },
    }
}

pub fn syscalls(c: &RawCounts) -> SyscallSummary {
    let mut rows: Vec<SyscallRow> = c
        .syscalls
        .iter()
        .enumerate()
        .filter(|(_, &(calls, _))| calls > 0)
        .map(|(nr, &(calls, errors))| SyscallRow {
            nr: nr as u32,
            name: syscall_name(nr as u32),
            calls,
            errors,
        })
        .collect();
    rows.sort_by(|a, b| b.calls.cmp(&a.calls).then(a.nr.cmp(&b.nr)));
    SyscallSummary {
        total_calls: rows.iter().map(|r| r.calls).sum(),
        total_errors: rows.iter().map(|r| r.errors).sum(),
        by_syscall: rows,
    }
}

pub fn proc(c: &RawCounts) -> ProcSummary {
    let mut exec_names: Vec<NameCount> = c
        .execs
        .iter()
        .map(|(name, count)| NameCount {
            name: name.clone(),
            count: *count,
        })
        .collect();
    exec_names.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    ProcSummary {
        execs: c.get(Counter::ProcExecs),
        exits: c.get(Counter::ProcExits),
        forks: c.get(Counter::ProcForks),
        exec_names,
    }
}

pub fn cpu(c: &RawCounts) -> CpuSummary {
    CpuSummary {
        on_cpu_ns: c.get(Counter::CpuOnCpuNs),
        switches_in: c.get(Counter::CpuSwitchesIn),
        runq_latency: histogram(&c.runq, c.get(Counter::CpuRunqWaitNs)),
    }
}

/// Log2 buckets: bucket b covers [2^b, 2^(b+1)) ns, bucket 0 also holds 0 ns.
pub fn histogram(runq: &[u64], sum_ns: u64) -> Histogram {
    let last = RUNQ_BUCKETS as usize - 1;
    let bounds = |b: usize| -> (u64, Option<u64>) {
        let ge = if b == 0 { 0 } else { 1u64 << b };
        (ge, (b < last).then(|| 1u64 << (b + 1)))
    };
    let count: u64 = runq.iter().sum();
    let quantile = |q: f64| -> Option<u64> {
        if count == 0 {
            return None;
        }
        let rank = (q * count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, &n) in runq.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(bounds(b).1.unwrap_or(u64::MAX));
            }
        }
        None
    };
    Histogram {
        count,
        sum_ns,
        p50_le_ns: quantile(0.50),
        p99_le_ns: quantile(0.99),
        buckets: runq
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(b, &n)| {
                let (ge_ns, lt_ns) = bounds(b);
                Bucket {
                    ge_ns,
                    lt_ns,
                    count: n,
                }
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts() -> RawCounts {
        let mut c = RawCounts::zeroed();
        c.counters[Counter::TcpConnectAttempts as usize] = 7;
        c.counters[Counter::TcpConnectEstablished as usize] = 5;
        c.counters[Counter::TcpConnectFailed as usize] = 2;
        c.counters[Counter::TcpAccepted as usize] = 3;
        c.counters[Counter::TcpClosed as usize] = 6;
        c.syscalls[110] = (10_000, 0);
        c.syscalls[2] = (5, 3);
        c.syscalls[0] = (5, 0);
        c.execs = vec![("true".into(), 3), ("sh".into(), 4)];
        c
    }

    #[test]
    fn tcp_open_at_end_is_established_plus_accepted_minus_closed() {
        let t = tcp(&counts());
        assert_eq!(
            (t.connect_attempts, t.connect_failed, t.open_at_end),
            (7, 2, 2)
        );
        let mut c = counts();
        c.counters[Counter::TcpClosed as usize] = 100; // closes of older sockets never go negative
        assert_eq!(tcp(&c).open_at_end, 0);
    }

    #[test]
    fn syscalls_sorted_by_calls_then_number_with_names() {
        let s = syscalls(&counts());
        assert_eq!(s.total_calls, 10_010);
        assert_eq!(s.total_errors, 3);
        let names: Vec<&str> = s.by_syscall.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["getppid", "read", "open"]);
    }

    #[test]
    fn exec_names_most_frequent_first() {
        let p = proc(&counts());
        assert_eq!(
            p.exec_names[0],
            NameCount {
                name: "sh".into(),
                count: 4
            }
        );
    }

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
}
