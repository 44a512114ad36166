//! A workload whose every countable action is known in advance. It starts, reports its
//! listening port, waits for `go` on stdin, does exactly what its arguments say, prints `done`
//! and stays alive (holding its kept-open connections) until stdin closes.
//!
//! `recap-workload CONNECT_ADDR REFUSED_PORT UDP_ADDR N F KEEP BYTES U SIZE EXECS GETPPID SPIN_MS`

use std::{
    io::{BufRead, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    process::Command,
    time::{Duration, Instant},
};

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    assert_eq!(
        a.len(),
        12,
        "usage: CONNECT_ADDR REFUSED_PORT UDP_ADDR N F KEEP BYTES U SIZE EXECS GETPPID SPIN_MS"
    );
    let connect: SocketAddr = a[0].parse().unwrap();
    let refused: SocketAddr = format!("127.0.0.1:{}", a[1]).parse().unwrap();
    let udp_to: SocketAddr = a[2].parse().unwrap();
    let n: usize = a[3].parse().unwrap();
    let f: usize = a[4].parse().unwrap();
    let keep: usize = a[5].parse().unwrap();
    let bytes: usize = a[6].parse().unwrap();
    let u: usize = a[7].parse().unwrap();
    let size: usize = a[8].parse().unwrap();
    let execs: usize = a[9].parse().unwrap();
    let getppid: usize = a[10].parse().unwrap();
    let spin_ms: u64 = a[11].parse().unwrap();

    // Inbound connections are accepted and drained by a thread started before `go`.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink);
        }
    });
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    println!("listening {port}");
    std::io::stdout().flush().unwrap();

    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    assert_eq!(lines.next().unwrap().unwrap().trim(), "go");

    let payload = vec![b'x'; bytes];
    for _ in 0..n {
        let mut s = TcpStream::connect(connect).unwrap();
        s.write_all(&payload).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest); // wait for the server's close: both FINs seen
    }
    for _ in 0..f {
        assert!(
            TcpStream::connect(refused).is_err(),
            "port {refused} should be closed"
        );
    }
    let kept: Vec<TcpStream> = (0..keep)
        .map(|_| TcpStream::connect(connect).unwrap())
        .collect();
    let datagram = vec![b'y'; size];
    for _ in 0..u {
        udp.send_to(&datagram, udp_to).unwrap();
    }
    for _ in 0..execs {
        assert!(Command::new("/bin/true").status().unwrap().success());
    }
    for _ in 0..getppid {
        // SAFETY: getppid has no preconditions.
        unsafe { libc::getppid() };
    }
    let until = Instant::now() + Duration::from_millis(spin_ms);
    let mut x = 0u64;
    while Instant::now() < until {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
    println!("done");
    std::io::stdout().flush().unwrap();
    for _ in lines {}
    drop(kept);
}
