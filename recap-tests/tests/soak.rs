//! Soak: many consecutive windows on a busy target through one agent (`cargo xtask soak`: 60
//! windows of 1 minute). Every window's counts equal the workload's tally; the agent's memory
//! stays flat. Ignored by `cargo xtask test` (it takes an hour); RECAP_SOAK_WINDOWS and
//! RECAP_SOAK_SECONDS size it.

use std::time::Duration;

use recap_tests::{agent::AgentProcess, *};
use serde_json::Value;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
#[ignore = "about an hour: run it with `cargo xtask soak`"]
fn consecutive_windows_stay_exact_and_the_agent_stays_small() {
    let windows: usize = std::env::var("RECAP_SOAK_WINDOWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    if !require_root() {
        return;
    }
    let seconds: u64 = std::env::var("RECAP_SOAK_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let agent = AgentProcess::start("soak", None, &[]);
    let cg = TestCgroup::new("soak");
    let sink = TcpSink::start();
    let (_udp, udp_port) = udp_sink();
    let plan = WorkloadPlan {
        connects: 20,
        refused: 2,
        kept_open: 0,
        bytes_per_connect: 10_000,
        datagrams: 10,
        datagram_size: 100,
        execs: 5,
        getppid: 50_000,
        spin_ms: 200,
    };
    let mut rss = Vec::new();
    for i in 0..windows {
        let mut w = Workload::start(&cg, &plan, &sink, closed_port(), udp_port);
        let id = agent.start_window(&[
            "--cgroup",
            cg.dir.to_str().unwrap(),
            "-d",
            &format!("{seconds}s"),
            "--probes",
            "all",
        ]);
        w.go();
        w.wait_done();
        // Requests and lookups too: a server, its client and lookups, all in the target.
        let app = AppTraffic::run(&cg);
        let (code, out, err) = agent.recap(&["window", "wait", &id, "-o", "json"]);
        assert_eq!(code, 0, "{err}");
        drop(app);
        let s: Value = summary(&out);
        assert_eq!(s["status"], "completed", "window {i}");
        let getppid = s["syscalls"]["by_syscall"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "getppid")
            .and_then(|r| r["calls"].as_u64());
        assert_eq!(getppid, Some(plan.getppid as u64), "window {i}");
        assert_eq!(
            s["tcp"]["connect_established"],
            plan.connects as u64 + AppTraffic::CONNECTS,
            "window {i}"
        );
        assert_eq!(
            s["proc"]["execs"],
            plan.execs as u64 + AppTraffic::EXECS,
            "window {i}"
        );
        assert_eq!(
            s["http"]["server"]["completed"],
            AppTraffic::REQUESTS,
            "window {i}"
        );
        assert_eq!(s["http"]["client"]["completed"], AppTraffic::REQUESTS);
        assert_eq!(s["dns"]["answered"], 5, "window {i}");
        w.stop();
        rss.push(rss_kib(agent.pid()));
        eprintln!("soak: window {i} exact; agent RSS {} KiB", rss[i]);
        std::thread::sleep(Duration::from_millis(100));
    }
    // After warming up, the agent's memory does not grow with the windows it has run.
    let settled = rss[rss.len().min(3) - 1];
    let last = *rss.last().unwrap();
    assert!(
        last <= settled + 4096,
        "agent RSS grew from {settled} KiB to {last} KiB over {windows} windows"
    );
}
