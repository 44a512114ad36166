//! `recap-http`: an HTTP/1.1 server and a client with a known mix of requests, for the `http`
//! family's ground truth. Plain std sockets, so every read and write is one syscall that the
//! test can reason about.
//!
//! - `serve`: listens on 127.0.0.1, prints its port, serves until killed. Routes: `/ok` (200,
//!   body in several writes), `/chunked` (200, chunked body in 10 writes), `/big` (200, 1 MiB in
//!   64 KiB writes; every status line is written by `write!`, i.e. in several writes), `/slow` (200 after 300 ms), `/hang` (no answer: waits for the client to
//!   close, then closes), `POST /fail` (503), `POST /upload` (201; `100 Continue` first when
//!   asked), any other POST (200), anything else 404. HEAD gets the head alone.
//! - `client PORT`: sends the mix over one keep-alive connection and fresh ones, reads every
//!   response, prints `{"GET 200": n, ...}` (what it received) and `interim N`, then leaves one
//!   request to `/hang` unanswered on an open connection and one on a closed connection, prints
//!   `pending`, and waits for stdin to close.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    thread,
    time::Duration,
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("serve") => serve(),
        Some("client") => client(args[2].parse().expect("a port")),
        _ => {
            eprintln!("usage: recap-http serve | client PORT");
            std::process::exit(2);
        }
    }
}

fn serve() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    println!("{}", listener.local_addr().unwrap().port());
    std::io::stdout().flush().unwrap();
    for stream in listener.incoming().map_while(Result::ok) {
        thread::spawn(move || {
            let _ = serve_connection(stream);
        });
    }
}

struct Request {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
}

fn read_head(r: &mut impl BufRead) -> std::io::Result<Option<(String, BTreeMap<String, String>)>> {
    let mut first = String::new();
    if r.read_line(&mut first)? == 0 {
        return Ok(None);
    }
    let mut headers = BTreeMap::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    Ok(Some((first.trim_end().to_string(), headers)))
}

fn serve_connection(stream: TcpStream) -> std::io::Result<()> {
    let mut w = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    loop {
        let Some((line, headers)) = read_head(&mut r)? else {
            return Ok(());
        };
        let mut parts = line.split(' ');
        let req = Request {
            method: parts.next().unwrap_or("").to_string(),
            path: parts.next().unwrap_or("").to_string(),
            headers,
        };
        if req.path == "/hang" {
            // Never answered: wait for the client to go, then close.
            let mut sink = Vec::new();
            let _ = r.read_to_end(&mut sink);
            return Ok(());
        }
        let len: usize = req
            .headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if req.headers.get("expect").map(String::as_str) == Some("100-continue") {
            w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body)?;
        let close = req.headers.get("connection").map(String::as_str) == Some("close");
        respond(&mut w, &req, close)?;
        if close {
            return Ok(());
        }
    }
}

fn respond(w: &mut TcpStream, req: &Request, close: bool) -> std::io::Result<()> {
    let conn = if close { "close" } else { "keep-alive" };
    let head_only = req.method == "HEAD";
    let (status, reason) = match (req.method.as_str(), req.path.as_str()) {
        ("POST", "/fail") => (503, "Service Unavailable"),
        ("POST", "/upload") => (201, "Created"),
        ("POST", _) => (200, "OK"),
        (_, "/ok" | "/chunked" | "/big" | "/slow") => (200, "OK"),
        _ => (404, "Not Found"),
    };
    if req.path == "/slow" {
        thread::sleep(Duration::from_millis(300));
    }
    if req.path == "/chunked" && !head_only {
        write!(
            w,
            "HTTP/1.1 {status} {reason}\r\nTransfer-Encoding: chunked\r\nConnection: {conn}\r\n\r\n"
        )?;
        for i in 0..10 {
            // Chunk data that looks like a status line, in a write of its own: it must not be
            // taken for one.
            let chunk = format!("HTTP/1.1 200 chunk {i}\n");
            write!(w, "{:x}\r\n", chunk.len())?;
            w.write_all(chunk.as_bytes())?;
            w.write_all(b"\r\n")?;
        }
        return w.write_all(b"0\r\n\r\n");
    }
    let body: Vec<u8> = match req.path.as_str() {
        "/big" => vec![b'x'; 1 << 20],
        _ if status == 404 => b"not found\n".to_vec(),
        _ => b"hello from recap-http\n".to_vec(),
    };
    // The status line and the headers in separate writes, the body in pieces.
    write!(w, "HTTP/1.1 {status} {reason}\r\n")?;
    write!(
        w,
        "Content-Length: {}\r\nConnection: {conn}\r\n\r\n",
        body.len()
    )?;
    if head_only {
        return Ok(());
    }
    for piece in body.chunks(64 << 10) {
        for part in piece.chunks(piece.len().div_ceil(2)) {
            w.write_all(part)?;
        }
    }
    Ok(())
}

struct Client {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Client {
    fn connect(port: u16) -> Self {
        let w = TcpStream::connect(("127.0.0.1", port)).unwrap();
        w.set_nodelay(true).unwrap();
        let r = BufReader::new(w.try_clone().unwrap());
        Client { w, r }
    }

    /// Sends a request (its head in `pieces` writes, 20 ms apart) and reads the final
    /// response; returns its status and how many interim responses came first.
    fn request(&mut self, method: &str, path: &str, body: &[u8], opts: Opts) -> (u16, u32) {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: recap.test\r\n");
        if !body.is_empty() {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        if opts.expect_continue {
            head.push_str("Expect: 100-continue\r\n");
        }
        if opts.close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        let bytes = head.as_bytes();
        let step = bytes.len().div_ceil(opts.pieces.max(1));
        let (first, rest) = bytes.split_at(opts.first_piece.unwrap_or(0));
        let pieces = std::iter::once(first)
            .filter(|p| !p.is_empty())
            .chain(rest.chunks(step));
        for (i, piece) in pieces.enumerate() {
            if i > 0 {
                thread::sleep(Duration::from_millis(20));
            }
            self.w.write_all(piece).unwrap();
        }
        let mut interim = 0;
        if opts.expect_continue {
            let (status, _) = read_head(&mut self.r).unwrap().expect("100 Continue");
            assert!(status.starts_with("HTTP/1.1 100"), "{status}");
            interim += 1;
        }
        if !body.is_empty() {
            self.w.write_all(body).unwrap();
        }
        let (status, headers) = read_head(&mut self.r).unwrap().expect("a response");
        let code: u16 = status[9..12].parse().unwrap();
        if method != "HEAD" {
            if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
                loop {
                    let mut size = String::new();
                    self.r.read_line(&mut size).unwrap();
                    let n = usize::from_str_radix(size.trim(), 16).unwrap();
                    let mut chunk = vec![0u8; n + 2];
                    self.r.read_exact(&mut chunk).unwrap();
                    if n == 0 {
                        break;
                    }
                }
            } else {
                let len: usize = headers["content-length"].parse().unwrap();
                let mut body = vec![0u8; len];
                self.r.read_exact(&mut body).unwrap();
            }
        }
        (code, interim)
    }
}

#[derive(Clone, Copy)]
struct Opts {
    pieces: usize,
    /// A first write of this many bytes (e.g. 2: `GE`, cut inside the method).
    first_piece: Option<usize>,
    expect_continue: bool,
    close: bool,
}

const PLAIN: Opts = Opts {
    pieces: 1,
    first_piece: None,
    expect_continue: false,
    close: false,
};

fn client(port: u16) {
    let mut got: BTreeMap<String, u64> = BTreeMap::new();
    let mut interim = 0;
    let mut tally = |method: &str, (status, i): (u16, u32)| {
        *got.entry(format!("{method} {status}")).or_default() += 1;
        interim += i;
    };
    let mut ka = Client::connect(port);
    for _ in 0..5 {
        tally("GET", ka.request("GET", "/ok", b"", PLAIN));
    }
    for _ in 0..3 {
        tally("GET", ka.request("GET", "/missing", b"", PLAIN));
    }
    for _ in 0..2 {
        tally("HEAD", ka.request("HEAD", "/ok", b"", PLAIN));
        tally("POST", ka.request("POST", "/fail", &[b'p'; 100], PLAIN));
        let upload = Opts {
            expect_continue: true,
            ..PLAIN
        };
        tally("POST", ka.request("POST", "/upload", &[b'u'; 5000], upload));
        tally("GET", ka.request("GET", "/chunked", b"", PLAIN));
        let split = Opts { pieces: 3, ..PLAIN };
        tally("GET", ka.request("GET", "/ok", b"", split));
    }
    let cut_in_method = Opts {
        first_piece: Some(2),
        ..PLAIN
    };
    tally("GET", ka.request("GET", "/ok", b"", cut_in_method));
    let cut_before_target = Opts {
        first_piece: Some(4),
        ..PLAIN
    };
    tally("GET", ka.request("GET", "/ok", b"", cut_before_target));
    tally("GET", ka.request("GET", "/slow", b"", PLAIN));
    tally("GET", ka.request("GET", "/big", b"", PLAIN));
    tally(
        "POST",
        ka.request("POST", "/data", &vec![b'd'; 200_000], PLAIN),
    );
    tally("DELETE", ka.request("DELETE", "/ok", b"", PLAIN));
    let fresh = Opts {
        close: true,
        ..PLAIN
    };
    for _ in 0..3 {
        tally(
            "GET",
            Client::connect(port).request("GET", "/ok", b"", fresh),
        );
    }
    tally(
        "GET",
        Client::connect(port).request("GET", "/missing", b"", fresh),
    );
    let counts: Vec<String> = got.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect();
    println!("{{{}}}", counts.join(", "));
    println!("interim {interim}");
    // One request left unanswered on an open connection (in flight at the window's end), one
    // on a connection closed before its answer (aborted).
    let mut pending = Client::connect(port);
    pending
        .w
        .write_all(b"GET /hang HTTP/1.1\r\nHost: recap.test\r\n\r\n")
        .unwrap();
    let mut gone = Client::connect(port);
    gone.w
        .write_all(b"GET /hang HTTP/1.1\r\nHost: recap.test\r\n\r\n")
        .unwrap();
    thread::sleep(Duration::from_millis(100));
    drop(gone);
    println!("pending");
    std::io::stdout().flush().unwrap();
    let mut sink = String::new();
    let _ = std::io::stdin().read_to_string(&mut sink);
    drop(pending);
}
