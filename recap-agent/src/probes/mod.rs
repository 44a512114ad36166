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
mod counts;
mod engine;
mod go_tls;
mod http2_frames;
mod program_set;
mod reader;
mod slots;
mod task_slots;
mod tls;
mod tls_code;

use aya::maps::MapError;
pub use counts::RawCounts;
pub use engine::{ProbeEngine, WindowProbes};
pub use program_set::EBPF_OBJECT;
use thiserror::Error;
pub use tls::{NotRead, TlsSeen};

#[derive(Debug, Error)]
pub enum EngineError {
    #[error("recap needs root, or the capabilities CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN, to load eBPF programs; run it with sudo")]
    NotPrivileged,
    #[error("loading RECap's eBPF object")]
    Load(#[source] aya::EbpfError),
    #[error("all {0} window slots are in use; close a window first")]
    NoFreeSlot(u32),
    #[error("{op}")]
    Map {
        op: String,
        #[source]
        source: MapError,
    },
    #[error("opening the target cgroup {path} for attaching")]
    CgroupOpen {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub(crate) fn map_err(op: impl Into<String>) -> impl FnOnce(MapError) -> EngineError {
    let op = op.into();
    move |source| EngineError::Map { op, source }
}

pub(crate) fn missing_map(name: &str) -> EngineError {
    EngineError::Map {
        op: format!("map {name} missing from the eBPF object"),
        source: MapError::InvalidName { name: name.into() },
    }
}
