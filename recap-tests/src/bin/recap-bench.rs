//! Load generator and reference hook for `cargo xtask bench`.
//!
//! - `recap-bench syscall REPS CALLS`: REPS lines, each the CPU ns per `getppid` over CALLS calls.
//! - `recap-bench pingpong REPS ROUNDS`: REPS lines, each the CPU ns (both sides) per round trip of one byte
//!   between two processes over two pipes (two context switches and two wakeups a round),
//!   both pinned to one CPU so every hand-over is a real switch.
//! - `recap-bench sockio REPS N`: REPS lines, each the CPU ns per socket send or receive over N
//!   one-byte round trips through a Unix socket pair (a send and a receive each).
//! - `recap-bench faults REPS PAGES`: REPS lines, each the CPU ns per minor page fault over
//!   PAGES fresh anonymous pages touched once (transparent huge pages off for the mapping).
//! - `recap-bench directio REPS N`: REPS lines, each the CPU ns of the writing thread per 4 KiB
//!   `O_DIRECT` write over N of them (one bio each), to a file in the temp directory.
//! - `recap-bench nop-hook [TRACEPOINT]`: attaches the no-op raw tracepoint (default `sys_enter`), prints
//!   `attached`, and holds it until stdin closes.

use std::io::{BufRead, Write};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize| -> usize { args.get(i).and_then(|s| s.parse().ok()).expect("a number") };
    match args.first().map(String::as_str) {
        Some("syscall") => {
            pin_to_cpu(1);
            for _ in 0..num(1) {
                let calls = num(2);
                let start = thread_cpu_ns();
                for _ in 0..calls {
                    // SAFETY: no preconditions.
                    unsafe { libc::getppid() };
                }
                println!("{:.2}", (thread_cpu_ns() - start) as f64 / calls as f64);
            }
        }
        Some("sockio") => {
            pin_to_cpu(1);
            for _ in 0..num(1) {
                println!("{:.2}", sockio(num(2)));
            }
        }
        Some("pingpong") => {
            pin_to_cpu(1);
            for _ in 0..num(1) {
                println!("{:.2}", pingpong(num(2)));
            }
        }
        Some("faults") => {
            pin_to_cpu(1);
            for _ in 0..num(1) {
                println!("{:.2}", faults(num(2)));
            }
        }
        Some("directio") => {
            pin_to_cpu(1);
            for _ in 0..num(1) {
                println!("{:.2}", directio(num(2))?);
            }
        }
        Some("nop-hook") => {
            let mut ebpf = aya::Ebpf::load(recap_agent::probes::EBPF_OBJECT)?;
            let prog: &mut aya::programs::RawTracePoint = ebpf
                .program_mut(recap_common::programs::BENCH_NOP)
                .expect("nop program")
                .try_into()?;
            prog.load()?;
            // Optional: another raw tracepoint than sys_enter (e.g. sys_exit), for comparisons.
            prog.attach(args.get(1).map_or("sys_enter", String::as_str))?;
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

/// CPU ns per fault of touching `pages` fresh pages (one fault a page).
fn faults(pages: usize) -> f64 {
    let mut marks = Vec::new();
    recap_tests::touch_fresh_pages(pages, || marks.push(thread_cpu_ns()));
    (marks[1] - marks[0]) as f64 / pages as f64
}

/// CPU ns of this thread per 4 KiB `O_DIRECT` write, `n` of them over one file.
fn directio(n: usize) -> anyhow::Result<f64> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let path = std::env::temp_dir().join(format!("recap-bench-directio-{}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)?;
    // O_DIRECT wants an aligned buffer.
    let layout = std::alloc::Layout::from_size_align(4096, 4096)?;
    // SAFETY: a non-zero-sized layout; freed below.
    let buf = unsafe { std::alloc::alloc_zeroed(layout) };
    // SAFETY: 4096 bytes just allocated.
    let block = unsafe { std::slice::from_raw_parts(buf, 4096) };
    let start = thread_cpu_ns();
    for i in 0..n {
        file.write_all_at(block, (i % 256) as u64 * 4096)?;
    }
    let took = thread_cpu_ns() - start;
    // SAFETY: allocated above with this layout.
    unsafe { std::alloc::dealloc(buf, layout) };
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(took as f64 / n as f64)
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

/// CPU time of the calling thread: unlike wall time, it does not grow when other work on this
/// 2-CPU machine takes the CPU away, yet it includes every ns a hook adds to our syscalls.
fn thread_cpu_ns() -> u64 {
    cpu_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn cpu_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU ns per socket send or receive: N times, one byte written to one end of a Unix socket
/// pair and read from the other, in this thread.
fn sockio(n: usize) -> f64 {
    let mut fds = [0i32; 2];
    let mut b = [0u8; 1];
    // SAFETY: plain socketpair/write/read/close on fds this function owns.
    unsafe {
        libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr());
        let start = thread_cpu_ns();
        for _ in 0..n {
            libc::write(fds[0], b.as_ptr().cast(), 1);
            libc::read(fds[1], b.as_mut_ptr().cast(), 1);
        }
        let ns = (thread_cpu_ns() - start) as f64 / (2 * n) as f64;
        libc::close(fds[0]);
        libc::close(fds[1]);
        ns
    }
}

/// CPU ns (both processes) per round trip between this process and a forked child
/// (which inherits the CPU pinning); the child reports its CPU time through the pipe.
fn pingpong(rounds: usize) -> f64 {
    let (mut to_child, mut to_parent) = ([0i32; 2], [0i32; 2]);
    // SAFETY: plain pipe/fork/read/write on fds we own; the child only loops and exits.
    unsafe {
        libc::pipe(to_child.as_mut_ptr());
        libc::pipe(to_parent.as_mut_ptr());
        let pid = libc::fork();
        let mut b = [0u8; 1];
        if pid == 0 {
            let start = cpu_ns(libc::CLOCK_PROCESS_CPUTIME_ID);
            for _ in 0..rounds {
                libc::read(to_child[0], b.as_mut_ptr().cast(), 1);
                libc::write(to_parent[1], b.as_ptr().cast(), 1);
            }
            let used = (cpu_ns(libc::CLOCK_PROCESS_CPUTIME_ID) - start).to_ne_bytes();
            libc::write(to_parent[1], used.as_ptr().cast(), used.len());
            libc::_exit(0);
        }
        let start = cpu_ns(libc::CLOCK_PROCESS_CPUTIME_ID);
        for _ in 0..rounds {
            libc::write(to_child[1], b.as_ptr().cast(), 1);
            libc::read(to_parent[0], b.as_mut_ptr().cast(), 1);
        }
        let parent = cpu_ns(libc::CLOCK_PROCESS_CPUTIME_ID) - start;
        let mut child = [0u8; 8];
        libc::read(to_parent[0], child.as_mut_ptr().cast(), child.len());
        let ns = (parent + u64::from_ne_bytes(child)) as f64 / rounds as f64;
        libc::waitpid(pid, std::ptr::null_mut(), 0);
        for fd in to_child.into_iter().chain(to_parent) {
            libc::close(fd);
        }
        ns
    }
}
