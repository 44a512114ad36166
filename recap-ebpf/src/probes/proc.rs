//! `proc`: execs (with the new program's name) and process exits of the target.
//! Exits are counted by `tasks::recap_exit`, which runs on every exit anyway.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use recap_common::{Counter, ExecKey};

use crate::maps::{add, set_task_slot, task_slot, EXECS};

/// `sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn recap_exec(ctx: RawTracePointContext) -> i32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    // A non-leader thread that execs takes over the leader's pid: carry its slot over.
    let old_tid: u32 = ctx.arg::<u64>(1) as u32;
    let slot = task_slot(old_tid);
    if slot == 0 {
        return 0;
    }
    if old_tid != tid {
        set_task_slot(tid, slot);
        set_task_slot(old_tid, 0);
    }
    add(slot, Counter::ProcExecs, 1);
    let Ok(comm) = bpf_get_current_comm() else {
        return 0;
    };
    let key = ExecKey { slot, comm };
    match EXECS.get_ptr_mut(&key) {
        // SAFETY: this CPU's copy of the key's value, valid for the program's run.
        Some(count) => unsafe { *count += 1 },
        None => {
            let _ = EXECS.insert(&key, &1, 0);
        }
    }
    0
}
