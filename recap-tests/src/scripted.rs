//! Real servers and clients driven by the tests: a self-signed certificate for TLS servers,
//! waiting for a port to listen, and a client script run one round of requests per line.

use std::{
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    thread,
    time::Duration,
};

/// A self-signed certificate and key (CN=localhost) in a fresh directory, removed on drop.
pub struct Cert {
    pub dir: PathBuf,
}

impl Cert {
    /// `name`: what the directory is for (tests of one binary run in parallel).
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("recap-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ok = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=localhost", "-keyout"])
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(dir.join("cert.pem"))
            .stderr(Stdio::null())
            .status()
            .expect("openssl (cargo xtask setup installs it)");
        assert!(ok.success());
        Cert { dir }
    }
    pub fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }
    pub fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }
}

impl Drop for Cert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits (up to 5 s) until something accepts on 127.0.0.1:`port`.
pub fn wait_listening(port: u16, what: &str) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        thread::sleep(Duration::from_millis(25));
    }
    panic!("{what} did not listen on {port}");
}

/// A server process listening on 127.0.0.1:`port`, killed on drop.
pub struct Listening {
    pub child: Child,
    pub port: u16,
}

impl Listening {
    /// Spawns `cmd` (its stdout discarded) and waits until `port` accepts.
    pub fn start(mut cmd: Command, port: u16, what: &str) -> Self {
        let child = cmd
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{what} ({cmd:?}): {e}"));
        let server = Listening { child, port };
        wait_listening(port, what);
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client script: says "ready", then makes its requests on each line from us and answers
/// with one line (what it saw: its ground truth). Killed on drop.
pub struct Client {
    child: Child,
    stdin: ChildStdin,
    out: BufReader<ChildStdout>,
}

impl Client {
    pub fn start(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        let stdin = child.stdin.take().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "{cmd:?}");
        Client { child, stdin, out }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs one round of requests; the line the client answered with.
    pub fn go(&mut self) -> String {
        writeln!(self.stdin).unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        line.trim().to_string()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
