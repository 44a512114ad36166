//! The `dns` family against ground truth: a real DNS server (dnsmasq) in a network namespace
//! made for the test answers a known mix (NOERROR with and without records, NXDOMAIN), and a
//! second server there never answers; `recap-dns` in the target tallies what came back, and an
//! identical client outside the target is not counted.

use std::{
    net::UdpSocket,
    process::{Child, Command},
    thread,
    time::Duration,
};

use recap_tests::*;
use serde_json::Value;

/// dnsmasq in the namespace, killed on drop.
struct Dnsmasq(Child);

impl Dnsmasq {
    fn start(ns: &NetNs) -> Self {
        let mut ip = Command::new("ip");
        ip.args(["netns", "exec", &ns.0, "dnsmasq"]);
        let child = dnsmasq(ip, "127.0.0.1", &["--txt-record=txt.test,hello"]);
        Dnsmasq(child)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const MIX: [&str; 5] = [
    "ok.test/A*5",
    "ok.test/AAAA*2",
    "nx.test/A*3",
    "txt.test/TXT",
    "ok.test/MX",
];

/// Runs `recap-dns` in the namespace (in `cg` when given) against dnsmasq and the silent
/// server; returns its tally.
fn lookups(ns: &NetNs, cg: Option<&TestCgroup>) -> Value {
    let mut cmd = command_in(cg, "ip");
    let mut tally = serde_json::Map::new();
    for (server, queries) in [
        ("127.0.0.1:53", MIX.to_vec()),
        ("127.0.0.2:53", vec!["never.test/A*2"]),
    ] {
        let out = cmd
            .args(["netns", "exec", &ns.0])
            .arg(test_bin("recap-dns"))
            .arg(server)
            .args(&queries)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: Value = serde_json::from_slice(&out.stdout).unwrap();
        for (k, v) in got.as_object().unwrap() {
            let n = tally.get(k).and_then(Value::as_u64).unwrap_or(0) + v.as_u64().unwrap();
            tally.insert(k.clone(), n.into());
        }
        cmd = command_in(cg, "ip");
    }
    Value::Object(tally)
}

fn by_name(list: &Value, name: &str) -> u64 {
    list.as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .map_or(0, |n| n["count"].as_u64().unwrap())
}

#[test]
fn queries_answers_and_silence_match_what_the_client_got() {
    if !require_root() {
        return;
    }
    let ns = NetNs::new("dns");
    ns.run(&["ip", "addr", "add", "127.0.0.2/8", "dev", "lo"]);
    let _dnsmasq = Dnsmasq::start(&ns);
    // A server that never answers: a socket bound in the namespace, never read.
    let silent = ns_udp_socket(&ns, "127.0.0.2:53");
    // dnsmasq is up when it answers.
    let mut ready = false;
    for _ in 0..50 {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns.0])
            .arg(test_bin("recap-dns"))
            .args(["127.0.0.1:53", "ok.test/A"])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains("NOERROR") {
            ready = true;
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert!(ready, "dnsmasq did not answer");
    let cg = TestCgroup::new("dns");
    let dir = cg.dir.to_str().unwrap().to_owned();
    let mut run = RecapRun::start(&[
        "window", "--local", "--cgroup", &dir, "-d", "120s", "--probes", "dns", "-o", "json",
    ]);
    run.wait_armed();
    let outside = lookups(&ns, None);
    let inside = lookups(&ns, Some(&cg));
    assert_eq!(outside, inside);
    // The mix, as dnsmasq answers it (no AAAA or MX record for ok.test: NXDOMAIN under
    // `--local`): not allowed to drift unnoticed.
    assert_eq!(
        inside,
        serde_json::json!({"NOERROR": 6, "NXDOMAIN": 6, "unanswered": 2})
    );
    let (s, _) = run.interrupt();
    drop(silent);
    let dns = &s["dns"];
    assert_eq!(u(dns, "/queries"), 14, "{dns:#}");
    assert_eq!(by_name(&dns["queries_by_type"], "A"), 10);
    assert_eq!(by_name(&dns["queries_by_type"], "AAAA"), 2);
    assert_eq!(by_name(&dns["queries_by_type"], "TXT"), 1);
    assert_eq!(by_name(&dns["queries_by_type"], "MX"), 1);
    assert_eq!(u(dns, "/answered"), 12);
    assert_eq!(
        by_name(&dns["answers_by_rcode"], "NOERROR"),
        u(&inside, "/NOERROR")
    );
    assert_eq!(
        by_name(&dns["answers_by_rcode"], "NXDOMAIN"),
        u(&inside, "/NXDOMAIN")
    );
    assert_eq!(u(dns, "/unanswered"), u(&inside, "/unanswered"));
    assert_eq!(u(dns, "/latency/count"), 12);
    assert_eq!(
        u(dns, "/unmatched_answers") + u(dns, "/unparsable_queries"),
        0
    );
    assert_no_residue();
}

/// A UDP socket bound inside the namespace (the test's thread enters it for the bind only).
fn ns_udp_socket(ns: &NetNs, addr: &str) -> UdpSocket {
    let ns_file = std::fs::File::open(format!("/run/netns/{}", ns.0)).unwrap();
    let here = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: setns on namespace files this function holds open; the thread returns to its
    // own namespace before anything else runs on it.
    unsafe {
        assert_eq!(libc::setns(ns_file.as_raw_fd(), libc::CLONE_NEWNET), 0);
    }
    let socket = UdpSocket::bind(addr);
    // SAFETY: back to the namespace file held open above.
    unsafe {
        assert_eq!(libc::setns(here.as_raw_fd(), libc::CLONE_NEWNET), 0);
    }
    socket.unwrap()
}
