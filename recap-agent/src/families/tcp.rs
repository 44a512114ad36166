//! `tcp`: connections of the target, from `sock_ops` on its cgroup (kernel side:
//! `recap-ebpf/src/probes/tcp.rs`). Costs nothing outside the target.

use std::sync::Arc;

use recap_common::{programs, Counter};
use serde::{Deserialize, Serialize};

use super::{row, CgroupHook, FamilyReport, Hooks, ProbeFamily};
use crate::{
    families::raw::RawCounts,
    metric,
    metrics::{MetricDef, Sample, Value},
};

pub struct Tcp;

metric!(
    TCP_ATTEMPTS,
    "recap_tcp_connect_attempts_total",
    "recap.tcp.connect.attempts",
    Counter,
    "{connection}",
    "Outbound TCP connects attempted by the target.",
    []
);
metric!(
    TCP_ESTABLISHED,
    "recap_tcp_connects_established_total",
    "recap.tcp.connect.established",
    Counter,
    "{connection}",
    "Outbound TCP connects that were established.",
    []
);
metric!(
    TCP_FAILED,
    "recap_tcp_connects_failed_total",
    "recap.tcp.connect.failed",
    Counter,
    "{connection}",
    "Outbound TCP connects that failed (refused, reset or timed out).",
    []
);
metric!(
    TCP_ACCEPTED,
    "recap_tcp_accepted_total",
    "recap.tcp.accepted",
    Counter,
    "{connection}",
    "Inbound TCP connections established to the target.",
    []
);
metric!(
    TCP_CLOSED,
    "recap_tcp_closed_total",
    "recap.tcp.closed",
    Counter,
    "{connection}",
    "Connections established in the window and closed in it.",
    []
);
metric!(
    TCP_OPEN,
    "recap_tcp_open_connections",
    "recap.tcp.open",
    Gauge,
    "{connection}",
    "Connections established in the window and still open.",
    []
);

static METRICS: [&MetricDef; 6] = [
    &TCP_ATTEMPTS,
    &TCP_ESTABLISHED,
    &TCP_FAILED,
    &TCP_ACCEPTED,
    &TCP_CLOSED,
    &TCP_OPEN,
];

impl ProbeFamily for Tcp {
    fn name(&self) -> &'static str {
        "tcp"
    }

    fn hooks(&self) -> Hooks {
        Hooks::Cgroup(&[CgroupHook::SockOps {
            program: programs::TCP_SOCK_OPS,
        }])
    }

    fn summarise(&self, counts: &RawCounts) -> Arc<dyn FamilyReport> {
        Arc::new(summarise(counts))
    }

    fn report_from_json(&self, v: serde_json::Value) -> serde_json::Result<Arc<dyn FamilyReport>> {
        super::report_from_json::<TcpSummary>(v)
    }

    fn live(&self, c: &RawCounts) -> String {
        format!(
            "tcp connects {} (failed {}), accepted {}",
            c.get(Counter::TcpConnectAttempts),
            c.get(Counter::TcpConnectFailed),
            c.get(Counter::TcpAccepted)
        )
    }

    fn metrics(&self) -> &'static [&'static MetricDef] {
        &METRICS
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
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

pub fn summarise(c: &RawCounts) -> TcpSummary {
    let established = c.get(Counter::TcpConnectEstablished);
    let accepted = c.get(Counter::TcpAccepted);
    let closed = c.get(Counter::TcpClosed);
    TcpSummary {
        connect_attempts: c.get(Counter::TcpConnectAttempts),
        connect_established: established,
        connect_failed: c.get(Counter::TcpConnectFailed),
        accepted,
        closed,
        // Closes of connections older than the window never make this negative.
        open_at_end: (established + accepted).saturating_sub(closed),
    }
}

impl FamilyReport for TcpSummary {
    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    fn table(&self, o: &mut String, _top: usize) {
        o.push_str("\ntcp\n");
        row(o, "outbound connects attempted", self.connect_attempts);
        row(o, "  established", self.connect_established);
        row(o, "  failed", self.connect_failed);
        row(o, "inbound accepted", self.accepted);
        row(o, "closed (of those opened in the window)", self.closed);
        row(o, "still open at the end", self.open_at_end);
    }

    fn samples(&self) -> Vec<Sample> {
        [
            (&TCP_ATTEMPTS, self.connect_attempts),
            (&TCP_ESTABLISHED, self.connect_established),
            (&TCP_FAILED, self.connect_failed),
            (&TCP_ACCEPTED, self.accepted),
            (&TCP_CLOSED, self.closed),
            (&TCP_OPEN, self.open_at_end),
        ]
        .into_iter()
        .map(|(def, n)| Sample::new(def, vec![], Value::Count(n)))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_at_end_is_established_plus_accepted_minus_closed() {
        let mut c = RawCounts::zeroed();
        c.counters[Counter::TcpConnectAttempts as usize] = 7;
        c.counters[Counter::TcpConnectEstablished as usize] = 5;
        c.counters[Counter::TcpConnectFailed as usize] = 2;
        c.counters[Counter::TcpAccepted as usize] = 3;
        c.counters[Counter::TcpClosed as usize] = 6;
        let t = summarise(&c);
        assert_eq!(
            (t.connect_attempts, t.connect_failed, t.open_at_end),
            (7, 2, 2)
        );
        c.counters[Counter::TcpClosed as usize] = 100;
        assert_eq!(summarise(&c).open_at_end, 0);
    }
}
