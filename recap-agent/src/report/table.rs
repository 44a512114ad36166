//! Human-readable summary.

use std::fmt::Write;

use super::{summary::*, terminal::safe};
use crate::{capsule::CapsuleOutcome, probes::FamilyStatus};

pub fn render_table(s: &WindowSummary, top: usize) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "RECap window {} on {}",
        s.meta.window_id,
        safe(&s.meta.target.describe())
    );
    let _ = writeln!(
        o,
        "  status {}   ran {:.1}s of {:.1}s   started {}   armed in {:.0} ms, torn down in {:.0} ms",
        s.meta.status.describe(),
        s.meta.duration_s,
        s.meta.requested_duration_s,
        s.meta.started_at,
        s.meta.arm_ms,
        s.meta.teardown_ms
    );
    for (family, status) in &s.meta.families {
        if let FamilyStatus::Unavailable { reason } = status {
            let _ = writeln!(o, "  {family}: unavailable: {}", safe(reason));
        }
    }
    if let Some(t) = &s.tcp {
        let _ = writeln!(o, "\ntcp");
        row(&mut o, "outbound connects attempted", t.connect_attempts);
        row(&mut o, "  established", t.connect_established);
        row(&mut o, "  failed", t.connect_failed);
        row(&mut o, "inbound accepted", t.accepted);
        row(&mut o, "closed (of those opened in the window)", t.closed);
        row(&mut o, "still open at the end", t.open_at_end);
    }
    if let Some(n) = &s.net {
        let _ = writeln!(
            o,
            "\nnet {:>28} {:>14} {:>14} {:>14}",
            "tcp", "udp", "other", "total"
        );
        for (label, p) in [
            ("rx bytes", &n.rx.bytes),
            ("rx packets", &n.rx.packets),
            ("rx payload bytes", &n.rx.payload_bytes),
            ("tx bytes", &n.tx.bytes),
            ("tx packets", &n.tx.packets),
            ("tx payload bytes", &n.tx.payload_bytes),
        ] {
            let _ = writeln!(
                o,
                "  {label:<26} {:>14} {:>14} {:>14} {:>14}",
                p.tcp, p.udp, p.other, p.total
            );
        }
    }
    if let Some(sc) = &s.syscalls {
        let _ = writeln!(
            o,
            "\nsyscalls: {} calls, {} errors (top {top})",
            sc.total_calls, sc.total_errors
        );
        let _ = writeln!(o, "  {:<24} {:>14} {:>12}", "syscall", "calls", "errors");
        for r in sc.by_syscall.iter().take(top) {
            let _ = writeln!(o, "  {:<24} {:>14} {:>12}", r.name, r.calls, r.errors);
        }
    }
    if let Some(p) = &s.proc {
        let _ = writeln!(o, "\nproc");
        row(&mut o, "execs", p.execs);
        row(&mut o, "exits", p.exits);
        row(&mut o, "forks", p.forks);
        if !p.exec_names.is_empty() {
            let names: Vec<String> = p
                .exec_names
                .iter()
                .take(top)
                .map(|n| format!("{} ×{}", safe(&n.name), n.count))
                .collect();
            let _ = writeln!(o, "  programs: {}", names.join(", "));
        }
    }
    if let Some(c) = &s.cpu {
        let _ = writeln!(o, "\ncpu");
        let _ = writeln!(
            o,
            "  {:<40} {:>14.3}",
            "on-CPU seconds",
            c.on_cpu_ns as f64 / 1e9
        );
        row(&mut o, "times scheduled in", c.switches_in);
        let h = &c.runq_latency;
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
    if !s.meta.capsules.is_empty() {
        let _ = writeln!(o, "\ncapsules");
        for c in &s.meta.capsules {
            let status = match &c.outcome {
                CapsuleOutcome::Ok => "ok".to_string(),
                CapsuleOutcome::SizeCapReached { cap_bytes } => {
                    format!("stopped at the size cap ({cap_bytes} bytes)")
                }
                CapsuleOutcome::Exited {
                    exit_code,
                    log_tail,
                } => format!("exited early ({exit_code}): {}", safe(log_tail)),
                CapsuleOutcome::Failed { reason } => format!("failed: {}", safe(reason)),
            };
            let _ = writeln!(
                o,
                "  {:<24} {:>12} bytes  {}  {status}",
                c.capsule, c.artifact_bytes, c.artifact
            );
        }
    }
    for w in &s.warnings {
        let _ = writeln!(o, "\nwarning: {}", safe(w));
    }
    o
}

fn row(o: &mut String, label: &str, v: u64) {
    let _ = writeln!(o, "  {label:<40} {v:>14}");
}

pub fn fmt_ns(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{}us", ns / 1_000),
        1_000_000..1_000_000_000 => format!("{}ms", ns / 1_000_000),
        _ => format!("{:.1}s", ns as f64 / 1e9),
    }
}
