//! `cpu`: how often the target's threads are switched off a CPU (voluntarily or not) and how
//! long they wait for one (runnable → running). Their on-CPU time comes from the kernel's own
//! per-cgroup accounting, read by user space.
//!
//! The scheduler hooks are global, so the path for threads outside every window is kept to
//! two kernel reads (`prev->pid`, `next->pid`) and two inlined array lookups.

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::raw_tracepoint, programs::RawTracePointContext};
use recap_common::{Counter, RUNQ_BUCKETS};

use crate::{
    kernel::task_tid,
    maps::{add, log2_bucket, set_task_slot, task_slot, RUNQ_HIST, WAKE_TS},
};

/// `TASK_DEAD` in `task->__state`: the task's final `schedule()`.
const TASK_DEAD: u32 = 0x80;

/// `sched_switch(bool preempt, struct task_struct *prev, struct task_struct *next,
/// unsigned int prev_state)`.
///
/// Counts the context switches of target threads when they leave a CPU, as the kernel counts
/// them per task (`nvcsw`/`nivcsw`, /proc's voluntary/nonvoluntary_ctxt_switches): voluntary
/// when the thread blocked, involuntary when it was preempted. They are counted at the switch
/// *out*: measured against the kernel's counters, every switch-out was seen, while about one
/// switch-in in 200 under contention was not (see README, Known limits). Also starts a
/// preempted thread's run-queue wait, ends a waiting thread's wait when it comes on, and
/// clears an exiting target thread's slot at its last switch-out. (On-CPU time is not counted
/// here: user space reads the scheduler's own per-cgroup figure, see
/// `recap-agent/src/families/cpu.rs`.)
#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn recap_switch(ctx: RawTracePointContext) -> i32 {
    let prev_tid = task_tid(ctx.arg(1));
    let prev_slot = task_slot(prev_tid);
    if prev_slot != 0 {
        let preempt: u64 = ctx.arg(0);
        let preempted = preempt & 0xff != 0;
        let prev_state = ctx.arg::<u64>(3) as u32;
        let counter = if !preempted && prev_state != 0 {
            Counter::CpuSwitchesVoluntary
        } else {
            Counter::CpuSwitchesInvoluntary
        };
        add(prev_slot, counter, 1);
        if prev_state & TASK_DEAD != 0 {
            // Its last switch-out: the exit hook left the slot for this moment.
            set_task_slot(prev_tid, 0);
            let _ = WAKE_TS.remove(&prev_tid);
        } else if preempted || prev_state == 0 {
            // Still runnable: it waits on the run queue from now.
            // SAFETY: the clock helper takes no argument and touches no memory.
            let now = unsafe { bpf_ktime_get_ns() };
            let _ = WAKE_TS.insert(&prev_tid, &now, 0);
        }
    }
    let tid = task_tid(ctx.arg(2));
    let slot = task_slot(tid);
    if slot == 0 {
        return 0;
    }
    // SAFETY: the time is copied out at once (`&queued`), before the element is removed.
    if let Some(&queued) = unsafe { WAKE_TS.get(&tid) } {
        let _ = WAKE_TS.remove(&tid);
        // SAFETY: no argument, no memory.
        let now = unsafe { bpf_ktime_get_ns() };
        let waited = now.saturating_sub(queued);
        add(slot, Counter::CpuRunqWaitNs, waited);
        let bucket = log2_bucket(waited, RUNQ_BUCKETS);
        if let Some(c) = RUNQ_HIST.get_ptr_mut(slot * RUNQ_BUCKETS + bucket) {
            // SAFETY: this CPU's copy of an array element, valid for the map's life.
            unsafe { *c += 1 };
        }
    }
    0
}

/// `sched_wakeup(struct task_struct *p)`.
#[raw_tracepoint(tracepoint = "sched_wakeup")]
pub fn recap_wakeup(ctx: RawTracePointContext) -> i32 {
    mark_runnable(ctx.arg(0));
    0
}

/// `sched_wakeup_new(struct task_struct *p)`: a new task's first wait for a CPU.
#[raw_tracepoint(tracepoint = "sched_wakeup_new")]
pub fn recap_wakeup_nw(ctx: RawTracePointContext) -> i32 {
    mark_runnable(ctx.arg(0));
    0
}

#[inline(always)]
fn mark_runnable(task: u64) {
    let tid = task_tid(task);
    if task_slot(tid) != 0 {
        // SAFETY: no argument, no memory.
        let now = unsafe { bpf_ktime_get_ns() };
        let _ = WAKE_TS.insert(&tid, &now, 0);
    }
}
