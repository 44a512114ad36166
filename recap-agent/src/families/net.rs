//! `net`: bytes, packets and payload in and out of the target, from `cgroup_skb` ingress and
//! egress on its cgroup (kernel side: `recap-ebpf/src/probes/net.rs`). Costs nothing outside
//! the target.

use std::{fmt::Write, sync::Arc};

use recap_common::{programs, Counter};
use serde::{Deserialize, Serialize};

use super::{CgroupHook, FamilyReport, Hooks, ProbeFamily};
use crate::{
    families::raw::RawCounts,
    metric,
    metrics::{MetricDef, Sample, Value, DIRECTION, TRANSPORT},
};

pub struct Net;

metric!(
    NET_BYTES,
    "recap_net_bytes_total",
    "recap.net.io",
    Counter,
    "By",
    "IP bytes (headers included) in and out of the target.",
    [DIRECTION, TRANSPORT]
);
metric!(
    NET_PACKETS,
    "recap_net_packets_total",
    "recap.net.packets",
    Counter,
    "{packet}",
    "Packets in and out as the cgroup hook sees them (a GSO/GRO segment counts once).",
    [DIRECTION, TRANSPORT]
);
metric!(
    NET_PAYLOAD,
    "recap_net_payload_bytes_total",
    "recap.net.payload",
    Counter,
    "By",
    "TCP/UDP payload bytes in and out of the target.",
    [DIRECTION, TRANSPORT]
);

static METRICS: [&MetricDef; 3] = [&NET_BYTES, &NET_PACKETS, &NET_PAYLOAD];

impl ProbeFamily for Net {
    fn name(&self) -> &'static str {
        "net"
    }

    fn hooks(&self) -> Hooks {
        Hooks::Cgroup(&[
            CgroupHook::Skb {
                program: programs::SKB_INGRESS,
                ingress: true,
            },
            CgroupHook::Skb {
                program: programs::SKB_EGRESS,
                ingress: false,
            },
        ])
    }

    fn summarise(&self, counts: &RawCounts) -> Arc<dyn FamilyReport> {
        Arc::new(summarise(counts))
    }

    fn report_from_json(&self, v: serde_json::Value) -> serde_json::Result<Arc<dyn FamilyReport>> {
        super::report_from_json::<NetSummary>(v)
    }

    fn live(&self, c: &RawCounts) -> String {
        let n = summarise(c);
        format!("net rx {} B, tx {} B", n.rx.bytes.total, n.tx.bytes.total)
    }

    fn metrics(&self) -> &'static [&'static MetricDef] {
        &METRICS
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
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

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Traffic {
    /// IP bytes (headers included).
    pub bytes: ByProto,
    /// Packets as the cgroup hook sees them (a GSO/GRO segment counts once).
    pub packets: ByProto,
    /// Transport payload bytes.
    pub payload_bytes: ByProto,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetSummary {
    pub rx: Traffic,
    pub tx: Traffic,
}

pub fn summarise(c: &RawCounts) -> NetSummary {
    use Counter::*;
    let traffic = |bytes: [Counter; 3], packets: [Counter; 3], payload: [Counter; 2]| Traffic {
        bytes: ByProto::new(c.get(bytes[0]), c.get(bytes[1]), c.get(bytes[2])),
        packets: ByProto::new(c.get(packets[0]), c.get(packets[1]), c.get(packets[2])),
        payload_bytes: ByProto::new(c.get(payload[0]), c.get(payload[1]), 0),
    };
    NetSummary {
        rx: traffic(
            [NetRxBytesTcp, NetRxBytesUdp, NetRxBytesOther],
            [NetRxPacketsTcp, NetRxPacketsUdp, NetRxPacketsOther],
            [NetRxPayloadTcp, NetRxPayloadUdp],
        ),
        tx: traffic(
            [NetTxBytesTcp, NetTxBytesUdp, NetTxBytesOther],
            [NetTxPacketsTcp, NetTxPacketsUdp, NetTxPacketsOther],
            [NetTxPayloadTcp, NetTxPayloadUdp],
        ),
    }
}

impl FamilyReport for NetSummary {
    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    fn table(&self, o: &mut String, _top: usize) {
        let _ = writeln!(
            o,
            "\nnet {:>28} {:>14} {:>14} {:>14}",
            "tcp", "udp", "other", "total"
        );
        for (label, p) in [
            ("rx bytes", &self.rx.bytes),
            ("rx packets", &self.rx.packets),
            ("rx payload bytes", &self.rx.payload_bytes),
            ("tx bytes", &self.tx.bytes),
            ("tx packets", &self.tx.packets),
            ("tx payload bytes", &self.tx.payload_bytes),
        ] {
            let _ = writeln!(
                o,
                "  {label:<26} {:>14} {:>14} {:>14} {:>14}",
                p.tcp, p.udp, p.other, p.total
            );
        }
    }

    fn samples(&self) -> Vec<Sample> {
        let mut out = Vec::new();
        for (direction, traffic) in [("receive", &self.rx), ("transmit", &self.tx)] {
            let attrs = |transport: &str| {
                vec![
                    (DIRECTION, direction.to_string()),
                    (TRANSPORT, transport.to_string()),
                ]
            };
            for (transport, bytes, packets) in [
                ("tcp", traffic.bytes.tcp, traffic.packets.tcp),
                ("udp", traffic.bytes.udp, traffic.packets.udp),
                ("other", traffic.bytes.other, traffic.packets.other),
            ] {
                out.push(Sample::new(
                    &NET_BYTES,
                    attrs(transport),
                    Value::Count(bytes),
                ));
                out.push(Sample::new(
                    &NET_PACKETS,
                    attrs(transport),
                    Value::Count(packets),
                ));
            }
            for (transport, payload) in [
                ("tcp", traffic.payload_bytes.tcp),
                ("udp", traffic.payload_bytes.udp),
            ] {
                out.push(Sample::new(
                    &NET_PAYLOAD,
                    attrs(transport),
                    Value::Count(payload),
                ));
            }
        }
        out
    }
}
