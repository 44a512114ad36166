//! The `http` family against ground truth: `recap-http`'s client sends a known mix (keep-alive
//! and fresh connections, 404s, 503s, HEAD, `100 Continue`, chunked and many-piece bodies,
//! status lines written in pieces, heads split over three writes, inside the method and
//! right after it, a 300 ms endpoint, a 1 MiB response, a 200 kB upload) and
//! tallies what it got back; the window must count exactly that, on the side the target is on,
//! and nothing of the identical traffic outside it.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    process::{Child, ChildStdout, Command, Stdio},
};

use recap_tests::*;
use serde_json::Value;

/// A `recap-http` process, killed on drop.
struct Proc {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Proc {
    fn start(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        Proc { child, out }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        line.trim().to_string()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server(cg: Option<&TestCgroup>) -> (Proc, u16) {
    let mut cmd = command_in(cg, test_bin("recap-http"));
    cmd.arg("serve");
    let mut p = Proc::start(cmd);
    let port = p.line().parse().unwrap();
    (p, port)
}

/// Runs the client's mix; returns it with what it received (`"GET 200" -> n`) and the interim
/// responses it read. The client stays, with one request in flight and one aborted.
fn client(cg: Option<&TestCgroup>, port: u16) -> (Proc, BTreeMap<String, u64>, u64) {
    let mut cmd = command_in(cg, test_bin("recap-http"));
    cmd.args(["client", &port.to_string()]);
    let mut p = Proc::start(cmd);
    let got: BTreeMap<String, u64> = serde_json::from_str(&p.line()).unwrap();
    let interim = p.line().strip_prefix("interim ").unwrap().parse().unwrap();
    assert_eq!(p.line(), "pending");
    // The mix, as the client sent it: the tally is not allowed to drift from it unnoticed.
    let expected: BTreeMap<String, u64> = [
        ("DELETE 200", 1),
        ("GET 200", 16),
        ("GET 404", 4),
        ("HEAD 200", 2),
        ("POST 200", 1),
        ("POST 201", 2),
        ("POST 503", 2),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(got, expected);
    (p, got, interim)
}

fn open_window(cg: &TestCgroup) -> RecapRun {
    let dir = cg.dir.to_str().unwrap().to_owned();
    let mut run = RecapRun::start(&[
        "window", "--local", "--cgroup", &dir, "-d", "120s", "--probes", "http", "-o", "json",
    ]);
    run.wait_armed();
    run
}

/// `"GET 200" -> n` for one side of the summary.
fn counted(side: &Value) -> BTreeMap<String, u64> {
    side["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                format!("{} {}", g["method"].as_str().unwrap(), g["status"]),
                g["duration"]["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// In which log2 bucket (its lower bound) each of a group's requests fell.
fn buckets(side: &Value, method: &str, status: u64) -> Vec<(u64, u64)> {
    side["requests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["method"] == method && g["status"] == status)
        .unwrap()["duration"]["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["ge_ns"].as_u64().unwrap(), b["count"].as_u64().unwrap()))
        .collect()
}

#[test]
fn a_server_in_the_target_counts_every_request_it_served_and_nothing_else() {
    if !require_root() {
        return;
    }
    let cg = TestCgroup::new("http-server");
    let (_inside, port_in) = server(Some(&cg));
    let (_outside, port_out) = server(None);
    let run = open_window(&cg);
    // The same mix to a server outside the target, before and after.
    let (outside_client, _, _) = client(None, port_out);
    let (inside_client, got, interim) = client(None, port_in);
    drop(outside_client); // its two /hang connections close too
    let (s, _) = run.interrupt();
    drop(inside_client);
    let http = &s["http"];
    assert_eq!(counted(&http["server"]), got, "{http:#}");
    assert_eq!(u(http, "/server/completed"), got.values().sum::<u64>());
    assert_eq!(u(http, "/interim_responses"), interim);
    assert_eq!(interim, 2);
    // One /hang left open (in flight), one whose client went away (aborted).
    assert_eq!(u(http, "/server/in_flight"), 1, "{http:#}");
    assert_eq!(u(http, "/server/aborted"), 1, "{http:#}");
    assert_eq!(u(http, "/server/started"), got.values().sum::<u64>() + 2);
    assert_eq!(
        u(http, "/client/started"),
        0,
        "the client is outside the target"
    );
    assert!(counted(&http["client"]).is_empty());
    for anomaly in ["pipelined", "unmatched_responses"] {
        assert_eq!(u(http, &format!("/{anomaly}")), 0, "{anomaly}");
    }
    assert_eq!(u(http, "/server/unparsable_responses"), 0);
    // The 300 ms request: in [2^28, 2^29) ns; every other GET 200 well below.
    let b = buckets(&http["server"], "GET", 200);
    assert!(b.contains(&(1 << 28, 1)), "{b:?}");
    assert_eq!(
        b.iter().filter(|(ge, _)| *ge >= 1 << 27).count(),
        1,
        "{b:?}"
    );
    assert_no_residue();
}

#[test]
fn a_client_in_the_target_counts_every_request_it_made() {
    if !require_root() {
        return;
    }
    let cg = TestCgroup::new("http-client");
    let (_server, port) = server(None);
    let run = open_window(&cg);
    let (_outside_client, _, _) = client(None, port);
    let (inside_client, got, interim) = client(Some(&cg), port);
    let (s, _) = run.interrupt();
    drop(inside_client);
    let http = &s["http"];
    assert_eq!(counted(&http["client"]), got, "{http:#}");
    assert_eq!(u(http, "/interim_responses"), interim);
    assert_eq!(u(http, "/client/in_flight"), 1, "{http:#}");
    assert_eq!(u(http, "/client/aborted"), 1, "{http:#}");
    assert_eq!(
        u(http, "/server/started"),
        0,
        "the server is outside the target"
    );
    assert_eq!(u(http, "/pipelined") + u(http, "/unmatched_responses"), 0);
    // Client side: written → first byte read, so the 300 ms request is there too.
    let b = buckets(&http["client"], "GET", 200);
    assert!(b.contains(&(1 << 28, 1)), "{b:?}");
    assert_no_residue();
}
