//! `recap-threads THREADS CALLS`: starts THREADS threads, prints `ready`, waits for `go` on
//! stdin, then every thread calls getppid CALLS times; prints `done` and waits for stdin to
//! close. For the test of a multi-threaded process moved into a target.

use std::{
    io::{BufRead, Write},
    sync::{Arc, Barrier},
    thread,
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads: usize = args[1].parse().unwrap();
    let calls: usize = args[2].parse().unwrap();
    let start = Arc::new(Barrier::new(threads + 1));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let start = start.clone();
            thread::spawn(move || {
                start.wait();
                for _ in 0..calls {
                    // SAFETY: getppid has no preconditions.
                    unsafe { libc::getppid() };
                }
            })
        })
        .collect();
    println!("ready");
    std::io::stdout().flush().unwrap();
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    assert_eq!(lines.next().unwrap().unwrap().trim(), "go");
    start.wait();
    for w in workers {
        w.join().unwrap();
    }
    println!("done");
    std::io::stdout().flush().unwrap();
    for _ in lines {}
}
