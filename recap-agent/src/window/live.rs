//! What the user sees while a window is open (on stderr, so stdout carries only the summary):
//! on a terminal a block redrawn every second, otherwise a plain progress line every 5 s.

use std::{
    collections::BTreeMap,
    io::{IsTerminal, Write},
    time::Duration,
};

use recap_common::Counter;

use super::capsules::RunningCapsules;
use crate::{
    capsule::CapsuleOutcome,
    probes::{Family, FamilyStatus, RawCounts},
    report::{syscalls, terminal::safe},
    targets::Target,
};

pub fn announce(
    id: &str,
    target: &Target,
    families: &BTreeMap<Family, FamilyStatus>,
    capsules: Option<&RunningCapsules>,
    duration: Duration,
    arm_ms: f64,
) {
    let running: Vec<&str> = families
        .iter()
        .filter(|(_, s)| **s == FamilyStatus::Ok)
        .map(|(f, _)| f.name())
        .collect();
    eprintln!(
        "recap: window {id} armed on {} in {arm_ms:.0} ms for {:.1}s: {}",
        safe(&target.describe()),
        duration.as_secs_f64(),
        running.join(", ")
    );
    for (family, status) in families {
        if let FamilyStatus::Unavailable { reason } = status {
            eprintln!("recap: {family} unavailable: {}", safe(reason));
        }
    }
    for capsule in capsules.map(|c| c.running.as_slice()).unwrap_or_default() {
        eprintln!(
            "recap: capsule {} attached ({})",
            capsule.spec, capsule.name
        );
    }
    for report in capsules.map(|c| c.failed.as_slice()).unwrap_or_default() {
        if let CapsuleOutcome::Failed { reason } = &report.outcome {
            eprintln!("recap: capsule {} failed: {}", report.capsule, safe(reason));
        }
    }
}

pub struct LiveView {
    tty: bool,
    duration: Duration,
    lines_drawn: usize,
    ticks: u64,
}

impl LiveView {
    pub fn new(want_tty: bool, duration: Duration) -> Self {
        LiveView {
            tty: want_tty && std::io::stderr().is_terminal(),
            duration,
            lines_drawn: 0,
            ticks: 0,
        }
    }

    pub fn update(
        &mut self,
        elapsed: Duration,
        c: &RawCounts,
        families: &BTreeMap<Family, FamilyStatus>,
    ) {
        self.ticks += 1;
        let lines = render(elapsed, self.duration, c, families);
        let mut err = std::io::stderr().lock();
        if self.tty {
            for _ in 0..self.lines_drawn {
                let _ = write!(err, "\x1b[1A\x1b[2K");
            }
            for line in &lines {
                let _ = writeln!(err, "{line}");
            }
            self.lines_drawn = lines.len();
        } else if self.ticks.is_multiple_of(5) {
            let _ = writeln!(err, "recap: {}", lines.join(" | "));
        }
    }

    pub fn finish(&mut self) {
        if self.tty && self.lines_drawn > 0 {
            let mut err = std::io::stderr().lock();
            for _ in 0..self.lines_drawn {
                let _ = write!(err, "\x1b[1A\x1b[2K");
            }
        }
    }
}

fn render(
    elapsed: Duration,
    duration: Duration,
    c: &RawCounts,
    families: &BTreeMap<Family, FamilyStatus>,
) -> Vec<String> {
    let on = |f| families.get(&f) == Some(&FamilyStatus::Ok);
    let left = duration.saturating_sub(elapsed).as_secs();
    let mut lines = vec![format!("{:>4}s left", left)];
    if on(Family::Tcp) {
        lines.push(format!(
            "tcp connects {} (failed {}), accepted {}",
            c.get(Counter::TcpConnectAttempts),
            c.get(Counter::TcpConnectFailed),
            c.get(Counter::TcpAccepted)
        ));
    }
    if on(Family::Net) {
        let rx: u64 = [
            Counter::NetRxBytesTcp,
            Counter::NetRxBytesUdp,
            Counter::NetRxBytesOther,
        ]
        .iter()
        .map(|&k| c.get(k))
        .sum();
        let tx: u64 = [
            Counter::NetTxBytesTcp,
            Counter::NetTxBytesUdp,
            Counter::NetTxBytesOther,
        ]
        .iter()
        .map(|&k| c.get(k))
        .sum();
        lines.push(format!("net rx {rx} B, tx {tx} B"));
    }
    if on(Family::Syscalls) {
        let s = syscalls(c);
        let top = s
            .by_syscall
            .first()
            .map(|r| format!(", top {} ×{}", r.name, r.calls))
            .unwrap_or_default();
        lines.push(format!(
            "syscalls {} ({} errors){top}",
            s.total_calls, s.total_errors
        ));
    }
    if on(Family::Proc) {
        lines.push(format!(
            "execs {}, exits {}",
            c.get(Counter::ProcExecs),
            c.get(Counter::ProcExits)
        ));
    }
    if on(Family::Cpu) {
        lines.push(format!(
            "on-CPU {:.3}s",
            c.get(Counter::CpuOnCpuNs) as f64 / 1e9
        ));
    }
    lines
}
