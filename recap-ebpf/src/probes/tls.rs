//! `http` over TLS: uprobes on a TLS library's `SSL_read`/`SSL_write` (and `_ex`), attached by
//! user space for the target's processes only, hand the call's plaintext to the same HTTP/1.x
//! parser as the socket path (`http::feed`), per connection.
//!
//! No kprobe names the connection of a TLS call here. The socket I/O the library makes inside
//! the call does: `sock_send_length`/`sock_recv_length` fire in the same thread with the
//! `struct sock`, and `inside_call` stores the socket's cookie in the call. A call that makes
//! no socket I/O (a read served from the library's buffer) uses the connection its session
//! was last seen on; a session never seen doing socket I/O (Node.js drives OpenSSL through
//! memory buffers and writes the records itself) has a state of its own, by `SSL *`. The
//! plaintext is read at the call's return, when a read's buffer is filled and the byte count
//! is known.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_user,
        generated::{bpf_get_attach_cookie, bpf_get_socket_cookie},
    },
    macros::{raw_tracepoint, uprobe, uretprobe},
    programs::{ProbeContext, RawTracePointContext, RetProbeContext},
    EbpfContext,
};
use recap_common::{HttpConn, TlsCall, TlsKey, TLS_EX, TLS_WRITE};

use super::{
    http::{feed, store},
    http2,
};
use crate::{
    kernel::{task_tgid, task_tid},
    maps::{
        task_slot, window_epoch, GO_TLS_CALLS, HTTPS_CONNS, TLS_CALLS, TLS_NEW_PROCS, TLS_SESSIONS,
    },
};

/// Entry of `SSL_read(ssl, buf, num)`, `SSL_read_ex(ssl, buf, num, &readbytes)`,
/// `SSL_write(ssl, buf, num)` and `SSL_write_ex(ssl, buf, num, &written)`.
#[uprobe]
pub fn recap_tls_call(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if task_slot(pid_tgid as u32) == 0 {
        return 0;
    }
    let call = TlsCall {
        ssl: ctx.arg(0).unwrap_or(0),
        buf: ctx.arg(1).unwrap_or(0),
        count_ptr: ctx.arg(3).unwrap_or(0),
        cookie: 0,
    };
    let _ = TLS_CALLS.insert(&pid_tgid, &call, 0);
    0
}

/// Return of those: `int SSL_read/SSL_write` return the byte count or ≤ 0; the `_ex` ones 1
/// and the count in `*readbytes`/`*written`, or 0 (OpenSSL's internal `ssl_read_internal`
/// and `ssl_write_internal`, probed in their stead, > 0 or ≤ 0). The attach cookie says
/// which returned.
#[uretprobe]
pub fn recap_tls_ret(ctx: RetProbeContext) -> u32 {
    let ret: i32 = ctx.ret();
    // SAFETY: the program's own context pointer, as the helper takes it.
    let function = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    on_return(function & TLS_WRITE == 0, |call| {
        if function & TLS_EX == 0 {
            return ret as i64;
        }
        if ret <= 0 {
            return 0;
        }
        // SAFETY: the `_ex` call's fourth argument, a user address the helper only reads,
        // returning an error instead of faulting (then no bytes are counted).
        unsafe { bpf_probe_read_user(call.count_ptr as *const u64) }
            .map(|n| n as i64)
            .unwrap_or(0)
    });
    0
}

/// Go's `crypto/tls.(*Conn).Read(b []byte)` and `Write(b)`, at the `JBE` of the prologue's
/// stack check (the kernel emulates a branch: one trap), in the register ABI: the receiver in
/// RAX, `b`'s data and length in RBX and RCX. A call that grows its stack passes there twice,
/// first with the branch taken (to the code that grows it): that pass is skipped.
///
/// A write is read here, before its bytes leave: a Go program reads and writes one
/// connection from different goroutines (an HTTP client's write loop and read loop, an
/// HTTP/2 server's reader and writer), and a write read at its return could come after the
/// peer's answer to it was read. `Write` returns an error, never a short count, when it does
/// not send all of `b`. A read is recorded per goroutine (R14 holds its `g`: it may continue
/// on another thread) and read at its return, when `b` holds the bytes.
#[uprobe]
pub fn recap_gotls_in(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if task_slot(pid_tgid as u32) == 0 {
        return 0;
    }
    // SAFETY: a uprobe's context is the task's saved registers.
    let regs = unsafe { &*ctx.regs };
    // JBE is taken if CF (bit 0) or ZF (bit 6) is set.
    if regs.eflags & (1 << 0 | 1 << 6) != 0 {
        return 0;
    }
    let (conn, buf, len, g) = (regs.rax, regs.rbx, regs.rcx as i64, regs.r14);
    // SAFETY: the program's own context pointer, as the helper takes it.
    if unsafe { bpf_get_attach_cookie(ctx.as_ptr()) } & TLS_WRITE != 0 {
        plaintext(pid_tgid, conn, buf, 0, false, len);
        return 0;
    }
    let call = TlsCall {
        ssl: conn,
        buf,
        count_ptr: 0,
        cookie: 0,
    };
    let _ = GO_TLS_CALLS.insert(&goroutine(pid_tgid, g), &call, 0);
    0
}

/// A `RET` of `Read`: `n`, the bytes read, is in RAX. Go's connections do their socket I/O
/// in the runtime's poller, so a session is followed by its `*tls.Conn`, as a library's
/// without socket I/O.
#[uprobe]
pub fn recap_gotls_ret(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: as above.
    let regs = unsafe { &*ctx.regs };
    let (n, key) = (regs.rax as i64, goroutine(pid_tgid, regs.r14));
    // Two words, not the whole call, on a stack `feed` needs most of.
    // SAFETY: the two words are copied out at once, before the element is removed.
    let Some((conn, buf)) = (unsafe { GO_TLS_CALLS.get(&key) }).map(|c| (c.ssl, c.buf)) else {
        return 0;
    };
    let _ = GO_TLS_CALLS.remove(&key);
    plaintext(pid_tgid, conn, buf, 0, true, n);
    0
}

#[inline(always)]
fn goroutine(pid_tgid: u64, g: u64) -> TlsKey {
    TlsKey {
        owner: (pid_tgid >> 32) as u32,
        _pad: 0,
        id: g,
    }
}

/// `sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`: a
/// target's process runs a new program, whose TLS code user space instruments at once.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn recap_tls_exec(ctx: RawTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let old_tid = ctx.arg::<u64>(1) as u32;
    if task_slot(pid_tgid as u32) != 0 || task_slot(old_tid) != 0 {
        let _ = TLS_NEW_PROCS.output::<u32>(&((pid_tgid >> 32) as u32), 0);
    }
    0
}

/// `sched_process_fork(struct task_struct *parent, struct task_struct *child)`, in the parent:
/// a target's new process (not a thread) maps its parent's TLS code and needs probes of its own.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn recap_tls_fork(ctx: RawTracePointContext) -> i32 {
    if task_slot(bpf_get_current_pid_tgid() as u32) == 0 {
        return 0;
    }
    let child: u64 = ctx.arg(1);
    let pid = task_tid(child);
    if pid != 0 && pid == task_tgid(child) {
        let _ = TLS_NEW_PROCS.output::<u32>(&pid, 0);
    }
    0
}

/// Entry of `SSL_free(ssl)`: a session followed by its `SSL *` ends (its pending request, if
/// any, was aborted), and its pointer may serve the next session.
#[uprobe]
pub fn recap_tls_free(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let session = TlsKey {
        owner: (pid_tgid >> 32) as u32,
        _pad: 0,
        id: ctx.arg(0).unwrap_or(0),
    };
    let _ = TLS_SESSIONS.remove(&session);
    // SAFETY: the state is copied at once (plain integers), before the element is removed.
    if let Some(conn) = unsafe { HTTPS_CONNS.get(&session) }.copied() {
        let _ = HTTPS_CONNS.remove(&session);
        super::http::ended(&conn, || session);
    }
    0
}

/// Called by the socket programs for every socket I/O of a target thread: true if the thread
/// is inside a TLS call, whose connection is then `sk`.
#[inline(always)]
pub fn inside_call(pid_tgid: u64, sk: *mut core::ffi::c_void) -> bool {
    match TLS_CALLS.get_ptr_mut(&pid_tgid) {
        Some(call) => {
            // SAFETY: `call` is this thread's element, valid for the program's run; `sk` is
            // the tracepoint's BTF-typed `struct sock *`, which the cookie helper takes.
            unsafe { (*call).cookie = bpf_get_socket_cookie(sk) };
            true
        }
        None => false,
    }
}

/// The TLS state of a socket being destroyed, removed, with its key.
#[inline(always)]
pub fn forget(sk: *mut core::ffi::c_void) -> Option<(HttpConn, TlsKey)> {
    // SAFETY: `sk` is the tracepoint's BTF-typed `struct sock *`, which the helper takes.
    let key = connection(unsafe { bpf_get_socket_cookie(sk) });
    // SAFETY: copied at once, before the element is removed.
    let conn = unsafe { HTTPS_CONNS.get(&key) }.copied()?;
    let _ = HTTPS_CONNS.remove(&key);
    Some((conn, key))
}

#[inline(always)]
fn connection(cookie: u64) -> TlsKey {
    TlsKey {
        owner: 0,
        _pad: 0,
        id: cookie,
    }
}

/// Whose plaintext state a call's bytes move on: its connection's, named by the socket I/O
/// in this call or an earlier one of the session; else the session's own (a library that
/// never does socket I/O in its calls). A session first seen without socket I/O and then with
/// it (a read served from the buffer first) moves its state to the connection.
#[inline(always)]
fn state_key(session: &TlsKey, cookie: u64) -> TlsKey {
    // Each map value below is copied out or only tested for presence, never kept across an
    // update of its map.
    if cookie == 0 {
        // SAFETY: the cookie is copied (`*c`).
        return match unsafe { TLS_SESSIONS.get(session) } {
            Some(c) => connection(*c),
            None => *session,
        };
    }
    // SAFETY: copied at once.
    let known = unsafe { TLS_SESSIONS.get(session) }.copied();
    if known != Some(cookie) {
        let _ = TLS_SESSIONS.insert(session, &cookie, 0);
        let key = connection(cookie);
        if known.is_none() {
            // SAFETY: copied at once, before the insert and the removal below.
            if let Some(state) = unsafe { HTTPS_CONNS.get(session) }.copied() {
                // SAFETY: only tested for presence.
                if unsafe { HTTPS_CONNS.get(&key) }.is_none() {
                    let _ = HTTPS_CONNS.insert(&key, &state, 0);
                }
                let _ = HTTPS_CONNS.remove(session);
            }
        }
    }
    connection(cookie)
}

#[inline(always)]
fn on_return(incoming: bool, count: impl FnOnce(&TlsCall) -> i64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the call is copied at once, before the element is removed.
    let Some(call) = (unsafe { TLS_CALLS.get(&pid_tgid) }).copied() else {
        return;
    };
    let _ = TLS_CALLS.remove(&pid_tgid);
    let n = count(&call);
    plaintext(pid_tgid, call.ssl, call.buf, call.cookie, incoming, n);
}

/// `n` bytes (≤ 0: none) of plaintext at `buf`, read or written by a TLS call of session
/// `ssl` (the library's `SSL *`, Go's `*tls.Conn`) whose socket I/O named `cookie` (0: none).
#[inline(always)]
fn plaintext(pid_tgid: u64, ssl: u64, buf: u64, cookie: u64, incoming: bool, n: i64) {
    let slot = task_slot(pid_tgid as u32);
    if slot == 0 {
        return;
    }
    let session = TlsKey {
        owner: (pid_tgid >> 32) as u32,
        _pad: 0,
        id: ssl,
    };
    let key = state_key(&session, cookie);
    if n <= 0 {
        return;
    }
    let epoch = window_epoch(slot);
    let stored = HTTPS_CONNS.get_ptr_mut(&key);
    let mut conn = match stored {
        // SAFETY: (both) `c` is the element of `key`, valid for the program's run; plain
        // integers, read and copied out.
        Some(c) if unsafe { (*c).slot == slot && (*c).epoch == epoch } => unsafe { *c },
        _ => HttpConn {
            epoch,
            slot,
            tls: 1,
            ..Default::default()
        },
    };
    if feed(
        slot,
        &mut conn,
        incoming,
        http2::Bytes::buffer(buf),
        n as usize,
        || key,
    ) {
        match stored {
            Some(c) => store(c, &conn, incoming),
            None => {
                let _ = HTTPS_CONNS.insert(&key, &conn, 0);
            }
        }
    }
}
