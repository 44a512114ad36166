//! `disk`: block I/O charged to the target's cgroup, as the kernel charges it: each bio's
//! blkcg (`bi_blkg`), the blkio/io hierarchy's cgroup (v1 on hybrid hosts, where user space
//! names the v1 blkio cgroup at the target's path). Counted when queued (`block_bio_queue`);
//! timed from there to the completion of the request it begins (`block_rq_issue`,
//! `block_rq_complete`: bios merged into a request are timed as one).

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::raw_tracepoint, programs::RawTracePointContext};
use recap_common::{Counter, DiskBio, DiskKey, DISK_BUCKETS};

use crate::{
    kernel::{bio_cgroup, bio_op_size_dev, cgroup_kernfs_id, cgroup_parent, request_bio},
    maps::{add, hist_add, DISK_BIOS, DISK_CGROUPS, DISK_DEVICES, DISK_HIST, DISK_RQS},
};

/// Cgroups above a bio's looked at for a window's target (as task tracking's `MAX_DEPTH`).
const MAX_DEPTH: usize = 8;

/// `block_bio_queue(struct bio *bio)`.
#[raw_tracepoint(tracepoint = "block_bio_queue")]
pub fn recap_bio_queue(ctx: RawTracePointContext) -> i32 {
    let bio: u64 = ctx.arg(0);
    let mut cgroup = bio_cgroup(bio);
    let mut slot = 0;
    for _ in 0..MAX_DEPTH {
        if cgroup == 0 {
            break;
        }
        // SAFETY: the slot is copied out of the value at once (`&s`); only user space writes
        // this map.
        if let Some(&s) = cgroup_kernfs_id(cgroup).and_then(|id| unsafe { DISK_CGROUPS.get(&id) }) {
            slot = s;
            break;
        }
        cgroup = cgroup_parent(cgroup);
    }
    if slot == 0 {
        return 0;
    }
    let (op, size, dev) = bio_op_size_dev(bio);
    let dir = match op {
        0 => 0,
        1 => 1,
        _ => 2,
    };
    match dir {
        0 => {
            add(slot, Counter::DiskReadOps, 1);
            add(slot, Counter::DiskReadBytes, size as u64);
        }
        1 => {
            add(slot, Counter::DiskWriteOps, 1);
            add(slot, Counter::DiskWriteBytes, size as u64);
        }
        _ => add(slot, Counter::DiskOtherOps, 1),
    }
    if dir < 2 {
        let key = DiskKey {
            slot,
            dev,
            dir,
            _pad: 0,
        };
        match DISK_DEVICES.get_ptr_mut(&key) {
            // SAFETY: this CPU's copy of the key's value, valid for the program's run.
            Some(v) => unsafe {
                (*v)[0] += size as u64;
                (*v)[1] += 1;
            },
            None => {
                let _ = DISK_DEVICES.insert(&key, &[size as u64, 1], 0);
            }
        }
    }
    let started = DiskBio {
        // SAFETY: the clock helper takes no argument and touches no memory.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        slot,
        dir,
    };
    let _ = DISK_BIOS.insert(&bio, &started, 0);
    0
}

/// `block_rq_issue(struct request *rq)`: the device takes a request; if its first bio is a
/// window's, the request is timed from that bio's queueing to its completion.
#[raw_tracepoint(tracepoint = "block_rq_issue")]
pub fn recap_rq_issue(ctx: RawTracePointContext) -> i32 {
    let rq: u64 = ctx.arg(0);
    let bio = request_bio(rq);
    // SAFETY: the value is copied at once (plain integers); its memory is valid for the run.
    let Some(started) = (unsafe { DISK_BIOS.get(&bio) }).copied() else {
        return 0;
    };
    let _ = DISK_BIOS.remove(&bio);
    let _ = DISK_RQS.insert(&rq, &started, 0);
    0
}

/// `block_rq_complete(struct request *rq, blk_status_t error, unsigned int nr_bytes)`.
#[raw_tracepoint(tracepoint = "block_rq_complete")]
pub fn recap_rq_done(ctx: RawTracePointContext) -> i32 {
    let rq: u64 = ctx.arg(0);
    // SAFETY: as in `recap_rq_issue`: copied at once.
    let Some(started) = (unsafe { DISK_RQS.get(&rq) }).copied() else {
        return 0;
    };
    let _ = DISK_RQS.remove(&rq);
    // SAFETY: no argument, no memory.
    let took = unsafe { bpf_ktime_get_ns() }.saturating_sub(started.ts_ns);
    match started.dir {
        0 => add(started.slot, Counter::DiskReadNs, took),
        1 => add(started.slot, Counter::DiskWriteNs, took),
        _ => return 0,
    }
    hist_add(
        &DISK_HIST,
        started.slot * 2 + started.dir,
        took,
        DISK_BUCKETS,
    );
    0
}
