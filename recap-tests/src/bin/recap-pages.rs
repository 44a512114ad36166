//! `recap-pages N`: says "ready", then on each line from stdin touches N fresh anonymous
//! pages (one write each: N minor page faults, as the kernel counts them) and says "done".
//! Idle in between, so its fault counts can be read before and after.

use std::io::{BufRead, Write};

fn main() {
    let pages: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("usage: recap-pages N");
    let page = 4096;
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    for _ in std::io::stdin().lock().lines() {
        // SAFETY: a fresh private anonymous mapping, written within its bounds, then unmapped.
        unsafe {
            let at = libc::mmap(
                std::ptr::null_mut(),
                pages * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(at, libc::MAP_FAILED);
            for i in 0..pages {
                std::ptr::write_volatile((at as *mut u8).add(i * page), 1);
            }
            libc::munmap(at, pages * page);
        }
        writeln!(out, "done").unwrap();
        out.flush().unwrap();
    }
}
