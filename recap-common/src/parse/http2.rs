//! HTTP/2 frame headers (RFC 9113 §4.1): where a connection whose preface came before the
//! window can be joined, and the SETTINGS that start one after `Upgrade: h2c`
//! (`recap-ebpf/src/probes/http2.rs` walks the frames, `h2c.rs` follows the upgrade).

use crate::{H2_FRAME_HEADER, HTTP_PREFIX};

/// The largest frame a peer may send before SETTINGS say otherwise (RFC 9113 §4.2).
const DEFAULT_MAX_FRAME: usize = 16_384;

/// True if an I/O of `io_len` bytes, of which `p` holds the first `len`, begins with a whole,
/// well-formed HTTP/2 control or HEADERS frame (RFC 9113 §6: each type's stream, length and
/// flags rules): where a connection whose preface came before the window can be joined.
/// DATA and CONTINUATION are never a start (a large DATA frame's middle may look like one),
/// nor SETTINGS: a server's first write on a new connection, before it reads the preface.
#[inline(always)]
pub fn joinable(p: &[u8; HTTP_PREFIX], len: usize, io_len: usize) -> bool {
    if len < H2_FRAME_HEADER {
        return false;
    }
    let length = frame_length(p);
    let (kind, flags) = (p[3], p[4]);
    if p[5] & 0x80 != 0 || length > DEFAULT_MAX_FRAME || H2_FRAME_HEADER + length > io_len {
        return false;
    }
    let stream = u32::from_be_bytes([p[5], p[6], p[7], p[8]]);
    match kind {
        // HEADERS: a client-initiated (odd) stream; END_STREAM, END_HEADERS, PADDED, PRIORITY.
        1 => stream & 1 == 1 && length > 0 && flags & !0x2d == 0,
        // PRIORITY, RST_STREAM.
        2 => stream != 0 && length == 5 && flags == 0,
        3 => stream != 0 && length == 4 && flags == 0,
        // PING, GOAWAY, WINDOW_UPDATE.
        6 => stream == 0 && length == 8 && flags & !1 == 0,
        7 => stream == 0 && length >= 8 && flags == 0,
        8 => length == 4 && flags == 0,
        _ => false,
    }
}

/// A frame header's payload length: its first three bytes, big-endian.
#[inline(always)]
fn frame_length(h: &[u8]) -> usize {
    (h[0] as usize) << 16 | (h[1] as usize) << 8 | h[2] as usize
}

/// True if `h` is the header of a SETTINGS frame that can open a side's HTTP/2 (RFC 9113
/// §6.5): not an ACK, on stream 0, a whole number of 6-byte settings in one default-size frame.
#[inline(always)]
pub fn is_settings(h: &[u8; H2_FRAME_HEADER]) -> bool {
    let length = frame_length(h);
    h[3] == 4
        && h[4] & 1 == 0
        && h[5..9] == [0; 4]
        && length.is_multiple_of(6)
        && length <= DEFAULT_MAX_FRAME
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame header (length, type, flags, stream) as the first bytes of an I/O.
    fn header(length: u32, kind: u8, flags: u8, stream: u32) -> [u8; HTTP_PREFIX] {
        let mut p = [0u8; HTTP_PREFIX];
        p[..3].copy_from_slice(&length.to_be_bytes()[1..]);
        p[3] = kind;
        p[4] = flags;
        p[5..9].copy_from_slice(&stream.to_be_bytes());
        p
    }

    /// Joinable with the whole frame in the I/O, 16 bytes of it read.
    fn whole(length: u32, kind: u8, flags: u8, stream: u32) -> bool {
        joinable(
            &header(length, kind, flags, stream),
            16,
            9 + length as usize,
        )
    }

    #[test]
    fn headers_frames_on_client_streams() {
        // END_HEADERS on stream 1, then each allowed flag.
        assert!(whole(5, 1, 0x04, 1));
        for flags in [0x00, 0x01, 0x04, 0x08, 0x20, 0x2d] {
            assert!(whole(30, 1, flags, 3), "flags {flags:#x}");
        }
        assert!(!whole(30, 1, 0x02, 3)); // not a HEADERS flag
        assert!(!whole(30, 1, 0x40, 3));
        assert!(!whole(5, 1, 0x04, 2)); // even stream: server-initiated
        assert!(!whole(5, 1, 0x04, 0));
        assert!(!whole(0, 1, 0x04, 1)); // empty header block
    }

    #[test]
    fn control_frames_follow_their_rules() {
        // PRIORITY: 5 bytes, on a stream.
        assert!(whole(5, 2, 0, 3));
        assert!(!whole(4, 2, 0, 3));
        assert!(!whole(5, 2, 0, 0));
        // RST_STREAM: 4 bytes, on a stream, no flags.
        assert!(whole(4, 3, 0, 1));
        assert!(!whole(4, 3, 0, 0));
        assert!(!whole(4, 3, 1, 1));
        assert!(!whole(8, 3, 0, 1));
        // PING: 8 bytes on stream 0, ACK allowed.
        assert!(whole(8, 6, 0, 0));
        assert!(whole(8, 6, 1, 0));
        assert!(!whole(8, 6, 2, 0));
        assert!(!whole(8, 6, 0, 1));
        assert!(!whole(7, 6, 0, 0));
        // GOAWAY: at least 8 bytes on stream 0.
        assert!(whole(8, 7, 0, 0));
        assert!(whole(40, 7, 0, 0));
        assert!(!whole(7, 7, 0, 0));
        assert!(!whole(8, 7, 0, 5));
        // WINDOW_UPDATE: 4 bytes, any stream.
        assert!(whole(4, 8, 0, 0));
        assert!(whole(4, 8, 0, 7));
        assert!(!whole(5, 8, 0, 0));
    }

    #[test]
    fn never_joined_at_data_settings_or_continuation() {
        assert!(!whole(100, 0, 0, 1)); // DATA
        assert!(!whole(6, 4, 0, 0)); // SETTINGS
        assert!(!whole(0, 4, 1, 0)); // SETTINGS ACK
        assert!(!whole(20, 5, 4, 1)); // PUSH_PROMISE
        assert!(!whole(20, 9, 4, 1)); // CONTINUATION
        assert!(!whole(8, 10, 0, 0)); // unknown type
    }

    #[test]
    fn the_frame_must_be_whole_and_its_header_read() {
        let p = header(5, 1, 0x04, 1);
        assert!(joinable(&p, 9, 14));
        assert!(joinable(&p, 16, 1000));
        assert!(!joinable(&p, 16, 13)); // the I/O ends inside the frame
        assert!(!joinable(&p, 8, 14)); // fewer than 9 bytes read
                                       // The reserved bit of the stream id.
        let mut p = header(5, 1, 0x04, 1);
        p[5] |= 0x80;
        assert!(!joinable(&p, 16, 14));
        // Above the default SETTINGS_MAX_FRAME_SIZE (16,384).
        assert!(whole(16_384, 7, 0, 0));
        assert!(!whole(16_385, 7, 0, 0));
    }

    #[test]
    fn settings_that_open_a_side_are_told_from_other_frames() {
        // Apache's after its 101: SETTINGS with one setting (6 bytes), then an empty one.
        assert!(is_settings(&[0, 0, 6, 4, 0, 0, 0, 0, 0]));
        assert!(is_settings(&[0, 0, 0, 4, 0, 0, 0, 0, 0]));
        assert!(!is_settings(&[0, 0, 0, 4, 1, 0, 0, 0, 0]), "an ACK");
        assert!(!is_settings(&[0, 0, 6, 4, 0, 0, 0, 0, 1]), "on a stream");
        assert!(
            !is_settings(&[0, 0, 5, 4, 0, 0, 0, 0, 0]),
            "not whole settings"
        );
        assert!(!is_settings(&[0, 0x40, 2, 4, 0, 0, 0, 0, 0]), "over 16384");
        assert!(!is_settings(&[0, 0, 6, 1, 4, 0, 0, 0, 1]), "HEADERS");
        // A WebSocket's text frame "hello" and what follows it.
        assert!(!is_settings(&[0x81, 5, b'h', b'e', b'l', b'l', b'o', 0, 0]));
    }
}
