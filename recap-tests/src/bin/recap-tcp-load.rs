//! `recap-tcp-load`: TCP traffic with a known shape, driven line by line on stdin, for the
//! `tcp_health` test. Client and server are both in this process (and so in the target).
//!
//! - `connect N`: opens N connections to its own listener; answers `connected`.
//! - `transfer BYTES`: every open connection sends BYTES, shuts its side down and waits for the
//!   server's close (all data acknowledged); answers `transferred`.
//! - `refused K PORT`: K connects to a closed PORT (each answered by a RST); answers `refused`.
//! - `abort A`: A connections opened and closed with SO_LINGER 0 (each sends a RST);
//!   answers `aborted`.
//! - end of input: exits.

use std::{
    io::{BufRead, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    thread,
};

/// Closes with SO_LINGER 0: the kernel sends a RST instead of a FIN.
fn abort(s: TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket this function owns, with a valid `linger`.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER");
    drop(s);
}

fn main() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // The server side: reads each connection to its end, then closes it.
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            thread::spawn(move || {
                let mut sink = [0u8; 65536];
                while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
            });
        }
    });
    let mut open: Vec<TcpStream> = Vec::new();
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line.unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer = match words.as_slice() {
            ["connect", n] => {
                for _ in 0..n.parse::<usize>().unwrap() {
                    open.push(TcpStream::connect(addr).unwrap());
                }
                "connected"
            }
            ["transfer", bytes] => {
                let payload = vec![b'x'; bytes.parse().unwrap()];
                let senders: Vec<_> = open
                    .drain(..)
                    .map(|mut s| {
                        let payload = payload.clone();
                        thread::spawn(move || {
                            s.write_all(&payload).unwrap();
                            s.shutdown(std::net::Shutdown::Write).unwrap();
                            let mut rest = Vec::new();
                            let _ = s.read_to_end(&mut rest);
                        })
                    })
                    .collect();
                for sender in senders {
                    sender.join().unwrap();
                }
                "transferred"
            }
            ["refused", k, port] => {
                let to: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
                for _ in 0..k.parse::<usize>().unwrap() {
                    assert!(
                        TcpStream::connect(to).is_err(),
                        "port {port} should be closed"
                    );
                }
                "refused"
            }
            ["abort", a] => {
                for _ in 0..a.parse::<usize>().unwrap() {
                    let s = TcpStream::connect(addr).unwrap();
                    abort(s);
                }
                "aborted"
            }
            _ => panic!("unknown command `{line}`"),
        };
        println!("{answer}");
        std::io::stdout().flush().unwrap();
    }
}
