//! One HTTP/2 connection as the target sees it: its two directions reassembled from the
//! kernel's events into frames, header blocks decoded (`hpack`), and its streams followed from
//! request to response into a window's `Tally`.
//!
//! Server side (the target read the preface): requests come in, responses go out; a client
//! the reverse. A request starts at its HEADERS; its HTTP duration ends at the first final
//! `:status` (as HTTP/1.x's ends at the status line); a gRPC call ends at its trailers
//! (`grpc-status`), so a streaming call counts once, with its whole duration. A response
//! whose request was not seen is `unmatched`; a stream reset, refused by GOAWAY or cut by the
//! connection's end before its response is `aborted`.

use std::collections::BTreeMap;

use recap_common::{
    Counter, H2Event, H2_CLOSED, H2_START, H2_UPGRADED, HTTP_METHODS, HTTP_ROLE_SERVER,
};

use super::{
    hpack::{Decoder, Field},
    tally::Tally,
};

const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const PUSH_PROMISE: u8 = 5;
const GOAWAY: u8 = 7;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// Streams followed per connection at most (the protocol's usual concurrency is 100-250).
const MAX_STREAMS: usize = 1024;
/// A header block longer than this is not kept (it is stepped over, its HPACK state lost).
const MAX_BLOCK: usize = 256 * 1024;

/// A field's value, or what stands for it when it cannot be known.
pub const UNKNOWN: &str = "unknown";

#[derive(Debug)]
struct Stream {
    start_ns: u64,
    method: &'static str,
    path: Option<String>,
    /// A gRPC call (`content-type: application/grpc`); `None`: not known (the field was coded
    /// against state from before the window) until a `grpc-status` says so.
    grpc: Option<bool>,
    /// The call's `grpc-timeout`, in ns (a client's deadline).
    deadline_ns: Option<u64>,
    answered: bool,
}

/// One direction: the frame being reassembled and the HPACK state of its encoder.
#[derive(Debug)]
struct Direction {
    next_seq: u32,
    /// The current frame's header and the payload so far.
    frame: Vec<u8>,
    /// Waiting for a frame's start after a gap.
    resync: bool,
    hpack: Decoder,
    /// A header block continued in CONTINUATION frames: its stream, its first frame's type
    /// and flags, and the fragment so far.
    block: Option<(u32, u8, u8, Vec<u8>)>,
}

impl Direction {
    /// `from_start`: the connection's preface was seen (its HPACK history is whole).
    fn new(seq: u32, from_start: bool) -> Self {
        Direction {
            next_seq: seq,
            frame: Vec::new(),
            resync: false,
            hpack: if seq == 0 && from_start {
                Decoder::new()
            } else {
                Decoder::joined()
            },
            block: None,
        }
    }
}

#[derive(Debug)]
pub struct Conn {
    pub epoch: u64,
    server: bool,
    /// False for a connection joined mid-stream (`Counter::Http2Joined`) until a header block
    /// says which way requests go; until then its frames are checked to be HTTP/2's.
    side_known: bool,
    /// A joined connection whose frames turned out not to be HTTP/2: ignored to its end.
    rejected: bool,
    tls: bool,
    /// 0: sent by the target; 1: received.
    dirs: [Direction; 2],
    streams: BTreeMap<u32, Stream>,
    /// The first stream whose request the window saw: streams are opened in increasing
    /// order, so a response on a stream below it answers a request from before the window.
    first_request: Option<u32>,
    /// The newest event's time (0 before the first).
    pub last_ns: u64,
}

/// A complete frame: type, flags, stream, payload.
struct Frame<'a> {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: &'a [u8],
}

impl Conn {
    pub fn new(e: &H2Event) -> Self {
        // A side of 0: joined mid-stream, so both directions' HPACK history is unknown.
        let side_known = e.side != 0;
        let seq = |incoming: u8| if e.incoming == incoming { e.seq } else { 0 };
        let dir = |incoming: u8| Direction::new(seq(incoming), side_known);
        Conn {
            epoch: e.epoch,
            server: e.side == HTTP_ROLE_SERVER,
            side_known,
            rejected: false,
            tls: e.tls != 0,
            dirs: [dir(0), dir(1)],
            streams: BTreeMap::new(),
            first_request: None,
            last_ns: 0,
        }
    }

    /// Moves the connection on by one kernel event; true if the connection ended.
    pub fn on_event(&mut self, e: &H2Event, tally: &mut Tally) -> bool {
        if self.last_ns == 0 && !self.side_known {
            tally.count(Counter::Http2Joined, 1);
        }
        self.last_ns = e.ts_ns;
        if e.start == H2_CLOSED {
            self.end(tally);
            return true;
        }
        if e.start == H2_UPGRADED {
            self.upgraded(e);
            return false;
        }
        if self.rejected {
            return false;
        }
        let d = (e.incoming & 1) as usize;
        let dir = &mut self.dirs[d];
        if e.seq != dir.next_seq {
            // Events were lost: the frame in progress is gone, and with it the HPACK state.
            dir.frame.clear();
            dir.block = None;
            dir.resync = true;
            dir.hpack.lose_history();
        }
        dir.next_seq = e.seq.wrapping_add(1);
        let data = &e.data[..(e.len as usize).min(e.data.len())];
        if e.start == H2_START {
            dir.frame.clear();
            dir.resync = false;
        } else if dir.resync {
            return false;
        }
        dir.frame.extend_from_slice(data);
        if dir.frame.len() < 9 {
            return false;
        }
        let f = &dir.frame;
        let length = (f[0] as usize) << 16 | (f[1] as usize) << 8 | f[2] as usize;
        if f.len() < 9 + length {
            if length > MAX_BLOCK {
                dir.frame.clear();
                dir.resync = true;
                dir.hpack.lose_history();
            }
            return false;
        }
        let frame = std::mem::take(&mut dir.frame);
        let kind = frame[3];
        let flags = frame[4];
        let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        self.on_frame(
            d,
            Frame {
                kind,
                flags,
                stream,
                payload: &frame[9..9 + length],
            },
            e.ts_ns,
            tally,
        );
        false
    }

    /// The connection became HTTP/2 by `Upgrade: h2c`: its HTTP/1.1 request (counted as
    /// started by the kernel, which read it) is stream 1's, answered on it.
    fn upgraded(&mut self, e: &H2Event) {
        let method = HTTP_METHODS
            .get(e.data[0] as usize)
            .copied()
            .filter(|m| !m.is_empty())
            .unwrap_or(UNKNOWN);
        self.first_request.get_or_insert(1);
        self.streams.insert(
            1,
            Stream {
                start_ns: e.ts_ns,
                method,
                path: None,
                // gRPC never upgrades: it speaks HTTP/2 from its first byte.
                grpc: Some(false),
                deadline_ns: None,
                answered: false,
            },
        );
    }

    fn on_frame(&mut self, d: usize, f: Frame, ts: u64, tally: &mut Tally) {
        if !self.side_known && !well_formed(&f, self.dirs[d].block.is_some()) {
            self.reject(tally);
            return;
        }
        match f.kind {
            HEADERS | PUSH_PROMISE => {
                let Some(fragment) = fragment(&f) else {
                    self.dirs[d].hpack.lose_history();
                    return;
                };
                if f.flags & END_HEADERS != 0 {
                    self.on_block(d, f.stream, f.kind, f.flags, fragment, ts, tally);
                } else {
                    self.dirs[d].block = Some((f.stream, f.kind, f.flags, fragment.to_vec()));
                }
            }
            CONTINUATION => {
                let Some((stream, kind, flags, mut block)) = self.dirs[d].block.take() else {
                    return;
                };
                if stream != f.stream || block.len() + f.payload.len() > MAX_BLOCK {
                    self.dirs[d].hpack.lose_history();
                    return;
                }
                block.extend_from_slice(f.payload);
                if f.flags & END_HEADERS != 0 {
                    self.on_block(d, stream, kind, flags, &block, ts, tally);
                } else {
                    self.dirs[d].block = Some((stream, kind, flags, block));
                }
            }
            RST_STREAM => {
                let Some(s) = self.streams.remove(&f.stream) else {
                    return;
                };
                tally.count(Counter::Http2Resets, 1);
                if !s.answered {
                    tally.count(self.aborted_counter(), 1);
                }
                if s.grpc == Some(true) {
                    // A call reset before its trailers ends with the status its client reports.
                    let by_client = (d == 0) != self.server;
                    let code = reset_status(&s, by_client, f.payload, ts);
                    let path = s.path.as_deref().unwrap_or(UNKNOWN);
                    let took = ts.saturating_sub(s.start_ns);
                    tally.grpc_call(self.server, path, Some(code), self.tls, took);
                }
            }
            GOAWAY => {
                tally.count(Counter::Http2Goaways, 1);
                // Sent by the side that answers: streams above its last one were not processed.
                let from_server = (d == 0) == self.server;
                if from_server && f.payload.len() >= 4 {
                    let last = u32::from_be_bytes([
                        f.payload[0],
                        f.payload[1],
                        f.payload[2],
                        f.payload[3],
                    ]) & 0x7fff_ffff;
                    let refused: Vec<u32> =
                        self.streams.range(last + 1..).map(|(s, _)| *s).collect();
                    for s in refused {
                        self.streams.remove(&s);
                        tally.count(Counter::Http2Resets, 1);
                        tally.count(self.aborted_counter(), 1);
                    }
                }
            }
            _ => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_block(
        &mut self,
        d: usize,
        stream: u32,
        kind: u8,
        flags: u8,
        block: &[u8],
        ts: u64,
        tally: &mut Tally,
    ) {
        let fields = self.dirs[d].hpack.decode(block).ok();
        if kind == PUSH_PROMISE {
            return; // its table updates are all it means here
        }
        if !self.side_known {
            let Some(f) = &fields else {
                self.reject(tally);
                return;
            };
            match requests_go(f) {
                // Requests in this direction: received by a server, sent by a client.
                Some(true) => self.server = d == 1,
                Some(false) => self.server = d == 0,
                None => {
                    // Its pseudo-fields came from state before the window (or it is trailers):
                    // which way it went, and so the request it was part of, is not known.
                    tally.count(Counter::Http2Unknown, 1);
                    return;
                }
            }
            self.side_known = true;
        }
        let requests_in = self.server;
        let is_request = (d == 1) == requests_in;
        if is_request {
            self.on_request(stream, fields.as_deref(), ts, tally);
        } else {
            self.on_response(stream, flags, fields.as_deref(), ts, tally);
        }
    }

    fn on_request(&mut self, stream: u32, fields: Option<&[Field]>, ts: u64, tally: &mut Tally) {
        if self.streams.contains_key(&stream) {
            return; // the request's trailers
        }
        let method = match fields.and_then(|f| value(f, b":method")) {
            Some(Some(m)) => known_method(&m),
            _ => UNKNOWN,
        };
        let path = fields.and_then(|f| value(f, b":path")).flatten();
        let grpc = match fields.map(|f| value(f, b"content-type")) {
            Some(Some(Some(t))) => Some(t.starts_with("application/grpc")),
            Some(None) => Some(false),
            _ => None,
        };
        let deadline_ns = fields
            .and_then(|f| value(f, b"grpc-timeout"))
            .flatten()
            .and_then(|t| grpc_timeout_ns(&t));
        if method == UNKNOWN || grpc.is_none() {
            tally.count(Counter::Http2Unknown, 1);
        }
        if self.streams.len() >= MAX_STREAMS {
            // Oldest first out: its request stays counted as started, never as answered.
            if let Some(oldest) = self.streams.keys().next().copied() {
                self.streams.remove(&oldest);
            }
        }
        tally.count(self.started_counter(), 1);
        self.first_request.get_or_insert(stream);
        self.streams.insert(
            stream,
            Stream {
                start_ns: ts,
                method,
                path,
                grpc,
                deadline_ns,
                answered: false,
            },
        );
    }

    fn on_response(
        &mut self,
        stream: u32,
        flags: u8,
        fields: Option<&[Field]>,
        ts: u64,
        tally: &mut Tally,
    ) {
        let Some(s) = self.streams.get_mut(&stream) else {
            if self.first_request.is_some_and(|first| stream >= first) {
                // A stream of the window already ended (reset while this was on its way).
                return;
            }
            // Headers of a response whose request was not seen (the first of it only; trailers
            // have no `:status`).
            if fields.is_some_and(|f| matches!(value(f, b":status"), Some(Some(_)))) {
                tally.count(Counter::HttpUnmatchedResponses, 1);
            }
            return;
        };
        let took = ts.saturating_sub(s.start_ns);
        let status = fields.and_then(|f| value(f, b":status"));
        let grpc_status = fields.and_then(|f| value(f, b"grpc-status"));
        if !s.answered {
            let code = match (&status, fields) {
                (Some(Some(v)), _) => Some(v.parse::<u16>().unwrap_or(0)),
                // Unknown: the field came from HPACK state not seen, or the block did not decode.
                (Some(None), _) | (None, None) => Some(0),
                (None, Some(_)) => None, // trailers before any response headers
            };
            match code {
                Some(c) if (100..200).contains(&c) => {
                    tally.count(Counter::HttpInterim, 1);
                    return;
                }
                Some(c) => {
                    if c == 0 {
                        tally.count(Counter::Http2Unknown, 1);
                    }
                    s.answered = true;
                    tally.request(self.server, s.method, c, self.tls, took);
                }
                None => {}
            }
        }
        let ended = flags & END_STREAM != 0;
        if s.grpc.is_none() && matches!(grpc_status, Some(Some(_))) {
            s.grpc = Some(true); // `grpc-status` is gRPC's alone
        }
        if s.grpc == Some(true) && (ended || grpc_status.is_some()) {
            let code = grpc_status.flatten().and_then(|v| v.parse::<u32>().ok());
            let path = s.path.clone().unwrap_or_else(|| UNKNOWN.to_string());
            tally.grpc_call(self.server, &path, code, self.tls, took);
            self.streams.remove(&stream);
        } else if (s.grpc == Some(false) && s.answered) || ended {
            // The rest of an HTTP response (its body) says nothing more; a call not known to
            // be gRPC's ends with its stream (its request counted as HTTP's only).
            self.streams.remove(&stream);
        }
    }

    /// The connection ended: streams still waiting for their response were aborted.
    fn end(&mut self, tally: &mut Tally) {
        let waiting = self
            .streams
            .values()
            .filter(|s| !s.answered || s.grpc == Some(true))
            .count() as u64;
        tally.count(self.aborted_counter(), waiting);
        self.streams.clear();
    }

    /// A joined connection that is not HTTP/2 after all: nothing of it is counted.
    fn reject(&mut self, tally: &mut Tally) {
        self.rejected = true;
        tally.count(Counter::Http2Desync, 1);
    }

    fn started_counter(&self) -> Counter {
        if self.server {
            Counter::HttpServerStarted
        } else {
            Counter::HttpClientStarted
        }
    }

    fn aborted_counter(&self) -> Counter {
        if self.server {
            Counter::HttpServerAborted
        } else {
            Counter::HttpClientAborted
        }
    }
}

/// The gRPC status of a call reset before its trailers, as its client reports it: its own
/// reset at (or within a tenth before: the header is rounded up) the deadline it sent is
/// DEADLINE_EXCEEDED, another reset by it CANCELLED; a reset by the server maps its error code
/// as gRPC's HTTP/2 protocol says (REFUSED_STREAM: UNAVAILABLE, CANCEL: CANCELLED,
/// ENHANCE_YOUR_CALM: RESOURCE_EXHAUSTED, INADEQUATE_SECURITY: PERMISSION_DENIED; INTERNAL).
fn reset_status(s: &Stream, by_client: bool, payload: &[u8], ts: u64) -> u32 {
    const CANCELLED: u32 = 1;
    const DEADLINE_EXCEEDED: u32 = 4;
    if by_client {
        let took = ts.saturating_sub(s.start_ns);
        return match s.deadline_ns {
            Some(d) if took >= d - d / 10 => DEADLINE_EXCEEDED,
            _ => CANCELLED,
        };
    }
    let error = payload
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    match error {
        Some(0x7) => 14,
        Some(0x8) => CANCELLED,
        Some(0xb) => 8,
        Some(0xc) => 7,
        _ => 13,
    }
}

/// `grpc-timeout` (at most 8 digits and a unit: H, M, S, m, u, n) in ns.
fn grpc_timeout_ns(v: &str) -> Option<u64> {
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let ns_per = match unit {
        "H" => 3_600_000_000_000,
        "M" => 60_000_000_000,
        "S" => 1_000_000_000,
        "m" => 1_000_000,
        "u" => 1_000,
        "n" => 1,
        _ => return None,
    };
    n.checked_mul(ns_per)
}

/// A frame of the types the kernel ships keeps RFC 9113's rules for its stream, length and
/// flags (`in_block`: a header block awaits its CONTINUATION).
fn well_formed(f: &Frame, in_block: bool) -> bool {
    match f.kind {
        HEADERS => f.stream & 1 == 1 && f.flags & !0x2d == 0 && !in_block,
        CONTINUATION => f.stream != 0 && f.flags & !END_HEADERS == 0 && in_block,
        RST_STREAM => f.stream != 0 && f.payload.len() == 4 && f.flags == 0,
        PUSH_PROMISE => f.stream != 0 && f.payload.len() >= 4 && f.flags & !0x0c == 0,
        GOAWAY => f.stream == 0 && f.payload.len() >= 8 && f.flags == 0,
        _ => false,
    }
}

/// Which way a header block went, from its pseudo-fields: `Some(true)` a request
/// (`:method`, `:path`, `:scheme`, `:authority`), `Some(false)` a response (`:status`).
fn requests_go(fields: &[Field]) -> Option<bool> {
    fields.iter().find_map(|f| match f.name.as_deref()? {
        b":method" | b":path" | b":scheme" | b":authority" => Some(true),
        b":status" => Some(false),
        _ => None,
    })
}

/// A HEADERS or PUSH_PROMISE frame's header-block fragment, without padding and priority.
fn fragment<'a>(f: &Frame<'a>) -> Option<&'a [u8]> {
    let mut p = f.payload;
    let mut pad = 0usize;
    if f.flags & PADDED != 0 {
        pad = *p.first()? as usize;
        p = &p[1..];
    }
    if f.kind == HEADERS && f.flags & PRIORITY != 0 {
        p = p.get(5..)?;
    }
    if f.kind == PUSH_PROMISE {
        p = p.get(4..)?;
    }
    p.get(..p.len().checked_sub(pad)?)
}

/// The value of the first field named `name`: `Some(None)` if a field whose name is unknown
/// may be it, or its value is unknown; `None` if there is none.
fn value(fields: &[Field], name: &[u8]) -> Option<Option<String>> {
    let mut maybe = false;
    for f in fields {
        match &f.name {
            Some(n) if n == name => {
                return Some(
                    f.value
                        .as_ref()
                        .map(|v| String::from_utf8_lossy(v).into_owned()),
                );
            }
            None => maybe = true,
            _ => {}
        }
    }
    maybe.then_some(None)
}

fn known_method(m: &str) -> &'static str {
    HTTP_METHODS[1..]
        .iter()
        .copied()
        .find(|k| *k == m)
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use recap_common::{TlsKey, H2_CHUNK, H2_FRAME_HEADER};

    use super::*;
    use crate::families::{http::summarise, raw::RawCounts};

    /// A literal field without indexing, raw strings.
    fn literal(name: &str, value: &str) -> Vec<u8> {
        assert!(
            name.len() < 127 && value.len() < 127,
            "one-byte lengths only"
        );
        let mut v = vec![0x00, name.len() as u8];
        v.extend(name.as_bytes());
        v.push(value.len() as u8);
        v.extend(value.as_bytes());
        v
    }

    struct Wire {
        seq: [u32; 2],
        ts: u64,
    }

    /// Events of a connection joined mid-stream (the kernel did not know its side).
    fn joined(mut events: Vec<H2Event>) -> Vec<H2Event> {
        for e in &mut events {
            e.side = 0;
        }
        events
    }

    impl Wire {
        /// One frame as the kernel ships it: in events of at most `H2_CHUNK` payload bytes.
        fn frame(
            &mut self,
            incoming: bool,
            kind: u8,
            flags: u8,
            stream: u32,
            payload: &[u8],
        ) -> Vec<H2Event> {
            let mut bytes = vec![
                (payload.len() >> 16) as u8,
                (payload.len() >> 8) as u8,
                payload.len() as u8,
                kind,
                flags,
            ];
            bytes.extend(stream.to_be_bytes());
            bytes.extend(payload);
            let mut out = Vec::new();
            let mut first = true;
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let n = rest.len().min(if first {
                    H2_FRAME_HEADER + H2_CHUNK
                } else {
                    H2_CHUNK
                });
                out.push(self.event(incoming, if first { H2_START } else { 0 }, &rest[..n]));
                rest = &rest[n..];
                first = false;
            }
            out
        }

        fn event(&mut self, incoming: bool, start: u8, data: &[u8]) -> H2Event {
            self.ts += 1_000;
            let d = incoming as usize;
            let mut e = H2Event {
                conn: TlsKey {
                    owner: 0,
                    _pad: 0,
                    id: 7,
                },
                ts_ns: self.ts,
                epoch: 1,
                slot: 1,
                seq: self.seq[d],
                len: data.len() as u16,
                incoming: incoming as u8,
                side: HTTP_ROLE_SERVER,
                start,
                tls: 1,
                _pad: [0; 2],
                data: [0; H2_FRAME_HEADER + H2_CHUNK],
            };
            e.data[..data.len()].copy_from_slice(data);
            self.seq[d] += 1;
            e
        }
    }

    #[test]
    fn streams_are_followed_from_request_to_response_and_trailers() {
        let mut w = Wire { seq: [0, 0], ts: 0 };
        let mut tally = Tally::new(1);
        let mut events = Vec::new();
        // Stream 1: a gRPC call, answered 200, trailers grpc-status 5.
        let mut req = vec![0x83]; // :method POST
        req.extend(literal(":path", "/echo.Echo/Say"));
        req.extend(literal("content-type", "application/grpc"));
        // A long header to cross a chunk boundary.
        req.extend(literal("x-pad", &"p".repeat(120)));
        req.extend(literal("x-pad2", &"q".repeat(120)));
        events.extend(w.frame(true, HEADERS, END_HEADERS, 1, &req));
        events.extend(w.frame(false, HEADERS, END_HEADERS, 1, &[0x88])); // :status 200
        events.extend(w.frame(
            false,
            HEADERS,
            END_HEADERS | END_STREAM,
            1,
            &literal("grpc-status", "5"),
        ));
        // Stream 3: GET, reset before its response.
        events.extend(w.frame(true, HEADERS, END_HEADERS | END_STREAM, 3, &[0x82, 0x84]));
        events.extend(w.frame(true, RST_STREAM, 0, 3, &[0, 0, 0, 8]));
        // Stream 5: a field against a table entry never made: method unknown; then 404 split
        // into HEADERS + CONTINUATION.
        events.extend(w.frame(true, HEADERS, END_HEADERS, 5, &[0xbe]));
        events.extend(w.frame(false, HEADERS, 0, 5, &[]));
        events.extend(w.frame(false, CONTINUATION, END_HEADERS, 5, &[0x8d]));
        // Stream 9: a response with no request seen, on a stream after the window's first: a
        // late frame on a stream the window saw end, not a request from before it.
        events.extend(w.frame(false, HEADERS, END_HEADERS, 9, &[0x88]));
        // Stream 13: a gRPC call with a 1 ms deadline, reset by its client 2 ms later; stream
        // 15: one reset by the server with REFUSED_STREAM.
        let mut call = vec![0x83];
        call.extend(literal(":path", "/echo.Echo/Slow"));
        call.extend(literal("content-type", "application/grpc"));
        call.extend(literal("grpc-timeout", "1m"));
        events.extend(w.frame(true, HEADERS, END_HEADERS, 13, &call));
        w.ts += 2_000_000;
        events.extend(w.frame(true, RST_STREAM, 0, 13, &[0, 0, 0, 8]));
        events.extend(w.frame(true, HEADERS, END_HEADERS, 15, &call));
        events.extend(w.frame(false, RST_STREAM, 0, 15, &[0, 0, 0, 7]));
        // Stream 11: waiting when the connection ends.
        events.extend(w.frame(true, HEADERS, END_HEADERS, 11, &[0x82, 0x84]));
        let mut conn = Conn::new(&events[0]);
        for e in &events {
            assert!(!conn.on_event(e, &mut tally));
        }
        let mut closed = w.event(false, H2_CLOSED, &[]);
        closed.seq = 0;
        assert!(conn.on_event(&closed, &mut tally));

        let mut counts = RawCounts::zeroed();
        tally.merge_into(&mut counts);
        let s = summarise(&counts);
        assert_eq!(s.server.started, 6);
        assert_eq!(s.server.count("POST", 200), 1);
        assert_eq!(s.server.count("unknown", 404), 1, "{:?}", s.server.requests);
        assert_eq!(s.server.completed, 2);
        assert_eq!(
            s.server.aborted, 4,
            "streams 3, 13, 15 reset, stream 11 cut"
        );
        assert_eq!(s.server.in_flight, 0);
        assert_eq!(s.unmatched_responses, 0);
        assert_eq!(s.http2.streams_reset, 3);
        assert_eq!(s.http2.unknown_fields, 1);
        assert!(s.server.requests.iter().all(|g| g.version == "2" && g.tls));
        assert_eq!(s.grpc.count(true, "echo.Echo/Say", Some(5)), 1);
        assert_eq!(s.grpc.count(true, "echo.Echo/Slow", Some(4)), 1, "deadline");
        assert_eq!(s.grpc.count(true, "echo.Echo/Slow", Some(14)), 1, "refused");
    }

    #[test]
    fn an_upgraded_request_is_answered_on_stream_1() {
        let mut w = Wire { seq: [0, 0], ts: 0 };
        let mut tally = Tally::new(1);
        // `GET` (method 1) upgraded by `Upgrade: h2c` (no frame of its own, no sequence
        // number), answered 404 on stream 1; then stream 3, a GET answered 200.
        let mut upgraded = w.event(false, H2_UPGRADED, &[1]);
        upgraded.seq = 0;
        w.seq = [0, 0];
        let mut events = vec![upgraded];
        events.extend(w.frame(false, HEADERS, END_HEADERS, 1, &[0x8d])); // :status 404
        events.extend(w.frame(true, HEADERS, END_HEADERS | END_STREAM, 3, &[0x82, 0x84]));
        events.extend(w.frame(false, HEADERS, END_HEADERS, 3, &[0x88]));
        let mut conn = Conn::new(&events[0]);
        for e in &events {
            assert!(!conn.on_event(e, &mut tally));
        }
        let mut counts = RawCounts::zeroed();
        tally.merge_into(&mut counts);
        let s = summarise(&counts);
        // The upgraded request was counted as started by the kernel, which read it.
        assert_eq!(s.server.started, 1);
        assert_eq!(s.server.count("GET", 404), 1, "{:?}", s.server.requests);
        assert_eq!(s.server.count("GET", 200), 1, "{:?}", s.server.requests);
        assert_eq!(s.server.completed, 2);
        assert_eq!(s.unmatched_responses, 0);
        assert_eq!(s.http2.unknown_fields, 0);
    }

    #[test]
    fn a_lost_event_makes_later_fields_unknown_not_wrong() {
        let mut w = Wire { seq: [0, 0], ts: 0 };
        let mut tally = Tally::new(1);
        // Stream 1 enters ":path /a" in the table (literal with incremental indexing).
        let mut first = vec![0x82];
        first.extend([0x44, 2, b'/', b'a']);
        let e1 = w.frame(true, HEADERS, END_HEADERS | END_STREAM, 1, &first);
        // Stream 3's HEADERS (which would have entered another entry) is lost.
        let lost = w.frame(
            true,
            HEADERS,
            END_HEADERS | END_STREAM,
            3,
            &[0x82, 0x44, 2, b'/', b'b'],
        );
        // Stream 5 refers to the newest entry (62): after the loss, unknown.
        let e3 = w.frame(true, HEADERS, END_HEADERS | END_STREAM, 5, &[0x82, 0xbe]);
        let mut conn = Conn::new(&e1[0]);
        for e in e1.iter().chain(&e3) {
            conn.on_event(e, &mut tally);
        }
        drop(lost);
        assert_eq!(
            conn.streams[&5].path, None,
            "the entry it names may be the lost one"
        );
        assert_eq!(conn.streams[&1].path.as_deref(), Some("/a"));
        assert_eq!(conn.streams[&5].method, "GET");
    }

    #[test]
    fn a_joined_connection_finds_its_side_and_says_unknown_for_older_state() {
        let mut w = Wire { seq: [0, 0], ts: 0 };
        let mut tally = Tally::new(1);
        let mut events = Vec::new();
        // The target sends a request on stream 7: ":method GET" (static), ":path" from a
        // dynamic entry made before the window (unknown).
        events.extend(w.frame(false, HEADERS, END_HEADERS | END_STREAM, 7, &[0x82, 0xbe]));
        events.extend(w.frame(true, HEADERS, END_HEADERS, 7, &[0x88])); // :status 200
                                                                        // Stream 9: a gRPC call, all fields literal: known.
        let mut call = vec![0x83];
        call.extend(literal(":path", "/echo.Echo/Say"));
        call.extend(literal("content-type", "application/grpc"));
        events.extend(w.frame(false, HEADERS, END_HEADERS, 9, &call));
        events.extend(w.frame(true, HEADERS, END_HEADERS, 9, &[0x88]));
        events.extend(w.frame(
            true,
            HEADERS,
            END_HEADERS | END_STREAM,
            9,
            &literal("grpc-status", "0"),
        ));
        // Stream 5's response: its request was before the window.
        events.extend(w.frame(true, HEADERS, END_HEADERS | END_STREAM, 5, &[0x88]));
        let events = joined(events);
        let mut conn = Conn::new(&events[0]);
        for e in &events {
            assert!(!conn.on_event(e, &mut tally));
        }
        let mut counts = RawCounts::zeroed();
        tally.merge_into(&mut counts);
        let s = summarise(&counts);
        assert_eq!(s.client.started, 2, "a client: it sent the requests");
        assert_eq!(s.server.started, 0);
        assert_eq!(s.client.count("GET", 200), 1);
        assert_eq!(s.client.count("POST", 200), 1);
        assert_eq!(s.grpc.count(false, "echo.Echo/Say", Some(0)), 1);
        assert_eq!(s.http2.connections_desynced, 0);
        assert_eq!(s.http2.joined, 1);
        assert_eq!(s.unmatched_responses, 1);
    }

    #[test]
    fn a_joined_connection_that_is_not_http2_counts_nothing() {
        let mut w = Wire { seq: [0, 0], ts: 0 };
        let mut tally = Tally::new(1);
        // A "HEADERS" frame on an even stream (a client never opens one): not HTTP/2 framing.
        let mut events = w.frame(true, HEADERS, END_HEADERS, 2, &[0x82, 0x84]);
        events.extend(w.frame(true, HEADERS, END_HEADERS, 3, &[0x82, 0x84]));
        let events = joined(events);
        let mut conn = Conn::new(&events[0]);
        for e in &events {
            conn.on_event(e, &mut tally);
        }
        let mut counts = RawCounts::zeroed();
        tally.merge_into(&mut counts);
        let s = summarise(&counts);
        assert_eq!(s.server.started + s.client.started, 0);
        assert_eq!(s.http2.connections_desynced, 1);
    }
}
