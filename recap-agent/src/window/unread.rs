//! What a window's request families cannot read, said instead of left as a silent 0: TLS code
//! in the target's processes whose plaintext `http` does not read (GnuTLS, NSS, Go's
//! `crypto/tls`, an OpenSSL without its symbols), with the processes that run it.

use crate::probes::TlsSeen;

/// The warning for TLS code found but not read, if any.
pub fn tls_warning(seen: &[TlsSeen]) -> Option<String> {
    let list: Vec<String> = seen
        .iter()
        .filter(|s| !s.read)
        .map(|s| {
            let shown: Vec<String> = s.pids.iter().take(8).map(u32::to_string).collect();
            let more = if s.pids.len() > 8 {
                format!(" and {} more", s.pids.len() - 8)
            } else {
                String::new()
            };
            let why = s.reason.as_deref().unwrap_or("not read");
            format!("{} in PID {}{more} ({why})", s.code, shown.join(", "))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tls_that_is_not_read_is_warned_about() {
        let read = TlsSeen {
            code: "OpenSSL (libssl.so.3)".into(),
            pids: vec![12, 13],
            read: true,
            reason: None,
        };
        assert!(tls_warning(std::slice::from_ref(&read)).is_none());
        let go = TlsSeen {
            code: "Go crypto/tls in server".into(),
            pids: vec![14],
            read: false,
            reason: Some("Go's crypto/tls is not read by http yet".into()),
        };
        let w = tls_warning(&[read, go]).unwrap();
        assert!(
            w.contains(
                "Go crypto/tls in server in PID 14 (Go's crypto/tls is not read by http yet)"
            ),
            "{w}"
        );
        assert!(!w.contains("libssl"), "{w}");
        assert!(tls_warning(&[]).is_none());
    }
}
