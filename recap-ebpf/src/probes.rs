//! One file per family of probes; each program is named `recap_<event>`.
mod baseline;
mod cpu;
mod disk;
mod dns;
pub mod h2c;
mod http;
pub mod http2;
mod mem;
mod net;
mod proc;
mod syscalls;
mod tasks;
mod tcp;
mod tcp_health;
mod tls;
