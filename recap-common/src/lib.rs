//! Types and names shared by the kernel side (`recap-ebpf`) and user space (`recap-agent`).
//!
//! Everything that crosses the kernel boundary is `#[repr(C)]`, `Copy`, made of fixed-width
//! integers with explicit padding, and its size is asserted at compile time.
#![no_std]

pub mod parse;

/// Window slots. Slot 0 means "no window": every map indexed by slot leaves it unused, so a
/// zeroed entry in `TASK_SLOTS` or in a cgroup's window tag means "not a target". 128 windows
/// at once; `TASK_SLOTS` keeps a slot in one byte, so never more than 255.
pub const MAX_WINDOWS: u32 = 129;

/// Syscall numbers at or above this are counted in the last row.
pub const MAX_SYSCALLS: u32 = 512;

/// Run-queue latency histogram: bucket `b` holds waits in `[2^b, 2^(b+1))` ns; the last bucket
/// is open-ended (2^31 ns ≈ 2.1 s and above).
pub const RUNQ_BUCKETS: u32 = 32;

/// `TASK_SLOTS` packs the window slot of 64 consecutive thread ids into one array entry, so the
/// "is this thread a target?" check on the syscall and scheduler paths is one inlined array
/// lookup and a byte load.
pub const TIDS_PER_ENTRY: u32 = 64;
pub type TaskSlotChunk = [u8; TIDS_PER_ENTRY as usize];

/// Length of a task's `comm`.
pub const COMM_LEN: usize = 16;

/// Scalar counters kept per window: `COUNTERS[slot * Counter::COUNT + counter]`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    TcpConnectAttempts = 0,
    TcpConnectEstablished,
    TcpConnectFailed,
    TcpAccepted,
    /// Connections that were established in the window and then closed in it.
    TcpClosed,
    NetRxBytesTcp,
    NetRxBytesUdp,
    NetRxBytesOther,
    NetTxBytesTcp,
    NetTxBytesUdp,
    NetTxBytesOther,
    NetRxPacketsTcp,
    NetRxPacketsUdp,
    NetRxPacketsOther,
    NetTxPacketsTcp,
    NetTxPacketsUdp,
    NetTxPacketsOther,
    /// TCP/UDP payload (bytes above the transport header), per direction.
    NetRxPayloadTcp,
    NetRxPayloadUdp,
    NetTxPayloadTcp,
    NetTxPayloadUdp,
    ProcExecs,
    ProcExits,
    ProcForks,
    /// Not counted by a program: user space fills it from the cgroup's `cpu.stat`.
    CpuOnCpuNs,
    /// Context switches of target threads, counted as they leave a CPU: blocked (voluntary)
    /// and preempted (involuntary), as the kernel's `nvcsw`/`nivcsw`.
    CpuSwitchesVoluntary,
    CpuSwitchesInvoluntary,
    /// Sum of the run-queue waits in the histogram (its `_sum`).
    CpuRunqWaitNs,
    /// Filled by user space from the target's CPU controller (`cpu.stat`, v2 or the v1 `cpu`
    /// hierarchy at its path): enforcement periods, those throttled, the time throttled (ns)
    /// since the window opened; the quota and period (µs; quota 0: none); `CpuThrottleKept` 1
    /// (v2) or 2 (v1) when the target has a CPU controller of its own.
    CpuPeriods,
    CpuThrottledPeriods,
    CpuThrottledNs,
    CpuQuotaUs,
    CpuPeriodUs,
    CpuThrottleKept,
    /// Pressure stall time (PSI `cpu.pressure`, µs) of the target's cgroup and those below it
    /// in the window: some task waiting, all waiting; `CpuPressureKept` 1 when read.
    CpuPressureSomeUs,
    CpuPressureFullUs,
    CpuPressureKept,
    /// Threads that were seen joining the target (fork or cgroup move) but found no room in
    /// `TASK_SLOTS`: a non-zero value means task-based counts are incomplete.
    TaskTrackMisses,
    /// TCP segments retransmitted, as the kernel's `TcpRetransSegs` counts them (attempts), and
    /// of those the ones whose sending failed (`TCPRetransFail`).
    TcpRetransSegs,
    TcpRetransFailed,
    /// TCP segments with RST, received and sent.
    TcpRstIn,
    TcpRstOut,
    /// Sums of the RTT samples and connection lifetimes in the histograms (ns).
    TcpRttSumNs,
    TcpConnDurSumNs,
    /// HTTP/1.x requests whose start was seen in the window, as server and as client.
    HttpServerStarted,
    HttpClientStarted,
    /// Of those, the ones whose connection closed before a final response.
    HttpServerAborted,
    HttpClientAborted,
    /// Of those, the ones whose response did not start with a readable status line.
    HttpServerUnparsable,
    HttpClientUnparsable,
    /// Interim `1xx` responses (e.g. `100 Continue`): not final, not counted as responses.
    HttpInterim,
    /// A request start while the previous request on the connection had no response yet.
    HttpPipelined,
    /// A response whose request was before the window (or not seen).
    HttpUnmatchedResponses,
    /// Socket writes of target threads that carry a TLS record (application data) outside any
    /// TLS call `http` reads: TLS code that is not instrumented (yet, or not supported).
    HttpTlsNotRead,
    /// Connections that started with the HTTP/2 preface (`PRI * HTTP/2.0`), as client or
    /// server, in plaintext or TLS: their frames are read (`H2Event`).
    HttpH2Connections,
    /// HTTP/2 frame bytes the kernel could not hand to user space (its ring buffer was full):
    /// the connection's header compression state is unknown from there on.
    Http2Lost,
    /// HTTP/2 connections whose framing was lost (more frames in one I/O than the program
    /// walks, or bytes of a frame header not readable): not read from there on.
    Http2Desync,
    /// Filled by user space from the frames: streams reset (`RST_STREAM`) or refused by
    /// `GOAWAY` while their request waited for its response; `GOAWAY` frames.
    Http2Resets,
    Http2Goaways,
    /// HTTP/2 requests counted with a method, status or path `unknown`: the field was coded
    /// against header-compression state from before the window (or lost).
    Http2Unknown,
    /// HTTP/2 connections older than the window (no preface seen), joined at an I/O that began
    /// with a well-formed frame: read from there, their side found from the first header block
    /// whose pseudo-header fields can be read; `Http2Desync` if what follows is not HTTP/2.
    Http2Joined,
    /// Filled by user space: gRPC calls counted under path `other` (beyond the window's bound
    /// on distinct paths), and that bound.
    GrpcOtherCalls,
    GrpcPathsLimit,
    /// `mem`: page faults, minor and major, as the kernel counts them per thread (`min_flt`,
    /// `maj_flt`): the kernel adds an exiting thread's totals, user space the live threads'
    /// change since the window opened.
    MemMinorFaults,
    MemMajorFaults,
    /// OOM kills of the target's processes (`oom:mark_victim`; victims in `OOM_VICTIMS`).
    MemOomKills,
    /// Filled by user space from the target's memory cgroup (bytes): usage when the window
    /// opened, now, the highest read in between, the limit (0: none), the breakdown now;
    /// `MemAccounted` 1 when the target has a memory cgroup of its own.
    MemUsageStart,
    MemUsage,
    MemUsagePeak,
    /// The kernel's own peak for the memory cgroup since it was created (`memory.peak`, v1
    /// `memory.max_usage_in_bytes`): catches a spike between two reads.
    MemCgroupPeak,
    MemLimit,
    MemAnon,
    MemFile,
    MemShmem,
    MemKernel,
    MemAccounted,
    /// `memory.pressure` as `CpuPressure*`.
    /// Reclaim stalls of the target's threads (direct or memory-cgroup reclaim, begin to end),
    /// and their sum (ns): the histogram's count and `_sum` (`RECLAIM_HIST`).
    MemReclaimStalls,
    MemReclaimNs,
    MemPressureSomeUs,
    MemPressureFullUs,
    MemPressureKept,
    /// `disk`: block I/O queued for the target's cgroup (as its bios' blkcg names it): bytes
    /// and operations (bios) read and written, other operations (flush, discard), and the sums
    /// of the latencies (a request's first bio queued to the request completed, ns) of reads
    /// and writes.
    DiskReadBytes,
    DiskWriteBytes,
    DiskReadOps,
    DiskWriteOps,
    DiskOtherOps,
    DiskReadNs,
    DiskWriteNs,
    /// Set by user space: 1 when the target has a blkio/io cgroup of its own to attribute by.
    DiskAttributed,
    /// DNS over UDP: queries sent, answers matched to a query, answers that matched none,
    /// queries whose question could not be read, and the sum of the answer latencies.
    DnsQueries,
    DnsAnswered,
    DnsUnmatched,
    DnsUnparsable,
    DnsLatencySumNs,
    /// Not a counter: the number of them (keep it last; a counter added after it would write
    /// into the next window's slot).
    _Count,
}

impl Counter {
    pub const COUNT: u32 = Counter::_Count as u32;
}

/// Log2 histograms of the `tcp_health` family: bucket `b` holds values in `[2^b, 2^(b+1))` ns;
/// the last (2^39 ns ≈ 9 min and above) is open-ended.
pub const TCP_HIST_BUCKETS: u32 = 40;

/// DNS lookup-duration histograms: log2 ns buckets shaped as `TCP_HIST_BUCKETS`.
pub const DNS_HIST_BUCKETS: u32 = TCP_HIST_BUCKETS;

/// HTTP request-duration histograms: log2 ns buckets as `TCP_HIST_BUCKETS`, the last (2^35 ns
/// ≈ 34 s and above) open-ended.
pub const HTTP_BUCKETS: u32 = 36;

/// HTTP methods by index (0: none). Only these start a request.
pub const HTTP_METHODS: [&str; 10] = [
    "", "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];
pub const HTTP_METHOD_CONNECT: u8 = 6;

/// Which side of an HTTP connection the target is.
pub const HTTP_ROLE_SERVER: u8 = 1;
pub const HTTP_ROLE_CLIENT: u8 = 2;

/// Key of the HTTP request counts: one entry per window, side, method and status code.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HttpKey {
    pub slot: u32,
    pub status: u16,
    pub role: u8,
    pub method: u8,
    /// 1: read from a TLS library's plaintext (HTTPS); 0: from the socket.
    pub tls: u8,
    /// The protocol version, as `HTTP_VERSIONS` indexes it (0: not known).
    pub version: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<HttpKey>() == 12);

/// OTel `network.protocol.version` values by `HttpKey::version`.
pub const HTTP_VERSIONS: [&str; 4] = ["", "1.0", "1.1", "2"];
pub const HTTP_VERSION_2: u8 = 3;

/// Requests with one key: how many, their summed duration and its log2 histogram.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HttpStat {
    pub count: u64,
    pub sum_ns: u64,
    pub buckets: [u64; HTTP_BUCKETS as usize],
}
const _: () = assert!(core::mem::size_of::<HttpStat>() == 8 * (2 + HTTP_BUCKETS as usize));

/// Per-connection HTTP state, in the socket's local storage.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct HttpConn {
    /// `WINDOW_EPOCH[slot]` when the state was made: a slot reused by a later window makes it
    /// stale.
    pub epoch: u64,
    /// When the pending request started (server: its first byte read; client: written).
    pub start_ns: u64,
    /// `HTTP_H2C_PENDING`: when the `101` was seen (the response's time if no HTTP/2 follows).
    pub upgraded_ns: u64,
    pub slot: u32,
    /// `HTTP_ROLE_*`, or 0 before anything HTTP was seen; `HTTP_UPGRADED` after `101` or a
    /// `CONNECT` tunnel: no longer HTTP; `HTTP_H2C_PENDING` between a `101` and the bytes that
    /// say whether HTTP/2 follows; `HTTP_H2`.
    pub role: u8,
    pub pending: u8,
    pub method: u8,
    /// A start too short to read (`GE`, `HTTP/1.1 `): kept until the next bytes in the same
    /// direction (`carry_in`: 1 incoming) complete it.
    pub carry_len: u8,
    pub carry_in: u8,
    /// 1: a TLS connection's plaintext state (kept by connection cookie in `HTTPS_CONNS`).
    pub tls: u8,
    /// `HTTP_H2`: the side the target is (`HTTP_ROLE_*`, from who sent the preface);
    /// `HTTP_H2C_PENDING`: its side in the upgraded request.
    pub h2_side: u8,
    pub _pad: [u8; 5],
    pub carry: [u8; HTTP_PREFIX],
    /// `HTTP_H2`: the framing of each direction (0: sent, 1: received).
    pub h2: [H2Framing; 2],
}
const _: () = assert!(core::mem::size_of::<HttpConn>() == 104);

/// Where one direction of an HTTP/2 connection is in its frames.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct H2Framing {
    /// Bytes of the current frame's payload still to come.
    pub left: u32,
    /// Events sent for this direction (user space sees a gap when one was lost).
    pub seq: u32,
    /// 1: the current frame's payload is handed to user space.
    pub ship: u8,
    /// Bytes of a frame header cut by the end of an I/O, kept in `hdr`.
    pub hdr_len: u8,
    /// 1: framing lost; nothing more is read in this direction.
    pub lost: u8,
    pub _pad: [u8; 5],
    pub hdr: [u8; 8],
}
const _: () = assert!(core::mem::size_of::<H2Framing>() == 24);

/// An HTTP/2 frame header is 9 bytes: length (24 bits), type, flags, stream id.
pub const H2_FRAME_HEADER: usize = 9;
/// Payload bytes per `H2Event` at most (a longer header block takes several).
pub const H2_CHUNK: usize = 256;
/// Frame types whose payload user space needs: the header blocks (HEADERS, PUSH_PROMISE,
/// CONTINUATION: they move the HPACK state), RST_STREAM and GOAWAY. DATA and the rest are
/// walked over in the kernel, never copied.
pub const H2_SHIPPED_TYPES: u16 = (1 << 1) | (1 << 3) | (1 << 5) | (1 << 7) | (1 << 9);

pub const H2_START: u8 = 1;
pub const H2_CLOSED: u8 = 2;
/// The connection became HTTP/2 by `Upgrade: h2c`: its HTTP/1.1 request is stream 1's
/// (`data[0]` its method, `HTTP_METHODS`; `ts_ns` when it started); no frame data.
pub const H2_UPGRADED: u8 = 3;

/// Bytes of one direction of an HTTP/2 connection handed to user space, in order: the shipped
/// frames' headers and payloads (`start`: `data` begins with a frame header).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct H2Event {
    /// The connection: `owner` 0 and its socket cookie, or a TLS session (`TlsKey`).
    pub conn: TlsKey,
    pub ts_ns: u64,
    pub epoch: u64,
    pub slot: u32,
    /// This direction's event count (`H2Framing::seq`) before this one.
    pub seq: u32,
    pub len: u16,
    pub incoming: u8,
    pub side: u8,
    /// `H2_START`: `data` begins with a frame header; `H2_CLOSED`: the connection ended
    /// (no data); `H2_UPGRADED`: it became HTTP/2 by an upgrade; 0: more of the frame's
    /// payload.
    pub start: u8,
    pub tls: u8,
    pub _pad: [u8; 2],
    pub data: [u8; H2_FRAME_HEADER + H2_CHUNK],
}

/// How many bytes of each send/receive the `http` family reads: a request line's method and
/// the start of its target, or a status line's code.
pub const HTTP_PREFIX: usize = 16;
pub const HTTP_UPGRADED: u8 = 3;
/// Role of a connection that speaks HTTP/2 (its side in `HttpConn::h2_side`).
pub const HTTP_H2: u8 = 4;
/// Role of a connection whose request was answered `101 Switching Protocols`, until its next
/// bytes say whether HTTP/2 follows (`Upgrade: h2c`: the client's preface, the server's
/// SETTINGS) or another protocol.
pub const HTTP_H2C_PENDING: u8 = 5;

/// A TLS library call of a target thread (`SSL_read`, `SSL_write`, `_ex`), from its entry to
/// its return: the plaintext buffer, and the connection named by the socket I/O the library
/// did inside the call (0 if none: served from the library's buffer).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TlsCall {
    pub ssl: u64,
    pub buf: u64,
    /// `_ex` calls: where the library writes the byte count (`size_t *`).
    pub count_ptr: u64,
    pub cookie: u64,
}
const _: () = assert!(core::mem::size_of::<TlsCall>() == 32);

/// A TLS session of a process (`owner` its tgid, `id` its `SSL *`), or a connection (`owner` 0,
/// `id` its socket cookie): the keys of `TLS_SESSIONS` and `HTTPS_CONNS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TlsKey {
    pub owner: u32,
    pub _pad: u32,
    pub id: u64,
}
const _: () = assert!(core::mem::size_of::<TlsKey>() == 16);

/// The TLS library functions `http` reads plaintext from (`programs::TLS_CALL` at their entry,
/// `programs::TLS_RETURN` at their return), with the return probe's attach cookie saying
/// which one returned (`TLS_WRITE`, `TLS_EX` bits).
pub const TLS_FUNCTIONS: [(&str, u64); 4] = [
    ("SSL_read", 0),
    ("SSL_read_ex", TLS_EX),
    ("SSL_write", TLS_WRITE),
    ("SSL_write_ex", TLS_WRITE | TLS_EX),
];
/// Go's `crypto/tls` functions `http` reads (register ABI, Go ≥ 1.17): `programs::GO_TLS_CALL`
/// at their prologue's stack check branch (a write is read there), `programs::GO_TLS_RETURN` at each `RET`
/// instruction of `Read` (uretprobes would break Go's movable stacks), the cookie saying
/// which (`TLS_WRITE`).
pub const GO_TLS_FUNCTIONS: [(&str, u64); 2] = [
    ("crypto/tls.(*Conn).Read", 0),
    ("crypto/tls.(*Conn).Write", TLS_WRITE),
];

/// `SSL_free(ssl)`: the session's state goes with it (`programs::TLS_FREE` at its entry).
pub const TLS_FREE_FUNCTION: &str = "SSL_free";
/// The function writes (sends) plaintext; otherwise it reads.
pub const TLS_WRITE: u64 = 1;
/// An `_ex` function: returns > 0 (1) and stores the byte count through its fourth argument.
pub const TLS_EX: u64 = 2;

/// DNS query types counted by name (`DNS_QTYPES[i]`, value `DNS_QTYPE_CODES[i]`); the last
/// entry counts every other type.
pub const DNS_QTYPES: [&str; 12] = [
    "A", "NS", "CNAME", "SOA", "PTR", "MX", "TXT", "AAAA", "SRV", "HTTPS", "ANY", "other",
];
pub const DNS_QTYPE_CODES: [u16; 11] = [1, 2, 5, 6, 12, 15, 16, 28, 33, 65, 255];
/// Response codes 0..=15 by number (the 4-bit header rcode).
pub const DNS_RCODES: u32 = 16;

/// A DNS query waiting for its answer: the window, the query id and the client's UDP port.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DnsKey {
    pub slot: u32,
    pub id: u16,
    pub port: u16,
}
const _: () = assert!(core::mem::size_of::<DnsKey>() == 8);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DnsPending {
    pub epoch: u64,
    pub sent_ns: u64,
}
const _: () = assert!(core::mem::size_of::<DnsPending>() == 16);

/// Index of a counter for a window slot in `COUNTERS`.
#[inline(always)]
pub const fn counter_index(slot: u32, counter: Counter) -> u32 {
    slot * Counter::COUNT + counter as u32
}

/// Index of a syscall's calls (`errors == 0`) or errors (`errors == 1`) in `SYSCALLS`.
#[inline(always)]
pub const fn syscall_index(slot: u32, nr: u32, errors: u32) -> u32 {
    (slot * MAX_SYSCALLS + nr) * 2 + errors
}

/// Value of the per-attachment cgroup storage: which window a cgroup-attached program runs for.
/// Socket programs run in softirq context too, where the current task says nothing about the
/// socket, so the window is taken from the attachment itself.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct WindowTag {
    pub slot: u32,
    /// `WINDOW_TARGET_ONLY`: count sockets of the target cgroup itself, not of cgroups below
    /// it (the attachment runs for the whole subtree).
    pub flags: u32,
    /// The target cgroup's id, compared with a socket's when the window is target-only.
    pub cgroup_id: u64,
}
const _: () = assert!(core::mem::size_of::<WindowTag>() == 16);

/// A window on its target cgroup alone: in `WindowTag::flags`, and in a `WINDOW_CGROUPS` value
/// (above the slot's byte), where it keeps threads moved into a cgroup below the target out.
pub const WINDOW_TARGET_ONLY: u32 = 1 << 8;

/// A process of a window's target chosen by the OOM killer (value of `OOM_VICTIMS`, by the
/// victim's pid).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomVictim {
    pub epoch: u64,
    pub slot: u32,
    pub pid: u32,
    /// Resident memory when it was chosen (file, anon and shmem pages, as the kernel's OOM
    /// report counts them), bytes.
    pub rss_bytes: u64,
    pub comm: [u8; COMM_LEN],
}
const _: () = assert!(core::mem::size_of::<OomVictim>() == 40);

/// Block I/O in flight for a window (value of `DISK_BIOS`, by `struct bio *`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DiskBio {
    pub ts_ns: u64,
    pub slot: u32,
    /// 0 read, 1 write, 2 other.
    pub dir: u32,
}

/// Per-device block I/O of a window (key of `DISK_DEVICES`; value: bytes, operations).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DiskKey {
    pub slot: u32,
    /// The device, as the kernel's `dev_t` (major << 20 | minor).
    pub dev: u32,
    /// 0 read, 1 write.
    pub dir: u32,
    pub _pad: u32,
}

/// `disk`: log2 ns latency buckets per direction (reads, then writes) per window slot.
pub const DISK_BUCKETS: u32 = RUNQ_BUCKETS;

/// Key of the exec-name counts.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExecKey {
    pub slot: u32,
    pub comm: [u8; COMM_LEN],
}
const _: () = assert!(core::mem::size_of::<ExecKey>() == 20);

/// Kernel struct offsets the probes need, read from the running kernel's BTF by user space and
/// written into the program's read-only globals before load (Rust eBPF has no CO-RE).
pub mod offsets {
    pub const TASK_PID: &str = "RECAP_OFF_TASK_PID";
    pub const CGROUP_KN: &str = "RECAP_OFF_CGROUP_KN";
    pub const KERNFS_ID: &str = "RECAP_OFF_KERNFS_ID";
    pub const CGROUP_ROOT: &str = "RECAP_OFF_CGROUP_ROOT";
    pub const ROOT_HIERARCHY_ID: &str = "RECAP_OFF_ROOT_HIER";
    pub const CGROUP_SELF: &str = "RECAP_OFF_CGROUP_SELF";
    pub const CSS_PARENT: &str = "RECAP_OFF_CSS_PARENT";
    pub const TASK_SIGNAL: &str = "RECAP_OFF_TASK_SIGNAL";
    pub const SIGNAL_THREADS: &str = "RECAP_OFF_SIGNAL_THREADS";
    pub const TASK_THREAD_NODE: &str = "RECAP_OFF_TASK_THREAD_NODE";
    pub const SOCK_CGRP_DATA: &str = "RECAP_OFF_SOCK_CGRP_DATA";
    pub const SKCD_CGROUP: &str = "RECAP_OFF_SKCD_CGROUP";
    pub const BIO_OPF: &str = "RECAP_OFF_BIO_OPF";
    pub const RQ_BIO: &str = "RECAP_OFF_RQ_BIO";
    pub const BIO_SIZE: &str = "RECAP_OFF_BIO_SIZE";
    pub const BIO_BLKG: &str = "RECAP_OFF_BIO_BLKG";
    pub const BIO_BDEV: &str = "RECAP_OFF_BIO_BDEV";
    pub const BDEV_DEV: &str = "RECAP_OFF_BDEV_DEV";
    pub const BLKG_BLKCG: &str = "RECAP_OFF_BLKG_BLKCG";
    pub const CSS_CGROUP: &str = "RECAP_OFF_CSS_CGROUP";
    pub const TASK_MIN_FLT: &str = "RECAP_OFF_TASK_MIN_FLT";
    pub const TASK_MAJ_FLT: &str = "RECAP_OFF_TASK_MAJ_FLT";
    pub const TASK_COMM: &str = "RECAP_OFF_TASK_COMM";
    pub const TASK_MM: &str = "RECAP_OFF_TASK_MM";
    pub const MM_RSS_STAT: &str = "RECAP_OFF_MM_RSS_STAT";
    pub const PERCPU_COUNTER_COUNT: &str = "RECAP_OFF_PCPU_COUNT";
    /// `sizeof(struct percpu_counter)`: the stride of `mm->rss_stat[]`.
    pub const PERCPU_COUNTER_SIZE: &str = "RECAP_SIZE_PCPU_COUNTER";
    /// x86-64 `struct pt_regs`: `orig_ax` holds the syscall number (fixed by the ABI).
    pub const PT_REGS_ORIG_AX: u64 = 15 * 8;
    /// Its `si`: a syscall's second argument (the buffer of read/write/send/recv).
    pub const PT_REGS_SI: u64 = 13 * 8;
    /// Its `dx`: the third (an iovec count for readv/writev).
    pub const PT_REGS_DX: u64 = 12 * 8;
}

/// Map names, declared once.
pub mod maps {
    pub const TASK_SLOTS: &str = "TASK_SLOTS";
    pub const WINDOW_CGROUPS: &str = "WINDOW_CGROUPS";
    pub const WINDOW_TAGS: &str = "WINDOW_TAGS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const SYSCALLS: &str = "SYSCALLS";
    pub const RUNQ_HIST: &str = "RUNQ_HIST";
    pub const EXECS: &str = "EXECS";
    pub const WAKE_TS: &str = "WAKE_TS";
    pub const SCHED_HOOKED: &str = "SCHED_HOOKED";
    pub const TCP_RTT_HIST: &str = "TCP_RTT_HIST";
    pub const TCP_DUR_HIST: &str = "TCP_DUR_HIST";
    pub const CONN_START: &str = "CONN_START";
    pub const WINDOW_EPOCH: &str = "WINDOW_EPOCH";
    pub const HTTP_REQS: &str = "HTTP_REQS";
    pub const TLS_CALLS: &str = "TLS_CALLS";
    pub const OOM_VICTIMS: &str = "OOM_VICTIMS";
    pub const RECLAIM_TS: &str = "RECLAIM_TS";
    pub const DISK_CGROUPS: &str = "DISK_CGROUPS";
    pub const DISK_BIOS: &str = "DISK_BIOS";
    pub const DISK_RQS: &str = "DISK_RQS";
    pub const DISK_DEVICES: &str = "DISK_DEVICES";
    pub const DISK_HIST: &str = "DISK_HIST";
    pub const RECLAIM_HIST: &str = "RECLAIM_HIST";
    pub const GO_TLS_CALLS: &str = "GO_TLS_CALLS";
    pub const TLS_SESSIONS: &str = "TLS_SESSIONS";
    pub const TLS_PROCS: &str = "TLS_PROCS";
    pub const TLS_NEW_PROCS: &str = "TLS_NEW_PROCS";
    pub const TLS_WINDOWS: &str = "TLS_WINDOWS";
    pub const HTTPS_CONNS: &str = "HTTPS_CONNS";
    pub const HTTP2_FRAMES: &str = "HTTP2_FRAMES";
    pub const DNS_PENDING: &str = "DNS_PENDING";
    pub const DNS_QTYPE: &str = "DNS_QTYPE";
    pub const DNS_RCODE: &str = "DNS_RCODE";
    pub const DNS_HIST: &str = "DNS_HIST";
    /// Every map user space opens by name (a test checks the built object holds them).
    pub const ALL: [&str; 34] = [
        DISK_RQS,
        DISK_CGROUPS,
        DISK_BIOS,
        DISK_DEVICES,
        DISK_HIST,
        RECLAIM_TS,
        RECLAIM_HIST,
        TASK_SLOTS,
        WINDOW_CGROUPS,
        WINDOW_TAGS,
        COUNTERS,
        SYSCALLS,
        RUNQ_HIST,
        EXECS,
        WAKE_TS,
        SCHED_HOOKED,
        TCP_RTT_HIST,
        TCP_DUR_HIST,
        CONN_START,
        WINDOW_EPOCH,
        HTTP_REQS,
        TLS_CALLS,
        OOM_VICTIMS,
        GO_TLS_CALLS,
        TLS_SESSIONS,
        TLS_PROCS,
        TLS_NEW_PROCS,
        TLS_WINDOWS,
        HTTPS_CONNS,
        HTTP2_FRAMES,
        DNS_PENDING,
        DNS_QTYPE,
        DNS_RCODE,
        DNS_HIST,
    ];
}

/// Program names (the kernel keeps 15 bytes of a name; every one starts with `recap_` so
/// `bpftool prog list | grep recap` finds all of ours).
pub mod programs {
    pub const SYS_EXIT: &str = "recap_sys_exit";
    pub const SCHED_SWITCH: &str = "recap_switch";
    pub const SCHED_WAKEUP: &str = "recap_wakeup";
    pub const SCHED_WAKEUP_NEW: &str = "recap_wakeup_nw";
    pub const PROC_FORK: &str = "recap_fork";
    pub const PROC_EXIT: &str = "recap_exit";
    pub const PROC_EXEC: &str = "recap_exec";
    pub const CGROUP_MOVE: &str = "recap_cg_move";
    pub const TCP_SOCK_OPS: &str = "recap_sockops";
    pub const SKB_INGRESS: &str = "recap_skb_in";
    pub const SKB_EGRESS: &str = "recap_skb_out";
    pub const TCPH_SOCK_OPS: &str = "recap_tcph_ops";
    pub const TCPH_INGRESS: &str = "recap_tcph_in";
    pub const TCPH_EGRESS: &str = "recap_tcph_out";
    pub const HTTP_SEND: &str = "recap_http_send";
    pub const HTTP_RECV: &str = "recap_http_recv";
    pub const HTTP_CLOSE: &str = "recap_http_end";
    /// uprobes on a TLS library: one entry program, one return program per function.
    pub const TLS_CALL: &str = "recap_tls_call";
    pub const TLS_RETURN: &str = "recap_tls_ret";
    pub const TLS_FREE: &str = "recap_tls_free";
    /// uprobes on Go's `crypto/tls`: at the functions' entries, and at each return instruction.
    pub const GO_TLS_CALL: &str = "recap_gotls_in";
    pub const GO_TLS_RETURN: &str = "recap_gotls_ret";
    /// A target's new process (exec, fork), told to user space to be instrumented at once.
    pub const TLS_EXEC: &str = "recap_tls_exec";
    pub const TLS_FORK: &str = "recap_tls_fork";
    /// `oom:mark_victim`: the OOM killer chose a process.
    pub const MEM_OOM: &str = "recap_oom_kill";
    /// Direct and memory-cgroup reclaim, begin and end (`vmscan`).
    pub const MEM_RECLAIM_IN: &str = "recap_rcl_in";
    pub const MEM_RECLAIM_OUT: &str = "recap_rcl_out";
    pub const MEM_CG_RECLAIM_IN: &str = "recap_mcgrcl_in";
    pub const MEM_CG_RECLAIM_OUT: &str = "recap_mcgrcl_ot";
    /// `disk`: a bio queued; the request it starts issued to the device, and completed.
    pub const DISK_QUEUE: &str = "recap_bio_queue";
    pub const DISK_ISSUE: &str = "recap_rq_issue";
    pub const DISK_DONE: &str = "recap_rq_done";
    pub const DNS_INGRESS: &str = "recap_dns_in";
    pub const DNS_EGRESS: &str = "recap_dns_out";
    /// A no-op `sys_enter` hook: the benchmark's reference point, never used by a window.
    pub const BENCH_NOP: &str = "recap_nop_enter";
    pub const ALL: [&str; 35] = [
        SYS_EXIT,
        SCHED_SWITCH,
        SCHED_WAKEUP,
        SCHED_WAKEUP_NEW,
        PROC_FORK,
        PROC_EXIT,
        PROC_EXEC,
        CGROUP_MOVE,
        TCP_SOCK_OPS,
        SKB_INGRESS,
        SKB_EGRESS,
        TCPH_SOCK_OPS,
        TCPH_INGRESS,
        TCPH_EGRESS,
        HTTP_SEND,
        HTTP_RECV,
        HTTP_CLOSE,
        TLS_CALL,
        TLS_RETURN,
        TLS_FREE,
        GO_TLS_CALL,
        GO_TLS_RETURN,
        TLS_EXEC,
        TLS_FORK,
        DNS_INGRESS,
        DNS_EGRESS,
        MEM_OOM,
        MEM_RECLAIM_IN,
        MEM_RECLAIM_OUT,
        MEM_CG_RECLAIM_IN,
        MEM_CG_RECLAIM_OUT,
        DISK_QUEUE,
        DISK_ISSUE,
        DISK_DONE,
        BENCH_NOP,
    ];
    const _: () = {
        let mut i = 0;
        while i < ALL.len() {
            assert!(ALL[i].len() <= 15);
            i += 1;
        }
    };
}

#[cfg(feature = "user")]
mod pod {
    macro_rules! pod {
        ($($t:ident),* $(,)?) => {$(
            // SAFETY: `#[repr(C)]`, `Copy`, fields of integers and arrays of integers only: every
            // bit pattern the kernel writes is a valid value.
            unsafe impl aya::Pod for super::$t {}
        )*};
    }
    pod!(
        WindowTag, ExecKey, OomVictim, DiskKey, DiskBio, HttpKey, HttpStat, HttpConn, TlsCall,
        TlsKey, H2Event, DnsKey, DnsPending,
    );
}
