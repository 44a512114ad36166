//! `http` over TLS against ground truth: Debian's nginx (OpenSSL as a shared library) and a
//! Node.js server (Node's OpenSSL) terminating TLS in the target, real clients (curl, Python's
//! `http.client` over `ssl`, Node's `https`) on keep-alive connections with a known mix of
//! methods and statuses; the same traffic to an identical nginx outside the target. The
//! window must count exactly the requests of the target's side, as TLS, and nothing of the
//! rest; the uprobes run for the target's processes only.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    thread,
    time::Duration,
};

use recap_tests::*;
use serde_json::Value;

/// The clients' and Node server's scripts.
fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tls").join(name)
}

/// A self-signed certificate and key in a fresh directory, removed on drop.
struct Cert {
    dir: PathBuf,
}

impl Cert {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("recap-https-{}", std::process::id()));
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
    fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }
    fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }
}

impl Drop for Cert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(port: u16, what: &str) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        thread::sleep(Duration::from_millis(25));
    }
    panic!("{what} did not listen on {port}");
}

/// nginx terminating TLS (HTTP/1.1, keep-alive), one worker: `/ok` 200, `/fail` 503, else 404.
struct Nginx {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Nginx {
    fn start(cert: &Cert, cg: Option<&TestCgroup>, name: &str) -> Self {
        let dir = cert.dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let d = dir.display();
        let conf = format!(
            "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n\
               server {{\n    listen 127.0.0.1:{port} ssl;\n\
                 ssl_certificate {};\n    ssl_certificate_key {};\n\
                 location = /ok {{ return 200 \"ok\\n\"; }}\n\
                 location = /fail {{ return 503; }}\n\
                 location / {{ return 404; }}\n  }}\n}}\n",
            cert.cert().display(),
            cert.key().display()
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let mut cmd = match cg {
            Some(cg) => cg.command("nginx"),
            None => Command::new("nginx"),
        };
        let child = cmd
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-p")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx (cargo xtask setup installs nginx-light)");
        wait_listening(port, "nginx");
        Nginx { child, dir, port }
    }

    /// The master and its worker.
    fn pids(&self) -> Vec<u32> {
        let master = self.child.id();
        let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
            .unwrap_or_default();
        let mut pids = vec![master];
        pids.extend(
            children
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
        pids
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: signalling our own child (nginx's master stops its worker on SIGTERM).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A client script: says "ready", runs its requests on a line from us, prints the statuses.
struct Client {
    child: Child,
    stdin: ChildStdin,
    out: BufReader<ChildStdout>,
}

impl Client {
    fn start(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready");
        Client { child, stdin, out }
    }

    fn python(cg: Option<&TestCgroup>, port: u16, args: &[&str]) -> Self {
        let mut cmd = match cg {
            Some(cg) => cg.command("/usr/bin/python3"),
            None => Command::new("/usr/bin/python3"),
        };
        cmd.arg(script("client.py"))
            .arg(port.to_string())
            .args(args);
        Client::start(cmd)
    }

    fn node(cg: Option<&TestCgroup>, port: u16, asks: &[&str]) -> Self {
        let mut cmd = match cg {
            Some(cg) => cg.command("node"),
            None => Command::new("node"),
        };
        cmd.arg(script("client.js"))
            .arg(port.to_string())
            .args(asks);
        Client::start(cmd)
    }

    /// Runs the requests; their statuses.
    fn go(&mut self) -> String {
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

/// curl on one connection for all its URLs (HTTP/1.1 keep-alive); `head`: HEAD requests.
fn curl(port: u16, paths: &[&str], head: bool) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sk", "--http1.1", "-o", "/dev/null"]);
    if head {
        cmd.arg("-I");
    }
    for p in paths {
        cmd.arg(format!("https://127.0.0.1:{port}{p}"));
        cmd.args(["-o", "/dev/null"]);
    }
    let out = cmd.output().expect("curl");
    assert!(out.status.success(), "curl: {out:?}");
}

fn open_window(cg: &TestCgroup) -> RecapRun {
    let mut run = RecapRun::start(&[
        "window",
        "--cgroup",
        cg.dir.to_str().unwrap(),
        "-d",
        "120s",
        "--probes",
        "http",
        "-o",
        "json",
    ]);
    run.wait_armed();
    run
}

/// `"GET 200" -> n` over TLS for one side of the summary; panics on a plaintext group.
fn counted_tls(side: &Value) -> BTreeMap<String, u64> {
    side["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            assert_eq!(g["tls"], true, "a request not over TLS: {g}");
            (
                format!("{} {}", g["method"].as_str().unwrap(), g["status"]),
                g["duration"]["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn expect(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// `run_cnt` of our TLS entry program (kernel run-time stats must be on).
fn tls_program_runs() -> u64 {
    let out = Command::new("bpftool")
        .args(["prog", "show", "name", "recap_tls_call", "--json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let one = |p: &Value| p["run_cnt"].as_u64().unwrap_or(0);
    match &v {
        Value::Array(ps) => ps.iter().map(one).sum(),
        p => one(p),
    }
}

/// Turns the kernel's per-program run counts on for the test's life (off again on drop).
struct BpfStats(String);
impl BpfStats {
    fn on() -> Self {
        let path = "/proc/sys/kernel/bpf_stats_enabled";
        let was = std::fs::read_to_string(path).unwrap().trim().to_string();
        std::fs::write(path, "1").unwrap();
        BpfStats(was)
    }
}
impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", &self.0);
    }
}

fn tls_seen(s: &Value) -> Vec<(String, Vec<u64>, bool)> {
    s["tls"]
        .as_array()
        .unwrap_or_else(|| panic!("no tls in {s:#}"))
        .iter()
        .map(|t| {
            (
                t["code"].as_str().unwrap().to_string(),
                t["pids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p.as_u64().unwrap())
                    .collect(),
                t["read"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn https_served_in_the_target_is_counted_exactly_and_nothing_outside() {
    if !require_root() {
        return;
    }
    let cert = Cert::new();
    let cg = TestCgroup::new("https-served");
    let inside = Nginx::start(&cert, Some(&cg), "inside");
    let outside = Nginx::start(&cert, None, "outside");
    let node_port = free_port();
    let mut node_server = cg
        .command("node")
        .arg(script("server.js"))
        .arg(node_port.to_string())
        .arg(cert.cert())
        .arg(cert.key())
        .stdout(Stdio::null())
        .spawn()
        .expect("node");
    wait_listening(node_port, "the Node server");
    // A connection opened before the window, reused in it: only its requests in the window count.
    let mut early = Client::python(None, inside.port, &["--early", "GET:/ok", "GET:/fail"]);
    let stats = BpfStats::on();
    let run = open_window(&cg);

    // The same mix to each nginx: curl (GET and HEAD), Python, Node, keep-alive each.
    let mix = |port: u16| {
        curl(port, &["/ok", "/ok", "/missing", "/fail"], false);
        curl(port, &["/ok"], true);
        let mut py = Client::python(None, port, &["POST:/ok", "GET:/missing"]);
        assert_eq!(py.go(), "200 404");
        let mut js = Client::node(None, port, &["GET:/ok", "GET:/ok"]);
        assert_eq!(js.go(), "200 200");
    };
    // Outside the target first: its nginx must not even run our uprobes.
    let before = tls_program_runs();
    mix(outside.port);
    let outside_runs = tls_program_runs() - before;
    mix(inside.port);
    assert_eq!(early.go(), "200 503");
    curl(node_port, &["/ok", "/ok", "/nothing"], false);
    let inside_runs = tls_program_runs() - before - outside_runs;
    drop(stats);

    let (s, err) = run.interrupt();
    let http = &s["http"];
    assert_eq!(
        counted_tls(&http["server"]),
        expect(&[
            // nginx: curl 2, Node 2, the early connection 1; Node's server: curl 2.
            ("GET 200", 2 + 2 + 1 + 2),
            ("GET 404", 1 + 1 + 1),
            ("GET 503", 1 + 1),
            ("HEAD 200", 1),
            ("POST 200", 1),
        ]),
        "{http:#}\n{err}"
    );
    assert_eq!(http["server"]["in_flight"], 0, "{http:#}");
    assert_eq!(http["client"]["started"], 0, "{http:#}");
    assert_eq!(http["tls_records_not_read"], 0, "{http:#}");
    assert_eq!(
        outside_runs, 0,
        "our uprobes ran for processes outside the target"
    );
    assert!(
        inside_runs >= 26,
        "{inside_runs} TLS calls seen in the target"
    );
    // Which TLS code ran where, and that it was read.
    let seen = tls_seen(&s);
    let nginx_worker = *inside.pids().last().unwrap() as u64;
    assert!(
        seen.iter()
            .any(|(code, pids, read)| code.starts_with("OpenSSL (libssl.so")
                && pids.contains(&nginx_worker)
                && *read),
        "{seen:?}"
    );
    let node = node_server.id() as u64;
    assert!(
        seen.iter()
            .any(|(_, pids, read)| pids.contains(&node) && *read),
        "{seen:?}"
    );
    for pid in outside.pids() {
        assert!(
            seen.iter()
                .all(|(_, pids, _)| !pids.contains(&(pid as u64))),
            "{seen:?}"
        );
    }
    assert!(
        s["warnings"].as_array().unwrap().is_empty(),
        "{}",
        s["warnings"]
    );
    let _ = node_server.kill();
    let _ = node_server.wait();
    drop(early);
    drop((inside, outside));
    assert_no_residue();
}

#[test]
fn https_made_by_clients_in_the_target_is_counted_exactly() {
    if !require_root() {
        return;
    }
    let cert = Cert::new();
    let cg = TestCgroup::new("https-made");
    let server = Nginx::start(&cert, None, "server");
    // Clients of the target, started before the window (instrumented as it arms); the
    // Python one has a connection older than the window, with one request on it before.
    let mut py = Client::python(
        Some(&cg),
        server.port,
        &[
            "--early",
            "GET:/ok",
            "GET:/ok",
            "GET:/missing",
            "POST:/fail",
        ],
    );
    let mut js = Client::node(
        Some(&cg),
        server.port,
        &["GET:/ok", "HEAD:/ok", "GET:/fail"],
    );
    // And one outside, to the same server.
    let mut other = Client::python(None, server.port, &["GET:/ok", "GET:/ok"]);
    let run = open_window(&cg);
    assert_eq!(py.go(), "200 200 404 503");
    assert_eq!(js.go(), "200 200 503");
    assert_eq!(other.go(), "200 200");
    let (s, err) = run.interrupt();
    let http = &s["http"];
    assert_eq!(
        counted_tls(&http["client"]),
        expect(&[
            ("GET 200", 2 + 1),
            ("GET 404", 1),
            ("POST 503", 1),
            ("HEAD 200", 1),
            ("GET 503", 1),
        ]),
        "{http:#}\n{err}"
    );
    assert_eq!(http["client"]["in_flight"], 0, "{http:#}");
    assert_eq!(http["server"]["started"], 0, "{http:#}");
    assert_eq!(http["tls_records_not_read"], 0, "{http:#}");
    let seen = tls_seen(&s);
    for pid in [py.child.id(), js.child.id()] {
        assert!(
            seen.iter()
                .any(|(_, pids, read)| pids.contains(&(pid as u64)) && *read),
            "{pid}: {seen:?}"
        );
    }
    assert!(
        seen.iter()
            .all(|(_, pids, _)| !pids.contains(&(other.child.id() as u64))),
        "{seen:?}"
    );
    drop((py, js, other, server));
    assert_no_residue();
}
