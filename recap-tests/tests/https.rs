//! `http` over TLS against ground truth: Debian's nginx (OpenSSL as a shared library) and a
//! Node.js server (Node's OpenSSL) terminating TLS in the target, real clients (curl, Python's
//! `http.client` over `ssl`, Node's `https`) on keep-alive connections with a known mix of
//! methods and statuses; the same traffic to an identical nginx outside the target. The
//! window must count exactly the requests of the target's side, as TLS, and nothing of the
//! rest; the uprobes run for the target's processes only.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use recap_tests::{
    scripted::{wait_listening, Cert, Client, Listening},
    *,
};
use serde_json::Value;

/// The clients' and Node server's scripts.
fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tls").join(name)
}

/// nginx terminating TLS (HTTP/1.1, keep-alive), one worker: `/ok` 200, `/fail` 503, else 404.
struct Nginx {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Nginx {
    fn start(cert: &Cert, cg: Option<&TestCgroup>, name: &str) -> Self {
        Nginx::start_with(cert, cg, name, "ssl")
    }

    /// `listen` parameters: `ssl`, or `ssl http2`.
    fn start_with(cert: &Cert, cg: Option<&TestCgroup>, name: &str, listen: &str) -> Self {
        let dir = cert.dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_tcp_port();
        let d = dir.display();
        let conf = format!(
            "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n\
               server {{\n    listen 127.0.0.1:{port} {listen};\n\
                 ssl_certificate {};\n    ssl_certificate_key {};\n\
                 location = /ok {{ return 200 \"ok\\n\"; }}\n\
                 location = /fail {{ return 503; }}\n\
                 location / {{ return 404; }}\n  }}\n}}\n",
            cert.cert().display(),
            cert.key().display()
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let mut cmd = command_in(cg, "nginx");
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

/// A Node server script (`server.js`, `h2server.js`: PORT CERT KEY) in `cg`, listening.
fn node_server(cg: &TestCgroup, name: &str, cert: &Cert) -> Listening {
    let port = free_tcp_port();
    let mut cmd = cg.command("node");
    cmd.arg(script(name))
        .arg(port.to_string())
        .arg(cert.cert())
        .arg(cert.key());
    Listening::start(cmd, port, name)
}

fn python_client(cg: Option<&TestCgroup>, port: u16, args: &[&str]) -> Client {
    let mut cmd = command_in(cg, "/usr/bin/python3");
    cmd.arg(script("client.py"))
        .arg(port.to_string())
        .args(args);
    Client::start(cmd)
}

fn node_client(cg: Option<&TestCgroup>, port: u16, asks: &[&str]) -> Client {
    let mut cmd = command_in(cg, "node");
    cmd.arg(script("client.js"))
        .arg(port.to_string())
        .args(asks);
    Client::start(cmd)
}

/// curl on one connection for all its URLs (HTTP/1.1 keep-alive); `head`: HEAD requests.
fn curl(port: u16, paths: &[&str], head: bool) {
    curl_in(None, port, paths, head)
}

/// `curl`, started in `cg` if given: a process that starts during the window, lives some
/// tens of milliseconds and is gone before the window's next tick.
fn curl_in(cg: Option<&TestCgroup>, port: u16, paths: &[&str], head: bool) {
    let mut cmd = command_in(cg, "curl");
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
    RecapRun::armed_window(&["--cgroup", cg.dir.to_str().unwrap()], "http")
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

/// Whether the agent has instrumented `pid`'s TLS code: its key in `TLS_PROCS`, which is set once
/// the process's uprobes are attached (a process forked in the window is covered from then on;
/// what it wrote before is counted as TLS records not read).
fn tls_instrumented(pid: u32) -> bool {
    let out = Command::new("bpftool")
        .args(["map", "dump", "name", "TLS_PROCS", "--json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let key = |e: &Value| -> Option<u64> {
        if let Some(k) = e["formatted"]["key"].as_u64() {
            return Some(k);
        }
        let bytes: Vec<u8> = e["key"]
            .as_array()?
            .iter()
            .map(|b| u8::from_str_radix(b.as_str()?.trim_start_matches("0x"), 16).ok())
            .collect::<Option<_>>()?;
        Some(u32::from_le_bytes(bytes.try_into().ok()?) as u64)
    };
    v.as_array()
        .is_some_and(|entries| entries.iter().any(|e| key(e) == Some(pid as u64)))
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

/// The summary's `tls`: (code, processes read, processes not read).
fn tls_seen(s: &Value) -> Vec<(String, Vec<u64>, Vec<u64>)> {
    let pids = |v: &Value, key: &str| -> Vec<u64> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|p| p.as_u64().or_else(|| p[key].as_u64()).unwrap())
                    .collect()
            })
            .unwrap_or_default()
    };
    s["tls"]
        .as_array()
        .unwrap_or_else(|| panic!("no tls in {s:#}"))
        .iter()
        .map(|t| {
            (
                t["code"].as_str().unwrap().to_string(),
                pids(&t["read"], ""),
                pids(&t["not_read"], "pid"),
            )
        })
        .collect()
}

fn read_in(seen: &[(String, Vec<u64>, Vec<u64>)], pid: u32) -> bool {
    seen.iter().any(|(_, read, _)| read.contains(&(pid as u64)))
}

fn named(seen: &[(String, Vec<u64>, Vec<u64>)], pid: u32) -> bool {
    let pid = pid as u64;
    seen.iter()
        .any(|(_, read, not)| read.contains(&pid) || not.contains(&pid))
}

#[test]
fn https_served_in_the_target_is_counted_exactly_and_nothing_outside() {
    if !require_root() {
        return;
    }
    let cert = Cert::new("https");
    let cg = TestCgroup::new("https-served");
    let inside = Nginx::start(&cert, Some(&cg), "inside");
    let outside = Nginx::start(&cert, None, "outside");
    let node = node_server(&cg, "server.js", &cert);
    let node_port = node.port;
    // A connection opened before the window, reused in it: only its requests in the window count.
    let mut early = python_client(None, inside.port, &["--early", "GET:/ok", "GET:/fail"]);
    let stats = BpfStats::on();
    let run = open_window(&cg);

    // The same mix to each nginx: curl (GET and HEAD), Python, Node, keep-alive each.
    let mix = |port: u16| {
        curl(port, &["/ok", "/ok", "/missing", "/fail"], false);
        curl(port, &["/ok"], true);
        let mut py = python_client(None, port, &["POST:/ok", "GET:/missing"]);
        assert_eq!(py.go(), "200 404");
        let mut js = node_client(None, port, &["GET:/ok", "GET:/ok"]);
        assert_eq!(js.go(), "200 200");
    };
    // Outside the target first: its nginx must not even run our uprobes.
    let before = tls_program_runs();
    mix(outside.port);
    let outside_runs = tls_program_runs() - before;
    mix(inside.port);
    assert_eq!(early.go(), "200 503");
    // nginx's master forks a new worker for one that died: the new process is instrumented
    // as it is forked, and serves the next requests.
    let old_worker = *inside.pids().last().unwrap();
    // SAFETY: signalling a process of our own nginx.
    unsafe { libc::kill(old_worker as i32, libc::SIGKILL) };
    let new_worker = (0..200)
        .find_map(|_| {
            thread::sleep(Duration::from_millis(10));
            let w = *inside.pids().last().unwrap();
            (w != old_worker && w != inside.child.id()).then_some(w)
        })
        .expect("nginx forked no new worker");
    wait_listening(inside.port, "nginx's new worker");
    // Its uprobes are attached as the window learns of the fork, within milliseconds: the
    // requests below go to it once they are.
    let instrumented = (0..500).any(|_| {
        thread::sleep(Duration::from_millis(10));
        tls_instrumented(new_worker)
    });
    assert!(
        instrumented,
        "nginx's new worker {new_worker} was not instrumented in 5 s"
    );
    curl(inside.port, &["/ok", "/missing"], false);
    curl(node_port, &["/ok", "/ok", "/nothing"], false);
    let inside_runs = tls_program_runs() - before - outside_runs;
    drop(stats);

    let (s, err) = run.interrupt();
    let http = &s["http"];
    assert_eq!(
        counted_tls(&http["server"]),
        expect(&[
            // nginx: curl 2, Node 2, the early connection 1, the new worker 1; Node's server 2.
            ("GET 200", 2 + 2 + 1 + 1 + 2),
            ("GET 404", 1 + 1 + 1 + 1),
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
    for worker in [old_worker, new_worker] {
        assert!(
            seen.iter()
                .any(|(code, read, _)| code.starts_with("OpenSSL (libssl.so")
                    && read.contains(&(worker as u64))),
            "{worker}: {seen:?}"
        );
    }
    assert!(read_in(&seen, node.pid()), "{seen:?}");
    for pid in outside.pids() {
        assert!(!named(&seen, pid), "{seen:?}");
    }
    assert!(
        s["warnings"].as_array().unwrap().is_empty(),
        "{}",
        s["warnings"]
    );
    drop(node);
    drop(early);
    drop((inside, outside));
    assert_no_residue();
}

#[test]
fn https_made_by_clients_in_the_target_is_counted_exactly() {
    if !require_root() {
        return;
    }
    let cert = Cert::new("https");
    let cg = TestCgroup::new("https-made");
    let server = Nginx::start(&cert, None, "server");
    // Clients of the target, started before the window (instrumented as it arms); the
    // Python one has a connection older than the window, with one request on it before.
    let mut py = python_client(
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
    let mut js = node_client(
        Some(&cg),
        server.port,
        &["GET:/ok", "HEAD:/ok", "GET:/fail"],
    );
    // And one outside, to the same server.
    let mut other = python_client(None, server.port, &["GET:/ok", "GET:/ok"]);
    let run = open_window(&cg);
    assert_eq!(py.go(), "200 200 404 503");
    assert_eq!(js.go(), "200 200 503");
    assert_eq!(other.go(), "200 200");
    let (s, err) = run.interrupt();
    let http = &s["http"];
    assert_eq!(
        counted_tls(&http["client"]),
        expect(&[
            // Python 2, Node 1.
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
    for pid in [py.pid(), js.pid()] {
        assert!(read_in(&seen, pid), "{pid}: {seen:?}");
    }
    assert!(!named(&seen, other.pid()), "{seen:?}");
    drop((py, js, other, server));
    assert_no_residue();
}

/// Processes that start in the window and are gone within a second (curl, in the target):
/// instrumented as the kernel tells of their exec, which races with their first request. Each
/// request is counted exactly, or, when the race was lost, the TLS records the process wrote
/// are counted as not read and the process is named: never a silent 0.
#[test]
fn short_lived_https_clients_are_counted_or_said_to_be_missed() {
    if !require_root() {
        return;
    }
    let cert = Cert::new("https");
    let cg = TestCgroup::new("https-short");
    let server = Nginx::start(&cert, None, "server");
    // A long-lived process of the target that maps the same libssl: new processes of a
    // program already seen are probed at their exec.
    let mut py = python_client(Some(&cg), server.port, &["GET:/ok"]);
    let run = open_window(&cg);
    assert_eq!(py.go(), "200");
    let runs = 5;
    for _ in 0..runs {
        curl_in(Some(&cg), server.port, &["/ok", "/fail"], false);
    }
    let (s, err) = run.interrupt();
    let http = &s["http"];
    let got = counted_tls(&http["client"]);
    let (ok, fail) = (got["GET 200"] - 1, got.get("GET 503").copied().unwrap_or(0));
    assert!(ok <= runs && fail <= runs, "{http:#}");
    let not_read = http["tls_records_not_read"].as_u64().unwrap();
    eprintln!(
        "short-lived curls: {ok} + {fail} of {} requests counted, {not_read} TLS records not read",
        2 * runs
    );
    if ok + fail < 2 * runs {
        assert!(not_read > 0, "requests missed silently: {http:#}\n{err}");
    } else {
        assert_eq!(not_read, 0, "{http:#}");
    }
    assert_eq!(http["server"]["started"], 0, "{http:#}");
    drop((py, server));
    assert_no_residue();
}

/// HTTP/2 over TLS (ALPN h2) to nginx in the target, curl reusing one connection for several
/// streams: every (method, status) exact, version 2, over TLS; the same traffic to an
/// identical nginx outside the target counts nothing.
#[test]
fn http2_over_tls_is_counted_exactly_and_nothing_outside() {
    if !require_root() {
        return;
    }
    let cert = Cert::new("https");
    let cg = TestCgroup::new("https-h2");
    let server = Nginx::start_with(&cert, Some(&cg), "h2", "ssl http2");
    let outside = Nginx::start_with(&cert, None, "h2-out", "ssl http2");
    let run = open_window(&cg);
    for port in [server.port, outside.port] {
        let mut cmd = Command::new("curl");
        cmd.args(["-sk", "--http2", "-w", "%{http_version} "]);
        for path in ["/ok", "/ok", "/missing", "/fail"] {
            cmd.args(["-o", "/dev/null"])
                .arg(format!("https://127.0.0.1:{port}{path}"));
        }
        let out = cmd.output().expect("curl");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "2 2 2 2 ", "{out:?}");
    }
    let (s, err) = run.interrupt();
    let http = &s["http"];
    assert_eq!(http["http2"]["connections"], 1, "{http:#}\n{err}");
    assert_eq!(
        counted_tls(&http["server"]),
        expect(&[("GET 200", 2), ("GET 404", 1), ("GET 503", 1)]),
        "{http:#}"
    );
    for g in http["server"]["requests"].as_array().unwrap() {
        assert_eq!(g["version"], "2", "{g}");
    }
    assert_eq!(http["server"]["started"], 4, "{http:#}");
    assert_eq!(http["server"]["in_flight"], 0, "{http:#}");
    assert_eq!(http["client"]["started"], 0, "outside clients: {http:#}");
    assert_eq!(http["http2"]["unknown_fields"], 0, "{http:#}");
    assert_eq!(http["http2"]["frames_lost"], 0, "{http:#}");
    drop(server);
    drop(outside);
    assert_no_residue();
}

/// The Go test programs (tests/go/*.go, standard library only), built once per test binary
/// with Debian's Go into the target directory's scratch space (`CARGO_TARGET_TMPDIR`).
fn go_program(name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for program in ["server", "client"] {
            let src = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("go")
                .join(format!("{program}.go"));
            let out = Command::new("go")
                .args(["build", "-o"])
                .arg(dir.join(program))
                .arg(&src)
                .env("GOCACHE", dir.join("cache"))
                .env("GOPATH", dir.join("gopath"))
                .env("GOFLAGS", "-mod=mod")
                .env("GOTOOLCHAIN", "local")
                .output()
                .expect("go (cargo xtask setup installs golang-go)");
            assert!(out.status.success(), "go build {program}: {out:?}");
        }
        // The build cache is only for the build.
        let _ = std::fs::remove_dir_all(dir.join("cache"));
        let _ = std::fs::remove_dir_all(dir.join("gopath"));
        dir.clone()
    });
    dir.join(name)
}

/// The Go HTTPS server (HTTP/2 by ALPN, or HTTP/1.1 for clients that ask for it).
fn go_server(cert: &Cert, cg: Option<&TestCgroup>) -> Listening {
    let port = free_tcp_port();
    let mut cmd = command_in(cg, go_program("server"));
    cmd.arg(port.to_string()).arg(cert.cert()).arg(cert.key());
    Listening::start(cmd, port, "the Go server")
}

fn go_client(cg: Option<&TestCgroup>, port: u16, http1: bool, asks: &[&str]) -> Client {
    let program = go_program("client");
    let mut cmd = command_in(cg, &program);
    if http1 {
        cmd.arg("-http1");
    }
    cmd.arg(port.to_string()).args(asks);
    Client::start(cmd)
}

/// `"GET 200 2" -> n` (method, status, version) over TLS for one side of the summary.
fn counted_tls_by_version(side: &Value) -> BTreeMap<String, u64> {
    for g in side["requests"].as_array().unwrap() {
        assert_eq!(g["tls"], true, "a request not over TLS: {g}");
    }
    requests_by_version(side)
}

/// Go's own TLS (crypto/tls, no OpenSSL): a Go server in the target answering Go clients
/// over HTTP/2 and HTTP/1.1, and a Go client in the target calling a Go server outside; the
/// uprobes at the functions' stack check branches (writes) and at `Read`'s return instructions read
/// every request exactly.
#[test]
fn go_crypto_tls_is_counted_exactly_on_both_sides() {
    if !require_root() {
        return;
    }
    let cert = Cert::new("https-go");
    let cg = TestCgroup::new("https-go");
    let server = go_server(&cert, Some(&cg));
    let outside = go_server(&cert, None);
    let mut from_inside = go_client(
        Some(&cg),
        outside.port,
        false,
        &["GET:/ok", "GET:/fail", "DELETE:/missing"],
    );
    let run = open_window(&cg);
    let mut h2 = go_client(
        None,
        server.port,
        false,
        &[
            "GET:/ok",
            "GET:/ok",
            "GET:/missing",
            "GET:/fail",
            "POST:/ok",
        ],
    );
    let mut h1 = go_client(None, server.port, true, &["GET:/ok", "PUT:/fail"]);
    assert_eq!(h2.go(), "GET 200 GET 200 GET 404 GET 503 POST 200 HTTP/2.0");
    assert_eq!(h1.go(), "GET 200 PUT 503 HTTP/1.1");
    assert_eq!(from_inside.go(), "GET 200 GET 503 DELETE 404 HTTP/2.0");
    let (s, err) = run.interrupt();
    let http = &s["http"];
    assert_eq!(
        counted_tls_by_version(&http["server"]),
        expect(&[
            ("GET 200 2", 2),
            ("GET 404 2", 1),
            ("GET 503 2", 1),
            ("POST 200 2", 1),
            ("GET 200 1.1", 1),
            ("PUT 503 1.1", 1),
        ]),
        "{http:#}\n{err}"
    );
    assert_eq!(
        counted_tls_by_version(&http["client"]),
        expect(&[("GET 200 2", 1), ("GET 503 2", 1), ("DELETE 404 2", 1)]),
        "{http:#}\n{err}"
    );
    for side in ["server", "client"] {
        assert_eq!(http[side]["in_flight"], 0, "{http:#}");
    }
    assert_eq!(http["http2"]["unknown_fields"], 0, "{http:#}");
    let seen = tls_seen(&s);
    for pid in [server.pid(), from_inside.pid()] {
        assert!(read_in(&seen, pid), "{pid}: {seen:?}");
    }
    assert!(
        seen.iter()
            .all(|(code, _, _)| code.starts_with("Go crypto/tls")),
        "{seen:?}"
    );
    drop((h2, h1, from_inside, server, outside));
    assert_no_residue();
}

/// Node's `http2` server (its built-in OpenSSL, driven through memory buffers: sessions are
/// followed by `SSL *`) in the target, curl over HTTP/2 on one connection for all its URLs.
#[test]
fn node_http2_over_tls_is_counted_exactly() {
    if !require_root() {
        return;
    }
    let cert = Cert::new("https-node-h2");
    let cg = TestCgroup::new("https-node-h2");
    let server = node_server(&cg, "h2server.js", &cert);
    let port = server.port;
    let run = open_window(&cg);
    let mut cmd = Command::new("curl");
    cmd.args(["-sk", "--http2", "-w", "%{http_version} "]);
    for path in ["/ok", "/missing", "/ok", "/fail", "/ok"] {
        cmd.args(["-o", "/dev/null"])
            .arg(format!("https://127.0.0.1:{port}{path}"));
    }
    let out = cmd.output().expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "2 2 2 2 2 ",
        "{out:?}"
    );
    let (s, err) = run.interrupt();
    let http = &s["http"];
    assert_eq!(
        counted_tls_by_version(&http["server"]),
        expect(&[("GET 200 2", 3), ("GET 404 2", 1), ("GET 503 2", 1)]),
        "{http:#}\n{err}"
    );
    assert_eq!(http["http2"]["connections"], 1, "{http:#}");
    assert_eq!(http["server"]["in_flight"], 0, "{http:#}");
    drop(server);
    assert_no_residue();
}
