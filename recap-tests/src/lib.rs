//! Harness for RECap's privileged integration tests: fresh cgroups, workloads started inside
//! them, loopback servers, the `recap` binary, and the residue check every test ends with.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, ChildStderr, Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc, Arc,
    },
    thread,
    time::{Duration, Instant},
};

pub mod agent;
pub mod cri;
pub mod docker;
pub mod etcd;
pub mod otlp;
pub mod scripted;

/// A privileged test's first line: `false` (skip) unless root, a failure under `CI`.
pub use recap_harness::root::root_or_skip as require_root;

/// The `recap` binary under test: `$RECAP_BIN`, else the workspace's debug build.
pub fn recap_bin() -> PathBuf {
    std::env::var_os("RECAP_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/recap"))
}

/// The median of a benchmark's timings (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// `recap-workload`, built by cargo next to the test binary (`target/<profile>/`).
pub fn workload_bin() -> PathBuf {
    test_bin("recap-workload")
}

/// One of this crate's binaries, built by cargo next to the test binary (`target/<profile>/`).
pub fn test_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    profile_dir.join(name)
}

/// Touches `pages` fresh private anonymous pages once each (huge pages off for them: one minor
/// fault a page) and unmaps them; `between` runs around the touching (e.g. timing it).
pub fn touch_fresh_pages(pages: usize, mut between: impl FnMut()) {
    let page = 4096;
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
        libc::madvise(at, pages * page, libc::MADV_NOHUGEPAGE);
        between();
        for i in 0..pages {
            std::ptr::write_volatile((at as *mut u8).add(i * page), 1);
        }
        between();
        libc::munmap(at, pages * page);
    }
}

/// `program` to be started in `cg` if given, else where the test runs.
pub fn command_in(cg: Option<&TestCgroup>, program: impl AsRef<std::ffi::OsStr>) -> Command {
    match cg {
        Some(cg) => cg.command(program),
        None => Command::new(program),
    }
}

/// A cgroup v2 directory made for one test (`recap-test-<name>-<pid>`), removed (with its
/// processes killed) on drop.
pub use recap_harness::cgroup::ScratchCgroup as TestCgroup;

/// A loopback TCP port no one listens on now (the kernel's pick).
pub fn free_tcp_port() -> u16 {
    free_tcp_ports(1)[0]
}

/// `n` distinct such ports: each is held until all are picked, so the kernel cannot hand the
/// same one out twice.
pub fn free_tcp_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// A loopback TCP server outside every target: accepts, drains, closes. Counts bytes received.
pub struct TcpSink {
    pub port: u16,
    pub received: Arc<AtomicU64>,
}

impl TcpSink {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(AtomicU64::new(0));
        let counter = received.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let counter = counter.clone();
                thread::spawn(move || {
                    let mut buf = Vec::new();
                    let n = s.read_to_end(&mut buf).unwrap_or(0);
                    counter.fetch_add(n as u64, Ordering::SeqCst);
                });
            }
        });
        TcpSink { port, received }
    }
}

/// A loopback UDP socket that receives and drops datagrams.
pub fn udp_sink() -> (UdpSocket, u16) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = s.local_addr().unwrap().port();
    (s, port)
}

/// A loopback port with nothing listening on it.
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// What a workload does between `go` and `done`.
#[derive(Clone, Debug)]
pub struct WorkloadPlan {
    pub connects: usize,
    pub refused: usize,
    pub kept_open: usize,
    pub bytes_per_connect: usize,
    pub datagrams: usize,
    pub datagram_size: usize,
    pub execs: usize,
    pub getppid: usize,
    pub spin_ms: u64,
}

/// A running `recap-workload`.
pub struct Workload {
    pub child: Child,
    pub listen_port: u16,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Workload {
    pub fn start(
        cgroup: &TestCgroup,
        plan: &WorkloadPlan,
        sink: &TcpSink,
        refused_port: u16,
        udp_port: u16,
    ) -> Self {
        let mut cmd = cgroup.command(workload_bin());
        cmd.args([
            format!("127.0.0.1:{}", sink.port),
            refused_port.to_string(),
            format!("127.0.0.1:{udp_port}"),
            plan.connects.to_string(),
            plan.refused.to_string(),
            plan.kept_open.to_string(),
            plan.bytes_per_connect.to_string(),
            plan.datagrams.to_string(),
            plan.datagram_size.to_string(),
            plan.execs.to_string(),
            plan.getppid.to_string(),
            plan.spin_ms.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
        let mut child = cmd.spawn().expect("starting recap-workload");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let listen_port = line
            .trim()
            .strip_prefix("listening ")
            .expect("listening line")
            .parse()
            .unwrap();
        Workload {
            child,
            listen_port,
            stdout,
        }
    }

    pub fn go(&mut self) {
        writeln!(self.child.stdin.as_mut().unwrap(), "go").unwrap();
    }

    pub fn wait_done(&mut self) {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "done", "workload did not finish");
    }

    pub fn stop(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// A `recap window` process under test.
pub struct RecapRun {
    pub child: Child,
    stderr_lines: mpsc::Receiver<String>,
    pub stderr: Vec<String>,
}

impl RecapRun {
    pub fn start(args: &[&str]) -> Self {
        let mut child = Command::new(recap_bin())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting recap (build it first: cargo build -p recap-agent)");
        let stderr_lines = forward_lines(child.stderr.take().unwrap());
        RecapRun {
            child,
            stderr_lines,
            stderr: Vec::new(),
        }
    }

    /// `recap window TARGET... -d 120s --probes FAMILIES -o json`, armed (`target`: e.g.
    /// `["--cgroup", dir]`, `["--container", name]`).
    pub fn armed_window(target: &[&str], probes: &str) -> Self {
        let mut args = vec!["window"];
        args.extend(target);
        args.extend(["-d", "120s", "--probes", probes, "-o", "json"]);
        let mut run = RecapRun::start(&args);
        run.wait_armed();
        run
    }

    /// Waits for the "armed" line; panics with recap's stderr if it exits first.
    pub fn wait_armed(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            match self.stderr_lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let armed = line.contains(" armed on ");
                    self.stderr.push(line);
                    if armed {
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        panic!("recap did not arm; stderr:\n{}", self.stderr.join("\n"));
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Ends the window with Ctrl-C; it must exit 0. Returns its JSON summary and its stderr.
    pub fn interrupt(self) -> (serde_json::Value, String) {
        self.signal(libc::SIGINT);
        let (code, out, err) = self.finish();
        assert_eq!(code, 0, "recap did not exit 0; stderr:\n{err}");
        (summary(&out), err)
    }

    /// Waits for exit; returns (exit code, stdout, stderr).
    pub fn finish(mut self) -> (i32, String, String) {
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let status = self.child.wait().unwrap();
        self.stderr.extend(self.stderr_lines.iter());
        (status.code().unwrap_or(-1), out, self.stderr.join("\n"))
    }
}

fn forward_lines(stderr: ChildStderr) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Runs `recap` to completion with the given arguments.
pub fn recap(args: &[&str]) -> (i32, String, String) {
    RecapRun::start(args).finish()
}

/// Names of our maps as the kernel lists them (it keeps 15 bytes).
const OUR_MAPS: [&str; 17] = [
    "AYA_LOGS",
    "TASK_SLOTS",
    "WINDOW_CGROUPS",
    "WINDOW_TAGS",
    "COUNTERS",
    "SYSCALLS",
    "RUNQ_HIST",
    "EXECS",
    "WAKE_TS",
    "SCHED_HOOKED",
    "ON_CPU",
    "TLS_CALLS",
    "TLS_SESSIONS",
    "HTTPS_CONNS",
    "TLS_PROCS",
    "TLS_NEW_PROCS",
    "TLS_WINDOWS",
];

/// What of ours is still in the kernel: program, link and map lines from bpftool.
pub fn residue() -> Vec<String> {
    let bpftool = |what: &str| -> String {
        let out = Command::new("bpftool")
            .args([what, "list"])
            .output()
            .expect("bpftool (apt-get install bpftool)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let progs = bpftool("prog");
    let mut ours: Vec<String> = progs
        .lines()
        .filter(|l| l.contains("name recap_"))
        .map(str::to_owned)
        .collect();
    let our_prog_ids: Vec<String> = ours
        .iter()
        .filter_map(|l| l.split(':').next())
        .map(str::to_owned)
        .collect();
    // A link line reads "12: raw_tracepoint  prog 34".
    let links_to_ours = |l: &&str| {
        let words: Vec<&str> = l.split_whitespace().collect();
        words
            .windows(2)
            .any(|w| w[0] == "prog" && our_prog_ids.iter().any(|id| id == w[1]))
    };
    ours.extend(
        bpftool("link")
            .lines()
            .filter(links_to_ours)
            .map(str::to_owned),
    );
    ours.extend(
        bpftool("map")
            .lines()
            .filter(|l| OUR_MAPS.iter().any(|m| l.contains(&format!("name {m} "))))
            .map(str::to_owned),
    );
    ours
}

/// Asserts nothing of ours is left, allowing the kernel a moment: it frees programs and maps
/// asynchronously after their last file descriptor closes.
pub fn assert_no_residue() {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = residue();
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            panic!("left in the kernel:\n{}", left.join("\n"));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// The number at JSON pointer `path` of a summary, or a panic that shows the summary.
pub fn u(v: &serde_json::Value, path: &str) -> u64 {
    v.pointer(path)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("{path} missing in {v:#}"))
}

/// One side of a window's `http` summary as `"GET 200 2" -> n` (method, status, HTTP version).
pub fn requests_by_version(side: &serde_json::Value) -> std::collections::BTreeMap<String, u64> {
    side["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                format!(
                    "{} {} {}",
                    g["method"].as_str().unwrap(),
                    g["status"],
                    g["version"].as_str().unwrap()
                ),
                g["duration"]["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Parses recap's JSON summary.
pub fn summary(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"))
}

/// A GET over HTTP/1.0 (the answer comes whole, never chunked); its status and body. Written in
/// pieces, as real clients may write: servers under test must not rely on one read.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    // HTTP/1.0: the answer comes whole, never chunked (this reader does not de-chunk).
    write!(conn, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    conn.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}

/// A network namespace for one test, removed on drop.
pub struct NetNs(pub String);

impl NetNs {
    pub fn new(name: &str) -> Self {
        let ns = format!("recap-{name}-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &ns])
            .stderr(Stdio::null())
            .status();
        assert!(Command::new("ip")
            .args(["netns", "add", &ns])
            .status()
            .unwrap()
            .success());
        let ns = NetNs(ns);
        // A wire-sized MTU, so that data crosses as many segments as on a real network.
        ns.run(&["ip", "link", "set", "lo", "mtu", "1500", "up"]);
        ns
    }

    pub fn run(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A kernel SNMP counter of this namespace (`nstat`, absolute, history untouched).
    pub fn counter(&self, name: &str) -> u64 {
        let out = self.run(&["nstat", "-asz", name]);
        out.lines()
            .find_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some(name)).then(|| w.next()?.parse().ok())?
            })
            .unwrap_or_else(|| panic!("{name} missing in nstat output:\n{out}"))
    }

    /// Waits until only listening and TIME-WAIT sockets are left (nothing left to retransmit).
    pub fn wait_settled(&self) {
        self.wait_until_no(&["exclude", "listening", "exclude", "time-wait"]);
    }

    /// Waits until no socket matches the `ss` state filter.
    pub fn wait_until_no(&self, filter: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut args = vec!["ss", "-Htan"];
            args.extend(filter);
            let busy = self.run(&args);
            if busy.trim().is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "sockets did not settle:\n{busy}");
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Application traffic with a known shape, all of it in one target: an HTTP server
/// (`recap-http serve`) and its client running the known mix, and DNS lookups (`recap-dns`)
/// answered by dnsmasq on a loopback address of its own. The client keeps one request in
/// flight until this is dropped.
pub struct AppTraffic {
    server: Child,
    client: Child,
    dnsmasq: Child,
    /// What the client received (`"GET 200" -> n`), and what the lookups got (`"NOERROR" -> n`).
    pub http: serde_json::Value,
    pub dns: serde_json::Value,
}

/// dnsmasq on `listen`:53, in the foreground, with no upstream: `ok.test` has an A record
/// (10.1.2.3), every other name under `test` is NXDOMAIN; `extra` adds records. `cmd` is what
/// runs it (`dnsmasq`, or `ip netns exec NS dnsmasq`).
pub fn dnsmasq(mut cmd: Command, listen: &str, extra: &[&str]) -> Child {
    cmd.args([
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        &format!("--listen-address={listen}"),
        "--bind-interfaces",
        "--port=53",
        "--pid-file=",
        "--user=root",
        "--local=/test/",
        "--address=/ok.test/10.1.2.3",
    ])
    .args(extra)
    .stdout(Stdio::null())
    .spawn()
    .expect("dnsmasq (cargo xtask setup installs dnsmasq-base)")
}

/// dnsmasq's address in the root namespace (port 53: the `dns` family reads port 53).
const APP_DNS: &str = "127.0.0.77";

impl AppTraffic {
    /// Programs it starts in the target: the server, the client, the lookups.
    pub const EXECS: u64 = 3;
    /// Requests in `recap-http client`'s mix (each served and made in the target).
    pub const REQUESTS: u64 = 28;
    /// Connections the client makes: one keep-alive, four fresh, two left with /hang.
    pub const CONNECTS: u64 = 7;

    pub fn run(cg: &TestCgroup) -> Self {
        let dnsmasq = dnsmasq(Command::new("dnsmasq"), APP_DNS, &[]);
        let mut server = cg
            .command(test_bin("recap-http"))
            .arg("serve")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut port = String::new();
        BufReader::new(server.stdout.take().unwrap())
            .read_line(&mut port)
            .unwrap();
        let mut client = cg
            .command(test_bin("recap-http"))
            .args(["client", port.trim()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
        let http: serde_json::Value =
            serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        assert!(lines.next().unwrap().unwrap().starts_with("interim"));
        assert_eq!(lines.next().unwrap().unwrap(), "pending");
        let server_addr = format!("{APP_DNS}:53");
        let lookups = |cmd: &mut Command| -> serde_json::Value {
            let out = cmd
                .args([&server_addr, "ok.test/A*3", "nx.test/A*2"])
                .output()
                .unwrap();
            serde_json::from_slice(&out.stdout).unwrap()
        };
        // dnsmasq is up when it answers a lookup from outside the target.
        let mut up = false;
        for _ in 0..50 {
            if lookups(&mut Command::new(test_bin("recap-dns")))
                .get("unanswered")
                .is_none()
            {
                up = true;
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
        assert!(up, "dnsmasq did not answer");
        let dns = lookups(&mut cg.command(test_bin("recap-dns")));
        AppTraffic {
            server,
            client,
            dnsmasq,
            http,
            dns,
        }
    }
}

impl Drop for AppTraffic {
    fn drop(&mut self) {
        for child in [&mut self.client, &mut self.server, &mut self.dnsmasq] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Completed `accept`/`accept4` calls in an strace log: those that end with `= <fd>`
/// (possibly as `<... accept resumed>`).
pub fn completed_accepts(strace_log: &str) -> usize {
    strace_log
        .lines()
        .filter(|l| {
            l.contains("accept")
                && l.rsplit_once("= ")
                    .is_some_and(|(_, fd)| fd.trim().parse::<u32>().is_ok())
        })
        .count()
}
