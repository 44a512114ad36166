//! `tcp_health`: retransmitted segments, RSTs in and out, RTT samples and connection lifetimes
//! of the target's TCP connections, from a `sock_ops` program and `cgroup_skb` programs on the
//! target's cgroup (no cost to anything outside it).

use aya_ebpf::{
    bindings::{
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_RETRANS_CB, BPF_SOCK_OPS_RETRANS_CB_FLAG, BPF_SOCK_OPS_RTT_CB,
        BPF_SOCK_OPS_RTT_CB_FLAG, BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG,
        BPF_SOCK_OPS_TCP_CONNECT_CB,
    },
    helpers::{bpf_get_socket_cookie, bpf_ktime_get_ns},
    macros::{cgroup_skb, sock_ops},
    programs::{SkBuffContext, SockOpsContext},
    EbpfContext,
};
use recap_common::{Counter, TCP_HIST_BUCKETS};

use crate::{
    maps::{add, hist_add, ops_slot, skb_slot, CONN_START, TCP_DUR_HIST, TCP_RTT_HIST},
    packet::{ip_header, IPPROTO_TCP},
};

const TCP_CLOSE: u32 = 7;
const TCP_FLAG_RST: u8 = 0x04;

const CALLBACKS: u32 =
    BPF_SOCK_OPS_RETRANS_CB_FLAG | BPF_SOCK_OPS_RTT_CB_FLAG | BPF_SOCK_OPS_STATE_CB_FLAG;

#[sock_ops]
pub fn recap_tcph_ops(ctx: SockOpsContext) -> u32 {
    let slot = ops_slot(&ctx);
    if slot == 0 {
        return 1;
    }
    match ctx.op() {
        // Before the SYN: retransmits of the SYN itself are seen too.
        BPF_SOCK_OPS_TCP_CONNECT_CB => {
            let _ = ctx.set_cb_flags((ctx.cb_flags() | CALLBACKS) as i32);
        }
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB | BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => {
            let _ = ctx.set_cb_flags((ctx.cb_flags() | CALLBACKS) as i32);
            // SAFETY: the program's own `bpf_sock_ops` context, the pointer the helper takes.
            let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
            // SAFETY: the clock helper takes no argument and touches no memory.
            let now = unsafe { bpf_ktime_get_ns() };
            let _ = CONN_START.insert(&cookie, &now, 0);
        }
        BPF_SOCK_OPS_RETRANS_CB => {
            // args: seq, segments, error. The kernel counts a retransmission in TcpRetransSegs
            // before it is sent, and a failed send also in TCPRetransFail: so do we.
            let segs = ctx.arg(1) as u64;
            add(slot, Counter::TcpRetransSegs, segs);
            if ctx.arg(2) != 0 {
                add(slot, Counter::TcpRetransFailed, segs);
            }
        }
        BPF_SOCK_OPS_RTT_CB => {
            // args: the RTT sample (µs), the smoothed RTT (µs << 3).
            let sample_ns = ctx.arg(0) as u64 * 1000;
            add(slot, Counter::TcpRttSumNs, sample_ns);
            hist_add(&TCP_RTT_HIST, slot, sample_ns, TCP_HIST_BUCKETS);
        }
        BPF_SOCK_OPS_STATE_CB if ctx.arg(1) == TCP_CLOSE => {
            // SAFETY: as above, the program's context.
            let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
            // SAFETY: the time is copied out at once (`&start`), before the element is removed.
            if let Some(&start) = unsafe { CONN_START.get(&cookie) } {
                let _ = CONN_START.remove(&cookie);
                // SAFETY: no argument, no memory.
                let lived_ns = unsafe { bpf_ktime_get_ns() }.saturating_sub(start);
                add(slot, Counter::TcpConnDurSumNs, lived_ns);
                hist_add(&TCP_DUR_HIST, slot, lived_ns, TCP_HIST_BUCKETS);
            }
        }
        _ => {}
    }
    1
}

#[cgroup_skb(ingress)]
pub fn recap_tcph_in(ctx: SkBuffContext) -> i32 {
    if is_rst(&ctx) {
        let slot = skb_slot(&ctx);
        if slot != 0 {
            add(slot, Counter::TcpRstIn, 1);
        }
    }
    1 // always let the packet through
}

#[cgroup_skb(egress)]
pub fn recap_tcph_out(ctx: SkBuffContext) -> i32 {
    if is_rst(&ctx) {
        let slot = skb_slot(&ctx);
        if slot != 0 {
            add(slot, Counter::TcpRstOut, 1);
        }
    }
    1
}

/// Whether the packet (the skb starts at the IP header) is a TCP segment with RST.
#[inline(always)]
fn is_rst(ctx: &SkBuffContext) -> bool {
    let Some((IPPROTO_TCP, l3_len)) = ip_header(ctx) else {
        return false;
    };
    ctx.load::<u8>(l3_len + 13)
        .is_ok_and(|flags| flags & TCP_FLAG_RST != 0)
}
