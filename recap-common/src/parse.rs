//! The pure parts of the kernel's protocol parsing: functions of bytes already read, no helper
//! calls, no maps. The eBPF programs inline them (`#[inline(always)]`, as they were when they
//! lived in `recap-ebpf`), and the unit tests here run them on the host.
pub mod dns;
pub mod http;
pub mod http2;
