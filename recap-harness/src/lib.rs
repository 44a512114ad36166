//! The harness `xtask` (demo, benchmarks, setup) and `recap-tests` (the privileged integration
//! tests) share: whether we are root, scratch cgroup v2 directories, a real Docker engine, and
//! certificates for TLS servers.
//! It knows nothing of RECap itself (no eBPF, no agent), so both can use it as they please.

pub mod cgroup;
pub mod docker;
pub mod root;
pub mod tls;
