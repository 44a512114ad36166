//! RECap's kernel side: one set of programs serves every open window.
//!
//! Task-based families (syscalls, proc, cpu, http, mem) find a thread's window in `TASK_SLOTS`,
//! which the task-tracking probes keep exact across fork, exit and cgroup moves; `http`'s
//! uprobes on TLS code are attached per process. Socket families (tcp, tcp_health, net, dns) are
//! attached to the target's cgroup and read their window from the attachment's cgroup storage.
//! Every counter is per-CPU and indexed by window slot.
#![no_std]
#![no_main]

mod kernel;
mod maps;
mod packet;
mod probes;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
