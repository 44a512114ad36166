//! `dns`: the target's DNS lookups over UDP: queries by type, answers by response code, answer
//! latency, queries never answered (kernel side: `recap-ebpf/src/probes/dns.rs`, two
//! `cgroup_skb` programs on the target's cgroup). Costs nothing outside the target. DNS over
//! TCP, DoT and DoH are not read.

use std::{fmt::Write, sync::Arc};

use recap_common::{maps, programs, Counter, DNS_HIST_BUCKETS, DNS_QTYPES, DNS_RCODES};
use serde::{Deserialize, Serialize};

use super::{
    log2::{self, fmt_ns, histogram, Histogram},
    row, CgroupHook, FamilyReport, Hooks, ProbeFamily, SlotArray,
};
use crate::{
    families::raw::RawCounts,
    metric,
    metrics::{Attr, MetricDef, Sample, Value},
};

pub struct Dns;

pub const QTYPE: Attr = Attr {
    otel: "recap.dns.question.type",
    prom: "qtype",
};
pub const RCODE: Attr = Attr {
    otel: "recap.dns.response.code",
    prom: "rcode",
};

metric!(
    QUERIES,
    "recap_dns_queries_total",
    "recap.dns.queries",
    Counter,
    "{query}",
    "DNS queries the target sent over UDP, by question type.",
    [QTYPE]
);
metric!(
    ANSWERS,
    "recap_dns_answers_total",
    "recap.dns.answers",
    Counter,
    "{answer}",
    "Answers to the target's DNS queries, by response code.",
    [RCODE]
);
metric!(
    UNANSWERED,
    "recap_dns_queries_unanswered",
    "recap.dns.queries.unanswered",
    Gauge,
    "{query}",
    "DNS queries of the window without an answer when it ended.",
    []
);
metric!(
    LOOKUP_DURATION,
    "dns_lookup_duration_seconds",
    "dns.lookup.duration",
    Histogram,
    "s",
    "Query sent to answer received, per DNS query the target made (log2 buckets).",
    []
);

static METRICS: [&MetricDef; 4] = [&QUERIES, &ANSWERS, &UNANSWERED, &LOOKUP_DURATION];

const QTYPE_COUNTS: SlotArray = SlotArray {
    map: maps::DNS_QTYPE,
    len: DNS_QTYPES.len() as u32,
};
const RCODE_COUNTS: SlotArray = SlotArray {
    map: maps::DNS_RCODE,
    len: DNS_RCODES,
};
const LATENCY: SlotArray = SlotArray {
    map: maps::DNS_HIST,
    len: DNS_HIST_BUCKETS,
};

/// RFC 1035/2136 names of the response codes 0..=10; the rest by number.
const RCODE_NAMES: [&str; 11] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET",
    "NXRRSET", "NOTAUTH", "NOTZONE",
];

fn rcode_name(code: usize) -> String {
    RCODE_NAMES
        .get(code)
        .map_or_else(|| format!("RCODE{code}"), |n| n.to_string())
}

impl ProbeFamily for Dns {
    fn name(&self) -> &'static str {
        "dns"
    }

    fn hooks(&self) -> Hooks {
        Hooks::Cgroup(&[
            CgroupHook::Skb {
                program: programs::DNS_EGRESS,
                ingress: false,
            },
            CgroupHook::Skb {
                program: programs::DNS_INGRESS,
                ingress: true,
            },
        ])
    }

    fn slot_arrays(&self) -> &'static [SlotArray] {
        &[QTYPE_COUNTS, RCODE_COUNTS, LATENCY]
    }

    fn summarise(&self, counts: &RawCounts) -> Arc<dyn FamilyReport> {
        Arc::new(summarise(counts))
    }

    fn report_from_json(&self, v: serde_json::Value) -> serde_json::Result<Arc<dyn FamilyReport>> {
        super::report_from_json::<DnsSummary>(v)
    }

    fn live(&self, c: &RawCounts) -> String {
        let s = summarise(c);
        format!(
            "dns queries {}, answered {}, NXDOMAIN {}",
            s.queries,
            s.answered,
            s.answer_count("NXDOMAIN")
        )
    }

    fn metrics(&self) -> &'static [&'static MetricDef] {
        &METRICS
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NamedCount {
    pub name: String,
    pub count: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DnsSummary {
    pub queries: u64,
    /// Non-zero types only (`other`: any type without a name here).
    pub queries_by_type: Vec<NamedCount>,
    /// Queries whose question could not be read (still counted in `queries`).
    pub unparsable_queries: u64,
    pub answered: u64,
    /// Non-zero response codes only.
    pub answers_by_rcode: Vec<NamedCount>,
    /// Queries without an answer when the window ended (a retry with a new id counts again).
    pub unanswered: u64,
    /// Answers that matched no query of the window (e.g. sent before it).
    pub unmatched_answers: u64,
    pub latency: Histogram,
}

impl DnsSummary {
    pub fn answer_count(&self, rcode: &str) -> u64 {
        self.answers_by_rcode
            .iter()
            .find(|n| n.name == rcode)
            .map_or(0, |n| n.count)
    }

    pub fn query_count(&self, qtype: &str) -> u64 {
        self.queries_by_type
            .iter()
            .find(|n| n.name == qtype)
            .map_or(0, |n| n.count)
    }
}

pub fn summarise(c: &RawCounts) -> DnsSummary {
    let non_zero = |counts: &[u64], name: &dyn Fn(usize) -> String| -> Vec<NamedCount> {
        counts
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(i, &n)| NamedCount {
                name: name(i),
                count: n,
            })
            .collect()
    };
    let queries = c.get(Counter::DnsQueries);
    let answered = c.get(Counter::DnsAnswered);
    DnsSummary {
        queries,
        queries_by_type: non_zero(c.array(QTYPE_COUNTS.map), &|i| {
            DNS_QTYPES.get(i).copied().unwrap_or("other").to_string()
        }),
        unparsable_queries: c.get(Counter::DnsUnparsable),
        answered,
        answers_by_rcode: non_zero(c.array(RCODE_COUNTS.map), &rcode_name),
        unanswered: queries.saturating_sub(answered),
        unmatched_answers: c.get(Counter::DnsUnmatched),
        latency: histogram(c.array(LATENCY.map), c.get(Counter::DnsLatencySumNs)),
    }
}

impl FamilyReport for DnsSummary {
    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    fn table(&self, o: &mut String, _top: usize) {
        o.push_str("\ndns\n");
        row(o, "queries", self.queries);
        let list = |v: &[NamedCount]| {
            v.iter()
                .map(|n| format!("{} ×{}", n.name, n.count))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !self.queries_by_type.is_empty() {
            let _ = writeln!(o, "    {}", list(&self.queries_by_type));
        }
        row(o, "answered", self.answered);
        if !self.answers_by_rcode.is_empty() {
            let _ = writeln!(o, "    {}", list(&self.answers_by_rcode));
        }
        row(o, "unanswered at the end", self.unanswered);
        row(
            o,
            "answers to no query of the window",
            self.unmatched_answers,
        );
        let q = |v: Option<u64>| v.map_or("-".to_string(), fmt_ns);
        let _ = writeln!(
            o,
            "  latency: p50 ≤ {}, p99 ≤ {}",
            q(self.latency.p50_le_ns),
            q(self.latency.p99_le_ns)
        );
    }

    fn samples(&self) -> Vec<Sample> {
        let mut out: Vec<Sample> = self
            .queries_by_type
            .iter()
            .map(|n| {
                Sample::new(
                    &QUERIES,
                    vec![(QTYPE, n.name.clone())],
                    Value::Count(n.count),
                )
            })
            .collect();
        out.extend(self.answers_by_rcode.iter().map(|n| {
            Sample::new(
                &ANSWERS,
                vec![(RCODE, n.name.clone())],
                Value::Count(n.count),
            )
        }));
        out.push(Sample::new(
            &UNANSWERED,
            vec![],
            Value::Count(self.unanswered),
        ));
        out.push(log2::sample(
            &LOOKUP_DURATION,
            &self.latency,
            DNS_HIST_BUCKETS,
        ));
        out
    }
}
