//! `syscalls`: calls and errors per syscall, counted at `sys_exit` (kernel side:
//! `recap-ebpf/src/probes/syscalls.rs`). The one family with a host-wide price: every syscall
//! of every process takes the traced path while a window has it, so it is opt-in.

use std::{fmt::Write, sync::Arc};

use recap_common::{maps, programs, MAX_SYSCALLS};
use serde::{Deserialize, Serialize};

use super::{FamilyReport, Hooks, ProbeFamily, SlotArray, TaskHook};
use crate::{
    families::raw::RawCounts,
    families::syscall_names::syscall_name,
    metric,
    metrics::{Attr, MetricDef, Sample, Value},
    text::terminal::safe,
};

pub struct Syscalls;

pub const SYSCALL: Attr = Attr {
    otel: "recap.syscall.name",
    prom: "syscall",
};

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

/// `SYSCALLS[slot][nr][0 = calls, 1 = errors]`.
const TABLE: SlotArray = SlotArray {
    map: maps::SYSCALLS,
    len: MAX_SYSCALLS * 2,
};

static METRICS: [&MetricDef; 2] = [&SYSCALLS, &SYSCALL_ERRORS];

impl ProbeFamily for Syscalls {
    fn name(&self) -> &'static str {
        "syscalls"
    }

    fn on_by_default(&self) -> bool {
        false
    }

    fn hooks(&self) -> Hooks {
        Hooks::Tasks(&[TaskHook {
            program: programs::SYS_EXIT,
            tracepoint: "sys_exit",
            hot_path: true,
            btf_typed: false,
        }])
    }

    fn slot_arrays(&self) -> &'static [SlotArray] {
        &[TABLE]
    }

    fn summarise(&self, counts: &RawCounts) -> Arc<dyn FamilyReport> {
        Arc::new(summarise(counts))
    }

    fn report_from_json(&self, v: serde_json::Value) -> serde_json::Result<Arc<dyn FamilyReport>> {
        super::report_from_json::<SyscallSummary>(v)
    }

    fn live(&self, c: &RawCounts) -> String {
        let s = summarise(c);
        let top = s
            .by_syscall
            .first()
            .map(|r| format!(", top {} ×{}", r.name, r.calls))
            .unwrap_or_default();
        format!(
            "syscalls {} ({} errors){top}",
            s.total_calls, s.total_errors
        )
    }

    fn metrics(&self) -> &'static [&'static MetricDef] {
        &METRICS
    }
}

/// `(calls, errors)` by syscall number.
pub fn per_syscall(c: &RawCounts) -> Vec<(u64, u64)> {
    c.array(TABLE.map)
        .chunks(2)
        .map(|pair| (pair[0], pair.get(1).copied().unwrap_or(0)))
        .collect()
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SyscallRow {
    pub nr: u32,
    pub name: String,
    pub calls: u64,
    pub errors: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SyscallSummary {
    pub total_calls: u64,
    pub total_errors: u64,
    /// Every syscall seen, most called first.
    pub by_syscall: Vec<SyscallRow>,
}

pub fn summarise(c: &RawCounts) -> SyscallSummary {
    let mut rows: Vec<SyscallRow> = per_syscall(c)
        .into_iter()
        .enumerate()
        .filter(|(_, (calls, _))| *calls > 0)
        .map(|(nr, (calls, errors))| SyscallRow {
            nr: nr as u32,
            name: syscall_name(nr as u32),
            calls,
            errors,
        })
        .collect();
    rows.sort_by(|a, b| b.calls.cmp(&a.calls).then(a.nr.cmp(&b.nr)));
    SyscallSummary {
        total_calls: rows.iter().map(|r| r.calls).sum(),
        total_errors: rows.iter().map(|r| r.errors).sum(),
        by_syscall: rows,
    }
}

impl FamilyReport for SyscallSummary {
    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    fn table(&self, o: &mut String, top: usize) {
        let _ = writeln!(
            o,
            "\nsyscalls: {} calls, {} errors (top {top})",
            self.total_calls, self.total_errors
        );
        let _ = writeln!(o, "  {:<24} {:>14} {:>12}", "syscall", "calls", "errors");
        for r in self.by_syscall.iter().take(top) {
            let _ = writeln!(
                o,
                "  {:<24} {:>14} {:>12}",
                safe(&r.name),
                r.calls,
                r.errors
            );
        }
    }

    fn samples(&self) -> Vec<Sample> {
        self.by_syscall
            .iter()
            .flat_map(|row| {
                [
                    Sample::new(
                        &SYSCALLS,
                        vec![(SYSCALL, row.name.clone())],
                        Value::Count(row.calls),
                    ),
                    Sample::new(
                        &SYSCALL_ERRORS,
                        vec![(SYSCALL, row.name.clone())],
                        Value::Count(row.errors),
                    ),
                ]
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_by_calls_then_number_with_names() {
        let mut c = RawCounts::zeroed();
        let mut table = vec![0u64; TABLE.len as usize];
        table[110 * 2] = 10_000;
        table[2 * 2] = 5;
        table[2 * 2 + 1] = 3;
        table[0] = 5;
        c.arrays.insert(TABLE.map, table);
        let s = summarise(&c);
        assert_eq!(s.total_calls, 10_010);
        assert_eq!(s.total_errors, 3);
        let names: Vec<&str> = s.by_syscall.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["getppid", "read", "open"]);
    }
}
