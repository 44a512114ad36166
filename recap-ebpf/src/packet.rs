//! The IP header of a packet as the `cgroup_skb` programs see it: the skb starts at the
//! network header.

use aya_ebpf::programs::SkBuffContext;

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
const ETH_P_IP: u32 = 0x0800;
const ETH_P_IPV6: u32 = 0x86DD;

/// The transport protocol and the IP header's length (IPv6: the fixed header; extension
/// headers are not walked); None if the packet is not IP.
#[inline(always)]
pub fn ip_header(ctx: &SkBuffContext) -> Option<(u8, usize)> {
    match u16::from_be(ctx.skb.protocol() as u16) as u32 {
        ETH_P_IP => {
            let vihl: u8 = ctx.load(0).ok()?;
            let protocol: u8 = ctx.load(9).ok()?;
            Some((protocol, ((vihl & 0x0f) as usize) * 4))
        }
        ETH_P_IPV6 => Some((ctx.load::<u8>(6).ok()?, 40)),
        _ => None,
    }
}
