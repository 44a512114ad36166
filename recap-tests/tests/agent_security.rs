//! The agent as a root service on a shared node, tried as someone misusing it would: callers
//! other than root (run with `setpriv`) against the real agent on its real socket. No way up
//! (a capsule's artifact cannot be turned into a root file), no peeking (others' windows and
//! secrets), no lock-out (floods of idle connections, huge requests), no connecting where the
//! caller says (`--cri-endpoint`).

use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use recap_agent::agent::{
    api::{window_spec::Target, Capsule, CapsuleTool, StartWindowRequest, WindowSpec},
    client,
};
use recap_tests::{agent::AgentProcess, docker::AppContainer, *};
use serde_json::Value;

/// The unprivileged callers of these tests (no such users need exist: uids are enough).
const SRE: (u32, u32) = (4242, 4000);
const READER: (u32, u32) = (4343, 4000);
const STRANGER: (u32, u32) = (4444, 4000);

/// `sh -c SCRIPT` as `ids`: (exit code, stdout + stderr).
fn sh_as(ids: (u32, u32), script: &str) -> (i32, String) {
    let out = Command::new("setpriv")
        .args([
            &format!("--reuid={}", ids.0),
            &format!("--regid={}", ids.1),
            "--clear-groups",
            "--",
            "sh",
            "-c",
            script,
        ])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn owner_and_mode(p: &Path) -> (u32, u32) {
    let m = std::fs::symlink_metadata(p).unwrap();
    (m.uid(), m.mode() & 0o7777)
}

/// Case 1: a caller allowed tcpdump capsules swaps its window's directory for one of its own
/// with `tcpdump.pcap -> /etc/<file>` while the window runs. It cannot (the directories the
/// agent writes into are root's), and the root file stays root's; the caller gets its capture.
#[test]
fn a_capsule_caller_cannot_take_a_root_file() {
    if !require_root() {
        return;
    }
    let victim = Path::new("/etc").join(format!("recap-victim-{}", std::process::id()));
    std::fs::write(&victim, "root's own\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
    let web = AppContainer::run_labelled("recap-sec-web", &["recap.allow=true"]);
    let policy = format!(
        "[[rule]]\nname = \"sre\"\nuids = [{}]\ncontainer_labels = [\"recap.allow=true\"]\ncapsules = [\"tcpdump\"]\nmax_duration = \"30s\"\n",
        SRE.0
    );
    let agent = AgentProcess::start("sec-artifacts", Some(&policy), &["--socket-group", "4000"]);
    let (code, out, err) = agent.recap_as(
        Some(SRE),
        &[
            "window",
            "start",
            "--container",
            &web.name,
            "-d",
            "6s",
            "--capsule",
            "tcpdump",
        ],
    );
    assert_eq!(code, 0, "{err}\n{}", agent.log());
    let id = out.trim().to_string();
    let mine = agent.dir.join("artifacts").join(SRE.0.to_string());
    let window_dir = mine.join(&id);
    assert!(window_dir.is_dir(), "{} exists", window_dir.display());
    web.http_gets(3);

    // The attack as reported: rename the window's directory, make one's own in its place with
    // the capture file pointing at a root file.
    let (code, said) = sh_as(
        SRE,
        &format!(
            "mv {w} {m}/moved && mkdir {w} && ln -s {v} {w}/tcpdump.pcap",
            w = window_dir.display(),
            m = mine.display(),
            v = victim.display()
        ),
    );
    assert_ne!(code, 0, "the swap went through: {said}");
    assert!(said.contains("Permission denied"), "{said}");
    let (code, said) = sh_as(
        SRE,
        &format!("ln -s {} {}/planted", victim.display(), mine.display()),
    );
    assert_ne!(code, 0, "a link was planted: {said}");

    let (code, _, err) = agent.recap_as(Some(SRE), &["window", "wait", &id, "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        owner_and_mode(&victim),
        (0, 0o644),
        "the root file is still root's"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root's own\n");
    // The caller has its capture, and nothing the agent still writes into.
    let pcap = window_dir.join("tcpdump.pcap");
    assert_eq!(owner_and_mode(&pcap), (SRE.0, 0o600));
    assert_eq!(owner_and_mode(&window_dir), (SRE.0, 0o700));
    assert_eq!(owner_and_mode(&mine), (0, 0o711));
    assert_eq!(owner_and_mode(&agent.dir.join("artifacts")), (0, 0o711));
    assert_eq!(recap_tests::docker::http_gets_in_pcap(&pcap), 3);
    let (code, said) = sh_as(SRE, &format!("head -c 4 {} | od -An -tx1", pcap.display()));
    assert_eq!(code, 0, "the caller reads its capture: {said}");
    let _ = std::fs::remove_file(&victim);
    drop(agent);
    drop(web);
    assert_no_residue();
}

/// Cases 2 and 3: a caller sees its own windows only (root and `read_all` see all); a window's
/// secrets (an OTLP bearer token) are nowhere on disk or in any answer; the state is private,
/// and repaired if it was not.
#[test]
fn windows_are_read_by_their_owners_and_secrets_are_never_kept() {
    if !require_root() {
        return;
    }
    let cg = TestCgroup::new("sec-read");
    let policy = format!(
        "[[rule]]\nname = \"sre\"\nuids = [{}]\ncgroup_prefixes = [\"{cg}\"]\n\n[[rule]]\nname = \"reader\"\nuids = [{}]\ncgroup_prefixes = [\"{cg}\"]\nread_all = true\n",
        SRE.0,
        READER.0,
        cg = cg.dir.display()
    );
    let mut agent = AgentProcess::start("sec-read", Some(&policy), &["--socket-group", "4000"]);
    // What each caller may do, as the agent describes it to that caller.
    let options = |ids: (u32, u32)| -> Value {
        let (code, out, err) = agent.recap_as(Some(ids), &["window", "options", "-o", "json"]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<Value>(&out).unwrap()["policy"].clone()
    };
    let sre = options(SRE);
    assert_eq!(
        (&sre["rule"], &sre["read_all"], &sre["root"]),
        (&"sre".into(), &false.into(), &false.into()),
        "{sre:#}"
    );
    assert_eq!(sre["max_duration"], "10m", "{sre:#}");
    assert_eq!(sre["capsule_tools"], serde_json::json!([]), "{sre:#}");
    assert!(!sre["families"]
        .as_array()
        .unwrap()
        .contains(&"syscalls".into()));
    assert_eq!(options(READER)["read_all"], true);
    let stranger = options((4545, 4000));
    assert_eq!(
        (&stranger["rule"], &stranger["max_windows"]),
        (&"".into(), &0.into())
    );
    let secret = "s3cr3t-b34r3r-t0k3n";
    let otlp_port = closed_port();
    let dir = cg.dir.to_str().unwrap();
    let root_window = agent.start_window(&[
        "--cgroup",
        dir,
        "-d",
        "3s",
        "--otlp-endpoint",
        &format!("http://127.0.0.1:{otlp_port}"),
        "--otlp-header",
        &format!("authorization=Bearer {secret}"),
    ]);
    let (code, out, err) =
        agent.recap_as(Some(SRE), &["window", "start", "--cgroup", dir, "-d", "3s"]);
    assert_eq!(code, 0, "{err}");
    let sre_window = out.trim().to_string();

    let listed = |agent: &AgentProcess, ids: Option<(u32, u32)>| -> Vec<String> {
        let (code, out, err) = agent.recap_as(ids, &["window", "list", "-o", "json"]);
        assert_eq!(code, 0, "{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        let mut ids: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["window_id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    let mut both = vec![root_window.clone(), sre_window.clone()];
    both.sort();
    assert_eq!(listed(&agent, None), both, "root sees every window");
    assert_eq!(
        listed(&agent, Some(READER)),
        both,
        "read_all sees every window"
    );
    assert_eq!(
        listed(&agent, Some(SRE)),
        std::slice::from_ref(&sre_window),
        "its own only"
    );
    assert!(
        listed(&agent, Some(STRANGER)).is_empty(),
        "no rule: nothing"
    );
    for ids in [SRE, STRANGER] {
        for verb in ["show", "wait", "watch"] {
            let (code, _, err) = agent.recap_as(Some(ids), &["window", verb, &root_window]);
            assert_eq!(code, 1, "{verb} as {ids:?}: {err}");
            assert!(
                err.contains("no window") && err.contains("of yours"),
                "{verb}: {err}"
            );
        }
    }
    let (code, out, err) = agent.recap_as(
        Some(READER),
        &["window", "show", &root_window, "-o", "json"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("authorization=<redacted>"), "{out}");
    let (_, out, _) = agent.recap(&["window", "wait", &root_window, "-o", "json"]);
    assert!(!out.contains(secret), "{out}");
    let (_, _, _) = agent.recap(&["window", "wait", &sre_window]);

    // Nowhere on disk: not in the history (its journal included), not in the audit log.
    let state = agent.dir.join("state");
    for entry in std::fs::read_dir(&state).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{} holds the secret",
            path.display()
        );
        assert_eq!(owner_and_mode(&path), (0, 0o600), "{}", path.display());
    }
    assert_eq!(owner_and_mode(&state), (0, 0o700));
    assert!(
        !agent.log().contains(secret),
        "the audit log holds the secret"
    );

    // An older agent's loose modes are repaired at start.
    agent.stop_with(libc::SIGTERM);
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        state.join("history.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    agent.restart();
    assert_eq!(owner_and_mode(&state), (0, 0o700));
    assert_eq!(owner_and_mode(&state.join("history.db")), (0, 0o600));
    assert_eq!(
        listed(&agent, Some(SRE)),
        [sre_window],
        "the history survived"
    );
    drop(agent);
    assert_no_residue();
}

/// The flood program: as another user, opens N connections (Unix socket or TCP), sends `send`
/// on each, then reports how many the agent had closed after `wait_s` seconds.
const FLOOD: &str = r#"
import resource, socket, sys, time
kind, where, n, send, wait_s = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].encode(), float(sys.argv[5])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
conns = []
for _ in range(n):
    if kind == "unix":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(where)
    else:
        host, port = where.rsplit(":", 1)
        s = socket.create_connection((host, int(port)))
    if send:
        s.send(send)
    conns.append(s)
print("opened", len(conns), flush=True)
time.sleep(wait_s)
closed = 0
for s in conns:
    # What the agent sent first (its HTTP/2 settings), then the end of the stream.
    try:
        while s.recv(65536, socket.MSG_DONTWAIT):
            pass
        closed += 1
    except BlockingIOError:
        pass
    except OSError:
        closed += 1
print("closed", closed, flush=True)
"#;

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Case 4: thousands of connections that send nothing (Unix socket, from a user in the socket
/// group) and that send half a request head (`/metrics`, from anyone): root is still answered
/// at once, every flooding connection is closed within seconds, the agent holds few
/// descriptors, and a real scrape still works.
#[test]
fn floods_of_idle_connections_do_not_lock_the_agent_up() {
    if !require_root() {
        return;
    }
    let agent = AgentProcess::start("sec-flood", None, &["--socket-group", "4000"]);
    let script = agent.dir.join("flood.py");
    std::fs::write(&script, FLOOD).unwrap();
    let flood = |kind: &str, where_: &str, n: usize, send: &str| {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            &format!("--reuid={}", SRE.0),
            &format!("--regid={}", SRE.1),
            "--clear-groups",
            "--",
            // Debian's, which any user may run (pyenv's lives under /root).
            "/usr/bin/python3",
        ])
        .arg(&script)
        .args([kind, where_, &n.to_string(), send, "12"])
        .stdout(std::process::Stdio::piped());
        cmd.spawn().unwrap()
    };
    let socket = agent.socket.to_str().unwrap().to_string();
    let metrics = agent.metrics.to_string();
    // /metrics is served a moment after the API socket is bound.
    let up = Instant::now();
    while http_get(agent.metrics, "/metrics").is_none() {
        assert!(
            up.elapsed() < Duration::from_secs(30),
            "no /metrics: {}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let unix = flood("unix", &socket, 3000, "");
    let tcp = flood("tcp", &metrics, 500, "GET /metrics HTTP/1.1\r\nHost: x\r\n");
    std::thread::sleep(Duration::from_secs(2));
    // Root is answered while the floods hold their connections.
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let started = Instant::now();
        let (code, _, err) = agent.recap(&["window", "list"]);
        slowest = slowest.max(started.elapsed());
        assert_eq!(code, 0, "{err}\n{}", agent.log());
    }
    eprintln!("root's `window list` during the floods: slowest of 5 {slowest:?}");
    assert!(
        slowest < Duration::from_secs(3),
        "root waited {slowest:?} during the floods"
    );
    let fds = fd_count(agent.pid());
    eprintln!("the agent's descriptors during the floods: {fds}");
    assert!(fds < 400, "the agent holds {fds} descriptors");
    for (name, child, n) in [("unix", unix, 3000), ("tcp", tcp, 500)] {
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(text.contains(&format!("opened {n}")), "{name}: {text}");
        assert!(
            text.contains(&format!("closed {n}")),
            "{name}: every flooding connection is closed within seconds: {text}\n{}",
            agent.log()
        );
    }
    let (status, body) = http_get(agent.metrics, "/metrics").expect("a scrape after the flood");
    assert_eq!(status, 200);
    assert!(body.contains("recap_agent_windows_open"), "{body}");
    assert!(
        agent.log().matches("refused connections").count() <= 6,
        "refusals are logged sparingly: {}",
        agent.log()
    );
    drop(agent);
    assert_no_residue();
}

/// Case 5: a request of 1,000 capsules of 3.9 kB (3.9 MB) is refused before anything of it is
/// copied or rendered, and its audit line is short: twenty of them add a few kB to the log,
/// not 78 MB.
#[test]
fn huge_refused_requests_leave_bounded_audit_lines() {
    if !require_root() {
        return;
    }
    let agent = AgentProcess::start("sec-audit", None, &[]);
    let before = agent.log().len();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut c = client::connect(&agent.socket).await.unwrap();
        for _ in 0..20 {
            let capsule = Capsule {
                tool: CapsuleTool::Tcpdump as i32,
                args: vec!["y".repeat(3900)],
            };
            let status = c
                .start_window(StartWindowRequest {
                    spec: Some(WindowSpec {
                        target: Some(Target::Container("web".into())),
                        duration: Some(prost_types::Duration {
                            seconds: 5,
                            nanos: 0,
                        }),
                        capsules: vec![capsule; 1000],
                        ..Default::default()
                    }),
                })
                .await
                .unwrap_err();
            assert!(
                status.message().contains("at most 6 capsules"),
                "{status:?}"
            );
        }
    });
    let log = agent.log();
    let added = log.len() - before;
    eprintln!("20 refused 3.9 MB requests added {added} bytes to the log");
    assert!(added < 60_000, "{added} bytes of audit log");
    // Refused before anything of it is rendered: one short line each, with the reason.
    assert_eq!(
        log.matches("start [a request over its limits]: invalid: a request has at most 6 capsules")
            .count(),
        20,
        "{log}"
    );
    drop(agent);
    assert_no_residue();
}

/// Case 6: `--cri-endpoint` makes the root agent connect where it says: only root may name a
/// socket other than the agent's own. The caller's socket is never connected to.
#[test]
fn only_root_points_the_agent_at_another_runtime_socket() {
    if !require_root() {
        return;
    }
    let policy = format!(
        "[[rule]]\nname = \"sre\"\nuids = [{}]\ncgroup_prefixes = [\"/sys/fs/cgroup\"]\n",
        SRE.0
    );
    let agent = AgentProcess::start("sec-cri", Some(&policy), &["--socket-group", "4000"]);
    let bait = agent.dir.join("bait.sock");
    let listener = std::os::unix::net::UnixListener::bind(&bait).unwrap();
    listener.set_nonblocking(true).unwrap();
    let pod_window = [
        "window",
        "start",
        "--pod",
        "shop/checkout-0",
        "--cri-endpoint",
        bait.to_str().unwrap(),
        "-d",
        "2s",
    ];
    let (code, _, err) = agent.recap_as(Some(SRE), &pod_window);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("only root may point the agent"), "{err}");
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the agent connected to the caller's socket"
    );
    // Root may: the agent connects there (and, the bait closing at once, says it is no CRI
    // runtime).
    listener.set_nonblocking(false).unwrap();
    let accepted = std::thread::spawn(move || listener.accept().map(drop).is_ok());
    let (code, _, err) = agent.recap(&pod_window);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("container runtime"), "{err}");
    assert!(accepted.join().unwrap(), "root's request used its socket");
    drop(agent);
    assert_no_residue();
}

/// A rule by group: the caller's supplementary groups are the ones the kernel recorded for its
/// socket at connect (`SO_PEERGROUPS`), not read from `/proc/<pid>` (whose process may be gone
/// and the PID another's).
#[test]
fn group_rules_use_the_groups_of_the_connection() {
    if !require_root() {
        return;
    }
    let cg = TestCgroup::new("sec-groups");
    let policy = format!(
        "[[rule]]\nname = \"oncall\"\ngids = [4100]\ncgroup_prefixes = [\"{}\"]\n",
        cg.dir.display()
    );
    let agent = AgentProcess::start("sec-groups", Some(&policy), &["--socket-group", "4000"]);
    let start = |groups: &str| {
        Command::new("setpriv")
            .args([
                "--reuid=4555",
                "--regid=4000",
                &format!("--groups={groups}"),
                "--",
            ])
            .arg(recap_bin())
            .args([
                "window",
                "start",
                "--cgroup",
                cg.dir.to_str().unwrap(),
                "-d",
                "1s",
            ])
            .arg("--socket")
            .arg(&agent.socket)
            .output()
            .unwrap()
    };
    let with = start("4000,4100");
    assert!(
        with.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&with.stderr),
        agent.log()
    );
    let without = start("4000");
    assert!(!without.status.success());
    assert!(
        String::from_utf8_lossy(&without.stderr).contains("no rule of the policy"),
        "{}",
        String::from_utf8_lossy(&without.stderr)
    );
    let id = String::from_utf8_lossy(&with.stdout).trim().to_string();
    let (code, _, err) = agent.recap(&["window", "wait", &id]);
    assert_eq!(code, 0, "{err}");
    drop(agent);
    assert_no_residue();
}

/// A caller allowed capsules may not run an image of its choosing: only an image its rule
/// names (`images`), or root.
#[test]
fn a_caller_runs_only_the_capsule_images_its_rule_names() {
    if !require_root() {
        return;
    }
    let web = AppContainer::run_labelled("recap-sec-image", &["recap.allow=true"]);
    let policy = format!(
        "[[rule]]\nname = \"sre\"\nuids = [{}]\ncontainer_labels = [\"recap.allow=true\"]\ncapsules = [\"tcpdump\", \"strace\", \"gdb\"]\nimages = [\"team/tools:1\"]\nmax_duration = \"30s\"\n",
        SRE.0
    );
    let agent = AgentProcess::start("sec-image", Some(&policy), &["--socket-group", "4000"]);
    let capsule = format!(
        "image={},cmd=/bin/busybox ps",
        recap_tests::docker::APP_IMAGE
    );
    let args = [
        "window",
        "start",
        "--container",
        &web.name,
        "-d",
        "2s",
        "--capsule",
        &capsule,
    ];
    let (code, _, err) = agent.recap_as(Some(SRE), &args);
    assert_ne!(code, 0, "an image the rule does not name ran");
    assert!(
        err.contains("capsule image `recap-test-httpd:1` is not in its images (team/tools:1)"),
        "{err}"
    );
    let (code, out, err) = agent.recap_as(Some(STRANGER), &args);
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("no rule"), "{err}");
    // Root may.
    let (code, out, err) = agent.recap_as(None, &args);
    assert_eq!(code, 0, "{err}\n{}", agent.log());
    let (code, _, err) = agent.recap_as(None, &["window", "wait", out.trim(), "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    drop(agent);
    drop(web);
    assert_no_residue();
    assert!(recap_tests::docker::capsule_containers().is_empty());
}
