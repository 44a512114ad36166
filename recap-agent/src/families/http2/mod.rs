//! HTTP/2 and gRPC, from the frames the kernel hands over (`recap-ebpf/src/probes/http2.rs`):
//! each connection's two directions are reassembled into frames (`frames`), their header
//! blocks decoded with the connection's HPACK state (`hpack`), and the streams followed from
//! request to response (`streams`) into per-window tallies (`tally`), which the `http` family
//! reports beside the kernel's HTTP/1.x counts.

pub mod hpack;
mod huffman;
pub mod streams;
pub mod tally;
