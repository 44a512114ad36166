//! Human-readable summary.

use std::fmt::Write;

use super::summary::*;
use crate::text::terminal::safe;
use crate::{capsule::CapsuleOutcome, families::FamilyStatus};

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
    for (_, report) in s.reports() {
        report.table(&mut o, top);
    }
    if !s.meta.capsules.is_empty() {
        let _ = writeln!(o, "\ncapsules");
        for c in &s.meta.capsules {
            let status = match &c.outcome {
                CapsuleOutcome::Ok => "ok".to_string(),
                CapsuleOutcome::Incomplete { reason, .. } => {
                    format!("incomplete: {}", safe(reason))
                }
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
            if let Some(note) = &c.note {
                let _ = writeln!(o, "    {}", safe(note));
            }
        }
    }
    for w in &s.warnings {
        let _ = writeln!(o, "\nwarning: {}", safe(w));
    }
    o
}
