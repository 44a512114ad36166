//! The probe engine: loads RECap's eBPF programs once and opens windows over them.

mod btf;
mod counts;
mod engine;
mod task_slots;

use std::{fmt, str::FromStr};

pub use counts::RawCounts;
pub use engine::{EngineError, ProbeEngine, WindowProbes, EBPF_OBJECT};
use serde::Serialize;

/// A family of probes the user can pick with `--probes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Tcp,
    Net,
    Syscalls,
    Proc,
    Cpu,
}

impl Family {
    pub const ALL: [Family; 5] = [
        Family::Tcp,
        Family::Net,
        Family::Syscalls,
        Family::Proc,
        Family::Cpu,
    ];

    /// Families on by default. `syscalls` is left out: it is the one family that costs every
    /// process on the host (~90 ns per syscall), so it is chosen explicitly.
    pub const DEFAULT: [Family; 4] = [Family::Tcp, Family::Net, Family::Proc, Family::Cpu];

    pub fn name(self) -> &'static str {
        match self {
            Family::Tcp => "tcp",
            Family::Net => "net",
            Family::Syscalls => "syscalls",
            Family::Proc => "proc",
            Family::Cpu => "cpu",
        }
    }

    /// Families that find their window through `TASK_SLOTS` (and so need task tracking).
    pub fn is_task_based(self) -> bool {
        matches!(self, Family::Syscalls | Family::Proc | Family::Cpu)
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Family {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Family::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                format!("unknown probe family `{s}`; known: tcp, net, syscalls, proc, cpu")
            })
    }
}

/// Whether a family ran in a window, or why not.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum FamilyStatus {
    Ok,
    Unavailable { reason: String },
}
