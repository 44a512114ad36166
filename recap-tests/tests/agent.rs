//! The node agent as a real process on a real socket: many windows at once, each exact and
//! isolated; the window limit; callers identified by their credentials and held to the policy;
//! malformed requests; SIGTERM drains; SIGKILL and a restart recover. Every test ends with
//! nothing of ours in the kernel.

use std::{thread, time::Duration};

use recap_agent::agent::{
    api::{
        window_spec::Target, Capsule, CapsuleTool, KeyValue, OtlpExport, StartWindowRequest,
        WindowSpec,
    },
    client,
};
use recap_tests::{agent::AgentProcess, *};
use serde_json::Value;

fn getppid(v: &Value) -> u64 {
    v["syscalls"]["by_syscall"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "getppid")
        .map(|r| r["calls"].as_u64().unwrap())
        .unwrap_or(0)
}

fn plan(i: usize) -> WorkloadPlan {
    WorkloadPlan {
        connects: 1 + i % 3,
        refused: i % 2,
        kept_open: 0,
        bytes_per_connect: 100,
        datagrams: 0,
        datagram_size: 0,
        execs: i % 4,
        getppid: 1_000 + 100 * i,
        spin_ms: 0,
    }
}

fn metric(agent: &AgentProcess, line_start: &str) -> Option<f64> {
    let (_, body) = http_get(agent.metrics, "/metrics")?;
    body.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// 20 cgroups, each running a workload with its own known counts, 20 windows at once through
/// one agent: every window equals its own workload, and nothing of another's.
#[test]
fn twenty_windows_at_once_are_each_exact_and_isolated() {
    if !require_root() {
        return;
    }
    let mut agent = AgentProcess::start("twenty", None, &[]);
    let sink = TcpSink::start();
    let (_udp, udp_port) = udp_sink();
    let refused = closed_port();
    let cgroups: Vec<TestCgroup> = (0..20)
        .map(|i| TestCgroup::new(&format!("agent-{i}")))
        .collect();
    let mut workloads: Vec<Workload> = cgroups
        .iter()
        .enumerate()
        .map(|(i, cg)| Workload::start(cg, &plan(i), &sink, refused, udp_port))
        .collect();
    let ids: Vec<String> = cgroups
        .iter()
        .map(|cg| {
            agent.start_window(&[
                "--cgroup",
                cg.dir.to_str().unwrap(),
                "-d",
                "120s",
                "--probes",
                "all",
            ])
        })
        .collect();
    assert_eq!(metric(&agent, "recap_agent_windows_open "), Some(20.0));
    for w in &mut workloads {
        w.go();
    }
    for w in &mut workloads {
        w.wait_done();
    }
    thread::sleep(Duration::from_millis(300));
    for (i, id) in ids.iter().enumerate() {
        let (code, out, err) = agent.recap(&["window", "cancel", id, "-o", "json"]);
        assert_eq!(code, 0, "{err}");
        let s = summary(&out);
        let p = plan(i);
        assert_eq!(s["status"], "interrupted");
        assert_eq!(getppid(&s), p.getppid as u64, "window {i}");
        assert_eq!(
            u(&s, "/tcp/connect_established"),
            p.connects as u64,
            "window {i}"
        );
        assert_eq!(u(&s, "/tcp/connect_failed"), p.refused as u64, "window {i}");
        assert_eq!(u(&s, "/proc/execs"), p.execs as u64, "window {i}");
    }
    // The history has them all.
    let (_, out, _) = agent.recap(&["window", "list", "--status", "interrupted", "-o", "json"]);
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 20);
    for w in workloads {
        w.stop();
    }
    let (code, _) = agent.stop_with(libc::SIGTERM);
    assert_eq!(code, Some(0), "{}", agent.log());
    assert_no_residue();
}

/// 128 windows open at once (the limit), one more refused by name; the window in the middle of
/// them still counts exactly; SIGTERM ends all 128 with their summaries stored.
#[test]
fn a_hundred_and_twenty_eight_windows_open_at_once() {
    if !require_root() {
        return;
    }
    let mut agent = AgentProcess::start("many", None, &[]);
    let cgroups: Vec<TestCgroup> = (0..129)
        .map(|i| TestCgroup::new(&format!("many-{i}")))
        .collect();
    let mut ids = Vec::new();
    for cg in &cgroups[..128] {
        ids.push(agent.start_window(&[
            "--cgroup",
            cg.dir.to_str().unwrap(),
            "-d",
            "300s",
            "--probes",
            "all",
        ]));
    }
    assert_eq!(metric(&agent, "recap_agent_windows_open "), Some(128.0));
    let (code, _, err) = agent.recap(&[
        "window",
        "start",
        "--cgroup",
        cgroups[128].dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("128 windows open") && err.contains("max_windows_total"),
        "{err}"
    );

    let sink = TcpSink::start();
    let (_udp, udp_port) = udp_sink();
    let mut w = Workload::start(&cgroups[77], &plan(5), &sink, closed_port(), udp_port);
    w.go();
    w.wait_done();
    thread::sleep(Duration::from_millis(300));
    let (code, out, err) = agent.recap(&["window", "cancel", &ids[77], "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let s = summary(&out);
    assert_eq!(getppid(&s), plan(5).getppid as u64);
    // The workload started inside the open window: its own exec counts too.
    assert_eq!(u(&s, "/proc/execs"), plan(5).execs as u64 + 1);
    w.stop();
    // A neighbour saw none of it.
    let (_, out, _) = agent.recap(&["window", "cancel", &ids[76], "-o", "json"]);
    assert_eq!(getppid(&summary(&out)), 0);

    let (code, took) = agent.stop_with(libc::SIGTERM);
    eprintln!("SIGTERM with 126 windows open: exited in {took:?}");
    assert_eq!(code, Some(0), "{}", agent.log());
    assert_no_residue();
    agent.restart();
    let (_, out, _) = agent.recap(&["window", "list", "--limit", "1000", "-o", "json"]);
    let listed: Vec<Value> = serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(listed.len(), 128);
    assert!(
        listed
            .iter()
            .all(|w| w["status"] == "interrupted" && w["summary"]["window_id"] == w["window_id"]),
        "every window ended interrupted with its summary stored"
    );
    agent.stop_with(libc::SIGTERM);
    assert_no_residue();
}

/// Callers are who the socket says they are; the policy's refusals name their rule; nothing
/// starts for a refused request.
#[test]
fn callers_are_held_to_the_policy() {
    if !require_root() {
        return;
    }
    let allowed = TestCgroup::new("policy-allowed");
    let other = TestCgroup::new("policy-other");
    let policy = format!(
        "[[rule]]\nname = \"nobody-on-allowed\"\nuids = [65534]\ncgroup_prefixes = [\"{}\"]\nmax_duration = \"30s\"\nmax_windows = 1\n",
        allowed.dir.display()
    );
    let mut agent = AgentProcess::start("policy", Some(&policy), &["--socket-group", "65534"]);
    let nobody = Some((65534, 65534));
    let allowed_dir = allowed.dir.to_str().unwrap();

    // A caller outside the socket's group cannot even connect.
    let (code, _, err) = agent.recap_as(Some((65533, 65533)), &["window", "list"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no permission to use the agent's socket"),
        "{err}"
    );
    // In the group, but no rule names it.
    let (code, _, err) = agent.recap_as(
        Some((65533, 65534)),
        &["window", "start", "--cgroup", allowed_dir, "-d", "5s"],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("no rule of the policy") && err.contains("uid 65533"),
        "{err}"
    );

    let refused = |args: &[&str], why: &str| {
        let mut all = vec!["window", "start"];
        all.extend(args);
        let (code, _, err) = agent.recap_as(nobody, &all);
        assert_eq!(code, 1, "{args:?} was not refused: {err}");
        assert!(
            err.contains("rule `nobody-on-allowed`") && err.contains(why),
            "{args:?}: {err}"
        );
    };
    // Outside its rule: refused, naming the rule and what it did not allow.
    refused(
        &["--cgroup", other.dir.to_str().unwrap(), "-d", "5s"],
        "cgroup_prefixes",
    );
    refused(&["--cgroup", allowed_dir, "-d", "1m"], "max_duration");
    refused(
        &["--cgroup", allowed_dir, "-d", "5s", "--probes", "syscalls"],
        "family `syscalls`",
    );
    // Within it: opened; a second one is over its max_windows.
    let (code, out, err) = agent.recap_as(
        nobody,
        &["window", "start", "--cgroup", allowed_dir, "-d", "20s"],
    );
    assert_eq!(code, 0, "{err}\n{}", agent.log());
    let id = out.trim().to_string();
    refused(&["--cgroup", allowed_dir, "-d", "5s"], "max_windows");
    // Root's window is not nobody's to cancel.
    let root_window = agent.start_window(&["--cgroup", other.dir.to_str().unwrap(), "-d", "20s"]);
    let (code, _, err) = agent.recap_as(nobody, &["window", "cancel", &root_window]);
    assert_eq!(code, 1);
    assert!(err.contains("is not open"), "not even whose it is: {err}");
    // Its own it may.
    let (code, _, err) = agent.recap_as(nobody, &["window", "cancel", &id, "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = agent.recap(&["window", "list", "--status", "open", "-o", "json"]);
    let open: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        open.as_array().unwrap().len(),
        1,
        "refused requests opened nothing: {open:#}"
    );
    assert!(
        agent.log().contains("audit: uid 65534"),
        "requests are audit-logged"
    );
    agent.stop_with(libc::SIGTERM);
    assert_no_residue();
}

/// Requests that the CLI would never send, straight to the API: each gets a clear error and
/// changes nothing.
#[test]
fn malformed_and_hostile_requests_change_nothing() {
    if !require_root() {
        return;
    }
    let mut agent = AgentProcess::start("hostile", None, &[]);
    let cg = TestCgroup::new("hostile");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let socket = agent.socket.clone();
    let dir = cg.dir.to_str().unwrap().to_string();
    runtime.block_on(async {
        let mut c = client::connect(&socket).await.unwrap();
        let start = |spec: Option<WindowSpec>| {
            let mut c = c.clone();
            async move {
                c.start_window(StartWindowRequest { spec })
                    .await
                    .unwrap_err()
            }
        };
        let on = |target: Target, edit: &dyn Fn(&mut WindowSpec)| {
            let mut spec = WindowSpec {
                target: Some(target),
                duration: Some(prost_types::Duration {
                    seconds: 5,
                    nanos: 0,
                }),
                ..Default::default()
            };
            edit(&mut spec);
            Some(spec)
        };
        let cgroup = || Target::Cgroup(dir.clone());
        let capsule = |tool: CapsuleTool, args: &[&str]| Capsule {
            tool: tool as i32,
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        let cases = [
            (None, "give the window's spec"),
            (on(cgroup(), &|s| s.target = None), "give a target"),
            (
                on(Target::Container("web".into()), &|s| {
                    s.capsules = vec![capsule(CapsuleTool::Strace, &["busybox", "sh", "-c", "id"])]
                }),
                "not `busybox`",
            ),
            (
                on(Target::Cgroup(format!("{dir}/../../../../../etc")), &|_| {}),
                "not a cgroup v2 directory",
            ),
            (
                on(cgroup(), &|s| {
                    s.duration = Some(prost_types::Duration {
                        seconds: i64::MAX,
                        nanos: 0,
                    })
                }),
                "over the",
            ),
            (
                on(cgroup(), &|s| {
                    s.duration = Some(prost_types::Duration {
                        seconds: -1,
                        nanos: 0,
                    })
                }),
                "not negative",
            ),
            (
                on(cgroup(), &|s| s.families = vec![4242]),
                "unknown probe family",
            ),
            (
                on(Target::Container("web".into()), &|s| {
                    s.capsules = vec![capsule(CapsuleTool::Tcpdump, &[]); 100]
                }),
                "at most 6 capsules",
            ),
            (
                on(Target::Cgroup("x".repeat(10_000)), &|_| {}),
                "at most 4096 bytes",
            ),
            (
                on(cgroup(), &|s| {
                    s.otlp = Some(OtlpExport {
                        endpoint: "http://127.0.0.1:1".into(),
                        headers: vec![KeyValue {
                            key: "x".into(),
                            value: "1\r\nX-Injected: yes".into(),
                        }],
                        ..Default::default()
                    })
                }),
                "control characters",
            ),
        ];
        for (spec, why) in cases {
            let status = start(spec.clone()).await;
            assert!(status.message().contains(why), "{spec:?}: {status:?}");
        }
        let unknown = c
            .get_window(recap_agent::agent::api::WindowRef {
                window_id: "../../etc".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::InvalidArgument);
        let missing = c
            .wait_window(recap_agent::agent::api::WindowRef {
                window_id: "0123456789ab".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), tonic::Code::NotFound);
        let listed = c
            .list_windows(recap_agent::agent::api::ListWindowsRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(
            listed.windows.is_empty(),
            "nothing was opened: {:?}",
            listed.windows
        );
    });
    assert_eq!(
        metric(&agent, "recap_agent_windows_opened_total "),
        Some(0.0)
    );
    agent.stop_with(libc::SIGTERM);
    assert_no_residue();
}

/// A SIGKILLed agent leaves nothing in the kernel; the next one marks its open windows lost.
#[test]
fn a_killed_agent_leaves_nothing_and_its_windows_are_lost() {
    if !require_root() {
        return;
    }
    let mut agent = AgentProcess::start("killed", None, &[]);
    let cg = TestCgroup::new("killed");
    let id = agent.start_window(&["--cgroup", cg.dir.to_str().unwrap(), "-d", "60s"]);
    let (code, _) = agent.stop_with(libc::SIGKILL);
    assert_eq!(code, None, "killed by the signal");
    assert_no_residue();
    agent.restart();
    let (code, out, err) = agent.recap(&["window", "show", &id, "-o", "json"]);
    assert_eq!(code, 1, "a lost window is not a success: {err}");
    let record: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(record["status"], "lost");
    assert!(agent.log().contains("marked lost"), "{}", agent.log());
    agent.stop_with(libc::SIGTERM);
    assert_no_residue();
}

/// Plain `recap window` goes through a running agent: the same exact counts, Ctrl-C ends the
/// window through the agent; `watch` follows another window to its end.
#[test]
fn plain_window_goes_through_the_agent_and_watch_follows_a_window() {
    if !require_root() {
        return;
    }
    let mut agent = AgentProcess::start("plain", None, &[]);
    let cg = TestCgroup::new("plain");
    let sink = TcpSink::start();
    let (_udp, udp_port) = udp_sink();
    let mut w = Workload::start(&cg, &plan(3), &sink, closed_port(), udp_port);
    let socket = agent.socket.to_str().unwrap().to_string();
    let dir = cg.dir.to_str().unwrap().to_string();
    let mut run = RecapRun::start(&[
        "window", "--socket", &socket, "--cgroup", &dir, "-d", "60s", "--probes", "all", "-o",
        "json",
    ]);
    run.wait_armed();
    w.go();
    w.wait_done();
    thread::sleep(Duration::from_millis(200));
    let (s, _) = run.interrupt();
    assert_eq!(s["status"], "interrupted");
    assert_eq!(getppid(&s), plan(3).getppid as u64);
    assert_eq!(u(&s, "/tcp/connect_established"), plan(3).connects as u64);
    let (_, listed, _) = agent.recap(&["window", "list", "-o", "json"]);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(
        listed[0]["window_id"], s["window_id"],
        "the agent ran it and kept it"
    );
    w.stop();

    let id = agent.start_window(&["--cgroup", &dir, "-d", "2s"]);
    let (code, out, err) = agent.recap(&["window", "watch", &id, "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(summary(&out)["status"], "completed");
    agent.stop_with(libc::SIGTERM);
    assert_no_residue();
}

/// A client in another language, with nothing of RECap's but its proto: Python's grpcio with
/// stubs generated at run time asks what it may open (`DescribeOptions`), opens a window on a
/// cgroup with typed fields, and waits for it. The window is exact (7 `true`s run in the
/// cgroup, 5 outside: 7), its record says what was asked, and a request without a duration is
/// refused with the reason.
#[test]
fn a_client_in_another_language_uses_the_typed_api() {
    if !require_root() {
        return;
    }
    let agent = AgentProcess::start("python", None, &[]);
    let cg = TestCgroup::new("python-client");
    let stubs = agent.dir.join("stubs");
    std::fs::create_dir_all(&stubs).unwrap();
    let api = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut client = std::process::Command::new("/usr/bin/python3")
        .arg(api.join("api/client.py"))
        .arg(&agent.socket)
        .arg(api.join("../recap-agent/proto"))
        .arg(&stubs)
        .arg(&cg.dir)
        .arg("3")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (apt-get install python3-grpcio python3-grpc-tools)");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(client.stdout.take().unwrap()));
    let mut next = || -> Value {
        let line = lines.next().expect("the client ended early").unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    };
    let options = next();
    assert_eq!(options["step"], "options");
    let families: Vec<&str> = options["families"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    for f in ["tcp", "http", "proc", "syscalls", "mem", "disk"] {
        assert!(families.contains(&f), "{options}");
    }
    assert!(!options["defaults"]
        .as_array()
        .unwrap()
        .contains(&"syscalls".into()));
    assert!(options["tools"]
        .as_array()
        .unwrap()
        .contains(&"tcpdump".into()));
    assert_eq!(options["root"], true);
    assert_eq!(next()["step"], "armed");
    let trues = |cg: Option<&TestCgroup>, n: usize| {
        let script = format!("for i in $(seq {n}); do /bin/true; done");
        let ok = command_in(cg, "/bin/sh")
            .args(["-c", &script])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    };
    trues(Some(&cg), 7);
    trues(None, 5);
    let ended = next();
    assert_eq!(ended["step"], "ended", "{ended}");
    assert_eq!(ended["status"], "WINDOW_STATUS_COMPLETED", "{ended}");
    assert_eq!(ended["families"], serde_json::json!(["FAMILY_PROC"]));
    assert_eq!(ended["command_line"][0], "--cgroup");
    let s = &ended["summary"];
    let counted = s["proc"]["exec_names"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "true")
        .map(|e| e["count"].as_u64().unwrap());
    assert_eq!(counted, Some(7), "{:#}", s["proc"]);
    let refused = next();
    assert_eq!(refused["code"], "INVALID_ARGUMENT", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("give a duration"),
        "{refused}"
    );
    assert!(client.wait().unwrap().success());
    drop(agent);
    assert_no_residue();
}
