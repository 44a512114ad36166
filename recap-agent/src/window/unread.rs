//! What a window's request families cannot read, said instead of left as a silent 0: TLS code
//! in the target's processes whose plaintext `http` does not read (GnuTLS, NSS, Go's
//! `crypto/tls`, an OpenSSL without its symbols), with the processes that run it, and HTTP/2
//! connections.

use std::collections::BTreeSet;

use crate::probes::TlsSeen;

/// The warning for TLS code found but not read, if any: processes none of whose TLS code is
/// read (a process that also maps a library it may not use, as curl maps GnuTLS through
/// librtmp, is not warned about when its OpenSSL is read; the summary's `tls` lists both).
pub fn tls_warning(seen: &[TlsSeen]) -> Option<String> {
    let read: BTreeSet<u32> = seen.iter().flat_map(|s| s.read.iter().copied()).collect();
    let list: Vec<String> = seen
        .iter()
        .filter_map(|s| {
            let unread: Vec<_> = s
                .not_read
                .iter()
                .filter(|n| !read.contains(&n.pid))
                .collect();
            if unread.is_empty() {
                return None;
            }
            let shown: Vec<String> = unread
                .iter()
                .take(8)
                .map(|n| format!("{} ({})", n.pid, n.reason))
                .collect();
            let more = if unread.len() > 8 {
                format!(" and {} more", unread.len() - 8)
            } else {
                String::new()
            };
            Some(format!("{} in PID {}{more}", s.code, shown.join(", ")))
        })
        .collect();
    if list.is_empty() {
        return None;
    }
    Some(format!(
        "http: the target's processes use TLS that http does not read: {}; their requests over TLS are not counted",
        list.join("; ")
    ))
}

/// The warning for HTTP/2 connections seen (their preface), whose requests are not counted.
/// HTTP/2 frames that did not reach the decoder: requests from there on may be missing, or
/// counted with fields `unknown`.
pub fn http2_warning(frames_lost: u64, connections_desynced: u64) -> Option<String> {
    (frames_lost + connections_desynced > 0).then(|| {
        format!(
            "http: {frames_lost} HTTP/2 frame event(s) were lost (the kernel's buffer was full) and {connections_desynced} connection direction(s) lost their framing: requests on them from there on may be missing or counted with method/status `unknown`"
        )
    })
}

/// HTTP/2 connections older than the window: what their fields coded against earlier
/// header-compression state hid (requests counted, with `unknown` in place of the field).
pub fn http2_joined_warning(joined: u64, unknown_fields: u64) -> Option<String> {
    (joined > 0 && unknown_fields > 0).then(|| {
        format!(
            "http: {joined} HTTP/2 connection(s) were opened before the window: {unknown_fields} request(s) on HTTP/2 had a field (method, status, path, content-type) coded against header-compression state from before it, counted as `unknown` (their gRPC calls may be counted as HTTP requests only); a window open before the connections are made reads them whole"
        )
    })
}

/// gRPC calls to paths beyond the window's bound, counted together as `other`.
pub fn grpc_paths_warning(other_calls: u64, paths_limit: u64) -> Option<String> {
    (other_calls > 0).then(|| {
        format!(
            "http: more than {paths_limit} distinct gRPC paths: {other_calls} call(s) to the paths seen after those are counted as service `other` (raise --grpc-paths, up to 1024, to tell more apart)"
        )
    })
}

/// `mem` ran on a kernel whose OOM tracepoint names the victim by pid: its OOM kills are not
/// counted, and their 0 must not read as "none".
pub fn oom_warning(mem_ran: bool) -> Option<String> {
    (mem_ran && crate::probes::oom_victim_is_a_pid()).then(|| {
        "mem: this kernel's oom:mark_victim passes the victim's pid, not its task (kernels before 6.9 without the 2025 backports): OOM kills are not counted here, and their 0 means unknown".to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probes::NotRead;

    #[test]
    fn only_processes_with_no_tls_read_are_warned_about() {
        let openssl = TlsSeen {
            code: "OpenSSL (libssl.so.3)".into(),
            read: vec![12, 13],
            not_read: vec![NotRead {
                pid: 15,
                reason: "the process exited before it could be instrumented".into(),
            }],
        };
        // 13 also maps GnuTLS: its OpenSSL is read, so no warning for it.
        let gnutls = TlsSeen {
            code: "GnuTLS (libgnutls.so.30)".into(),
            read: vec![],
            not_read: vec![NotRead {
                pid: 13,
                reason: "not read by http yet".into(),
            }],
        };
        let go = TlsSeen {
            code: "Go crypto/tls in server".into(),
            read: vec![],
            not_read: vec![NotRead {
                pid: 14,
                reason: "Go before 1.17 (stack-based calls) is not read".into(),
            }],
        };
        let w = tls_warning(&[openssl.clone(), gnutls.clone(), go]).unwrap();
        assert!(
            w.contains(
                "Go crypto/tls in server in PID 14 (Go before 1.17 (stack-based calls) is not read)"
            ),
            "{w}"
        );
        assert!(
            w.contains("OpenSSL (libssl.so.3) in PID 15 (the process exited"),
            "{w}"
        );
        assert!(!w.contains("GnuTLS"), "{w}");
        let all_read = TlsSeen {
            not_read: vec![],
            ..openssl
        };
        assert!(tls_warning(&[all_read, gnutls]).is_none());
        assert!(tls_warning(&[]).is_none());
    }
}
