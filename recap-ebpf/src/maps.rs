//! The maps every probe shares, and the small accessors the probes use on them.
//! Sizes here are placeholders: user space sets the real ones before load.

use core::ffi::c_void;

#[allow(deprecated)]
// per-attachment cgroup storage is what we need; CGRP_STORAGE is per cgroup
use aya_ebpf::{
    bindings::{bpf_sock, BPF_SK_STORAGE_GET_F_CREATE},
    btf_maps::SkStorage,
    helpers::generated::{bpf_sk_cgroup_id, bpf_sk_storage_get},
    macros::{btf_map, map},
    maps::{Array, CgroupStorage, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use recap_common::{
    counter_index, Counter, DiskBio, DiskKey, DnsKey, DnsPending, ExecKey, HttpConn, HttpKey,
    HttpStat, OomVictim, TaskSlotChunk, TlsCall, TlsKey, WindowTag, TIDS_PER_ENTRY,
    WINDOW_TARGET_ONLY,
};

/// Window slot of every thread id, 64 tids per entry (sized from `pid_max`).
#[map(name = "TASK_SLOTS")]
/// Memory-mapped (BPF_F_MMAPABLE = 1024) so user space reads and writes single bytes in place,
/// like the kernel: no read-modify-write of a whole chunk can lose a neighbour's update.
pub static TASK_SLOTS: Array<TaskSlotChunk> = Array::with_max_entries(1, 1024);

/// cgroup v2 id → window slot, for threads moved into a target cgroup during a window.
#[map(name = "WINDOW_CGROUPS")]
pub static WINDOW_CGROUPS: HashMap<u64, u32> = HashMap::with_max_entries(64, 0);

/// Which window a cgroup-attached program runs for (one entry per attachment).
#[allow(deprecated)]
#[map(name = "WINDOW_TAGS")]
pub static WINDOW_TAGS: CgroupStorage<WindowTag> = CgroupStorage::new();

#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "SYSCALLS")]
pub static SYSCALLS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "RUNQ_HIST")]
pub static RUNQ_HIST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// `disk`: the blkio/io cgroups (kernfs id) whose I/O a window counts (set by user space:
/// the target's own, and on hybrid hosts the v1 blkio cgroup at its path; with subtrees, the
/// programs look up to `MAX_DEPTH` parents).
#[map(name = "DISK_CGROUPS")]
pub static DISK_CGROUPS: HashMap<u64, u32> = HashMap::with_max_entries(256, 0);

/// `disk`: bios in flight for a window, by `struct bio *`.
#[map(name = "DISK_BIOS")]
pub static DISK_BIOS: LruHashMap<u64, DiskBio> = LruHashMap::with_max_entries(16384, 0);

/// `disk`: requests issued to a device whose first bio is a window's, by `struct request *`.
#[map(name = "DISK_RQS")]
pub static DISK_RQS: LruHashMap<u64, DiskBio> = LruHashMap::with_max_entries(16384, 0);

/// `disk`: bytes and operations per window, device and direction.
#[map(name = "DISK_DEVICES")]
pub static DISK_DEVICES: PerCpuHashMap<DiskKey, [u64; 2]> =
    PerCpuHashMap::with_max_entries(1024, 0);

/// `disk`: latency, log2 ns buckets, reads then writes, per window slot.
#[map(name = "DISK_HIST")]
pub static DISK_HIST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// `mem`: when a target thread entered reclaim, until it leaves it.
#[map(name = "RECLAIM_TS")]
pub static RECLAIM_TS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(16384, 0);

/// `mem`: reclaim stalls, log2 ns buckets (`RUNQ_BUCKETS` of them) per window slot.
#[map(name = "RECLAIM_HIST")]
pub static RECLAIM_HIST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// `mem`: the target's processes the OOM killer chose, by pid (an LRU: a window reads its own).
#[map(name = "OOM_VICTIMS")]
pub static OOM_VICTIMS: LruHashMap<u32, OomVictim> = LruHashMap::with_max_entries(1024, 0);

#[map(name = "EXECS")]
pub static EXECS: PerCpuHashMap<ExecKey, u64> = PerCpuHashMap::with_max_entries(4096, 0);

/// When a target thread became runnable, until it runs.
#[map(name = "WAKE_TS")]
pub static WAKE_TS: HashMap<u32, u64> = HashMap::with_max_entries(16384, 0);

/// `tcp_health`: RTT samples and connection lifetimes, log2 ns buckets per window slot.
#[map(name = "TCP_RTT_HIST")]
pub static TCP_RTT_HIST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);
#[map(name = "TCP_DUR_HIST")]
pub static TCP_DUR_HIST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// `tcp_health`: when each target connection was established, by socket cookie.
#[map(name = "CONN_START")]
pub static CONN_START: HashMap<u64, u64> = HashMap::with_max_entries(65536, 1);

/// A generation per window slot, bumped by user space each time a window takes the slot:
/// per-connection state (HTTP, DNS) made for an earlier window in the slot is then stale.
#[map(name = "WINDOW_EPOCH")]
pub static WINDOW_EPOCH: Array<u64> = Array::with_max_entries(1, 0);

#[inline(always)]
pub fn window_epoch(slot: u32) -> u64 {
    WINDOW_EPOCH.get(slot).copied().unwrap_or(0)
}

/// `http`: each connection's HTTP state, in the socket's own local storage: found from the
/// socket in one step (no hash of a cookie) and freed with it (nothing to age out).
#[btf_map]
pub static HTTP_SOCKS: SkStorage<HttpConn> = SkStorage::new();

/// The HTTP state stored on socket `sk` (a `struct sock *` the verifier knows as one), or
/// null; with `create`, a new one holding `*create` when there is none.
#[inline(always)]
pub fn http_state(sk: *mut c_void, create: Option<&mut HttpConn>) -> *mut HttpConn {
    let map: *mut c_void = core::ptr::from_ref(&HTTP_SOCKS).cast_mut().cast();
    let (value, flags) = match create {
        Some(v) => (
            core::ptr::from_mut(v).cast(),
            BPF_SK_STORAGE_GET_F_CREATE as u64,
        ),
        None => (core::ptr::null_mut(), 0),
    };
    // SAFETY: `map` is the address of the `HTTP_SOCKS` static, which the loader turns into the
    // map; the verifier accepts `sk` only as a socket pointer it tracks; `value` is null or a
    // live `HttpConn` the helper copies before it returns.
    unsafe { bpf_sk_storage_get(map, sk, value, flags) }.cast()
}

/// `http`: requests by window, side, method and status, with their duration histogram.
/// BPF_F_NO_PREALLOC (1): few keys are ever used.
#[map(name = "HTTP_REQS")]
pub static HTTP_REQS: PerCpuHashMap<HttpKey, HttpStat> = PerCpuHashMap::with_max_entries(4096, 1);

/// `http` over TLS: each target thread's TLS library call in progress, by pid_tgid; removed at
/// the call's return or the thread's exit (an LRU: a call whose return probe was detached
/// mid-call cannot fill it).
#[map(name = "TLS_CALLS")]
pub static TLS_CALLS: LruHashMap<u64, TlsCall> = LruHashMap::with_max_entries(4096, 0);

/// `http` over Go's `crypto/tls`: each goroutine's call in progress, by (tgid, the goroutine's
/// `g`: a goroutine may move to another thread before the call returns); an LRU.
#[map(name = "GO_TLS_CALLS")]
pub static GO_TLS_CALLS: LruHashMap<TlsKey, TlsCall> = LruHashMap::with_max_entries(8192, 0);

/// `http` over TLS: the connection (socket cookie) each TLS session was last seen doing socket
/// I/O on, for its calls that make none (reads served from the library's buffer).
#[map(name = "TLS_SESSIONS")]
pub static TLS_SESSIONS: LruHashMap<TlsKey, u64> = LruHashMap::with_max_entries(8192, 0);

/// `http` over TLS: processes whose TLS code is instrumented (set by user space): their TLS
/// records at the socket are not "TLS not read".
#[map(name = "TLS_PROCS")]
pub static TLS_PROCS: HashMap<u32, u8> = HashMap::with_max_entries(4096, 0);

/// `http` over TLS: 1 for a window slot that has TLS code instrumented (set by user space): only
/// then do its threads' socket calls look for a TLS call in progress.
#[map(name = "TLS_WINDOWS")]
pub static TLS_WINDOWS: Array<u32> = Array::with_max_entries(1, 0);

#[inline(always)]
pub fn tls_window(slot: u32) -> bool {
    TLS_WINDOWS.get(slot).is_some_and(|&v| v != 0)
}

/// `http` over TLS: the target's new processes (pids), for user space to instrument their TLS
/// code before they use it.
#[map(name = "TLS_NEW_PROCS")]
pub static TLS_NEW_PROCS: RingBuf = RingBuf::with_byte_size(16384, 0);

/// `http` over TLS: the plaintext HTTP state of each TLS connection (by socket cookie: the
/// socket's own storage is not reachable from a uprobe; removed when the socket is
/// destroyed), or of a TLS session never seen doing socket I/O (by process and `SSL *`: a
/// library driven through memory buffers, as Node.js does).
#[map(name = "HTTPS_CONNS")]
pub static HTTPS_CONNS: LruHashMap<TlsKey, HttpConn> = LruHashMap::with_max_entries(8192, 0);

/// `http` over HTTP/2: the header-block, `RST_STREAM` and `GOAWAY` frames of the target's
/// HTTP/2 connections (`H2Event`s), for user space to decode (HPACK). 1 MiB: ~3,000 events;
/// a full buffer drops events, which user space sees as a gap in `seq`.
#[map(name = "HTTP2_FRAMES")]
pub static HTTP2_FRAMES: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// The HTTP/2 walk in progress on each CPU (`probes/http2.rs` says why not the stack).
#[map(name = "H2_WALKS")]
pub static H2_WALKS: PerCpuArray<crate::probes::http2::Walk> = PerCpuArray::with_max_entries(1, 0);

/// `http`'s `Upgrade: h2c`: the start of a `101`'s I/O, searched for its head's end, one per
/// CPU (too large for the stack: `probes/h2c.rs`).
#[map(name = "H2C_HEADS")]
pub static H2C_HEADS: PerCpuArray<crate::probes::h2c::HeadSearch> =
    PerCpuArray::with_max_entries(1, 0);

/// `dns`: queries waiting for their answer.
#[map(name = "DNS_PENDING")]
pub static DNS_PENDING: LruHashMap<DnsKey, DnsPending> = LruHashMap::with_max_entries(16384, 0);

/// `dns`: queries by type, answers by rcode, answer latencies (log2 ns), per window slot.
#[map(name = "DNS_QTYPE")]
pub static DNS_QTYPE: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);
#[map(name = "DNS_RCODE")]
pub static DNS_RCODE: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);
#[map(name = "DNS_HIST")]
pub static DNS_HIST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// 1 while `sched_switch` is attached (set by user space): an exiting thread then keeps its
/// slot until its last switch-out, which counts it and clears it; otherwise the exit
/// hook clears it at once.
#[map(name = "SCHED_HOOKED")]
pub static SCHED_HOOKED: Array<u32> = Array::with_max_entries(1, 0);

#[inline(always)]
pub fn sched_hooked() -> bool {
    SCHED_HOOKED.get(0).is_some_and(|&v| v != 0)
}

/// floor(log2(v)), clamped to `buckets - 1`; 0 and 1 share bucket 0.
#[inline(always)]
pub fn log2_bucket(v: u64, buckets: u32) -> u32 {
    let mut v = v;
    let mut b = 0u32;
    // Unrolled binary search: BPF has no count-leading-zeros instruction.
    if v >= 1 << 32 {
        v >>= 32;
        b += 32;
    }
    if v >= 1 << 16 {
        v >>= 16;
        b += 16;
    }
    if v >= 1 << 8 {
        v >>= 8;
        b += 8;
    }
    if v >= 1 << 4 {
        v >>= 4;
        b += 4;
    }
    if v >= 1 << 2 {
        v >>= 2;
        b += 2;
    }
    if v >= 1 << 1 {
        b += 1;
    }
    if b >= buckets {
        buckets - 1
    } else {
        b
    }
}

/// The window slot of a thread, 0 if it is in no window.
#[inline(always)]
pub fn task_slot(tid: u32) -> u32 {
    match TASK_SLOTS.get(tid / TIDS_PER_ENTRY) {
        Some(chunk) => chunk[(tid % TIDS_PER_ENTRY) as usize] as u32,
        None => 0,
    }
}

/// Sets a thread's window slot; false if the tid is beyond the map (pid_max grew).
#[inline(always)]
pub fn set_task_slot(tid: u32, slot: u32) -> bool {
    match TASK_SLOTS.get_ptr_mut(tid / TIDS_PER_ENTRY) {
        // A single-byte store: concurrent updates of neighbouring tids cannot tear it.
        Some(chunk) => {
            // SAFETY: `chunk` points at an array element, valid for the map's life; the index is
            // below `TIDS_PER_ENTRY` (a modulo).
            unsafe { (*chunk)[(tid % TIDS_PER_ENTRY) as usize] = slot as u8 };
            true
        }
        None => false,
    }
}

/// Counts `value` in the slot's log2 histogram of `buckets` buckets.
#[inline(always)]
pub fn hist_add(hist: &PerCpuArray<u64>, slot: u32, value: u64, buckets: u32) {
    bump(hist, slot * buckets + log2_bucket(value, buckets));
}

/// Adds 1 to entry `index` of a per-CPU slot array.
#[inline(always)]
pub fn bump(array: &PerCpuArray<u64>, index: u32) {
    if let Some(c) = array.get_ptr_mut(index) {
        // SAFETY: this CPU's copy of an array element: valid for the map's life, not shared
        // with other CPUs.
        unsafe { *c += 1 };
    }
}

#[inline(always)]
pub fn add(slot: u32, counter: Counter, value: u64) {
    if let Some(c) = COUNTERS.get_ptr_mut(counter_index(slot, counter)) {
        // SAFETY: as in `bump`: this CPU's copy of an element of `COUNTERS`.
        unsafe { *c += value };
    }
}

/// The window of the cgroup attachment this program runs for: 0 before the attachment is
/// tagged, and 0 for a socket of a cgroup below the target when the window counts the target
/// cgroup alone (`socket_cgroup` gives the socket's cgroup id; asked only then).
#[inline(always)]
fn attachment_slot(socket_cgroup: impl FnOnce() -> u64) -> u32 {
    let tag = WINDOW_TAGS.get_ptr_mut();
    if tag.is_null() {
        return 0;
    }
    // SAFETY: non-null, so the attachment's own cgroup storage, valid for the program's run;
    // copied at once (plain integers).
    let tag = unsafe { *tag };
    if tag.flags & WINDOW_TARGET_ONLY != 0 && socket_cgroup() != tag.cgroup_id {
        return 0;
    }
    tag.slot
}

/// `attachment_slot` for a `cgroup_skb` program: the packet's socket (set by the kernel for
/// the hook, ingress too).
#[inline(always)]
pub fn skb_slot(ctx: &aya_ebpf::programs::SkBuffContext) -> u32 {
    // SAFETY: `ctx.skb.skb` is the program's `__sk_buff` context; reading its `sk` field is a
    // context access the verifier checks and rewrites.
    let sk: *mut bpf_sock = unsafe { (*ctx.skb.skb).__bindgen_anon_2.sk };
    attachment_slot(|| {
        if sk.is_null() {
            0
        } else {
            // SAFETY: a non-null socket from the context, the pointer type the helper takes.
            unsafe { bpf_sk_cgroup_id(sk.cast()) }
        }
    })
}

/// `attachment_slot` for a `sock_ops` program (which may not call `bpf_sk_cgroup_id`: the
/// socket's cgroup is read from `sk->sk_cgrp_data`).
#[inline(always)]
pub fn ops_slot(ctx: &aya_ebpf::programs::SockOpsContext) -> u32 {
    // SAFETY: `ctx.ops` is the program's `bpf_sock_ops` context; its `sk` field is a context
    // access the verifier checks (null when the op has no full socket).
    let sk: *mut bpf_sock = unsafe { (*ctx.ops).__bindgen_anon_2.sk };
    attachment_slot(|| crate::kernel::sock_cgroup_id(sk))
}
