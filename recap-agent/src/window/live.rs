//! What the user sees while a window is open (on stderr, so stdout carries only the summary):
//! on a terminal a block redrawn every second, otherwise a plain progress line every 5 s.

use std::{
    collections::BTreeMap,
    io::{IsTerminal, Write},
    time::Duration,
};

use super::capsules::RunningCapsules;
use crate::{
    capsule::CapsuleOutcome,
    families::{Family, FamilyStatus},
    probes::RawCounts,
    report::terminal::safe,
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
    let left = duration.saturating_sub(elapsed).as_secs();
    let mut lines = vec![format!("{:>4}s left", left)];
    lines.extend(
        families
            .iter()
            .filter(|(_, status)| **status == FamilyStatus::Ok)
            .map(|(family, _)| family.live(c)),
    );
    lines
}
