//! `net`: bytes, packets and transport payload in and out of the target cgroup, split
//! TCP / UDP / other, from cgroup-attached `cgroup_skb` programs. The programs see IP packets
//! (the skb starts at the network header); on loopback and with GSO one skb may carry several
//! wire packets, so `packets` counts skbs while bytes and payload are exact.

use aya_ebpf::{macros::cgroup_skb, programs::SkBuffContext};
use recap_common::Counter;

use crate::maps::{add, attachment_slot};

const ETH_P_IP: u32 = 0x0800;
const ETH_P_IPV6: u32 = 0x86DD;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

struct Direction {
    bytes: [Counter; 3],
    packets: [Counter; 3],
    payload: [Counter; 2],
}

const RX: Direction = Direction {
    bytes: [Counter::NetRxBytesTcp, Counter::NetRxBytesUdp, Counter::NetRxBytesOther],
    packets: [Counter::NetRxPacketsTcp, Counter::NetRxPacketsUdp, Counter::NetRxPacketsOther],
    payload: [Counter::NetRxPayloadTcp, Counter::NetRxPayloadUdp],
};
const TX: Direction = Direction {
    bytes: [Counter::NetTxBytesTcp, Counter::NetTxBytesUdp, Counter::NetTxBytesOther],
    packets: [Counter::NetTxPacketsTcp, Counter::NetTxPacketsUdp, Counter::NetTxPacketsOther],
    payload: [Counter::NetTxPayloadTcp, Counter::NetTxPayloadUdp],
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
    let slot = attachment_slot();
    if slot == 0 {
        return;
    }
    let len = ctx.len() as u64;
    let (proto, l3_len) = match u32::from_be(ctx.skb.protocol()) as u16 as u32 {
        ETH_P_IP => match (ctx.load::<u8>(0), ctx.load::<u8>(9)) {
            (Ok(vihl), Ok(p)) => (p, ((vihl & 0x0f) as u64) * 4),
            _ => (0, 0),
        },
        ETH_P_IPV6 => (ctx.load::<u8>(6).unwrap_or(0), 40),
        _ => (0, 0),
    };
    let kind = match proto {
        IPPROTO_TCP => 0,
        IPPROTO_UDP => 1,
        _ => 2,
    };
    add(slot, dir.bytes[kind], len);
    add(slot, dir.packets[kind], 1);
    let l4_len = match proto {
        IPPROTO_TCP => match ctx.load::<u8>(l3_len as usize + 12) {
            Ok(doff) => ((doff >> 4) as u64) * 4,
            Err(_) => return,
        },
        IPPROTO_UDP => 8,
        _ => return,
    };
    add(slot, dir.payload[kind], len.saturating_sub(l3_len + l4_len));
}
