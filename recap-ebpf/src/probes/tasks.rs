//! Keeps `TASK_SLOTS` exact while windows are open: a thread forked by a target thread joins
//! its window, an exiting thread leaves it, a thread moved into a target cgroup joins it.
//! These hooks fire on fork, exit and cgroup moves only, never on the syscall path.

use aya_ebpf::{
    cty::c_void,
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task, bpf_loop},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use recap_common::{Counter, WINDOW_TARGET_ONLY};

use crate::{
    kernel::{
        cgroup_parent, cgroup_v2_id, list_next, task_faults, task_tgid, task_tid, thread_list_head,
        thread_of_node,
    },
    maps::{add, sched_hooked, set_task_slot, task_slot, RECLAIM_TS, TLS_CALLS, WINDOW_CGROUPS},
};

/// `sched_process_fork(struct task_struct *parent, struct task_struct *child)`; runs in the parent.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn recap_fork(ctx: RawTracePointContext) -> i32 {
    let parent_tid = bpf_get_current_pid_tgid() as u32;
    let slot = task_slot(parent_tid);
    if slot == 0 {
        return 0;
    }
    let child: u64 = ctx.arg(1);
    let child_tid = task_tid(child);
    if child_tid == 0 || !set_task_slot(child_tid, slot) {
        add(slot, Counter::TaskTrackMisses, 1);
        // Rare, and worth a human's attention: this window's task counts are now low.
        aya_log_ebpf::warn!(
            &ctx,
            "thread {} forked in window slot {} could not be tracked (beyond pid_max at load)",
            child_tid,
            slot
        );
        return 0;
    }
    // A new thread group leader is a new process; other clones are threads.
    if task_tgid(child) == child_tid {
        add(slot, Counter::ProcForks, 1);
    }
    0
}

/// `sched_process_exit(struct task_struct *p, ...)`; runs in the exiting thread.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn recap_exit(_ctx: RawTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let slot = task_slot(tid);
    if slot == 0 {
        return 0;
    }
    // Its last stint (exit work included) is still to come: the scheduler hook, if attached,
    // adds it and clears the slot at the final switch-out.
    if !sched_hooked() {
        set_task_slot(tid, 0);
    }
    if tid == (pid_tgid >> 32) as u32 {
        add(slot, Counter::ProcExits, 1);
    }
    // `mem`: a thread's page faults stop here; user space counts the live ones'.
    // SAFETY: the helper takes no argument; the task's address it returns is only read
    // through `bpf_probe_read_kernel` (`kernel.rs`).
    let (minor, major) = task_faults(unsafe { bpf_get_current_task() });
    add(slot, Counter::MemMinorFaults, minor);
    add(slot, Counter::MemMajorFaults, major);
    // A thread that dies inside a TLS call never returns from it.
    let _ = TLS_CALLS.remove(&pid_tgid);
    let _ = RECLAIM_TS.remove(&tid);
    0
}

/// How many levels above a cgroup a window's target is looked for (a pod's containers sit two
/// below the pod; systemd slices a few more).
const MAX_DEPTH: usize = 8;

/// `cgroup_attach_task(struct cgroup *dst, const char *path, struct task_struct *task, bool)`.
/// Fires once per move, with the thread group leader for whole-process moves; the other
/// threads are walked here. A window covers its
/// target cgroup and everything below it (unless it counts its target alone): the thread
/// joins the window of the nearest ancestor (or the cgroup itself) that takes it.
#[raw_tracepoint(tracepoint = "cgroup_attach_task")]
pub fn recap_cg_move(ctx: RawTracePointContext) -> i32 {
    let dst: u64 = ctx.arg(0);
    if cgroup_v2_id(dst).is_none() {
        return 0;
    }
    let task: u64 = ctx.arg(2);
    let tid = task_tid(task);
    if tid == 0 {
        return 0;
    }
    let mut new_slot = 0;
    let mut cgroup = dst;
    for depth in 0..MAX_DEPTH {
        let Some(id) = cgroup_v2_id(cgroup) else {
            break;
        };
        // SAFETY: the value is copied out at once (`&window`); only user space writes this map.
        if let Some(&window) = unsafe { WINDOW_CGROUPS.get(&id) } {
            // A window on its target alone does not take threads of the cgroups below it.
            if depth == 0 || window & WINDOW_TARGET_ONLY == 0 {
                new_slot = window & 0xff;
                break;
            }
        }
        cgroup = cgroup_parent(cgroup);
        if cgroup == 0 {
            break;
        }
    }
    move_to(tid, new_slot);
    // A whole process moved (`threadgroup`): the tracepoint names its leader only, but every
    // thread moved with it, and every one counts from now (not from the next resync). The
    // thread list cannot change meanwhile: the move holds the cgroup threadgroup lock, which
    // fork and exit take too.
    let threadgroup: u64 = ctx.arg(3);
    if threadgroup & 0xff != 0 {
        let head = thread_list_head(task);
        let mut walk = ThreadWalk {
            head,
            node: list_next(head),
            leader: tid,
            new_slot,
        };
        // bpf_loop verifies the body once, however many threads there are (an unrolled walk of
        // 64 threads cost ~35 ms of verification, 512 ~340 ms).
        let body: unsafe extern "C" fn(u64, *mut ThreadWalk) -> i64 = move_thread;
        // SAFETY: `body` has the callback signature bpf_loop calls; `walk` is on this stack for
        // the whole call, and bpf_loop hands it to each iteration unchanged.
        unsafe {
            bpf_loop(
                MAX_THREADS,
                body as *mut c_void,
                (&mut walk as *mut ThreadWalk).cast(),
                0,
            )
        };
    }
    0
}

/// Threads of a moved process followed in the kernel: every thread a process can have here
/// (`pid_max` is at most 4M; bpf_loop allows 8M iterations).
const MAX_THREADS: u32 = 1 << 22;

/// The state of one walk over a moved process's threads.
#[repr(C)]
struct ThreadWalk {
    head: u64,
    node: u64,
    leader: u32,
    new_slot: u32,
}

/// One step of the walk: moves the thread at `node`; 1 (stop) back at the list's head.
unsafe extern "C" fn move_thread(_index: u64, walk: *mut ThreadWalk) -> i64 {
    // SAFETY: `walk` is the `ThreadWalk` `recap_cg_move` passed to bpf_loop, alive and not
    // otherwise borrowed while the loop runs.
    let walk = unsafe { &mut *walk };
    if walk.node == 0 || walk.node == walk.head {
        return 1;
    }
    let thread_tid = task_tid(thread_of_node(walk.node));
    if thread_tid != 0 && thread_tid != walk.leader {
        move_to(thread_tid, walk.new_slot);
    }
    walk.node = list_next(walk.node);
    0
}

#[inline(always)]
fn move_to(tid: u32, new_slot: u32) {
    let old_slot = task_slot(tid);
    if new_slot != old_slot && !set_task_slot(tid, new_slot) && new_slot != 0 {
        add(new_slot, Counter::TaskTrackMisses, 1);
    }
}
