//! `tcp_health`: how the target's TCP connections fare: segments retransmitted, RSTs received
//! and sent, RTT samples and connection lifetimes as log2 histograms (kernel side:
//! `recap-ebpf/src/probes/tcp_health.rs`, a `sock_ops` and two `cgroup_skb` programs on the
//! target's cgroup). Costs nothing outside the target.

use std::{fmt::Write, sync::Arc};

use recap_common::{maps, programs, Counter, TCP_HIST_BUCKETS};
use serde::{Deserialize, Serialize};

use super::{
    log2::{self, fmt_ns, histogram, Histogram},
    row, CgroupHook, FamilyReport, Hooks, ProbeFamily, SlotArray,
};
use crate::{
    families::raw::RawCounts,
    metric,
    metrics::{MetricDef, Sample, Value, DIRECTION},
};

pub struct TcpHealth;

metric!(
    RETRANS,
    "recap_tcp_retransmitted_segments_total",
    "recap.tcp.retransmits",
    Counter,
    "{segment}",
    "TCP segments the target retransmitted (as the kernel's TcpRetransSegs counts them).",
    []
);
metric!(
    RETRANS_FAILED,
    "recap_tcp_retransmits_failed_total",
    "recap.tcp.retransmits.failed",
    Counter,
    "{segment}",
    "Retransmitted TCP segments that could not be sent (as the kernel's TCPRetransFail counts them).",
    []
);
metric!(
    RESETS,
    "recap_tcp_resets_total",
    "recap.tcp.resets",
    Counter,
    "{segment}",
    "TCP segments with RST received and sent by the target.",
    [DIRECTION]
);
metric!(
    RTT,
    "recap_tcp_rtt_seconds",
    "recap.tcp.rtt",
    Histogram,
    "s",
    "RTT samples of the target's TCP connections (log2 buckets as in the kernel).",
    []
);
metric!(
    LIFETIME,
    "recap_tcp_connection_duration_seconds",
    "recap.tcp.connection.duration",
    Histogram,
    "s",
    "How long the target's TCP connections lived, established to closed (log2 buckets).",
    []
);

static METRICS: [&MetricDef; 5] = [&RETRANS, &RETRANS_FAILED, &RESETS, &RTT, &LIFETIME];

const RTT_HIST: SlotArray = SlotArray {
    map: maps::TCP_RTT_HIST,
    len: TCP_HIST_BUCKETS,
};
const DUR_HIST: SlotArray = SlotArray {
    map: maps::TCP_DUR_HIST,
    len: TCP_HIST_BUCKETS,
};

impl ProbeFamily for TcpHealth {
    fn name(&self) -> &'static str {
        "tcp_health"
    }

    fn hooks(&self) -> Hooks {
        Hooks::Cgroup(&[
            CgroupHook::SockOps {
                program: programs::TCPH_SOCK_OPS,
            },
            CgroupHook::Skb {
                program: programs::TCPH_INGRESS,
                ingress: true,
            },
            CgroupHook::Skb {
                program: programs::TCPH_EGRESS,
                ingress: false,
            },
        ])
    }

    fn slot_arrays(&self) -> &'static [SlotArray] {
        &[RTT_HIST, DUR_HIST]
    }

    fn summarise(&self, counts: &RawCounts) -> Arc<dyn FamilyReport> {
        Arc::new(summarise(counts))
    }

    fn report_from_json(&self, v: serde_json::Value) -> serde_json::Result<Arc<dyn FamilyReport>> {
        super::report_from_json::<TcpHealthSummary>(v)
    }

    fn live(&self, c: &RawCounts) -> String {
        format!(
            "tcp retransmits {}, resets in {} out {}",
            c.get(Counter::TcpRetransSegs),
            c.get(Counter::TcpRstIn),
            c.get(Counter::TcpRstOut)
        )
    }

    fn metrics(&self) -> &'static [&'static MetricDef] {
        &METRICS
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TcpHealthSummary {
    pub retransmitted_segments: u64,
    /// Of those, the ones whose sending failed (e.g. dropped by a local firewall).
    pub retransmits_failed: u64,
    pub resets_received: u64,
    pub resets_sent: u64,
    /// RTT samples (one per ACK that gave one).
    pub rtt: Histogram,
    /// Connections established in the window and closed in it.
    pub connection_duration: Histogram,
}

pub fn summarise(c: &RawCounts) -> TcpHealthSummary {
    TcpHealthSummary {
        retransmitted_segments: c.get(Counter::TcpRetransSegs),
        retransmits_failed: c.get(Counter::TcpRetransFailed),
        resets_received: c.get(Counter::TcpRstIn),
        resets_sent: c.get(Counter::TcpRstOut),
        rtt: histogram(c.array(RTT_HIST.map), c.get(Counter::TcpRttSumNs)),
        connection_duration: histogram(c.array(DUR_HIST.map), c.get(Counter::TcpConnDurSumNs)),
    }
}

impl FamilyReport for TcpHealthSummary {
    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    fn table(&self, o: &mut String, _top: usize) {
        o.push_str("\ntcp health\n");
        row(o, "segments retransmitted", self.retransmitted_segments);
        row(o, "  of which could not be sent", self.retransmits_failed);
        row(o, "resets received", self.resets_received);
        row(o, "resets sent", self.resets_sent);
        let q = |v: Option<u64>| v.map_or("-".to_string(), fmt_ns);
        for (label, h) in [
            ("RTT samples", &self.rtt),
            ("connections closed, lifetime", &self.connection_duration),
        ] {
            let _ = writeln!(
                o,
                "  {label}: {}, p50 ≤ {}, p99 ≤ {}",
                h.count,
                q(h.p50_le_ns),
                q(h.p99_le_ns)
            );
        }
    }

    fn samples(&self) -> Vec<Sample> {
        vec![
            Sample::new(&RETRANS, vec![], Value::Count(self.retransmitted_segments)),
            Sample::new(
                &RETRANS_FAILED,
                vec![],
                Value::Count(self.retransmits_failed),
            ),
            Sample::new(
                &RESETS,
                vec![(DIRECTION, "receive".into())],
                Value::Count(self.resets_received),
            ),
            Sample::new(
                &RESETS,
                vec![(DIRECTION, "transmit".into())],
                Value::Count(self.resets_sent),
            ),
            log2::sample(&RTT, &self.rtt, TCP_HIST_BUCKETS),
            log2::sample(&LIFETIME, &self.connection_duration, TCP_HIST_BUCKETS),
        ]
    }
}
