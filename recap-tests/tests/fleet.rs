//! Fleet windows end to end: a three-member etcd cluster on loopback, three agents with
//! distinct node names owning disjoint containers (by a `recap.node` label), `recap fleet
//! window` against them; workloads with known counts; faults made on purpose.

use std::{
    io::{BufRead, BufReader},
    process::{Child, ChildStderr, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use recap_tests::{agent::AgentProcess, docker::AppContainer, etcd::EtcdCluster, *};
use serde_json::Value;

/// A `recap agent` taking part in fleet windows as `node`.
fn fleet_agent(cluster: &EtcdCluster, node: &str, extra: &[&str]) -> AgentProcess {
    let mut args: Vec<String> = vec![
        "--node".into(),
        node.into(),
        "--fleet-scope".into(),
        format!("recap.node={node}"),
        "--etcd-lease-ttl".into(),
        "2s".into(),
    ];
    args.extend(cluster.client_args());
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    AgentProcess::start(&format!("fleet-{node}"), None, &refs)
}

/// `recap fleet window ...` running, its progress lines readable as they come.
struct FleetRun {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl FleetRun {
    fn start(cluster: &EtcdCluster, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(recap_bin());
        cmd.args(["fleet", "window"])
            .args(args)
            .args(cluster.client_args());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .args(["-o", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = forward(child.stderr.take().unwrap());
        FleetRun {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a progress line containing `what`.
    fn wait_line(&mut self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                let found = line.contains(what);
                self.seen.push(line);
                if found {
                    return;
                }
            }
        }
        panic!(
            "no `{what}` from recap fleet; it said:\n{}",
            self.seen.join("\n")
        );
    }

    fn finish(mut self) -> (i32, Value, String) {
        let mut out = String::new();
        std::io::Read::read_to_string(self.child.stdout.as_mut().unwrap(), &mut out).unwrap();
        let code = self.child.wait().unwrap().code().unwrap_or(-1);
        self.seen.extend(self.lines.try_iter());
        let json = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("{e}: {out}\n{}", self.seen.join("\n")));
        (code, json, self.seen.join("\n"))
    }
}

fn forward(stderr: ChildStderr) -> mpsc::Receiver<String> {
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

/// Waits until `agent` has `n` windows open (armed: counting).
fn wait_open(agent: &AgentProcess, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, out, _) = agent.recap(&["window", "list", "--status", "open", "-o", "json"]);
        let open = serde_json::from_str::<Value>(&out)
            .ok()
            .and_then(|v| v.as_array().map(Vec::len))
            .unwrap_or(0);
        if open >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{n} windows did not open: {}",
            agent.log()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

fn node<'a>(s: &'a Value, name: &str) -> &'a Value {
    s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == name)
        .unwrap_or_else(|| panic!("no node {name} in {s:#}"))
}

/// A target's window summary within a node's part.
fn accepted(node: &Value, container: &str) -> u64 {
    node["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["container"] == container)
        .and_then(|t| t.pointer("/summary/tcp/accepted"))
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no window on {container} in {node:#}"))
}

#[test]
fn a_fleet_window_counts_every_matching_container_on_every_node_exactly() {
    if !require_root() {
        return;
    }
    let cluster = EtcdCluster::start("exact", false);
    let a = fleet_agent(&cluster, "node-a", &[]);
    let b = fleet_agent(&cluster, "node-b", &[]);
    let c = fleet_agent(&cluster, "node-c", &[]);
    cluster.wait_registered(&[], &["node-a", "node-b", "node-c"]);
    let a1 = AppContainer::run_labelled("fleet-a1", &["app=checkout", "recap.node=node-a"]);
    let a2 = AppContainer::run_labelled("fleet-a2", &["app=checkout", "recap.node=node-a"]);
    let b1 = AppContainer::run_labelled("fleet-b1", &["app=checkout", "recap.node=node-b"]);
    // Same node, another app: not selected. node-c has no checkout at all.
    let b2 = AppContainer::run_labelled("fleet-b2", &["app=other", "recap.node=node-b"]);
    let c1 = AppContainer::run_labelled("fleet-c1", &["app=other", "recap.node=node-c"]);
    let mut run = FleetRun::start(
        &cluster,
        &[
            "--selector",
            "app=checkout",
            "-d",
            "8s",
            "--probes",
            "tcp,http",
        ],
        &[],
    );
    run.wait_line("node-a: claimed");
    wait_open(&a, 2);
    wait_open(&b, 1);
    let gets = [(&a1, 3), (&a2, 4), (&b1, 5), (&b2, 6), (&c1, 2)];
    for (container, n) in gets {
        container.http_gets(n);
    }
    let (code, s, log) = run.finish();
    assert_eq!(code, 0, "{log}\n{s:#}");
    assert_eq!(s["complete"], true);
    assert_eq!(s["windows"], 3);
    // Per target, per node, and the totals: exactly the GETs each selected container served.
    assert_eq!(accepted(node(&s, "node-a"), &a1.name), 3);
    assert_eq!(accepted(node(&s, "node-a"), &a2.name), 4);
    assert_eq!(accepted(node(&s, "node-b"), &b1.name), 5);
    assert_eq!(node(&s, "node-b")["targets"].as_array().unwrap().len(), 1);
    assert_eq!(node(&s, "node-c")["status"], "no_targets");
    assert_eq!(s["totals"]["tcp"]["accepted"], 12, "{:#}", s["totals"]);
    assert_eq!(s["totals"]["http"]["server"]["completed"], 12);
    let get200 = &s["totals"]["http"]["server"]["requests"][0];
    assert_eq!(
        (get200["method"].as_str(), get200["status"].as_u64()),
        (Some("GET"), Some(200))
    );
    assert_eq!(get200["duration"]["count"], 12);
    // Every window ended at the request's deadline: none ran longer than asked.
    for n in ["node-a", "node-b"] {
        for t in node(&s, n)["targets"].as_array().unwrap() {
            assert_eq!(t["status"], "completed", "{t:#}");
            let ran = t
                .pointer("/summary/duration_s")
                .and_then(Value::as_f64)
                .unwrap();
            assert!(ran <= 8.0, "a window ran {ran} s");
        }
    }
    drop((a, b, c));
    assert_no_residue();
}

#[test]
fn an_agent_killed_mid_window_is_lost_the_others_complete_and_a_member_down_changes_nothing() {
    if !require_root() {
        return;
    }
    let mut cluster = EtcdCluster::start("faults", false);
    let a = fleet_agent(&cluster, "node-a", &[]);
    let mut b = fleet_agent(&cluster, "node-b", &[]);
    cluster.wait_registered(&[], &["node-a", "node-b"]);
    let a1 = AppContainer::run_labelled("fleet-k-a1", &["app=pay", "recap.node=node-a"]);
    let _b1 = AppContainer::run_labelled("fleet-k-b1", &["app=pay", "recap.node=node-b"]);
    // One member of three down: the cluster keeps its quorum, nothing changes.
    cluster.kill_member(2);
    let mut run = FleetRun::start(
        &cluster,
        &["--selector", "app=pay", "-d", "8s", "--probes", "tcp"],
        &[],
    );
    run.wait_line("node-b: claimed");
    wait_open(&a, 1);
    wait_open(&b, 1);
    a1.http_gets(3);
    b.stop_with(libc::SIGKILL);
    run.wait_line("node-b: lost");
    let (code, s, log) = run.finish();
    assert_eq!(code, 1, "a lost part makes the answer incomplete: {log}");
    assert_eq!(s["complete"], false);
    assert_eq!(node(&s, "node-b")["status"], "lost");
    assert_eq!(node(&s, "node-a")["status"], "completed", "{s:#}");
    assert_eq!(accepted(node(&s, "node-a"), &a1.name), 3);
    assert_eq!(s["totals"]["tcp"]["accepted"], 3);
    // The restarted agent finds its claim and says the part was lost; it runs nothing again.
    let id = s["request_id"].as_str().unwrap().to_string();
    b.restart();
    let key = format!("/recap/parts/{id}/result/node-b");
    let result = cluster.wait_value(&key, Duration::from_secs(20), || b.log());
    assert_eq!(result["status"], "lost", "{result:#}");
    let (_, open, _) = b.recap(&["window", "list", "--status", "open", "-o", "json"]);
    assert_eq!(
        serde_json::from_str::<Value>(&open).unwrap(),
        serde_json::json!([])
    );
    drop((a, b));
    assert_no_residue();
}

#[test]
fn without_quorum_windows_end_on_time_and_publish_when_etcd_is_back() {
    if !require_root() {
        return;
    }
    let mut cluster = EtcdCluster::start("quorum", false);
    let a = fleet_agent(&cluster, "node-a", &[]);
    cluster.wait_registered(&[], &["node-a"]);
    let a1 = AppContainer::run_labelled("fleet-q-a1", &["app=cart", "recap.node=node-a"]);
    let started = Instant::now();
    let mut run = FleetRun::start(
        &cluster,
        &[
            "--selector",
            "app=cart",
            "-d",
            "5s",
            "--probes",
            "tcp",
            "--result-grace",
            "2s",
        ],
        &[],
    );
    run.wait_line("node-a: claimed");
    wait_open(&a, 1);
    // Two members of three gone: no quorum, nothing can be written.
    cluster.kill_member(1);
    cluster.kill_member(2);
    a1.http_gets(2);
    let (code, s, log) = run.finish();
    // The CLI does not wait forever: it says what it could not collect.
    assert!(started.elapsed() < Duration::from_secs(20), "{log}");
    assert_eq!(code, 1);
    assert_eq!(node(&s, "node-a")["status"], "not_collected", "{s:#}");
    // The window itself ended at its deadline all the same.
    let (_, list, _) = a.recap(&["window", "list", "-o", "json"]);
    let windows: Value = serde_json::from_str(&list).unwrap();
    let w = &windows[0];
    assert_eq!(w["status"], "completed", "{windows:#}");
    let ran = w["summary"]["duration_s"].as_f64().unwrap();
    assert!(ran <= 5.0, "the window ran {ran} s");
    // etcd back: the agent publishes, exact.
    cluster.restart_member(1);
    cluster.restart_member(2);
    cluster.wait_healthy();
    let key = format!(
        "/recap/parts/{}/result/node-a",
        s["request_id"].as_str().unwrap()
    );
    let result = cluster.wait_value(&key, Duration::from_secs(30), || a.log());
    assert_eq!(result["status"], "completed");
    assert_eq!(result["targets"][0]["summary"]["tcp"]["accepted"], 2);
    drop(a);
    assert_no_residue();
}

#[test]
fn a_node_that_never_answers_is_reported_not_waited_for() {
    if !require_root() {
        return;
    }
    let cluster = EtcdCluster::start("ghost", false);
    let a = fleet_agent(&cluster, "node-a", &[]);
    // A registration with no agent behind it.
    let (ok, out) = cluster.etcdctl(None, &["lease", "grant", "120"]);
    assert!(ok, "{out}");
    let lease = out.split_whitespace().nth(1).unwrap().to_string();
    let (ok, out) = cluster.etcdctl(
        None,
        &[
            "put",
            "/recap/nodes/ghost",
            "{}",
            &format!("--lease={lease}"),
        ],
    );
    assert!(ok, "{out}");
    cluster.wait_registered(&[], &["node-a", "ghost"]);
    let started = Instant::now();
    let run = FleetRun::start(
        &cluster,
        &[
            "--selector",
            "app=none",
            "-d",
            "2s",
            "--claim-timeout",
            "2s",
        ],
        &[],
    );
    let (code, s, log) = run.finish();
    assert!(started.elapsed() < Duration::from_secs(10), "{log}");
    assert_eq!(code, 1);
    assert_eq!(node(&s, "ghost")["status"], "no_answer", "{s:#}");
    assert_eq!(node(&s, "node-a")["status"], "no_targets");
    drop(a);
    assert_no_residue();
}

/// Sets up etcd's auth: root, an `agent` user that may write under `/recap/`, and `alice`, who
/// may write requests under her own prefix only and read nodes and parts.
fn enable_auth(cluster: &EtcdCluster) {
    let ctl = |args: &[&str]| {
        let (ok, out) = cluster.etcdctl(None, args);
        assert!(ok, "etcdctl {args:?}: {out}");
    };
    ctl(&["user", "add", "root:rootpw"]);
    ctl(&["user", "grant-role", "root", "root"]);
    ctl(&["role", "add", "recap-agent"]);
    ctl(&[
        "role",
        "grant-permission",
        "recap-agent",
        "--prefix=true",
        "readwrite",
        "/recap/",
    ]);
    ctl(&["user", "add", "agent:agentpw"]);
    ctl(&["user", "grant-role", "agent", "recap-agent"]);
    ctl(&["role", "add", "alice"]);
    ctl(&[
        "role",
        "grant-permission",
        "alice",
        "--prefix=true",
        "readwrite",
        "/recap/requests/alice/",
    ]);
    ctl(&[
        "role",
        "grant-permission",
        "alice",
        "--prefix=true",
        "read",
        "/recap/nodes/",
    ]);
    ctl(&[
        "role",
        "grant-permission",
        "alice",
        "--prefix=true",
        "read",
        "/recap/parts/",
    ]);
    ctl(&["user", "add", "alice:alicepw"]);
    ctl(&["user", "grant-role", "alice", "alice"]);
    ctl(&["auth", "enable"]);
}

#[test]
fn over_tls_a_user_requests_only_under_its_prefix_and_the_local_policy_still_applies() {
    if !require_root() {
        return;
    }
    let cluster = EtcdCluster::start("secure", true);
    enable_auth(&cluster);
    let password = std::env::temp_dir().join(format!("recap-etcd-agentpw-{}", std::process::id()));
    std::fs::write(&password, "agentpw\n").unwrap();
    let pw = password.to_str().unwrap();
    // Fleet parts run as uid 4242, which the node's policy holds to 5 s windows of tcp.
    let mut a = fleet_agent(
        &cluster,
        "node-a",
        &[
            "--etcd-user",
            "agent",
            "--etcd-password-file",
            pw,
            "--fleet-uid",
            "4242",
        ],
    );
    a.stop_with(libc::SIGTERM);
    std::fs::write(
        a.dir.join("policy.toml"),
        "[[rule]]\nname = \"fleet\"\nuids = [4242]\nfamilies = [\"tcp\"]\nmax_duration = \"5s\"\ncontainer_labels = [\"recap.node=node-a\"]\n",
    )
    .unwrap();
    a.restart();
    cluster.wait_registered(
        &[
            ("RECAP_ETCD_USER", "root"),
            ("RECAP_ETCD_PASSWORD", "rootpw"),
        ],
        &["node-a"],
    );
    let a1 = AppContainer::run_labelled("fleet-s-a1", &["app=api", "recap.node=node-a"]);
    let alice = [
        ("RECAP_ETCD_USER", "alice"),
        ("RECAP_ETCD_PASSWORD", "alicepw"),
    ];
    // Within the policy: exact.
    let mut run = FleetRun::start(
        &cluster,
        &["--selector", "app=api", "-d", "4s", "--probes", "tcp"],
        &alice,
    );
    run.wait_line("node-a: claimed");
    wait_open(&a, 1);
    a1.http_gets(2);
    let (code, s, log) = run.finish();
    assert_eq!(code, 0, "{log}\n{s:#}");
    assert_eq!(s["user"], "alice");
    assert_eq!(accepted(node(&s, "node-a"), &a1.name), 2);
    // Over the node's max_duration: refused there, and the refusal names the rule.
    let run = FleetRun::start(
        &cluster,
        &["--selector", "app=api", "-d", "8s", "--probes", "tcp"],
        &alice,
    );
    let (_, s, _) = run.finish();
    let target = &node(&s, "node-a")["targets"][0];
    assert_eq!(target["status"], "failed", "{s:#}");
    assert!(
        target["error"].as_str().unwrap().contains("max_duration"),
        "{target:#}"
    );
    // alice cannot write under another user's prefix, nor touch the parts.
    let (ok, out) = cluster.etcdctl(
        Some("alice:alicepw"),
        &["put", "/recap/requests/bob/x", "{}"],
    );
    assert!(!ok && out.contains("permission denied"), "{out}");
    let (ok, out) = cluster.etcdctl(
        Some("alice:alicepw"),
        &["put", "/recap/parts/x/result/node-a", "{}"],
    );
    assert!(!ok && out.contains("permission denied"), "{out}");
    // Without a user, nothing.
    let run = FleetRun::start(&cluster, &["--selector", "app=api", "-d", "2s"], &[]);
    let mut child = run.child;
    let status = child.wait().unwrap();
    assert!(!status.success());
    // Without the CA, TLS refuses to go on.
    let out = Command::new(recap_bin())
        .args(["fleet", "nodes", "--etcd", &cluster.endpoints()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--etcd-ca"));
    let _ = std::fs::remove_file(&password);
    drop(a);
    assert_no_residue();
}

/// An agent started while etcd is down serves its local API at once and joins the fleet when
/// etcd comes up; a mistake in its etcd options stops it at start with the reason.
#[test]
fn an_agent_waits_for_etcd_but_not_for_a_mistake() {
    if !require_root() {
        return;
    }
    let mut cluster = EtcdCluster::start("late", false);
    for i in 0..3 {
        cluster.kill_member(i);
    }
    let a = fleet_agent(&cluster, "node-late", &[]);
    // Local windows run meanwhile.
    let cg = TestCgroup::new("fleet-late");
    let id = a.start_window(&[
        "--cgroup",
        cg.dir.to_str().unwrap(),
        "-d",
        "1s",
        "--probes",
        "tcp",
    ]);
    let (code, _, err) = a.recap(&["window", "wait", &id]);
    assert_eq!(code, 0, "{err}");
    for i in 0..3 {
        cluster.restart_member(i);
    }
    cluster.wait_healthy();
    cluster.wait_registered(&[], &["node-late"]);
    drop(a);
    // https without a CA: refused at start (a usage error), with what to do.
    let out = Command::new(recap_bin())
        .args([
            "agent",
            "--node",
            "x",
            "--etcd",
            "https://127.0.0.1:1",
            "--socket",
        ])
        .arg(std::env::temp_dir().join(format!("recap-late-{}.sock", std::process::id())))
        .args([
            "--state-dir",
            "/tmp/recap-late-state",
            "--policy",
            "/nonexistent",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--etcd-ca"));
    let _ = std::fs::remove_dir_all("/tmp/recap-late-state");
    drop(cg);
    assert_no_residue();
}

/// Whether process `pid` holds an established TCP connection to 127.0.0.1:`port`.
fn connected_to(pid: u32, port: u16) -> bool {
    let out = Command::new("ss")
        .args(["-Htnp", "state", "established"])
        .arg(format!("( dport = :{port} )"))
        .output()
        .expect("ss (iproute2)");
    String::from_utf8_lossy(&out.stdout).contains(&format!("pid={pid},"))
}

/// A member down when the agent started is used once it answers again: the agent connects to
/// it (it had no connection to it before), and fleet windows keep working, exact.
#[test]
fn a_member_down_when_the_agent_started_is_taken_in_when_it_is_back() {
    if !require_root() {
        return;
    }
    let mut cluster = EtcdCluster::start("rejoin", false);
    cluster.kill_member(0);
    let a = fleet_agent(&cluster, "node-a", &[]);
    cluster.wait_registered(&[], &["node-a"]);
    let port = cluster.client_port(0);
    assert!(a.log().contains("left out"), "{}", a.log());
    assert!(!connected_to(a.pid(), port), "connected to a dead member");
    cluster.restart_member(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(a.log().contains("answers again") && connected_to(a.pid(), port)) {
        assert!(
            Instant::now() < deadline,
            "member 0 never taken in: {}",
            a.log()
        );
        thread::sleep(Duration::from_millis(200));
    }
    // One of the members it started with goes down: the quorum left includes the member taken
    // in, and fleet windows stay exact.
    cluster.kill_member(1);
    let a1 = AppContainer::run_labelled("fleet-r-a1", &["app=shop", "recap.node=node-a"]);
    let mut run = FleetRun::start(
        &cluster,
        &["--selector", "app=shop", "-d", "3s", "--probes", "tcp"],
        &[],
    );
    run.wait_line("node-a: claimed");
    wait_open(&a, 1);
    a1.http_gets(4);
    let (code, s, log) = run.finish();
    assert_eq!(code, 0, "{log}\n{s:#}");
    assert_eq!(accepted(node(&s, "node-a"), &a1.name), 4);
    drop(a);
    assert_no_residue();
}
