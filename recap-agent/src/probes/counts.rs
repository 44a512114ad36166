//! Raw per-window numbers as read from the maps (per-CPU values already summed).

use recap_common::{Counter, MAX_SYSCALLS, RUNQ_BUCKETS};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RawCounts {
    /// Indexed by `Counter as usize`.
    pub counters: Vec<u64>,
    /// `(calls, errors)` per syscall number.
    pub syscalls: Vec<(u64, u64)>,
    /// Run-queue latency, log2 ns buckets.
    pub runq: Vec<u64>,
    /// Exec'd program names with counts.
    pub execs: Vec<(String, u64)>,
}

impl RawCounts {
    pub fn zeroed() -> Self {
        RawCounts {
            counters: vec![0; Counter::COUNT as usize],
            syscalls: vec![(0, 0); MAX_SYSCALLS as usize],
            runq: vec![0; RUNQ_BUCKETS as usize],
            execs: Vec::new(),
        }
    }

    pub fn get(&self, c: Counter) -> u64 {
        self.counters.get(c as usize).copied().unwrap_or(0)
    }
}
