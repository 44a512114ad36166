//! Every exported metric, defined once: its Prometheus and OpenTelemetry names, type, unit,
//! attributes and meaning. Both exporters read a window's numbers through `samples`, which
//! takes them from the window summary itself, so an export can only say what the summary says;
//! docs/metrics.md is generated from these definitions (`recap metrics-catalog`).

use recap_common::RUNQ_BUCKETS;

use crate::report::WindowSummary;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// An attribute: its OpenTelemetry key and its Prometheus label name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    pub otel: &'static str,
    pub prom: &'static str,
}

pub const DIRECTION: Attr = Attr {
    otel: "network.io.direction",
    prom: "direction",
};
pub const TRANSPORT: Attr = Attr {
    otel: "network.transport",
    prom: "transport",
};
pub const SYSCALL: Attr = Attr {
    otel: "recap.syscall.name",
    prom: "syscall",
};
pub const PROGRAM: Attr = Attr {
    otel: "process.executable.name",
    prom: "program",
};
/// On every series.
pub const WINDOW: Attr = Attr {
    otel: "recap.window.id",
    prom: "window_id",
};

#[derive(Debug)]
pub struct MetricDef {
    pub prom: &'static str,
    pub otel: &'static str,
    pub kind: Kind,
    /// UCUM unit for OTLP (Prometheus names carry their base unit as a suffix).
    pub unit: &'static str,
    pub help: &'static str,
    pub attrs: &'static [Attr],
}

macro_rules! metric {
    ($ident:ident, $prom:literal, $otel:literal, $kind:ident, $unit:literal, $help:literal, [$($attr:ident),*]) => {
        pub static $ident: MetricDef =
            MetricDef { prom: $prom, otel: $otel, kind: Kind::$kind, unit: $unit, help: $help, attrs: &[$($attr),*] };
    };
}

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
metric!(
    SYSCALLS,
    "recap_syscalls_total",
    "recap.syscall.calls",
    Counter,
    "{call}",
    "Syscalls made by the target, by syscall (counted at return).",
    [SYSCALL]
);
metric!(
    SYSCALL_ERRORS,
    "recap_syscall_errors_total",
    "recap.syscall.errors",
    Counter,
    "{call}",
    "Syscalls of the target that returned an error, by syscall.",
    [SYSCALL]
);
metric!(
    EXECS,
    "recap_process_execs_total",
    "recap.process.execs",
    Counter,
    "{exec}",
    "Programs executed by the target.",
    []
);
metric!(
    EXEC_PROGRAMS,
    "recap_process_exec_programs_total",
    "recap.process.exec.programs",
    Counter,
    "{exec}",
    "Programs executed by the target, by program name.",
    [PROGRAM]
);
metric!(
    EXITS,
    "recap_process_exits_total",
    "recap.process.exits",
    Counter,
    "{process}",
    "Processes of the target that exited.",
    []
);
metric!(
    FORKS,
    "recap_process_forks_total",
    "recap.process.forks",
    Counter,
    "{process}",
    "Processes the target created.",
    []
);
metric!(
    CPU_TIME,
    "recap_cpu_time_seconds_total",
    "recap.cpu.time",
    Counter,
    "s",
    "On-CPU time of the target's threads.",
    []
);
metric!(
    CPU_SWITCHES,
    "recap_cpu_switches_in_total",
    "recap.cpu.switches_in",
    Counter,
    "{switch}",
    "Times a thread of the target was scheduled onto a CPU.",
    []
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
    WINDOW_INFO,
    "recap_window_info",
    "recap.window.info",
    Gauge,
    "1",
    "1 for each window, with its target as labels.",
    []
);

pub static ALL: [&MetricDef; 19] = [
    &TCP_ATTEMPTS,
    &TCP_ESTABLISHED,
    &TCP_FAILED,
    &TCP_ACCEPTED,
    &TCP_CLOSED,
    &TCP_OPEN,
    &NET_BYTES,
    &NET_PACKETS,
    &NET_PAYLOAD,
    &SYSCALLS,
    &SYSCALL_ERRORS,
    &EXECS,
    &EXEC_PROGRAMS,
    &EXITS,
    &FORKS,
    &CPU_TIME,
    &CPU_SWITCHES,
    &RUNQ_LATENCY,
    &WINDOW_INFO,
];

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Count(u64),
    Seconds(f64),
    /// Cumulative per bucket: `counts[i]` waits fell at or below `bounds_s[i]` and above the
    /// previous bound; the last count is above every bound.
    Histogram {
        bounds_s: Vec<f64>,
        counts: Vec<u64>,
        count: u64,
        sum_s: f64,
    },
}

#[derive(Clone, Debug)]
pub struct Sample {
    pub def: &'static MetricDef,
    pub attrs: Vec<(Attr, String)>,
    pub value: Value,
}

/// The labels of `recap_window_info` (and OTLP resource attributes).
pub fn target_attrs(s: &WindowSummary) -> Vec<(&'static str, &'static str, String)> {
    let mut out = vec![(
        "recap.target.cgroup",
        "cgroup",
        s.meta.target.cgroup_dir.display().to_string(),
    )];
    if let Some(c) = &s.meta.target.container {
        out.push(("container.id", "container_id", c.id.clone()));
        out.push(("container.name", "container_name", c.name.clone()));
        out.push(("container.image.name", "container_image", c.image.clone()));
    }
    out
}

/// Upper bounds of the kernel's run-queue buckets, in seconds: bucket b holds [2^b, 2^(b+1)) ns.
pub fn runq_bounds_s() -> Vec<f64> {
    (1..RUNQ_BUCKETS)
        .map(|b| (1u64 << b) as f64 / 1e9)
        .collect()
}

/// Every number of the summary, as samples of the catalog's metrics.
pub fn samples(s: &WindowSummary) -> Vec<Sample> {
    let mut out = Vec::new();
    let mut push = |def: &'static MetricDef, attrs: Vec<(Attr, String)>, value: Value| {
        out.push(Sample { def, attrs, value })
    };
    push(&WINDOW_INFO, vec![], Value::Count(1));
    if let Some(t) = &s.tcp {
        push(&TCP_ATTEMPTS, vec![], Value::Count(t.connect_attempts));
        push(
            &TCP_ESTABLISHED,
            vec![],
            Value::Count(t.connect_established),
        );
        push(&TCP_FAILED, vec![], Value::Count(t.connect_failed));
        push(&TCP_ACCEPTED, vec![], Value::Count(t.accepted));
        push(&TCP_CLOSED, vec![], Value::Count(t.closed));
        push(&TCP_OPEN, vec![], Value::Count(t.open_at_end));
    }
    if let Some(n) = &s.net {
        for (direction, traffic) in [("receive", &n.rx), ("transmit", &n.tx)] {
            for (transport, bytes, packets) in [
                ("tcp", traffic.bytes.tcp, traffic.packets.tcp),
                ("udp", traffic.bytes.udp, traffic.packets.udp),
                ("other", traffic.bytes.other, traffic.packets.other),
            ] {
                let attrs = vec![
                    (DIRECTION, direction.to_string()),
                    (TRANSPORT, transport.to_string()),
                ];
                push(&NET_BYTES, attrs.clone(), Value::Count(bytes));
                push(&NET_PACKETS, attrs, Value::Count(packets));
            }
            for (transport, payload) in [
                ("tcp", traffic.payload_bytes.tcp),
                ("udp", traffic.payload_bytes.udp),
            ] {
                let attrs = vec![
                    (DIRECTION, direction.to_string()),
                    (TRANSPORT, transport.to_string()),
                ];
                push(&NET_PAYLOAD, attrs, Value::Count(payload));
            }
        }
    }
    if let Some(sc) = &s.syscalls {
        for row in &sc.by_syscall {
            push(
                &SYSCALLS,
                vec![(SYSCALL, row.name.clone())],
                Value::Count(row.calls),
            );
            push(
                &SYSCALL_ERRORS,
                vec![(SYSCALL, row.name.clone())],
                Value::Count(row.errors),
            );
        }
    }
    if let Some(p) = &s.proc {
        push(&EXECS, vec![], Value::Count(p.execs));
        push(&EXITS, vec![], Value::Count(p.exits));
        push(&FORKS, vec![], Value::Count(p.forks));
        for n in &p.exec_names {
            push(
                &EXEC_PROGRAMS,
                vec![(PROGRAM, n.name.clone())],
                Value::Count(n.count),
            );
        }
    }
    if let Some(c) = &s.cpu {
        push(&CPU_TIME, vec![], Value::Seconds(c.on_cpu_ns as f64 / 1e9));
        push(&CPU_SWITCHES, vec![], Value::Count(c.switches_in));
        let mut counts = vec![0u64; RUNQ_BUCKETS as usize];
        for b in &c.runq_latency.buckets {
            let index = if b.ge_ns == 0 {
                0
            } else {
                b.ge_ns.trailing_zeros() as usize
            };
            let last = counts.len() - 1;
            counts[index.min(last)] = b.count;
        }
        let h = &c.runq_latency;
        push(
            &RUNQ_LATENCY,
            vec![],
            Value::Histogram {
                bounds_s: runq_bounds_s(),
                counts,
                count: h.count,
                sum_s: h.sum_ns as f64 / 1e9,
            },
        );
    }
    out
}

/// docs/metrics.md, generated from the definitions above.
pub fn markdown() -> String {
    let mut o = String::from(
        "# Metric catalogue\n\nGenerated from `recap-agent/src/export/catalog.rs` by `recap metrics-catalog`; a unit \
         test fails if this file and the code disagree.\n\nEvery series also carries `recap.window.id` (Prometheus: \
         `window_id`). OTLP resource attributes: `service.name=recap`, `host.name`, and for container targets \
         `container.id`, `container.name`, `container.image.name` (plus `OTEL_RESOURCE_ATTRIBUTES`); on Prometheus \
         they are labels of `recap_window_info` and `container_name` is on every series.\n\n\
         | Prometheus | OpenTelemetry | type | unit | attributes (OTel / Prometheus) | meaning |\n|---|---|---|---|---|---|\n",
    );
    for m in ALL {
        let kind = match m.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let attrs: Vec<String> = m
            .attrs
            .iter()
            .map(|a| format!("`{}` / `{}`", a.otel, a.prom))
            .collect();
        o.push_str(&format!(
            "| `{}` | `{}` | {kind} | `{}` | {} | {} |\n",
            m.prom,
            m.otel,
            m.unit,
            attrs.join(", "),
            m.help
        ));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_conventions() {
        for m in ALL {
            assert!(
                m.prom.starts_with("recap_") && m.otel.starts_with("recap."),
                "{}",
                m.prom
            );
            let counter_name = m.prom.ends_with("_total");
            assert_eq!(
                counter_name,
                m.kind == Kind::Counter,
                "{}: only counters end in _total",
                m.prom
            );
            if m.unit == "s" {
                assert!(m.prom.contains("_seconds"), "{}: base unit seconds", m.prom);
            }
            if m.unit == "By" {
                assert!(m.prom.contains("_bytes"), "{}: base unit bytes", m.prom);
            }
        }
    }

    #[test]
    fn docs_metrics_md_is_generated_from_the_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md");
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            on_disk == markdown(),
            "docs/metrics.md is stale: run `recap metrics-catalog > docs/metrics.md`"
        );
    }

    #[test]
    fn runq_bounds_match_the_kernel_buckets() {
        let b = runq_bounds_s();
        assert_eq!(b.len(), RUNQ_BUCKETS as usize - 1);
        assert_eq!(b[0], 2e-9);
        assert_eq!(b[9], 1024e-9, "bucket 9 holds [512, 1024) ns");
    }
}
