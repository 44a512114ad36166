//! `net`: bytes, packets and transport payload in and out of the target cgroup, split
//! TCP / UDP / other, from cgroup-attached `cgroup_skb` programs. The programs see IP packets
//! (the skb starts at the network header); on loopback and with GSO one skb may carry several
//! wire packets, so `packets` counts skbs while bytes and payload are exact.

use aya_ebpf::{macros::cgroup_skb, programs::SkBuffContext};
use recap_common::Counter;

use crate::{
    maps::{add, skb_slot},
    packet::{ip_header, IPPROTO_TCP, IPPROTO_UDP},
};

/// The counters of one direction, by transport: (bytes, packets, payload).
struct Direction {
    tcp: (Counter, Counter, Counter),
    udp: (Counter, Counter, Counter),
    other: (Counter, Counter),
}

const RX: Direction = Direction {
    tcp: (
        Counter::NetRxBytesTcp,
        Counter::NetRxPacketsTcp,
        Counter::NetRxPayloadTcp,
    ),
    udp: (
        Counter::NetRxBytesUdp,
        Counter::NetRxPacketsUdp,
        Counter::NetRxPayloadUdp,
    ),
    other: (Counter::NetRxBytesOther, Counter::NetRxPacketsOther),
};
const TX: Direction = Direction {
    tcp: (
        Counter::NetTxBytesTcp,
        Counter::NetTxPacketsTcp,
        Counter::NetTxPayloadTcp,
    ),
    udp: (
        Counter::NetTxBytesUdp,
        Counter::NetTxPacketsUdp,
        Counter::NetTxPayloadUdp,
    ),
    other: (Counter::NetTxBytesOther, Counter::NetTxPacketsOther),
};

#[cgroup_skb(ingress)]
pub fn recap_skb_in(ctx: SkBuffContext) -> i32 {
    count(&ctx, &RX);
    1 // always let the packet through
}

#[cgroup_skb(egress)]
pub fn recap_skb_out(ctx: SkBuffContext) -> i32 {
    count(&ctx, &TX);
    1
}

#[inline(always)]
fn count(ctx: &SkBuffContext, dir: &Direction) {
    let slot = skb_slot(ctx);
    if slot == 0 {
        return;
    }
    let len = ctx.len() as u64;
    let (proto, l3_len) = ip_header(ctx).map_or((0, 0), |(p, l3)| (p, l3 as u64));
    // No indexing below: a bounds check would pull a panic path into the program.
    let (bytes, packets, payload, l4_len) = match proto {
        IPPROTO_TCP => {
            let Ok(doff) = ctx.load::<u8>(l3_len as usize + 12) else {
                return;
            };
            (dir.tcp.0, dir.tcp.1, dir.tcp.2, ((doff >> 4) as u64) * 4)
        }
        IPPROTO_UDP => (dir.udp.0, dir.udp.1, dir.udp.2, 8),
        _ => {
            add(slot, dir.other.0, len);
            add(slot, dir.other.1, 1);
            return;
        }
    };
    add(slot, bytes, len);
    add(slot, packets, 1);
    add(slot, payload, len.saturating_sub(l3_len + l4_len));
}
