//! The fleet benchmark (`cargo xtask bench --only fleet`; ignored by `cargo test`): request →
//! every node counting, for 1, 3 and 10 agents, next to arming one window through one agent.
//! Prints medians; asserts only that every window opened (no timings).

use std::{process::Command, time::Instant};

use recap_tests::{agent::AgentProcess, docker::AppContainer, etcd::EtcdCluster, *};
use serde_json::Value;

const REPS: usize = 5;

fn unix_ms(rfc3339: &str) -> f64 {
    // `recap`'s own format: 2026-11-26T07:35:32.123Z.
    let out = Command::new("date")
        .args(["-u", "-d", rfc3339, "+%s%3N"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
#[ignore = "a benchmark: cargo xtask bench --only fleet"]
fn fleet_request_to_every_node_counting() {
    if !require_root() {
        return;
    }
    let cluster = EtcdCluster::start("bench", false);
    println!("\n## Fleet windows: request → every node counting (median of {REPS}; 3 etcd members on loopback)\n");
    println!("| agents | request → every window counting | request → every part claimed | one window through one agent (`window start --container`) | fleet − single |");
    println!("|---|---|---|---|---|");
    for n in [1usize, 3, 10] {
        let nodes: Vec<String> = (1..=n).map(|i| format!("b{n}-{i}")).collect();
        let agents: Vec<AgentProcess> = nodes
            .iter()
            .map(|node| {
                let mut args: Vec<String> = vec![
                    "--node".into(),
                    node.clone(),
                    "--fleet-scope".into(),
                    format!("recap.node={node}"),
                    // The bench's etcd has no auth (loopback, this test only).
                    "--etcd-allow-no-auth".into(),
                ];
                args.extend(cluster.client_args());
                let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                AgentProcess::start(&format!("bench-{node}"), None, &refs)
            })
            .collect();
        let app = format!("app=bench{n}");
        let containers: Vec<AppContainer> = nodes
            .iter()
            .map(|node| {
                AppContainer::run_labelled(
                    &format!("bench-{node}"),
                    &[&app, &format!("recap.node={node}")],
                )
            })
            .collect();
        let fleet = |d: &str| -> Value {
            let mut cmd = Command::new(recap_bin());
            cmd.args([
                "fleet",
                "window",
                "--selector",
                &app,
                "-d",
                d,
                "--probes",
                "tcp",
                "-o",
                "json",
                "--etcd-allow-no-auth",
            ])
            .args(cluster.client_args());
            let out = cmd.output().unwrap();
            let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            assert_eq!(v["windows"], n, "{}", String::from_utf8_lossy(&out.stderr));
            v
        };
        // Registered, and every agent's programs loaded once (not what is measured).
        let names: Vec<&str> = nodes.iter().map(String::as_str).collect();
        cluster.wait_registered(&[], &names);
        fleet("1s");
        let (mut counting, mut claimed, mut single) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..REPS {
            let v = fleet("1s");
            let created = v["created_unix_ms"].as_f64().unwrap();
            let last_start = v["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|node| node["targets"].as_array().cloned().unwrap_or_default())
                .map(|t| unix_ms(t["summary"]["started_at"].as_str().unwrap()))
                .fold(f64::MIN, f64::max);
            counting.push(last_start - created);
            claimed.push(v["all_claimed_ms"].as_f64().unwrap_or(f64::NAN));
            let t = Instant::now();
            let id = agents[0].start_window(&[
                "--container",
                &containers[0].id,
                "-d",
                "1h",
                "--probes",
                "tcp",
            ]);
            single.push(t.elapsed().as_secs_f64() * 1e3);
            agents[0].recap(&["window", "cancel", &id]);
        }
        let (c, cl, s) = (median(counting), median(claimed), median(single));
        println!(
            "| {n} | {c:.0} ms | {cl:.0} ms | {s:.0} ms | {:+.0} ms |",
            c - s
        );
        drop(containers);
        drop(agents);
    }
    println!("\n(Goal: request → every node counting within 100 ms of one window's arming through one agent.)");
    assert_no_residue();
}
