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
        recap_harness::tls::self_signed(&dir).unwrap_or_else(|e| panic!("{e:#}"));
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

/// A certificate authority of the test's own (a fresh key, in a fresh directory removed on
/// drop) and the certificates it issues: a server's for `localhost` and `127.0.0.1`, a
/// client's. ECDSA P-256: quick to make.
pub struct TestCa {
    pub dir: PathBuf,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("recap-ca-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ca = TestCa { dir };
        let mut req = ca.new_key("ca");
        req.args(["-x509", "-days", "2", "-subj"])
            .arg(format!("/CN=recap test CA {name}"))
            .arg("-out")
            .arg(ca.cert());
        run_openssl(req);
        ca
    }

    /// The CA's certificate, as a client trusts it.
    pub fn cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A server's certificate for `localhost` and `127.0.0.1`: (certificate, key).
    pub fn server(&self) -> (PathBuf, PathBuf) {
        self.issue(
            "server",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
        )
    }

    /// A client's certificate: (certificate, key).
    pub fn client(&self) -> (PathBuf, PathBuf) {
        self.issue(
            "client",
            "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
        )
    }

    /// A certificate the CA signs for `name` with `extensions` (openssl's `-extfile` syntax).
    fn issue(&self, name: &str, extensions: &str) -> (PathBuf, PathBuf) {
        let file = |ext: &str| self.dir.join(format!("{name}.{ext}"));
        std::fs::write(file("ext"), extensions).unwrap();
        let mut req = self.new_key(name);
        req.arg("-subj")
            .arg(format!("/CN={name}"))
            .arg("-out")
            .arg(file("csr"));
        run_openssl(req);
        let mut sign = Command::new("openssl");
        sign.args(["x509", "-req", "-days", "2", "-CAcreateserial", "-in"])
            .arg(file("csr"))
            .arg("-CA")
            .arg(self.cert())
            .arg("-CAkey")
            .arg(self.dir.join("ca.key"))
            .arg("-extfile")
            .arg(file("ext"))
            .arg("-out")
            .arg(file("pem"));
        run_openssl(sign);
        (file("pem"), file("key"))
    }

    /// `openssl req` with a new key written to `<name>.key`.
    fn new_key(&self, name: &str) -> Command {
        let mut req = Command::new("openssl");
        req.args([
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-keyout"])
        .arg(self.dir.join(format!("{name}.key")));
        req
    }
}

fn run_openssl(mut cmd: Command) {
    let out = cmd
        .output()
        .expect("openssl (cargo xtask setup installs it)");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for TestCa {
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
