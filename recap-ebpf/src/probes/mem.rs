//! `mem`: OOM kills of the target's processes and its threads' reclaim stalls. Its page faults are the kernel's own per-thread
//! counts, added at each thread's exit by `tasks::recap_exit` and read for live threads by
//! user space; its memory usage is the target's memory cgroup's own accounting.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use recap_common::{Counter, OomVictim, RUNQ_BUCKETS};

use crate::{
    kernel::{task_comm, task_rss_bytes, task_tgid, task_tid},
    maps::{add, hist_add, task_slot, window_epoch, OOM_VICTIMS, RECLAIM_HIST, RECLAIM_TS},
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

/// A target thread enters reclaim: `mm_vmscan_direct_reclaim_begin(int order, gfp_t)`.
#[raw_tracepoint(tracepoint = "mm_vmscan_direct_reclaim_begin")]
pub fn recap_rcl_in(_ctx: RawTracePointContext) -> i32 {
    reclaim_begins();
    0
}

/// It leaves it: `mm_vmscan_direct_reclaim_end(unsigned long nr_reclaimed)`.
#[raw_tracepoint(tracepoint = "mm_vmscan_direct_reclaim_end")]
pub fn recap_rcl_out(_ctx: RawTracePointContext) -> i32 {
    reclaim_ends();
    0
}

/// The same for reclaim within a memory cgroup over its limit.
#[raw_tracepoint(tracepoint = "mm_vmscan_memcg_reclaim_begin")]
pub fn recap_mcgrcl_in(_ctx: RawTracePointContext) -> i32 {
    reclaim_begins();
    0
}

#[raw_tracepoint(tracepoint = "mm_vmscan_memcg_reclaim_end")]
pub fn recap_mcgrcl_ot(_ctx: RawTracePointContext) -> i32 {
    reclaim_ends();
    0
}

#[inline(always)]
fn reclaim_begins() {
    let tid = bpf_get_current_pid_tgid() as u32;
    if task_slot(tid) == 0 {
        return;
    }
    // SAFETY: the clock helper takes no argument and touches no memory.
    let now = unsafe { bpf_ktime_get_ns() };
    let _ = RECLAIM_TS.insert(&tid, &now, 0);
}

#[inline(always)]
fn reclaim_ends() {
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: the time is copied out at once (`&began`), a plain integer in memory valid for
    // the program's run.
    let Some(&began) = (unsafe { RECLAIM_TS.get(&tid) }) else {
        return;
    };
    let _ = RECLAIM_TS.remove(&tid);
    let slot = task_slot(tid);
    if slot == 0 {
        return;
    }
    // SAFETY: no argument, no memory.
    let took = unsafe { bpf_ktime_get_ns() }.saturating_sub(began);
    add(slot, Counter::MemReclaimStalls, 1);
    add(slot, Counter::MemReclaimNs, took);
    hist_add(&RECLAIM_HIST, slot, took, RUNQ_BUCKETS);
}
