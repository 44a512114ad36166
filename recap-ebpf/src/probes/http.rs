//! `http`: HTTP/1.x requests of the target's threads, as server and as client, read at the
//! socket layer's own tracepoints `sock:sock_recv_length` and `sock:sock_send_length` (tp_btf).
//! They fire after each socket receive or send, in the task that did it, so the syscall's
//! buffer already holds the bytes: the first 16 are enough to tell a request line from a
//! status line. Syscalls that are not socket I/O never reach these programs; socket I/O of
//! threads outside any window costs one `TASK_SLOTS` lookup.
//!
//! Per connection (in the socket's local storage) a small state machine: a request starts on a method token
//! in the request direction and ends at the first final status line in the other; interim
//! `1xx` responses are skipped; bytes in between (bodies, chunked or not, split heads) are
//! not looked at. What does not fit is counted as an anomaly, never guessed into the numbers.

use aya_ebpf::helpers::generated::bpf_get_socket_cookie;
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task_btf, bpf_ktime_get_ns, bpf_probe_read_user,
        bpf_task_pt_regs, generated::bpf_probe_read_user as bpf_probe_read_user_raw,
    },
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use recap_common::{
    offsets::{PT_REGS_DX, PT_REGS_ORIG_AX, PT_REGS_SI},
    parse::{
        http::{
            is_status_start, method, method_prefix, status, status_prefix, word, H2_PREFACE,
            METHOD_MAX, STATUS_LEN,
        },
        http2::joinable,
    },
    Counter, HttpConn, HttpKey, HttpStat, TlsKey, HTTP_BUCKETS, HTTP_H2, HTTP_H2C_PENDING,
    HTTP_METHOD_CONNECT, HTTP_PREFIX, HTTP_ROLE_CLIENT, HTTP_ROLE_SERVER, HTTP_UPGRADED,
};

use super::{
    h2c,
    http2::{self, Bytes, PREFACE_LEN},
};

use crate::maps::{
    add, http_state, log2_bucket, task_slot, tls_window, window_epoch, HTTP_REQS, TLS_PROCS,
};

const PREFIX: usize = HTTP_PREFIX;
const MSG_PEEK: i32 = 2;
/// A TLS record's content type (then the version's major byte, 3).
const TLS_APPLICATION_DATA: u8 = 0x17;

// x86-64 syscall numbers whose second argument leads to the data.
const SYS_READ: u64 = 0;
const SYS_WRITE: u64 = 1;
const SYS_READV: u64 = 19;
const SYS_WRITEV: u64 = 20;
const SYS_SENDTO: u64 = 44;
const SYS_RECVFROM: u64 = 45;
const SYS_SENDMSG: u64 = 46;
const SYS_RECVMSG: u64 = 47;
/// `struct user_msghdr`: `msg_iov` after `msg_name` and `msg_namelen` (padded).
const MSGHDR_IOV: u64 = 16;

/// `sock_send_length(struct sock *sk, int ret, int flags)`.
#[btf_tracepoint(function = "sock_send_length")]
// Inlined into the program the macro makes: as a function of its own, its return value
// (unused) was left as whatever LLVM had in R0, once a stack pointer, which the verifier
// refuses.
#[inline(always)]
pub fn recap_http_send(ctx: BtfTracePointContext) -> i32 {
    on_io(&ctx, false);
    0
}

/// `sock_recv_length(struct sock *sk, int ret, int flags)`.
#[btf_tracepoint(function = "sock_recv_length")]
// Inlined into the program the macro makes: as a function of its own, its return value
// (unused) was left as whatever LLVM had in R0, once a stack pointer, which the verifier
// refuses.
#[inline(always)]
pub fn recap_http_recv(ctx: BtfTracePointContext) -> i32 {
    on_io(&ctx, true);
    0
}

/// `tcp_destroy_sock(struct sock *sk)`: a request still waiting for its response was aborted
/// (the state itself goes with the socket).
#[btf_tracepoint(function = "tcp_destroy_sock")]
pub fn recap_http_end(ctx: BtfTracePointContext) -> i32 {
    let sk: *mut core::ffi::c_void = ctx.arg(0);
    if let Some((conn, key)) = super::tls::forget(sk) {
        ended(&conn, || key);
    }
    let conn = http_state(sk, None);
    if !conn.is_null() {
        // SAFETY: non-null, so the socket's own storage, valid while the socket lives (past
        // this tracepoint); read only, plain integers.
        ended(unsafe { &*conn }, || socket_key(sk));
    }
    0
}

/// A connection (or TLS session) ends: its pending request was aborted, user space is told
/// if it speaks HTTP/2 (`id` names it), a `101` not yet followed by anything was the response.
#[inline(always)]
pub fn ended(conn: &HttpConn, id: impl FnOnce() -> TlsKey) {
    if conn.epoch != window_epoch(conn.slot) {
        return;
    }
    aborted(conn);
    if conn.role == HTTP_H2 {
        http2::closed(conn, &id());
    }
    if conn.role == HTTP_H2C_PENDING {
        h2c::closed(conn);
    }
}

/// An HTTP/2 connection read at the socket, as user space knows it: its socket cookie.
#[inline(always)]
fn socket_key(sk: *mut core::ffi::c_void) -> TlsKey {
    TlsKey {
        owner: 0,
        _pad: 0,
        // SAFETY: `sk` is the tracepoint's BTF-typed `struct sock *`, which the helper takes.
        id: unsafe { bpf_get_socket_cookie(sk) },
    }
}

/// Counts the connection's pending request, if any, as aborted.
#[inline(always)]
fn aborted(conn: &HttpConn) {
    if conn.pending != 0 {
        let counter = if conn.role == HTTP_ROLE_SERVER {
            Counter::HttpServerAborted
        } else {
            Counter::HttpClientAborted
        };
        add(conn.slot, counter, 1);
    }
}

#[inline(always)]
fn on_io(ctx: &BtfTracePointContext, incoming: bool) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let slot = task_slot(pid_tgid as u32);
    if slot == 0 {
        return;
    }
    let sk: *mut core::ffi::c_void = ctx.arg(0);
    // I/O inside a TLS library call carries its records: the call names the connection, and
    // its plaintext is read when it returns (`tls.rs`).
    if tls_window(slot) && super::tls::inside_call(pid_tgid, sk) {
        return;
    }
    let ret: i32 = ctx.arg(1);
    let flags: i32 = ctx.arg(2);
    if ret <= 0 || (incoming && flags & MSG_PEEK != 0) {
        return;
    }
    let epoch = window_epoch(slot);
    // Updated in place when the socket has a state already.
    let stored = http_state(sk, None);
    // SAFETY: (both blocks) `stored` is non-null, so this socket's storage, valid for the
    // program's run; its fields are plain integers, copied out.
    let mut conn =
        if !stored.is_null() && unsafe { (*stored).slot == slot && (*stored).epoch == epoch } {
            // SAFETY: see above.
            unsafe { *stored }
        } else {
            HttpConn {
                epoch,
                slot,
                ..Default::default()
            }
        };
    if feed(slot, &mut conn, incoming, io_bytes(), ret as usize, || {
        socket_key(sk)
    }) {
        if stored.is_null() {
            http_state(sk, Some(&mut conn));
        } else {
            store(stored, &conn, incoming);
        }
    }
}

/// Writes a connection's new state over its stored one. The two directions of an HTTP/2
/// connection are walked by different threads at once (a reader and a writer: Go, gRPC), so
/// one that stays HTTP/2 gets only the direction this I/O walked (and its side, once known):
/// a whole copy would put back the other direction's framing as it was before that walk.
#[inline(always)]
pub fn store(stored: *mut HttpConn, conn: &HttpConn, incoming: bool) {
    // SAFETY: `stored` is a map value (or socket storage) of this connection, valid for the
    // program's run.
    let stored = unsafe { &mut *stored };
    let same = stored.slot == conn.slot && stored.epoch == conn.epoch;
    if same && stored.role == HTTP_H2 && conn.role == HTTP_H2 {
        let dir = incoming as usize;
        stored.h2[dir] = conn.h2[dir];
        if stored.h2_side == 0 {
            stored.h2_side = conn.h2_side;
        }
    } else {
        *stored = *conn;
    }
}

/// Moves a connection's state on by `len` bytes at `bytes` in user memory, sent (`incoming`
/// false) or received: the socket's own bytes, or a TLS call's plaintext. `id` names the
/// connection to user space (HTTP/2). True if the state changed and must be stored.
#[inline(always)]
pub fn feed(
    slot: u32,
    conn: &mut HttpConn,
    incoming: bool,
    bytes: Bytes,
    len: usize,
    id: impl Fn() -> TlsKey,
) -> bool {
    let (changed, frames) = on_bytes(slot, conn, incoming, &bytes, len, &id);
    // One walk for every way an I/O can carry HTTP/2 frames: each inlined copy of it made
    // the verifier check its loop again (arming `http` took 3× as long with five).
    if frames {
        http2::walk(conn, &id(), incoming, &bytes, len as u64);
    }
    changed
}

/// What an I/O does to the connection: whether its state changed, and whether its bytes are
/// HTTP/2 frames to walk.
#[inline(always)]
fn on_bytes(
    slot: u32,
    conn: &mut HttpConn,
    incoming: bool,
    bytes: &Bytes,
    len: usize,
    id: &impl Fn() -> TlsKey,
) -> (bool, bool) {
    if conn.role == HTTP_H2 {
        if conn.h2_side == 0 && incoming && starts_with_preface(bytes) {
            // Joined at a server's first write, made before it read the client's preface: a
            // connection of the window after all.
            add(slot, Counter::HttpH2Connections, 1);
            conn.h2_side = HTTP_ROLE_SERVER;
            conn.h2[1].left = PREFACE_LEN;
        }
        return (true, true);
    }
    if conn.role == HTTP_UPGRADED {
        return (false, false);
    }
    if conn.role == HTTP_H2C_PENDING {
        return (
            true,
            h2c::next_io(slot, conn, incoming, bytes, len as u64, id),
        );
    }
    let io_len = len;
    let Some((buf, _)) = bytes.first_segment(len as u64) else {
        return (false, false);
    };
    // The rest of a response already read (its body, e.g. a large download) says nothing: its
    // bytes are not read at all.
    let response_side = if incoming {
        HTTP_ROLE_CLIENT
    } else {
        HTTP_ROLE_SERVER
    };
    if conn.role == response_side && conn.pending == 0 {
        return (false, false);
    }
    // Bytes carried over from a start too short to read come first, this I/O's after them:
    // one read from user memory at a variable offset of the scratch buffer.
    let mut scratch = [0u8; 2 * PREFIX];
    let mut have = 0usize;
    let carried = conn.carry_len != 0;
    if carried && (conn.carry_in != 0) == incoming {
        scratch[..PREFIX].copy_from_slice(&conn.carry);
        have = conn.carry_len as usize & (PREFIX - 1);
    }
    conn.carry_len = 0;
    // SAFETY: `have` is below PREFIX (masked), so the PREFIX bytes written from it fit in the
    // 2 * PREFIX scratch; `buf` is only read by the helper, which returns an error instead of
    // faulting on an address it cannot read.
    let read = unsafe {
        bpf_probe_read_user_raw(
            scratch.as_mut_ptr().add(have) as *mut core::ffi::c_void,
            PREFIX as u32,
            buf as *const core::ffi::c_void,
        )
    };
    if read != 0 {
        return (false, false);
    }
    let fresh = if len < PREFIX { len } else { PREFIX };
    let len = if have + fresh < PREFIX {
        have + fresh
    } else {
        PREFIX
    };
    // SAFETY: the first PREFIX bytes of a 2 * PREFIX array.
    let p = unsafe { &*(scratch.as_ptr() as *const [u8; PREFIX]) };
    // A TLS application-data record written at the socket by a process whose TLS code is not
    // instrumented: TLS whose plaintext is not read.
    if conn.tls == 0 && !incoming && len >= 5 && p[0] == TLS_APPLICATION_DATA && p[1] == 3 {
        let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
        // SAFETY: only whether the key is present is used; the value is not read.
        if unsafe { TLS_PROCS.get(&tgid) }.is_none() {
            add(slot, Counter::HttpTlsNotRead, 1);
        }
        return (carried, false);
    }
    // Carried bytes were used up (or dropped, if this I/O went the other way): store that too.
    let changed = on_data(slot, conn, incoming, p, len) || carried;
    if conn.role == HTTP_H2C_PENDING {
        // A `101` began in this I/O: what follows its head may be HTTP/2 frames.
        return (
            true,
            h2c::after_101(slot, conn, incoming, bytes, io_len as u64, id),
        );
    }
    // A connection older than the window that speaks HTTP/2: joined at a frame's start.
    if conn.role == 0 && have == 0 && joinable(p, len, io_len) {
        conn.role = HTTP_H2;
        conn.h2_side = 0; // user space finds it from the header blocks
        return (true, true);
    }
    // The preface began this I/O: its frames follow it.
    (changed, conn.role == HTTP_H2)
}

/// True if `bytes` begin with HTTP/2's connection preface.
#[inline(always)]
fn starts_with_preface(bytes: &Bytes) -> bool {
    bytes
        .first_segment(u64::MAX)
        .is_some_and(|(at, _)| http2::preface_at(at))
}

/// Where the syscall's data is in user memory, found through the thread's saved registers.
/// Unreadable for I/O that did not come from a read/write/send/recv-like syscall (io_uring,
/// sendfile, splice, recvmmsg): its bytes are not looked at.
#[inline(always)]
fn io_bytes() -> Bytes {
    // A pointer the verifier knows as `struct pt_regs *`: its fields are read with plain
    // (fault-checked) loads, no helper call.
    // SAFETY: both helpers take no pointer of ours: the current task, as the BTF pointer
    // `bpf_task_pt_regs` wants, and its saved user registers.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const u64;
    // SAFETY: (this and the two loads below) fields of `struct pt_regs` at fixed x86-64 offsets inside it;
    // the verifier checks each against the type and makes the load fault-checked.
    let nr = unsafe { core::ptr::read_volatile(regs.add(PT_REGS_ORIG_AX as usize / 8)) };
    // SAFETY: as above (`si`).
    let arg = unsafe { core::ptr::read_volatile(regs.add(PT_REGS_SI as usize / 8)) };
    match nr {
        SYS_READ | SYS_WRITE | SYS_SENDTO | SYS_RECVFROM => Bytes::buffer(arg),
        // SAFETY: as above (`dx`).
        SYS_READV | SYS_WRITEV => Bytes::iovecs(arg, unsafe {
            core::ptr::read_volatile(regs.add(PT_REGS_DX as usize / 8))
        }),
        SYS_SENDMSG | SYS_RECVMSG => match (
            user::<u64>(arg + MSGHDR_IOV),
            user::<u64>(arg + MSGHDR_IOV + 8),
        ) {
            (Some(iov), Some(count)) => Bytes::iovecs(iov, count),
            _ => Bytes::unreadable(),
        },
        _ => Bytes::unreadable(),
    }
}

#[inline(always)]
fn user<T>(addr: u64) -> Option<T> {
    // SAFETY: the helper copies from a user address into a stack value and returns an error
    // instead of faulting; every `T` read here is an integer or an array of bytes.
    unsafe { bpf_probe_read_user(addr as *const T) }.ok()
}

/// Moves the connection's state on by what its bytes say; true if the state changed and must
/// be stored.
#[inline(always)]
fn on_data(slot: u32, conn: &mut HttpConn, incoming: bool, p: &[u8; PREFIX], len: usize) -> bool {
    // A server reads requests and writes responses; a client the reverse.
    let (request_side, response_side) = if incoming {
        (HTTP_ROLE_SERVER, HTTP_ROLE_CLIENT)
    } else {
        (HTTP_ROLE_CLIENT, HTTP_ROLE_SERVER)
    };
    // HTTP/2's connection preface: from here on, frames (`http2.rs`; the caller walks this
    // I/O's after the preface). Who sent it is the client.
    if conn.role == 0 && len >= 8 && word(p) == H2_PREFACE.0 {
        add(slot, Counter::HttpH2Connections, 1);
        conn.role = HTTP_H2;
        conn.h2_side = request_side;
        conn.h2[incoming as usize].left = PREFACE_LEN;
        return true;
    }
    let may_start_request = conn.role == 0 || (conn.role == request_side && conn.pending == 0);
    if may_start_request && len <= METHOD_MAX && method_prefix(p, len) {
        carry(conn, incoming, p, len);
        return true;
    }
    let method = method(p, len);
    if method != 0 && (conn.role == 0 || conn.role == request_side) {
        if conn.pending != 0 {
            add(slot, Counter::HttpPipelined, 1);
            return false;
        }
        conn.role = request_side;
        conn.pending = 1;
        conn.method = method;
        // SAFETY: the clock helper takes no argument and touches no memory.
        conn.start_ns = unsafe { bpf_ktime_get_ns() };
        let started = if request_side == HTTP_ROLE_SERVER {
            Counter::HttpServerStarted
        } else {
            Counter::HttpClientStarted
        };
        add(slot, started, 1);
        return true;
    }
    if conn.role != response_side || conn.pending == 0 {
        // Nothing pending: bodies, non-HTTP traffic and bytes that merely look like a status
        // line pass untouched, except on a connection with no HTTP seen yet, where a status
        // line answers a request from before the window.
        if conn.role == 0 && is_status_start(p, len) {
            add(slot, Counter::HttpUnmatchedResponses, 1);
            conn.role = response_side;
            return true;
        }
        return false;
    }
    // The first bytes of the response to the pending request.
    if len < STATUS_LEN && status_prefix(p, len) {
        carry(conn, incoming, p, len);
        return true;
    }
    let Some(status) = status(p, len) else {
        let unparsable = if conn.role == HTTP_ROLE_SERVER {
            Counter::HttpServerUnparsable
        } else {
            Counter::HttpClientUnparsable
        };
        add(slot, unparsable, 1);
        conn.pending = 0;
        return true;
    };
    if (100..200).contains(&status) && status != 101 {
        add(slot, Counter::HttpInterim, 1);
        return false;
    }
    // SAFETY: no argument, no memory.
    let now = unsafe { bpf_ktime_get_ns() };
    if status == 101 {
        // Switched to HTTP/2 (`h2c`) or another protocol: the next bytes say which, and so
        // whether this `101` is the response (`h2c.rs`).
        conn.h2_side = conn.role;
        conn.role = HTTP_H2C_PENDING;
        conn.upgraded_ns = now;
        conn.pending = 0;
        return true;
    }
    let took = now.saturating_sub(conn.start_ns);
    record(
        HttpKey {
            slot,
            status,
            role: conn.role,
            method: conn.method,
            tls: conn.tls,
            // `HTTP/1.0` or `HTTP/1.1` (`HTTP_VERSIONS`).
            version: if p[7] == b'0' { 1 } else { 2 },
            _pad: [0; 2],
        },
        took,
    );
    conn.pending = 0;
    if conn.method == HTTP_METHOD_CONNECT && (200..300).contains(&status) {
        conn.role = HTTP_UPGRADED; // a tunnel from here on
    }
    true
}

/// Keeps a start too short to read, to be completed by the next bytes in the same direction.
#[inline(always)]
fn carry(conn: &mut HttpConn, incoming: bool, p: &[u8; PREFIX], len: usize) {
    conn.carry = *p;
    conn.carry_len = len as u8;
    conn.carry_in = incoming as u8;
}

/// A new key's first value (read-only data: too large for the 512-byte BPF stack).
static ZERO_STAT: HttpStat = HttpStat {
    count: 0,
    sum_ns: 0,
    buckets: [0; HTTP_BUCKETS as usize],
};

#[inline(always)]
pub fn record(key: HttpKey, took_ns: u64) {
    let stat = match HTTP_REQS.get_ptr_mut(&key) {
        Some(s) => s,
        None => {
            let _ = HTTP_REQS.insert(&key, &ZERO_STAT, 0);
            match HTTP_REQS.get_ptr_mut(&key) {
                Some(s) => s,
                None => return,
            }
        }
    };
    let bucket = log2_bucket(took_ns, HTTP_BUCKETS) as usize;
    // SAFETY: `stat` is this CPU's copy of the key's value, valid for the program's run (the
    // map frees removed elements only after it); `bucket` is bounds-checked.
    unsafe {
        (*stat).count += 1;
        (*stat).sum_ns += took_ns;
        if bucket < HTTP_BUCKETS as usize {
            (*stat).buckets[bucket] += 1;
        }
    }
}
