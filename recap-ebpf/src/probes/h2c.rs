//! `http`'s `Upgrade: h2c`: a request answered `101 Switching Protocols` leaves its connection
//! `HTTP_H2C_PENDING` until the next bytes say what follows. HTTP/2 if the client's are the
//! connection preface or the server's a SETTINGS frame (each side's first bytes after the
//! upgrade: RFC 7540 §3.2; RFC 9113 deprecates the upgrade, which servers such as Apache
//! httpd still offer); then the connection is walked as HTTP/2 from there
//! (`http2.rs`), its upgraded request becomes stream 1's (user space is told, and counts its
//! response from stream 1's HEADERS), and the `101` is interim, as HTTP/2 says. Anything else
//! (a WebSocket's frames, the connection's end): the `101` was the response, recorded as
//! HTTP/1.1's are, and the connection is another protocol's from there (`HTTP_UPGRADED`).

use aya_ebpf::helpers::{
    bpf_probe_read_user,
    generated::{bpf_loop, bpf_probe_read_user as read_user_raw},
};
use recap_common::{
    parse::http2::is_settings, Counter, HttpConn, HttpKey, TlsKey, H2_FRAME_HEADER, HTTP_H2,
    HTTP_ROLE_CLIENT, HTTP_UPGRADED,
};

use super::{
    http::record,
    http2::{self, Bytes, PREFACE_LEN},
};
use crate::maps::{add, H2C_HEADS};

/// Bytes at the start of a `101`'s I/O searched for the end of its head (`\r\n\r\n`): frames
/// the server wrote with it come after that.
pub const HEAD_MAX: usize = 256;

/// The `101`'s own I/O (`len` bytes): if frames follow its head in it (a server that writes
/// its SETTINGS with the `101`), they decide now; if the head ends it, the next I/O does.
/// True if this I/O's bytes are now HTTP/2 frames to walk (past the head).
#[inline(always)]
pub fn after_101(
    slot: u32,
    conn: &mut HttpConn,
    incoming: bool,
    bytes: &Bytes,
    len: u64,
    id: &impl Fn() -> TlsKey,
) -> bool {
    let Some((at, seg_len)) = bytes.first_segment(len) else {
        not_h2c(conn);
        return false;
    };
    match head_end(at, seg_len) {
        Some(head) if head == len => false,
        Some(head) if head < seg_len && settings_at(at + head) => {
            become_h2(slot, conn, incoming, head, id);
            true
        }
        // Not found in the bytes searched, or something else after it.
        _ => {
            not_h2c(conn);
            false
        }
    }
}

/// The connection's first I/O after its `101`. True if its bytes are HTTP/2 frames to walk.
#[inline(always)]
pub fn next_io(
    slot: u32,
    conn: &mut HttpConn,
    incoming: bool,
    bytes: &Bytes,
    len: u64,
    id: &impl Fn() -> TlsKey,
) -> bool {
    let responses_in = conn.h2_side == HTTP_ROLE_CLIENT;
    let h2 = match bytes.first_segment(len) {
        Some((at, _)) if incoming == responses_in => settings_at(at),
        Some((at, _)) => http2::preface_at(at),
        None => false,
    };
    if h2 {
        become_h2(slot, conn, incoming, 0, id);
    } else {
        not_h2c(conn);
    }
    h2
}

/// The connection ends before its bytes said what followed its `101`: that was its response.
#[inline(always)]
pub fn closed(conn: &HttpConn) {
    let mut conn = *conn;
    not_h2c(&mut conn);
}

/// HTTP/2 from here: the request direction starts with the client's preface (still to come,
/// or at this I/O's start), the response direction at a frame, `skip` bytes into this I/O if
/// it is that direction's. The caller walks this I/O.
#[inline(always)]
fn become_h2(slot: u32, conn: &mut HttpConn, incoming: bool, skip: u64, id: &impl Fn() -> TlsKey) {
    let responses_in = conn.h2_side == HTTP_ROLE_CLIENT;
    let (requests, responses) = if responses_in { (0, 1) } else { (1, 0) };
    // Field by field: a whole-array store is a `memset`, whose returned stack pointer LLVM
    // left in R0 at the program's exit (refused by the verifier).
    for f in conn.h2.iter_mut() {
        f.left = 0;
        f.seq = 0;
        f.ship = 0;
        f.hdr_len = 0;
        f.lost = 0;
    }
    conn.h2[requests].left = PREFACE_LEN;
    if incoming == responses_in {
        conn.h2[responses].left = skip as u32;
    }
    conn.role = HTTP_H2;
    add(slot, Counter::HttpInterim, 1);
    add(slot, Counter::HttpH2Connections, 1);
    http2::upgraded(conn, &id());
}

/// No HTTP/2 after the `101`: it answered the request, and what follows is not HTTP.
#[inline(always)]
fn not_h2c(conn: &mut HttpConn) {
    record(
        HttpKey {
            slot: conn.slot,
            status: 101,
            role: conn.h2_side,
            method: conn.method,
            tls: conn.tls,
            version: 2, // HTTP/1.1: the only one with `101`
            _pad: [0; 2],
        },
        conn.upgraded_ns.saturating_sub(conn.start_ns),
    );
    conn.role = HTTP_UPGRADED;
    conn.h2_side = 0;
}

/// Whether a SETTINGS frame that opens a side's HTTP/2 begins at `at` in user memory.
#[inline(always)]
fn settings_at(at: u64) -> bool {
    // SAFETY: the helper copies from a user address into a stack value and returns an error
    // instead of faulting.
    unsafe { bpf_probe_read_user(at as *const [u8; H2_FRAME_HEADER]) }
        .is_ok_and(|h| is_settings(&h))
}

/// This CPU's search of a `101`'s head (`H2C_HEADS`): the bytes, how many, what was found.
#[repr(C)]
pub struct HeadSearch {
    bytes: [u8; HEAD_MAX],
    n: u64,
    /// The offset past `\r\n\r\n`, or 0.
    end: u64,
}

/// Where the head that starts at or before `at` ends (the offset past its `\r\n\r\n`), in the
/// first `min(n, HEAD_MAX)` bytes at `at`. In `bpf_loop`: the verifier checks one step, not
/// every unrolled one (a loop here took one program past its million instructions).
#[inline(always)]
fn head_end(at: u64, n: u64) -> Option<u64> {
    let n = if n < HEAD_MAX as u64 {
        n as u32
    } else {
        HEAD_MAX as u32
    };
    if n < 4 {
        return None;
    }
    let entry = H2C_HEADS.get_ptr_mut(0)?;
    // SAFETY: this CPU's entry, used by one program run at a time; `n` ≤ HEAD_MAX, the size
    // of its `bytes`; the user address is only read by the helper, which returns an error
    // instead of faulting.
    unsafe {
        if read_user_raw((*entry).bytes.as_mut_ptr().cast(), n, at as *const _) != 0 {
            return None;
        }
        (*entry).n = n as u64;
        (*entry).end = 0;
    }
    let mut ctx: *mut HeadSearch = entry;
    // SAFETY: `step` is a BPF callback with the signature bpf_loop wants; `ctx` outlives it.
    unsafe {
        bpf_loop(
            n - 3,
            step as *mut core::ffi::c_void,
            &mut ctx as *mut *mut HeadSearch as *mut core::ffi::c_void,
            0,
        )
    };
    // SAFETY: the same entry, now that the loop's callbacks are done with it.
    let end = unsafe { (*entry).end };
    (end != 0).then_some(end)
}

/// One position of the search: 1 (stop) where `\r\n\r\n` starts.
unsafe extern "C" fn step(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `ctx` is `head_end`'s `&mut ctx`, handed back unchanged: this CPU's entry.
    let s = unsafe { &mut **(ctx as *mut *mut HeadSearch) };
    let i = (index & 0xff) as usize;
    if i + 3 >= HEAD_MAX || i as u64 + 4 > s.n {
        return 1;
    }
    if s.bytes[i] == b'\r'
        && s.bytes[i + 1] == b'\n'
        && s.bytes[i + 2] == b'\r'
        && s.bytes[i + 3] == b'\n'
    {
        s.end = i as u64 + 4;
        return 1;
    }
    0
}
