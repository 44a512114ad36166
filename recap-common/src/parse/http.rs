//! HTTP/1.x request and status lines, from the first `HTTP_PREFIX` bytes of a send or receive
//! (`recap-ebpf/src/probes/http.rs` reads them and keeps the connection's state).

use crate::{HTTP_METHOD_CONNECT, HTTP_PREFIX};

const PREFIX: usize = HTTP_PREFIX;
/// Longest method token plus its space (`CONNECT `, `OPTIONS `): a start no longer than this
/// may be a request line cut before its target.
pub const METHOD_MAX: usize = 8;
/// `HTTP/1.x DDD`.
pub const STATUS_LEN: usize = 12;

/// The first 8 bytes as a little-endian word.
#[inline(always)]
pub fn word(p: &[u8; PREFIX]) -> u64 {
    u64::from_le_bytes([p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]])
}

/// `s` (at most 8 bytes) as the word `word` would read, and the mask of its bytes.
pub const fn pattern(s: &[u8]) -> (u64, u64) {
    let mut value = 0u64;
    let mut i = 0;
    while i < s.len() {
        value |= (s[i] as u64) << (8 * i);
        i += 1;
    }
    let mask = if s.len() == 8 {
        u64::MAX
    } else {
        (1u64 << (8 * s.len())) - 1
    };
    (value, mask)
}

/// Method tokens with their space, their `HTTP_METHODS` index and their length.
const METHODS: [((u64, u64), u8, usize); 9] = [
    (pattern(b"GET "), 1, 4),
    (pattern(b"HEAD "), 2, 5),
    (pattern(b"POST "), 3, 5),
    (pattern(b"PUT "), 4, 4),
    (pattern(b"DELETE "), 5, 7),
    (pattern(b"CONNECT "), 6, 8),
    (pattern(b"OPTIONS "), 7, 8),
    (pattern(b"TRACE "), 8, 6),
    (pattern(b"PATCH "), 9, 6),
];

/// The method of a request line (`HTTP_METHODS` index), 0 if `p` does not start one: the
/// token, a space, and a request target (`/`, `*`, or an absolute `http…` URI; any authority
/// for CONNECT).
#[inline(always)]
pub fn method(p: &[u8; PREFIX], len: usize) -> u8 {
    let w = word(p);
    let mut i = 0;
    while i < METHODS.len() {
        let ((value, mask), m, n) = METHODS[i];
        if len > n && w & mask == value {
            return match p[n] {
                _ if m == HTTP_METHOD_CONNECT => m,
                b'/' | b'*' | b'h' => m,
                _ => 0,
            };
        }
        i += 1;
    }
    0
}

const HTTP_1: (u64, u64) = pattern(b"HTTP/1.");
/// The first 8 bytes of HTTP/2's connection preface.
pub const H2_PREFACE: (u64, u64) = pattern(b"PRI * HT");

/// A non-empty start that a request line could go on from: a method token, or the token and
/// its space, cut before the request target (`GE`, `GET `: a client's writes, split).
#[inline(always)]
pub fn method_prefix(p: &[u8; PREFIX], len: usize) -> bool {
    if len == 0 {
        return false;
    }
    let w = word(p);
    let seen = if len < 8 {
        (1u64 << (8 * len)) - 1
    } else {
        u64::MAX
    };
    let mut i = 0;
    while i < METHODS.len() {
        let ((value, mask), _, n) = METHODS[i];
        if len <= n && w & seen & mask == value & seen {
            return true;
        }
        i += 1;
    }
    false
}

/// `p` is the start of `HTTP/1.x DDD` cut short (fewer than 12 bytes).
#[inline(always)]
pub fn status_prefix(p: &[u8; PREFIX], len: usize) -> bool {
    if len == 0 || len >= STATUS_LEN {
        return false;
    }
    let (value, mask) = HTTP_1;
    let seen = if len < 7 {
        (1u64 << (8 * len)) - 1
    } else {
        mask
    };
    if word(p) & seen != value & seen {
        return false;
    }
    (len <= 7 || p[7].is_ascii_digit())
        && (len <= 8 || p[8] == b' ')
        && (len <= 9 || p[9].is_ascii_digit())
        && (len <= 10 || p[10].is_ascii_digit())
}

#[inline(always)]
pub fn is_status_start(p: &[u8; PREFIX], len: usize) -> bool {
    let (value, mask) = HTTP_1;
    len >= 7 && word(p) & mask == value
}

/// The code of a status line `HTTP/1.x DDD`.
#[inline(always)]
pub fn status(p: &[u8; PREFIX], len: usize) -> Option<u16> {
    if !is_status_start(p, len) || len < STATUS_LEN || p[8] != b' ' {
        return None;
    }
    let d = |c: u8| -> Option<u16> { c.is_ascii_digit().then(|| (c - b'0') as u16) };
    let code = d(p[9])? * 100 + d(p[10])? * 10 + d(p[11])?;
    (100..600).contains(&code).then_some(code)
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::HTTP_METHODS;

    /// The first `PREFIX` bytes of `s`, zero-filled, and how many of them `s` has: what the
    /// program reads of one I/O.
    fn head(s: &[u8]) -> ([u8; PREFIX], usize) {
        let mut p = [0u8; PREFIX];
        let n = s.len().min(PREFIX);
        p[..n].copy_from_slice(&s[..n]);
        (p, n)
    }

    fn method_of(s: &[u8]) -> u8 {
        let (p, n) = head(s);
        method(&p, n)
    }

    fn status_of(s: &[u8]) -> Option<u16> {
        let (p, n) = head(s);
        status(&p, n)
    }

    /// A start carried over, then the next I/O's bytes after it, as `feed` puts them together.
    fn joined(carried: &[u8], next: &[u8]) -> ([u8; PREFIX], usize) {
        let mut both = [0u8; 2 * PREFIX];
        both[..carried.len()].copy_from_slice(carried);
        let fresh = next.len().min(PREFIX);
        both[carried.len()..carried.len() + fresh].copy_from_slice(&next[..fresh]);
        let mut p = [0u8; PREFIX];
        p.copy_from_slice(&both[..PREFIX]);
        (p, (carried.len() + fresh).min(PREFIX))
    }

    #[test]
    fn every_method_is_recognised_with_its_index() {
        for (index, name) in HTTP_METHODS.iter().enumerate().skip(1) {
            let line = [name.as_bytes(), &b" /x HTTP/1.1"[..]].concat();
            assert_eq!(method_of(&line), index as u8, "{name}");
        }
        assert_eq!(method_of(b"GET /index.html HTTP/1.1"), 1);
        assert_eq!(method_of(b"GET * HTTP/1.1"), 1);
        assert_eq!(method_of(b"GET http://example.com/ HTTP/1.1"), 1);
        assert_eq!(method_of(b"OPTIONS * HTTP/1.1"), 7);
        assert_eq!(method_of(b"PATCH /a HTTP/1.1"), 9);
        // CONNECT takes any authority.
        assert_eq!(method_of(b"CONNECT example.com:443 HTTP/1.1"), 6);
        assert_eq!(method_of(b"CONNECT 10.0.0.1:443"), 6);
    }

    #[test]
    fn non_requests_are_refused() {
        for line in [
            &b"get / HTTP/1.1"[..],
            b"GET x HTTP/1.1",
            b"GET  / HTTP/1.1",
            b"GET/ HTTP/1.1",
            b"GETS / HTTP/1.1",
            b"BREW /pot HTTP/1.1",
            b"POST",
            b"HTTP/1.1 200 OK",
            b"PRI * HTTP/2.0\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01",
            b"",
        ] {
            assert_eq!(method_of(line), 0, "{:?}", core::str::from_utf8(line));
        }
        // The token and its space, but no target yet: not a request line (yet).
        let (p, _) = head(b"GET /");
        assert_eq!(method(&p, 4), 0);
        assert_eq!(method(&p, 5), 1);
    }

    #[test]
    fn method_prefixes_are_the_cut_starts_only() {
        for name in &HTTP_METHODS[1..] {
            let token = [name.as_bytes(), &b" "[..]].concat();
            for n in 1..=token.len() {
                let (p, _) = head(&token[..n]);
                assert!(method_prefix(&p, n), "{:?}", &token[..n]);
            }
        }
        for (s, n) in [
            (&b""[..], 0),
            (b"GX", 2),
            (b"G ", 2),
            (b"GET /", 5),
            (b"POSTX", 5),
            (b"HTTP/", 5),
            (b"CONNECT x", 9),
        ] {
            let (p, _) = head(s);
            assert!(!method_prefix(&p, n), "{:?}", core::str::from_utf8(s));
        }
        assert!(METHOD_MAX >= "CONNECT ".len() && METHOD_MAX >= "OPTIONS ".len());
    }

    /// Each split of a request line's start: the first piece is carried while it is a method
    /// token cut short (at most `METHOD_MAX` bytes), else read as a request line at once; put
    /// together with the rest it gives the method, never a refusal.
    #[test]
    fn a_request_line_split_at_every_byte() {
        for (line, method_index, carried_up_to) in [
            (&b"GET /index.html HTTP/1.1\r\n"[..], 1, 4),
            (b"DELETE /items/7 HTTP/1.1\r\n", 5, 7),
            (b"CONNECT example.com:443 HTTP/1.1\r\n", 6, 8),
            (b"OPTIONS * HTTP/1.1\r\n", 7, 8),
        ] {
            for k in 1..=PREFIX {
                let (first, n) = head(&line[..k]);
                let carried = n <= METHOD_MAX && method_prefix(&first, n);
                assert_eq!(carried, k <= carried_up_to, "{line:?} cut at {k}");
                if carried {
                    assert_eq!(method(&first, n), 0);
                    let (p, len) = joined(&line[..k], &line[k..]);
                    assert_eq!(len, PREFIX);
                    assert_eq!(method(&p, len), method_index, "{line:?} cut at {k}");
                } else {
                    assert_eq!(method(&first, n), method_index, "{line:?} cut at {k}");
                }
            }
        }
    }

    #[test]
    fn status_codes_from_100_to_599() {
        assert_eq!(status_of(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(status_of(b"HTTP/1.0 404 Not Found"), Some(404));
        assert_eq!(status_of(b"HTTP/1.1 100 Continue"), Some(100));
        assert_eq!(status_of(b"HTTP/1.1 101 Switching"), Some(101));
        assert_eq!(status_of(b"HTTP/1.1 599 x"), Some(599));
        // Exactly the 12 bytes of `HTTP/1.x DDD`.
        assert_eq!(status_of(b"HTTP/1.1 503"), Some(503));
        for code in 100..600u16 {
            let digits = [
                b'0' + (code / 100) as u8,
                b'0' + (code / 10 % 10) as u8,
                b'0' + (code % 10) as u8,
            ];
            let line = [&b"HTTP/1.1 "[..], &digits[..], &b" x"[..]].concat();
            assert_eq!(status_of(&line), Some(code));
        }
    }

    #[test]
    fn malformed_status_lines_are_refused() {
        for line in [
            &b"HTTP/1.1 20x OK"[..],
            b"HTTP/1.1 2 0 OK",
            b"HTTP/1.1 099 x",
            b"HTTP/1.1 000 x",
            b"HTTP/1.1 600 x",
            b"HTTP/1.1 999 x",
            b"HTTP/1.1200 OK",
            b"HTTP/1.1  200 OK",
            b"HTTP/2 200 OK",
            b"HTTP/2.0 200 OK",
            b"http/1.1 200 OK",
            b"HTTP/1.1 20",
            b"GET / HTTP/1.1",
        ] {
            assert_eq!(status_of(line), None, "{:?}", core::str::from_utf8(line));
        }
        // 12 bytes make a status line; 11 of them do not.
        let (p, _) = head(b"HTTP/1.1 200 OK");
        assert_eq!(status(&p, 11), None);
        assert_eq!(status(&p, 12), Some(200));
    }

    #[test]
    fn status_prefixes_are_the_cut_starts_only() {
        let line = b"HTTP/1.1 200 OK";
        for n in 1..STATUS_LEN {
            let (p, _) = head(&line[..n]);
            assert!(status_prefix(&p, n), "cut at {n}");
        }
        let (p, _) = head(line);
        assert!(!status_prefix(&p, 0));
        assert!(!status_prefix(&p, STATUS_LEN));
        for (s, n) in [
            (&b"HTTX"[..], 4),
            (b"HTTP/2", 6),
            (b"HTTP/1.x", 8),
            (b"HTTP/1.1X", 9),
            (b"HTTP/1.1 x", 10),
            (b"HTTP/1.1 2x", 11),
        ] {
            let (p, _) = head(s);
            assert!(!status_prefix(&p, n), "{:?}", core::str::from_utf8(s));
        }
    }

    #[test]
    fn a_status_line_split_at_every_byte() {
        let line = b"HTTP/1.1 204 No Content\r\n";
        for k in 1..=PREFIX {
            let (first, n) = head(&line[..k]);
            if k < STATUS_LEN {
                assert!(status_prefix(&first, n), "cut at {k}");
                assert_eq!(status(&first, n), None);
                let (p, len) = joined(&line[..k], &line[k..]);
                assert_eq!(status(&p, len), Some(204), "cut at {k}");
            } else {
                assert!(!status_prefix(&first, n));
                assert_eq!(status(&first, n), Some(204), "cut at {k}");
            }
        }
    }

    #[test]
    fn status_starts_and_the_h2_preface() {
        let (p, _) = head(b"HTTP/1.1 200 OK");
        assert!(is_status_start(&p, 7));
        assert!(!is_status_start(&p, 6));
        let (p, _) = head(b"HTTP/1.x");
        assert!(is_status_start(&p, 8));
        let (p, _) = head(b"PRI * HTTP/2.0\r\n");
        assert_eq!(word(&p), H2_PREFACE.0);
        assert_eq!(H2_PREFACE.1, u64::MAX);
        let (p, _) = head(b"PRI * HTTP/1.1");
        assert_eq!(word(&p), H2_PREFACE.0); // only 8 bytes are compared
        assert_eq!(pattern(b"GET "), (0x2054_4547, 0xffff_ffff));
    }
}
