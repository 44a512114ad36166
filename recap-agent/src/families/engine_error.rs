//! What can go wrong loading, attaching and reading probes: the engine's error, and the one
//! families' hooks and readers return (it lives here, below the engine, so that families do not
//! import the engine that drives them).

use aya::maps::MapError;
use thiserror::Error;

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
