//! The probe engine: loads RECap's eBPF programs once and opens windows over them.
//!
//! - `program_set`: the loaded object, programs loaded lazily, global hooks shared by windows
//!   (reference-counted), cgroup attachments and their window tags;
//! - `slots`: which window slots are free, and which hold a previous window's numbers;
//! - `reader`: reading and zeroing a slot's counters and each family's maps;
//! - `task_slots`: user space's side of `TASK_SLOTS` (which thread belongs to which window);
//! - `engine`: `ProbeEngine`, opening and closing windows from the parts above;
//! - `btf`: kernel struct offsets from the running kernel's BTF;
//! - `tls_code`, `tls`: the TLS code a target's processes run, and `http`'s uprobes on it,
//!   attached per process;
//! - `http2_frames`: the kernel's HTTP/2 frames, drained and decoded as they come.

mod btf;
mod engine;
mod go_tls;
mod http2_frames;
mod probe_points;
mod program_set;
mod reader;
mod slots;
mod task_slots;
mod tls;
mod tls_code;

pub use engine::{ProbeEngine, WindowProbes};

/// Whether this kernel's `oom:mark_victim` passes the victim's pid (before Linux 6.9, without
/// the 2025 backports) instead of its task, which `mem`'s hook reads: OOM kills cannot be
/// counted then. Asked of the kernel's BTF once per process.
pub fn oom_victim_is_a_pid() -> bool {
    static ARITY: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *ARITY.get_or_init(|| btf::tracepoint_arity("mark_victim")) == Some(1)
}
pub use program_set::EBPF_OBJECT;
pub use tls::{NotRead, TlsSeen};

// The error and raw numbers are the families' vocabulary; the engine's parts name them from here.
use crate::families::{
    engine_error::{map_err, missing_map, EngineError},
    raw::RawCounts,
};
