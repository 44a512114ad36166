//! `tcp`: connection lifecycle of sockets in the target cgroup, from a cgroup-attached
//! `sock_ops` program (no cost to anything outside the cgroup).

use aya_ebpf::{
    bindings::{
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG, BPF_SOCK_OPS_TCP_CONNECT_CB,
    },
    macros::sock_ops,
    programs::SockOpsContext,
};
use recap_common::Counter;

use crate::maps::{add, ops_slot};

// include/net/tcp_states.h
const TCP_SYN_SENT: u32 = 2;
const TCP_SYN_RECV: u32 = 3;
const TCP_CLOSE: u32 = 7;

#[sock_ops]
pub fn recap_sockops(ctx: SockOpsContext) -> u32 {
    let slot = ops_slot(&ctx);
    if slot == 0 {
        return 1;
    }
    match ctx.op() {
        BPF_SOCK_OPS_TCP_CONNECT_CB => {
            add(slot, Counter::TcpConnectAttempts, 1);
            // Ask for state changes of this socket: that is how a failed connect is seen.
            let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
        }
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => add(slot, Counter::TcpConnectEstablished, 1),
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => {
            add(slot, Counter::TcpAccepted, 1);
            let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
        }
        BPF_SOCK_OPS_STATE_CB => {
            let (old, new) = (ctx.arg(0), ctx.arg(1));
            if new == TCP_CLOSE {
                match old {
                    TCP_SYN_SENT => add(slot, Counter::TcpConnectFailed, 1),
                    TCP_SYN_RECV => {}
                    _ => add(slot, Counter::TcpClosed, 1),
                }
            }
        }
        _ => {}
    }
    1
}
