//! `dns`: the target's DNS queries over UDP and their answers, read from the packets by two
//! `cgroup_skb` programs on the target's cgroup (no cost outside it). A query (to port 53) is
//! remembered by window, query id and client port until its answer (from port 53) comes back.

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::cgroup_skb, programs::SkBuffContext};
use recap_common::{
    parse::dns::qtype_index, Counter, DnsKey, DnsPending, DNS_HIST_BUCKETS, DNS_QTYPES, DNS_RCODES,
};

use crate::{
    maps::{
        add, bump, hist_add, skb_slot, window_epoch, DNS_HIST, DNS_PENDING, DNS_QTYPE, DNS_RCODE,
    },
    packet::{ip_header, IPPROTO_UDP},
};

const DNS_PORT: u16 = 53;
const UDP_HEADER: usize = 8;
const DNS_HEADER: usize = 12;
/// Labels of a question name walked to find its type (a name has at most 127).
const MAX_LABELS: u32 = 128;
const FLAG_QR: u16 = 0x8000;

#[cgroup_skb(egress)]
pub fn recap_dns_out(ctx: SkBuffContext) -> i32 {
    let slot = skb_slot(&ctx);
    if slot != 0 {
        if let Some((dns, src_port, dst_port)) = udp_payload(&ctx) {
            if dst_port == DNS_PORT {
                on_query(&ctx, slot, dns, src_port);
            }
        }
    }
    1 // always let the packet through
}

#[cgroup_skb(ingress)]
pub fn recap_dns_in(ctx: SkBuffContext) -> i32 {
    let slot = skb_slot(&ctx);
    if slot != 0 {
        if let Some((dns, src_port, dst_port)) = udp_payload(&ctx) {
            if src_port == DNS_PORT {
                on_answer(&ctx, slot, dns, dst_port);
            }
        }
    }
    1
}

fn on_query(ctx: &SkBuffContext, slot: u32, dns: usize, port: u16) {
    let (Ok(id), Ok(flags)) = (be16(ctx, dns), be16(ctx, dns + 2)) else {
        return;
    };
    if flags & FLAG_QR != 0 {
        return; // an answer the target sends as a server
    }
    add(slot, Counter::DnsQueries, 1);
    match question_type(ctx, dns) {
        Some(qtype) => bump(
            &DNS_QTYPE,
            slot * DNS_QTYPES.len() as u32 + qtype_index(qtype),
        ),
        None => add(slot, Counter::DnsUnparsable, 1),
    }
    let pending = DnsPending {
        epoch: window_epoch(slot),
        // SAFETY: the clock helper takes no argument and touches no memory.
        sent_ns: unsafe { bpf_ktime_get_ns() },
    };
    let _ = DNS_PENDING.insert(&DnsKey { slot, id, port }, &pending, 0);
}

fn on_answer(ctx: &SkBuffContext, slot: u32, dns: usize, port: u16) {
    let (Ok(id), Ok(flags)) = (be16(ctx, dns), be16(ctx, dns + 2)) else {
        return;
    };
    if flags & FLAG_QR == 0 {
        return; // a query the target receives as a server
    }
    let key = DnsKey { slot, id, port };
    // SAFETY: the value is read once (its `epoch` and `sent_ns`, plain integers) while the
    // element's memory stays valid for the program's run; another CPU's update at the same time
    // gives at worst a stale time.
    let sent = match unsafe { DNS_PENDING.get(&key) } {
        Some(p) if p.epoch == window_epoch(slot) => p.sent_ns,
        _ => {
            add(slot, Counter::DnsUnmatched, 1);
            return;
        }
    };
    let _ = DNS_PENDING.remove(&key);
    // SAFETY: no argument, no memory.
    let took = unsafe { bpf_ktime_get_ns() }.saturating_sub(sent);
    add(slot, Counter::DnsAnswered, 1);
    add(slot, Counter::DnsLatencySumNs, took);
    hist_add(&DNS_HIST, slot, took, DNS_HIST_BUCKETS);
    bump(&DNS_RCODE, slot * DNS_RCODES + (flags & 0x0f) as u32);
}

/// Offset of the UDP payload and the ports, if the packet (from its IP header) is UDP.
#[inline(always)]
fn udp_payload(ctx: &SkBuffContext) -> Option<(usize, u16, u16)> {
    let (IPPROTO_UDP, l4) = ip_header(ctx)? else {
        return None;
    };
    let src = be16(ctx, l4).ok()?;
    let dst = be16(ctx, l4 + 2).ok()?;
    Some((l4 + UDP_HEADER, src, dst))
}

#[inline(always)]
fn be16(ctx: &SkBuffContext, offset: usize) -> Result<u16, i64> {
    ctx.load::<u16>(offset).map(u16::from_be)
}

/// The type of the first question: walk its name's labels (no compression in a question).
#[inline(always)]
fn question_type(ctx: &SkBuffContext, dns: usize) -> Option<u16> {
    let qdcount = be16(ctx, dns + 4).ok()?;
    if qdcount == 0 {
        return None;
    }
    let mut off = dns + DNS_HEADER;
    let mut i = 0;
    while i < MAX_LABELS {
        let len: u8 = ctx.load(off).ok()?;
        off += 1;
        if len == 0 {
            return be16(ctx, off).ok();
        }
        if len & 0xc0 != 0 {
            return None;
        }
        off += len as usize;
        i += 1;
    }
    None
}
