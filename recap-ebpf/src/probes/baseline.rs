//! Reference point for `cargo xtask bench`: a raw tracepoint that does nothing. Attached to
//! `sys_enter`, it shows what any syscall hook costs before its body runs. Never attached by
//! a window.

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn recap_nop_enter(_ctx: RawTracePointContext) -> i32 {
    0
}
