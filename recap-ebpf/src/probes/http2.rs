//! `http` over HTTP/2: after a connection's preface (`http::on_data`), its bytes are walked as
//! frames, per direction, across I/O calls (a frame header cut by the end of one read is kept
//! and completed by the next). The frames that carry requests and responses (header blocks,
//! `RST_STREAM`, `GOAWAY`) are handed to user space whole, in order, through `HTTP2_FRAMES`:
//! their headers are HPACK-coded against a per-connection table that only a decoder seeing
//! every block can keep (`recap-agent/src/http2`). DATA frames, the bulk of the bytes, are
//! stepped over by their length and never copied; that also makes a payload sent with
//! `sendfile` (nginx) harmless, as its bytes need not be read.
//!
//! What cannot be walked exactly is said, never guessed: a direction whose framing is lost
//! (more frames in one I/O than `STEPS`, or a frame header in bytes that cannot be read) is not
//! read from there on (`Counter::Http2Desync`); an event that finds the ring buffer full is
//! counted (`Counter::Http2Lost`) and leaves a gap in `seq` for user space to see.

use aya_ebpf::helpers::{
    bpf_ktime_get_ns,
    generated::{bpf_loop, bpf_probe_read_user as read_user_raw},
};
use recap_common::{
    Counter, H2Event, H2Framing, HttpConn, TlsKey, H2_CHUNK, H2_CLOSED, H2_FRAME_HEADER,
    H2_SHIPPED_TYPES, H2_START, H2_UPGRADED, HTTP_H2,
};

use crate::maps::{add, H2_WALKS, HTTP2_FRAMES};

/// Steps one I/O may take at most (a frame header, a piece of payload, an iovec each).
const STEPS: u32 = 64;
/// `struct iovec`: base, then length.
const IOVEC: u64 = 16;
/// iovecs followed per I/O at most.
const MAX_IOVECS: u64 = 32;
/// The client's preface, `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`: not frames.
pub const PREFACE_LEN: u32 = 24;
/// Unread bytes in `HTTP2_FRAMES` from which an event wakes user space's drain thread. Below
/// this an event is submitted without a wake-up: each wake-up is an interrupt and a thread
/// woken on another CPU, ~4 µs per event on the test VM (75 % of nginx's HTTP/2 req/s went
/// to it); the thread drains the rest at its poll timeout, and the engine before it reads a
/// window, so no count waits for it. 64 KiB is ~200 events, 1/16 of the ring.
const WAKE_AT_BYTES: u64 = 64 << 10;
/// `bpf_ringbuf_query`'s and `bpf_ringbuf_submit`'s flags.
const BPF_RB_AVAIL_DATA: u64 = 0;
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;

/// How to submit an event: waking the drain thread only once enough is waiting.
#[inline(always)]
fn submit_flags() -> u64 {
    if HTTP2_FRAMES.query(BPF_RB_AVAIL_DATA) >= WAKE_AT_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// Where an I/O's bytes are in user memory. A struct with every field always set, not an
/// enum: LLVM leaves an enum's unused fields undefined, and the verifier refuses a read of an
/// uninitialised register even on a path that ignores it.
#[derive(Clone, Copy)]
pub struct Bytes {
    pub kind: u64,
    /// The buffer, or the iovec array.
    pub at: u64,
    /// iovecs in the array.
    pub count: u64,
}

/// One buffer (read, write, send, recv; a TLS call's plaintext).
pub const BUFFER: u64 = 0;
/// An iovec array (readv, writev, sendmsg, recvmsg).
pub const IOVECS: u64 = 1;
/// Not behind a syscall buffer (sendfile, splice, io_uring): only steppable over.
pub const UNREADABLE: u64 = 2;

impl Bytes {
    #[inline(always)]
    pub fn buffer(at: u64) -> Self {
        Bytes {
            kind: BUFFER,
            at,
            count: 0,
        }
    }
    #[inline(always)]
    pub fn iovecs(at: u64, count: u64) -> Self {
        Bytes {
            kind: IOVECS,
            at,
            count,
        }
    }
    #[inline(always)]
    pub fn unreadable() -> Self {
        Bytes {
            kind: UNREADABLE,
            at: 0,
            count: 0,
        }
    }

    /// Where the I/O's first bytes are, and how many are there (of `len` in all): the
    /// buffer, or the first iovec. None if they cannot be read.
    #[inline(always)]
    pub fn first_segment(&self, len: u64) -> Option<(u64, u64)> {
        match self.kind {
            BUFFER => Some((self.at, len)),
            IOVECS if self.count > 0 => {
                let (base, seg) = iovec(self.at)?;
                Some((base, if seg < len { seg } else { len }))
            }
            _ => None,
        }
    }
}

/// True if HTTP/2's connection preface begins at `at` in user memory (its first 8 bytes).
#[inline(always)]
pub fn preface_at(at: u64) -> bool {
    // SAFETY: the helper copies from a user address into a stack value and returns an error
    // instead of faulting.
    unsafe { aya_ebpf::helpers::bpf_probe_read_user(at as *const [u8; 8]) }
        .is_ok_and(|w| u64::from_le_bytes(w) == recap_common::parse::http::H2_PREFACE.0)
}

/// One I/O's walk, as `step` moves it on: the direction's framing (copied out of the
/// connection and back), what names the connection in events, and where the walk is. It
/// lives in a map (`H2_WALKS`, one per CPU) during the walk, not on the stack: the verifier
/// does not follow values in map memory, so `bpf_loop`'s callback is checked once instead of
/// once per distinct step, and the stack stays free for the callers.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Walk {
    f: H2Framing,
    id: TlsKey,
    epoch: u64,
    slot: u32,
    incoming: u8,
    side: u8,
    tls: u8,
    readable: u8,
    base: u64,
    seg_left: u64,
    iov: u64,
    iov_count: u64,
    next_iov: u64,
    total: u64,
}

/// Moves the connection's framing in direction `incoming` on by `len` bytes at `bytes`,
/// handing the shipped frames to user space as connection `id`. The steps run in `bpf_loop`,
/// so the verifier checks one step, not every unrolled one.
#[inline(always)]
pub fn walk(conn: &mut HttpConn, id: &TlsKey, incoming: bool, bytes: &Bytes, len: u64) {
    let dir = incoming as usize;
    let slot = conn.slot;
    if conn.h2[dir].lost != 0 {
        return;
    }
    let (base, seg_left, readable, iov, iov_count) = match bytes.kind {
        BUFFER => (bytes.at, len, 1, 0, 0),
        IOVECS => (0, 0, 1, bytes.at, bytes.count),
        _ => (0, len, 0, 0, 0),
    };
    // Set in place, field by field: a `Walk` built on the stack would take a quarter of it.
    let Some(stored) = H2_WALKS.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's entry, used by one program run at a time (no program nests in it).
    let w = unsafe { &mut *stored };
    w.f = conn.h2[dir];
    w.id = *id;
    w.epoch = conn.epoch;
    w.slot = slot;
    w.incoming = incoming as u8;
    w.side = conn.h2_side;
    w.tls = conn.tls;
    w.readable = readable;
    w.base = base;
    w.seg_left = seg_left;
    w.iov = iov;
    w.iov_count = iov_count;
    w.next_iov = 0;
    w.total = len;
    let mut at: *mut Walk = stored;
    // SAFETY: `step` is a BPF callback with the signature bpf_loop wants; `at` outlives it, and
    // `w` is not used while the loop runs.
    unsafe {
        bpf_loop(
            STEPS,
            step as *mut core::ffi::c_void,
            &mut at as *mut *mut Walk as *mut core::ffi::c_void,
            0,
        )
    };
    // SAFETY: the same entry, borrowed again now that the loop's callbacks are done with it.
    let w = unsafe { &mut *stored };
    if w.total > 0 && w.f.lost == 0 {
        w.f.lost = 1;
        add(slot, Counter::Http2Desync, 1);
    }
    conn.h2[dir] = w.f;
}

/// One step of a walk: an iovec, a piece of payload, or a frame header. 0: go on; 1: stop
/// (done, or the framing is lost: `walk` sees bytes left).
unsafe extern "C" fn step(_index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `ctx` is `walk`'s `&mut at`, handed back by bpf_loop unchanged: a pointer to this
    // CPU's `H2_WALKS` entry, which nothing else uses during the loop.
    let w = unsafe { &mut **(ctx as *mut *mut Walk) };
    if w.total == 0 {
        return 1;
    }
    if w.seg_left == 0 {
        if w.next_iov >= w.iov_count || w.next_iov >= MAX_IOVECS {
            return 1;
        }
        let Some((b, l)) = iovec(w.iov + w.next_iov * IOVEC) else {
            return 1;
        };
        w.next_iov += 1;
        w.base = b;
        w.seg_left = if l < w.total { l } else { w.total };
        return 0;
    }
    if w.f.left > 0 {
        let mut n = if (w.f.left as u64) < w.seg_left {
            w.f.left as u64
        } else {
            w.seg_left
        };
        if w.f.ship != 0 {
            if w.readable == 0 {
                return 1;
            }
            if n > H2_CHUNK as u64 {
                n = H2_CHUNK as u64;
            }
            if !ship(w, n, None) {
                return 1;
            }
        }
        w.f.left -= n as u32;
        advance(w, n);
        return 0;
    }
    if w.readable == 0 {
        return 1;
    }
    // A frame header, perhaps begun at the end of the previous I/O (at most 8 bytes kept; the
    // mask's 4th bit keeps LLVM from turning the stack offset's `add` into an `or`, which the
    // verifier refuses on a pointer).
    let have = (w.f.hdr_len & 15) as u64;
    if have > 8 {
        return 1;
    }
    let need = H2_FRAME_HEADER as u64 - have;
    let n = if need < w.seg_left { need } else { w.seg_left };
    let mut h = [0u8; 24];
    h[..8].copy_from_slice(&w.f.hdr);
    if n == 0
        || n > H2_FRAME_HEADER as u64
        // SAFETY: `have` ≤ 8 and `n` ≤ 9, so the bytes written at `have` stay in `h` (24);
        // the user address is only read by the helper, which returns an error, not a fault.
        || unsafe {
            read_user_raw(
                h.as_mut_ptr().add(have as usize) as *mut core::ffi::c_void,
                n as u32,
                w.base as *const core::ffi::c_void,
            )
        } != 0
    {
        return 1;
    }
    advance(w, n);
    if have + n < H2_FRAME_HEADER as u64 {
        w.f.hdr.copy_from_slice(&h[..8]);
        w.f.hdr_len = (have + n) as u8;
        return 0;
    }
    w.f.hdr_len = 0;
    let length = (h[0] as u32) << 16 | (h[1] as u32) << 8 | h[2] as u32;
    let kind = h[3];
    w.f.left = length;
    w.f.ship = (kind <= 15 && H2_SHIPPED_TYPES & (1 << kind) != 0) as u8;
    if w.f.ship == 0 {
        return 0;
    }
    // The header, with as much of the payload as this piece of the I/O holds.
    let mut m = if (length as u64) < w.seg_left {
        length as u64
    } else {
        w.seg_left
    };
    if m > H2_CHUNK as u64 {
        m = H2_CHUNK as u64;
    }
    let mut header = [0u8; H2_FRAME_HEADER];
    header.copy_from_slice(&h[..H2_FRAME_HEADER]);
    if !ship(w, m, Some(&header)) {
        return 1;
    }
    w.f.left -= m as u32;
    advance(w, m);
    0
}

#[inline(always)]
fn advance(w: &mut Walk, n: u64) {
    w.base += n;
    w.seg_left -= n;
    w.total -= n;
}

/// Tells user space that an HTTP/2 connection ended (its streams still waiting were aborted).
#[inline(always)]
pub fn closed(conn: &HttpConn, id: &TlsKey) {
    if conn.role != HTTP_H2 {
        return;
    }
    // SAFETY: the clock helper takes no argument and touches no memory.
    notice(conn, id, H2_CLOSED, unsafe { bpf_ktime_get_ns() }, None);
}

/// Tells user space that a connection became HTTP/2 by `Upgrade: h2c` (`h2c.rs`): its
/// request, begun at `start_ns`, is stream 1's.
#[inline(always)]
pub fn upgraded(conn: &HttpConn, id: &TlsKey) {
    notice(conn, id, H2_UPGRADED, conn.start_ns, Some(conn.method));
}

/// An event of the connection itself (`start`: `H2_CLOSED`, `H2_UPGRADED`), with no frame
/// data (one byte, `data[0]`, if given). A full ring buffer loses it, counted.
#[inline(always)]
fn notice(conn: &HttpConn, id: &TlsKey, start: u8, ts_ns: u64, data: Option<u8>) {
    let Some(mut event) = HTTP2_FRAMES.reserve::<H2Event>(0) else {
        add(conn.slot, Counter::Http2Lost, 1);
        return;
    };
    // SAFETY: a reserved ring-buffer record the size of an `H2Event`, ours alone until it is
    // submitted; its fields are integers, written before they are read.
    let e = unsafe { &mut *event.as_mut_ptr() };
    e.conn = *id;
    e.ts_ns = ts_ns;
    e.epoch = conn.epoch;
    e.slot = conn.slot;
    e.seq = 0;
    e.incoming = 0;
    e.side = conn.h2_side;
    e.tls = conn.tls;
    e._pad = [0; 2];
    e.start = start;
    e.len = 0;
    if let Some(byte) = data {
        e.data[0] = byte;
        e.len = 1;
    }
    event.submit(submit_flags());
}

/// Hands `n` bytes at the walk's position (after `frame`, a frame header, if given) to user
/// space. False if they could not be read: the direction's framing is lost. A full ring
/// buffer loses the event only (a gap in `seq`).
#[inline(always)]
fn ship(w: &mut Walk, n: u64, frame: Option<&[u8; H2_FRAME_HEADER]>) -> bool {
    let Some(mut event) = HTTP2_FRAMES.reserve::<H2Event>(0) else {
        w.f.seq = w.f.seq.wrapping_add(1);
        add(w.slot, Counter::Http2Lost, 1);
        return true;
    };
    // SAFETY: as in `closed`: a reserved record, ours until submitted or discarded.
    let e = unsafe { &mut *event.as_mut_ptr() };
    e.conn = w.id;
    // SAFETY: no argument, no memory.
    e.ts_ns = unsafe { bpf_ktime_get_ns() };
    e.epoch = w.epoch;
    e.slot = w.slot;
    e.seq = w.f.seq;
    e.incoming = w.incoming;
    e.side = w.side;
    e.tls = w.tls;
    e._pad = [0; 2];
    let offset = match frame {
        Some(h) => {
            e.data[..H2_FRAME_HEADER].copy_from_slice(h);
            e.start = H2_START;
            H2_FRAME_HEADER
        }
        None => {
            e.start = 0;
            0
        }
    };
    let n = n & 0x1ff;
    if n > H2_CHUNK as u64 {
        event.discard(0);
        return false;
    }
    if n > 0
        // SAFETY: `offset` + `n` ≤ 9 + H2_CHUNK, the size of `data`; the user address is only
        // read by the helper, which returns an error instead of faulting.
        && unsafe {
            read_user_raw(
                e.data.as_mut_ptr().add(offset) as *mut core::ffi::c_void,
                n as u32,
                w.base as *const core::ffi::c_void,
            )
        } != 0
    {
        event.discard(0);
        return false;
    }
    e.len = (offset as u64 + n) as u16;
    w.f.seq = w.f.seq.wrapping_add(1);
    event.submit(submit_flags());
    true
}

#[inline(always)]
fn iovec(at: u64) -> Option<(u64, u64)> {
    let mut v = [0u64; 2];
    // SAFETY: 16 bytes into the 16-byte `v`; the user address is only read by the helper,
    // which returns an error instead of faulting.
    let r = unsafe {
        read_user_raw(
            v.as_mut_ptr() as *mut core::ffi::c_void,
            16,
            at as *const core::ffi::c_void,
        )
    };
    (r == 0).then_some((v[0], v[1]))
}
