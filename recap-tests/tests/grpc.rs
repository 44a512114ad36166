//! gRPC against ground truth: Debian's grpcio (gRPC core; its TLS is OpenSSL as a shared
//! library) as server and client, over h2c and over TLS. Unary, server-streaming and
//! client-streaming calls with statuses OK, NOT_FOUND, UNAVAILABLE and DEADLINE_EXCEEDED, on
//! one connection per client. The window must count every call of the target's side exactly
//! per method and `grpc-status` (the codes the clients themselves report), streaming calls
//! once, and nothing of an identical server and client outside the target.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use recap_tests::{
    scripted::{Cert, Client, Listening},
    *,
};
use serde_json::Value;

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("grpc")
        .join(name)
}

/// What every client round is made of (client.py's CALLS): method:code -> calls.
const MIX: &[(&str, u64)] = &[
    ("Stream:0", 2),
    ("Unary:0", 3),
    ("Unary:14", 1),
    ("Unary:4", 1),
    ("Unary:5", 2),
    ("Upload:0", 1),
];
const CALLS: u64 = 10;

/// grpcio's server (server.py) on a free port, in `cg` if given; TLS with `cert`.
fn server(cg: Option<&TestCgroup>, cert: Option<&Cert>) -> Listening {
    let port = free_tcp_port();
    let mut cmd = command_in(cg, "/usr/bin/python3");
    cmd.arg(script("server.py")).arg(port.to_string());
    if let Some(c) = cert {
        cmd.arg(c.cert()).arg(c.key());
    }
    Listening::start(cmd, port, "the gRPC server (python3-grpcio)")
}

/// grpcio's client (client.py): one channel to `port`, started in `cg` if given.
fn client(cg: Option<&TestCgroup>, port: u16, cert: Option<&Cert>) -> Client {
    let mut cmd = command_in(cg, "/usr/bin/python3");
    cmd.arg(script("client.py")).arg(port.to_string());
    if let Some(c) = cert {
        cmd.arg(c.cert());
    }
    Client::start(cmd)
}

/// A client's line ("Unary:5=2 ...") as method:code -> calls.
fn seen_by_client(line: &str) -> BTreeMap<String, u64> {
    line.split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

/// One side of the window's `grpc` as method:code -> calls; every call of service
/// `recap.Test`, and over TLS exactly when `tls`.
fn counted(side: &Value, tls: bool) -> BTreeMap<String, u64> {
    let mut calls = BTreeMap::new();
    for g in side.as_array().unwrap() {
        assert_eq!(g["service"], "recap.Test", "{g}");
        assert_eq!(g["tls"], tls, "{g}");
        let key = format!("{}:{}", g["method"].as_str().unwrap(), g["status_code"]);
        *calls.entry(key).or_default() += g["duration"]["count"].as_u64().unwrap();
    }
    calls
}

fn open_window(cg: &TestCgroup) -> RecapRun {
    open_window_with(cg, &[])
}

fn open_window_with(cg: &TestCgroup, extra: &[&str]) -> RecapRun {
    let mut target = vec!["--cgroup", cg.dir.to_str().unwrap()];
    target.extend(extra);
    RecapRun::armed_window(&target, "http")
}

/// A server in the target and one outside; a client outside calling the first, one outside
/// calling the second, one in the target calling the second. Each makes the known mix once.
fn grpc_is_counted_exactly(tls: bool) {
    let cert = tls.then(|| Cert::new("grpc"));
    let cert = cert.as_ref();
    let cg = TestCgroup::new(if tls { "grpc-tls" } else { "grpc-h2c" });
    let inside = server(Some(&cg), cert);
    let outside = server(None, cert);
    let run = open_window(&cg);
    let mix: BTreeMap<String, u64> = MIX.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    let to_inside = client(None, inside.port, cert).go();
    let to_outside = client(None, outside.port, cert).go();
    let from_inside = client(Some(&cg), outside.port, cert).go();
    for line in [&to_inside, &to_outside, &from_inside] {
        assert_eq!(
            seen_by_client(line),
            mix,
            "the clients' own view of the mix"
        );
    }
    let (s, err) = run.interrupt();
    let http = &s["http"];
    let grpc = &http["grpc"];
    assert_eq!(
        counted(&grpc["server"], tls),
        seen_by_client(&to_inside),
        "served in the target: {http:#}\n{err}"
    );
    assert_eq!(
        counted(&grpc["client"], tls),
        seen_by_client(&from_inside),
        "made in the target: {http:#}\n{err}"
    );
    // As HTTP/2 requests: every call a POST answered 200 (gRPC's statuses are in trailers),
    // but the one past its deadline, whose stream may be reset before any response.
    for side in ["server", "client"] {
        let requests = http[side]["requests"].as_array().unwrap();
        assert_eq!(requests.len(), 1, "{side}: {http:#}");
        assert_eq!(requests[0]["method"], "POST", "{http:#}");
        assert_eq!(requests[0]["status"], 200, "{http:#}");
        assert_eq!(requests[0]["version"], "2", "{http:#}");
        assert_eq!(requests[0]["tls"], tls, "{http:#}");
        let answered = requests[0]["duration"]["count"].as_u64().unwrap();
        let aborted = http[side]["aborted"].as_u64().unwrap();
        assert!(aborted <= 1, "{side}: {http:#}");
        assert_eq!(answered + aborted, CALLS, "{side}: {http:#}");
        assert_eq!(http[side]["started"], CALLS, "{side}: {http:#}");
        assert_eq!(http[side]["in_flight"], 0, "{side}: {http:#}");
    }
    assert_eq!(http["http2"]["connections"], 2, "{http:#}");
    assert_eq!(http["http2"]["unknown_fields"], 0, "{http:#}");
    assert_eq!(http["http2"]["frames_lost"], 0, "{http:#}");
    assert_eq!(http["http2"]["connections_desynced"], 0, "{http:#}");
    drop(inside);
    drop(outside);
    assert_no_residue();
}

#[test]
fn grpc_over_h2c_is_counted_exactly_per_method_and_status() {
    if !require_root() {
        return;
    }
    grpc_is_counted_exactly(false);
}

#[test]
fn grpc_over_tls_is_counted_exactly_per_method_and_status() {
    if !require_root() {
        return;
    }
    grpc_is_counted_exactly(true);
}

/// A client connected before the window, its HPACK tables filled by a round of calls made
/// then, makes two more rounds in the window: every call is counted, each field either right
/// or `unknown` (coded against table entries from before the window), never wrong.
fn a_connection_from_before_the_window_is_joined(tls: bool) {
    let cert = tls.then(|| Cert::new("grpc-joined"));
    let cert = cert.as_ref();
    let cg = TestCgroup::new(if tls { "grpc-join-tls" } else { "grpc-join" });
    let server = server(Some(&cg), cert);
    let mut old = client(None, server.port, cert);
    let mix: BTreeMap<String, u64> = MIX.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    assert_eq!(seen_by_client(&old.go()), mix);
    // The slow call's handler answers a second after its client gave up: let that answer to
    // a request from before the window go by before it opens.
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let run = open_window(&cg);
    for _ in 0..2 {
        assert_eq!(seen_by_client(&old.go()), mix);
    }
    let (s, err) = run.interrupt();
    let http = &s["http"];
    assert_eq!(http["http2"]["joined"], 1, "{http:#}\n{err}");
    assert_eq!(http["http2"]["connections"], 0, "{http:#}");
    assert_eq!(http["server"]["started"], 2 * CALLS, "{http:#}");
    assert_eq!(http["client"]["started"], 0, "{http:#}");
    let mut calls = 0;
    for g in http["grpc"]["server"].as_array().unwrap() {
        let n = g["duration"]["count"].as_u64().unwrap();
        calls += n;
        assert_eq!(g["tls"], tls, "{g}");
        let (service, method, code) = (&g["service"], &g["method"], &g["status_code"]);
        if service != "unknown" {
            assert_eq!(service, "recap.Test", "{g}");
        }
        // A known method and status must be one the clients saw, no more often.
        if method != "unknown" && !code.is_null() {
            let key = format!("{}:{code}", method.as_str().unwrap());
            let truth = 2 * mix.get(&key).copied().unwrap_or(0);
            assert!(n <= truth, "{key}: {n} counted, {truth} made: {http:#}");
        }
    }
    // Every call is an HTTP/2 request answered (or reset past its deadline); a call not
    // counted as gRPC's had a field that could not be read, and is said to.
    let answered = http["server"]["requests"][0]["duration"]["count"]
        .as_u64()
        .unwrap();
    let aborted = http["server"]["aborted"].as_u64().unwrap();
    assert_eq!(answered + aborted, 2 * CALLS, "{http:#}");
    assert_eq!(http["unmatched_responses"], 0, "{http:#}");
    let unknown = http["http2"]["unknown_fields"].as_u64().unwrap();
    assert!(calls <= 2 * CALLS, "{http:#}");
    assert!(calls + unknown >= 2 * CALLS, "{http:#}");
    drop(old);
    drop(server);
    assert_no_residue();
}

#[test]
fn grpc_on_a_connection_from_before_the_window_is_counted_never_wrong() {
    if !require_root() {
        return;
    }
    a_connection_from_before_the_window_is_joined(false);
}

#[test]
fn grpc_over_tls_on_a_connection_from_before_the_window_is_counted_never_wrong() {
    if !require_root() {
        return;
    }
    a_connection_from_before_the_window_is_joined(true);
}

/// `--grpc-paths 2`: the mix's three methods, in the order first called (Unary, Stream,
/// Upload): the third is counted as `other`, and the summary says so.
#[test]
fn grpc_paths_beyond_the_bound_are_other_and_said() {
    if !require_root() {
        return;
    }
    let cg = TestCgroup::new("grpc-paths");
    let server = server(Some(&cg), None);
    let run = open_window_with(&cg, &["--grpc-paths", "2"]);
    let line = client(None, server.port, None).go();
    assert_eq!(
        seen_by_client(&line),
        MIX.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    );
    let (s, err) = run.interrupt();
    let grpc = &s["http"]["grpc"];
    assert_eq!(grpc["paths_limit"], 2, "{grpc:#}");
    assert_eq!(grpc["other_calls"], 1, "{grpc:#}");
    let by_service = |service: &str| -> u64 {
        grpc["server"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["service"] == service)
            .map(|g| g["duration"]["count"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(by_service("recap.Test"), CALLS - 1, "{grpc:#}");
    assert_eq!(by_service("other"), 1, "{grpc:#}");
    let warned = s["warnings"].as_array().unwrap().iter().any(|w| {
        w.as_str()
            .unwrap()
            .contains("more than 2 distinct gRPC paths")
    });
    assert!(warned, "{:#}\n{err}", s["warnings"]);
    drop(server);
    assert_no_residue();
}
