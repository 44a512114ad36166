//! `syscalls`: calls and errors per syscall number, counted as each syscall returns, so one
//! hook gives both (`exit` and `exit_group` never return and are not counted here).
//!
//! This is the one family with a host-wide price: any hook on the syscall path sends every
//! syscall of every process through the traced slow path. The check for "not a target" is a
//! helper call, one inlined array lookup and a byte compare.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::raw_tracepoint, programs::RawTracePointContext,
};
use recap_common::{syscall_index, MAX_SYSCALLS};

use crate::{
    kernel::syscall_nr,
    maps::{bump, task_slot, SYSCALLS},
};

/// `sys_exit(struct pt_regs *regs, long ret)`.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn recap_sys_exit(ctx: RawTracePointContext) -> i32 {
    let slot = task_slot(bpf_get_current_pid_tgid() as u32);
    if slot == 0 {
        return 0;
    }
    let regs: u64 = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    let nr = match syscall_nr(regs) {
        Some(nr) if nr < MAX_SYSCALLS as u64 => nr as u32,
        _ => MAX_SYSCALLS - 1,
    };
    bump(&SYSCALLS, syscall_index(slot, nr, 0));
    // The kernel returns errors as -errno, -4095..=-1.
    if (-4095..0).contains(&ret) {
        bump(&SYSCALLS, syscall_index(slot, nr, 1));
    }
    0
}
