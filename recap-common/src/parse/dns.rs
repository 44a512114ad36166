//! DNS: query types by the index their counters have (`recap-ebpf/src/probes/dns.rs` reads the
//! packets; its question walk stays there, as it reads the packet through the skb helper).

use crate::DNS_QTYPE_CODES;

/// A query type's index in `DNS_QTYPES` (the last, `other`, for a type not named there).
#[inline(always)]
pub fn qtype_index(qtype: u16) -> u32 {
    let mut i = 0;
    while i < DNS_QTYPE_CODES.len() {
        if DNS_QTYPE_CODES[i] == qtype {
            return i as u32;
        }
        i += 1;
    }
    DNS_QTYPE_CODES.len() as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DNS_QTYPES;

    #[test]
    fn query_types_by_index() {
        assert_eq!(qtype_index(1), 0);
        assert_eq!(qtype_index(28), 7);
        assert_eq!(qtype_index(65), 9);
        assert_eq!(qtype_index(255), 10);
        for (i, code) in DNS_QTYPE_CODES.iter().enumerate() {
            assert_eq!(qtype_index(*code), i as u32);
        }
        assert_eq!(DNS_QTYPES[qtype_index(28) as usize], "AAAA");
        assert_eq!(DNS_QTYPES[qtype_index(33) as usize], "SRV");
        // Every other type counts as `other`, the last entry.
        for code in [0, 3, 99, 257, u16::MAX] {
            assert_eq!(qtype_index(code), 11);
            assert_eq!(DNS_QTYPES[qtype_index(code) as usize], "other");
        }
        assert_eq!(DNS_QTYPES.len(), DNS_QTYPE_CODES.len() + 1);
    }
}
