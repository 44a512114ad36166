//! `tcp_health` against ground truth: TCP traffic inside a network namespace made for the test,
//! with every 10th data packet dropped on its way in on its loopback (iptables `statistic`: this kernel has no
//! `netem`); retransmitted segments equal the kernel's own `TcpRetransSegs` for that namespace
//! (nstat), RSTs and connection lifetimes equal what the load did.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, ChildStdout, Stdio},
};

use recap_tests::*;

/// `recap-tcp-load` in the target cgroup and the namespace.
struct Load {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Load {
    fn start(cg: &TestCgroup, ns: &NetNs) -> Self {
        let mut child = cg
            .command("ip")
            .args(["netns", "exec", &ns.0])
            .arg(test_bin("recap-tcp-load"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        Load { child, out }
    }

    fn ask(&mut self, command: &str, answer: &str) {
        writeln!(self.child.stdin.as_mut().unwrap(), "{command}").unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), answer, "after `{command}`");
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

#[test]
fn retransmits_resets_rtt_and_lifetimes_match_the_kernel_and_the_load() {
    if !require_root() {
        return;
    }
    const CONNECTIONS: usize = 8;
    const BYTES: usize = 4_000_000;
    const REFUSED: usize = 3;
    const ABORTED: usize = 4;
    let cg = TestCgroup::new("tcp-health");
    let ns = NetNs::new("tcph");
    let mut load = Load::start(&cg, &ns);
    let dir = cg.dir.to_str().unwrap().to_owned();
    let mut run = RecapRun::start(&[
        "window",
        "--local",
        "--cgroup",
        &dir,
        "-d",
        "120s",
        "--probes",
        "tcp,tcp_health",
        "-o",
        "json",
    ]);
    run.wait_armed();
    let retrans_before = ns.counter("TcpRetransSegs");
    let failed_before = ns.counter("TcpExtTCPRetransFail");
    // Connections are made without loss (SYN-ACK retransmits are not a connection's own);
    // then the data crosses a lossy loopback.
    load.ask(&format!("connect {CONNECTIONS}"), "connected");
    // The server side too: a handshake still half-done would retransmit its SYN-ACK from a
    // request socket, which is no connection's (and no sock_ops program's) yet.
    ns.wait_until_no(&["state", "syn-recv"]);
    // Every 10th TCP packet carrying data is dropped on its way in (ACKs are left alone: losing
    // one needs no retransmission; a drop on the way out would fail the send instead, and TCP
    // sends such data again as new): losses of data are certain, whatever the segment sizes.
    let drop_rule = [
        "INPUT",
        "-i",
        "lo",
        "-p",
        "tcp",
        "-m",
        "length",
        "--length",
        "200:65535",
        "-m",
        "statistic",
        "--mode",
        "nth",
        "--every",
        "10",
        "--packet",
        "0",
        "-j",
        "DROP",
    ];
    let rule = |op: &str| {
        let mut args = vec!["iptables", op];
        args.extend(drop_rule);
        ns.run(&args);
    };
    rule("-A");
    load.ask(&format!("transfer {BYTES}"), "transferred");
    rule("-D");
    ns.wait_settled();
    // A closed port in the namespace: nothing listens on 1.
    load.ask(&format!("refused {REFUSED} 1"), "refused");
    load.ask(&format!("abort {ABORTED}"), "aborted");
    ns.wait_settled();
    let retransmitted = ns.counter("TcpRetransSegs") - retrans_before;
    let failed = ns.counter("TcpExtTCPRetransFail") - failed_before;
    let (s, _) = run.interrupt();
    eprintln!(
        "TcpRetransSegs {retransmitted}; window: {:#}",
        s["tcp_health"]
    );
    assert!(
        retransmitted > 0,
        "the lossy loopback caused no retransmission; nothing was tested"
    );
    assert_eq!(
        u(&s, "/tcp_health/retransmitted_segments"),
        retransmitted,
        "TcpRetransSegs of the namespace (client and server are both the target's)"
    );
    assert_eq!(
        u(&s, "/tcp_health/retransmits_failed"),
        failed,
        "TCPRetransFail"
    );
    // Each refused connect is answered by a RST from the kernel's own socket (not the target's);
    // each abort sends one from the target's client to the target's server.
    assert_eq!(
        u(&s, "/tcp_health/resets_received"),
        (REFUSED + ABORTED) as u64
    );
    assert_eq!(u(&s, "/tcp_health/resets_sent"), ABORTED as u64);
    // Both ends of every connection that was established and then closed.
    let closed = 2 * (CONNECTIONS + ABORTED) as u64;
    assert_eq!(u(&s, "/tcp_health/connection_duration/count"), closed);
    assert_eq!(u(&s, "/tcp/closed"), closed, "the tcp family agrees");
    // RTT samples over a loopback: well under a millisecond (delayed ACKs aside).
    let rtt = &s["tcp_health"]["rtt"];
    assert!(u(&s, "/tcp_health/rtt/count") > 0);
    let p50 = rtt["p50_le_ns"].as_u64().unwrap();
    assert!(p50 <= 1 << 20, "RTT median bucket ≤ {p50} ns: {rtt:#}");
    drop(load);
    assert_no_residue();
}
