//! Load generator and reference hook for `cargo xtask bench`.
//!
//! - `recap-bench syscall REPS CALLS`: REPS lines, each the ns per `getppid` over CALLS calls.
//! - `recap-bench pingpong REPS ROUNDS`: REPS lines, each the ns per round trip of one byte
//!   between two processes over two pipes (two context switches and two wakeups a round),
//!   both pinned to one CPU so every hand-over is a real switch.
//! - `recap-bench nop-hook`: attaches the no-op `sys_enter` raw tracepoint, prints
//!   `attached`, and holds it until stdin closes.

use std::{
    io::{BufRead, Write},
    time::Instant,
};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize| -> usize { args.get(i).and_then(|s| s.parse().ok()).expect("a number") };
    match args.first().map(String::as_str) {
        Some("syscall") => {
            pin_to_cpu(1);
            for _ in 0..num(1) {
                let calls = num(2);
                let start = Instant::now();
                for _ in 0..calls {
                    // SAFETY: no preconditions.
                    unsafe { libc::getppid() };
                }
                println!("{:.2}", start.elapsed().as_nanos() as f64 / calls as f64);
            }
        }
        Some("pingpong") => {
            pin_to_cpu(1);
            for _ in 0..num(1) {
                println!("{:.2}", pingpong(num(2)));
            }
        }
        Some("nop-hook") => {
            let mut ebpf = aya::Ebpf::load(recap_agent::probes::EBPF_OBJECT)?;
            let prog: &mut aya::programs::RawTracePoint = ebpf
                .program_mut(recap_common::programs::BENCH_NOP)
                .expect("nop program")
                .try_into()?;
            prog.load()?;
            prog.attach("sys_enter")?;
            println!("attached");
            std::io::stdout().flush()?;
            for _ in std::io::stdin().lock().lines() {}
        }
        _ => {
            anyhow::bail!("usage: recap-bench syscall REPS CALLS | pingpong REPS ROUNDS | nop-hook")
        }
    }
    Ok(())
}

fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(
            cpu % libc::sysconf(libc::_SC_NPROCESSORS_ONLN) as usize,
            &mut set,
        );
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// ns per round trip between this process and a forked child (inherits the CPU pinning).
fn pingpong(rounds: usize) -> f64 {
    let (mut to_child, mut to_parent) = ([0i32; 2], [0i32; 2]);
    // SAFETY: plain pipe/fork/read/write on fds we own; the child only loops and exits.
    unsafe {
        libc::pipe(to_child.as_mut_ptr());
        libc::pipe(to_parent.as_mut_ptr());
        let pid = libc::fork();
        let mut b = [0u8; 1];
        if pid == 0 {
            for _ in 0..rounds {
                libc::read(to_child[0], b.as_mut_ptr().cast(), 1);
                libc::write(to_parent[1], b.as_ptr().cast(), 1);
            }
            libc::_exit(0);
        }
        let start = Instant::now();
        for _ in 0..rounds {
            libc::write(to_child[1], b.as_ptr().cast(), 1);
            libc::read(to_parent[0], b.as_mut_ptr().cast(), 1);
        }
        let ns = start.elapsed().as_nanos() as f64 / rounds as f64;
        libc::waitpid(pid, std::ptr::null_mut(), 0);
        for fd in to_child.into_iter().chain(to_parent) {
            libc::close(fd);
        }
        ns
    }
}
