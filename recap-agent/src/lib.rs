//! RECap's user space: target resolution, the probe engine, windows and their reports.
//! The `recap` binary (main.rs) is a thin CLI over this library.

pub mod agent;
pub mod capsule;
pub mod cli;
pub mod docker;
pub mod export;
pub mod families;
pub mod fleet;
pub mod limits;
pub mod metrics;
pub mod probes;
pub mod report;
pub mod targets;
pub mod text;
pub mod unix_grpc;
pub mod window;
