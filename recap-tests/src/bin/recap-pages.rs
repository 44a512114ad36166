//! `recap-pages N`: says "ready", then on each line from stdin touches N fresh anonymous
//! pages (one write each: N minor page faults, as the kernel counts them) and says "done".
//! Idle in between, so its fault counts can be read before and after.

use std::io::{BufRead, Write};

fn main() {
    let pages: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("usage: recap-pages N");
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    for _ in std::io::stdin().lock().lines() {
        recap_tests::touch_fresh_pages(pages, || {});
        writeln!(out, "done").unwrap();
        out.flush().unwrap();
    }
}
