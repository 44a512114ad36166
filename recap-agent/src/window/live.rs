//! What the user sees while a window is open (on stderr, so stdout carries only the summary):
//! on a terminal a block redrawn every second, otherwise a plain progress line every 5 s. A
//! window observer: the CLI attaches it to its window, `recap window watch` to a stream of
//! snapshots from the agent.

use std::{
    collections::BTreeMap,
    io::{IsTerminal, Write},
    time::Duration,
};

use super::{ArmedWindow, WindowObserver};
use crate::{
    capsule::CapsuleOutcome,
    families::raw::RawCounts,
    families::{Family, FamilyStatus},
    report::WindowSummary,
    text::terminal::safe,
};

/// The "armed" lines: target, families, capsules.
pub fn announce(w: &ArmedWindow) -> Vec<String> {
    let running: Vec<&str> = w
        .families
        .iter()
        .filter(|(_, s)| **s == FamilyStatus::Ok)
        .map(|(f, _)| f.name())
        .collect();
    let mut lines = vec![format!(
        "recap: window {} armed on {} in {:.0} ms for {:.1}s: {}",
        w.window_id,
        safe(&w.target.describe()),
        w.arm_ms,
        w.requested.as_secs_f64(),
        running.join(", ")
    )];
    for (family, status) in &w.families {
        if let FamilyStatus::Unavailable { reason } = status {
            lines.push(format!("recap: {family} unavailable: {}", safe(reason)));
        }
    }
    for (spec, name) in &w.capsules_running {
        lines.push(format!("recap: capsule {spec} attached ({name})"));
    }
    for report in &w.capsules_failed {
        if let CapsuleOutcome::Failed { reason } = &report.outcome {
            lines.push(format!(
                "recap: capsule {} failed: {}",
                report.capsule,
                safe(reason)
            ));
        }
    }
    lines
}

pub struct LiveView {
    tty: bool,
    /// The summary goes out as JSON: its warnings are said on stderr too.
    echo_warnings: bool,
    duration: Duration,
    lines_drawn: usize,
    ticks: u64,
}

impl LiveView {
    /// `table`: the summary will be a table (the live block may then be redrawn on a terminal).
    pub fn new(table: bool, duration: Duration) -> Self {
        LiveView {
            tty: table && std::io::stderr().is_terminal(),
            echo_warnings: !table,
            duration,
            lines_drawn: 0,
            ticks: 0,
        }
    }

    /// Shows `lines` (the first is the time left): redrawn on a terminal, one line every 5 s
    /// otherwise.
    pub fn show(&mut self, lines: &[String]) {
        self.ticks += 1;
        let mut err = std::io::stderr().lock();
        if self.tty {
            for _ in 0..self.lines_drawn {
                let _ = write!(err, "\x1b[1A\x1b[2K");
            }
            for line in lines {
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
            self.lines_drawn = 0;
        }
    }
}

impl WindowObserver for LiveView {
    fn armed(&mut self, window: &ArmedWindow) {
        for line in announce(window) {
            eprintln!("{line}");
        }
    }

    fn tick(&mut self, elapsed: Duration, counts: &RawCounts, window: &ArmedWindow) {
        let lines = render(elapsed, self.duration, counts, &window.families);
        self.show(&lines);
    }

    /// A person reads this line: every second's counts, idle window or not.
    fn due(&self) -> bool {
        true
    }

    fn closed(&mut self, summary: &WindowSummary) {
        self.finish();
        if self.echo_warnings {
            for warning in &summary.warnings {
                eprintln!("recap: warning: {}", safe(warning));
            }
        }
    }
}

pub fn render(
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
