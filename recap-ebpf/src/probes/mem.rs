//! `mem`: OOM kills of the target's processes. Its page faults are the kernel's own per-thread
//! counts, added at each thread's exit by `tasks::recap_exit` and read for live threads by
//! user space; its memory usage is the target's memory cgroup's own accounting.

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use recap_common::{Counter, OomVictim};

use crate::{
    kernel::{task_comm, task_rss_bytes, task_tgid, task_tid},
    maps::{add, task_slot, window_epoch, OOM_VICTIMS},
};

/// `mark_victim(struct task_struct *task, uid_t uid)`: the OOM killer chose `task` (it runs in
/// whichever task ran out of memory; the victim is looked up by its own thread id).
#[raw_tracepoint(tracepoint = "mark_victim")]
pub fn recap_oom_kill(ctx: RawTracePointContext) -> i32 {
    let task: u64 = ctx.arg(0);
    let slot = task_slot(task_tid(task));
    if slot == 0 {
        return 0;
    }
    add(slot, Counter::MemOomKills, 1);
    let victim = OomVictim {
        epoch: window_epoch(slot),
        slot,
        pid: task_tgid(task),
        rss_bytes: task_rss_bytes(task),
        comm: task_comm(task),
    };
    let _ = OOM_VICTIMS.insert(&victim.pid, &victim, 0);
    0
}
