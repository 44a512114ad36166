//! `recap window` against workloads whose numbers are known, in the real kernel.
//! Every test ends by asserting that nothing of ours is left loaded.

use std::{thread, time::Duration};

use recap_tests::*;
use serde_json::Value;

const PLAN: WorkloadPlan = WorkloadPlan {
    connects: 12,
    refused: 3,
    kept_open: 2,
    bytes_per_connect: 1500,
    datagrams: 9,
    datagram_size: 333,
    execs: 7,
    getppid: 10_000,
    spin_ms: 300,
};
const INBOUND: usize = 4;
const INBOUND_BYTES: usize = 700;

fn syscall(v: &Value, name: &str) -> (u64, u64) {
    v["syscalls"]["by_syscall"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .map(|r| (r["calls"].as_u64().unwrap(), r["errors"].as_u64().unwrap()))
        .unwrap_or((0, 0))
}

/// The same workload runs inside the target and outside it, at the same time; the window
/// counts exactly the inside one.
#[test]
fn counts_equal_ground_truth_and_ignore_outside() {
    if !require_root() {
        return;
    }
    let inside = TestCgroup::new("inside");
    let outside = TestCgroup::new("outside");
    let sink = TcpSink::start();
    let (_udp, udp_port) = udp_sink();
    let refused = closed_port();
    let mut w_in = Workload::start(&inside, &PLAN, &sink, refused, udp_port);
    let mut w_out = Workload::start(&outside, &PLAN, &sink, refused, udp_port);

    let dir = inside.dir.to_str().unwrap().to_owned();
    let mut run = RecapRun::start(&[
        "window", "--cgroup", &dir, "-d", "120s", "--probes", "all", "-o", "json",
    ]);
    run.wait_armed();
    let cpu_before = inside.cpu_usage();
    w_in.go();
    w_out.go();
    // Inbound connections to both workloads, from this process (outside every target).
    for port in [w_in.listen_port, w_out.listen_port] {
        for _ in 0..INBOUND {
            use std::io::Write;
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(&[b'z'; INBOUND_BYTES]).unwrap();
        }
    }
    w_in.wait_done();
    w_out.wait_done();
    thread::sleep(Duration::from_millis(300)); // last FIN/ACKs and drains on loopback
    let cpu_used = inside.cpu_usage() - cpu_before;
    let (s, err) = run.interrupt();
    assert_eq!(s["status"], "interrupted");
    for family in ["tcp", "net", "syscalls", "proc", "cpu"] {
        assert_eq!(
            s["families"][family]["status"], "ok",
            "{family}: {:#}",
            s["families"]
        );
    }

    let p = &PLAN;
    let outbound = (p.connects + p.refused + p.kept_open) as u64;
    assert_eq!(u(&s, "/tcp/connect_attempts"), outbound);
    assert_eq!(
        u(&s, "/tcp/connect_established"),
        (p.connects + p.kept_open) as u64
    );
    assert_eq!(u(&s, "/tcp/connect_failed"), p.refused as u64);
    assert_eq!(u(&s, "/tcp/accepted"), INBOUND as u64);
    assert_eq!(u(&s, "/tcp/closed"), (p.connects + INBOUND) as u64);
    assert_eq!(u(&s, "/tcp/open_at_end"), p.kept_open as u64);

    assert_eq!(
        u(&s, "/net/tx/payload_bytes/tcp"),
        (p.connects * p.bytes_per_connect) as u64
    );
    assert_eq!(
        u(&s, "/net/rx/payload_bytes/tcp"),
        (INBOUND * INBOUND_BYTES) as u64
    );
    assert_eq!(
        u(&s, "/net/tx/payload_bytes/udp"),
        (p.datagrams * p.datagram_size) as u64
    );
    assert_eq!(u(&s, "/net/tx/packets/udp"), p.datagrams as u64);
    assert_eq!(u(&s, "/net/rx/payload_bytes/udp"), 0);

    assert_eq!(syscall(&s, "getppid"), (p.getppid as u64, 0));
    assert_eq!(syscall(&s, "connect"), (outbound, p.refused as u64));

    assert_eq!(u(&s, "/proc/execs"), p.execs as u64);
    assert_eq!(u(&s, "/proc/forks"), p.execs as u64);
    assert_eq!(u(&s, "/proc/exits"), p.execs as u64);
    assert_eq!(s["proc"]["exec_names"][0]["name"], "true");
    assert_eq!(u(&s, "/proc/exec_names/0/count"), p.execs as u64);

    // cgroup v2 cpu.stat is the ground truth for CPU time, and the window reads it (its delta
    // over the window; tests/cpu.rs checks it 100 times under contention).
    let on_cpu = Duration::from_nanos(u(&s, "/cpu/on_cpu_ns"));
    let off = (on_cpu.as_secs_f64() - cpu_used.as_secs_f64()).abs();
    assert!(
        off <= cpu_used.as_secs_f64() * 0.01 + 0.001,
        "on-CPU {on_cpu:?} vs cgroup cpu.stat {cpu_used:?} (waits {}); recap said:\n{err}",
        s["cpu"]["runq_latency"]["count"]
    );
    // Every wait for a CPU ends in getting one; each stint on a CPU ends in a context switch
    // (the workload is asleep when the window closes). tests/cpu.rs checks the switches exactly.
    let waits = u(&s, "/cpu/runq_latency/count");
    let switches = u(&s, "/cpu/voluntary_switches") + u(&s, "/cpu/involuntary_switches");
    assert!(
        waits > 0 && waits <= switches,
        "run-queue waits {waits}, context switches {switches}"
    );

    w_in.stop();
    w_out.stop();
    assert_no_residue();
}

/// A thread moved into the target cgroup during the window is counted from then on; one
/// moved out stops being counted.
#[test]
fn follows_processes_moved_in_and_out() {
    if !require_root() {
        return;
    }
    let target = TestCgroup::new("moves");
    let elsewhere = TestCgroup::new("elsewhere");
    let sink = TcpSink::start();
    let (_udp, udp_port) = udp_sink();
    let plan = WorkloadPlan {
        connects: 0,
        refused: 0,
        kept_open: 0,
        execs: 0,
        spin_ms: 0,
        ..PLAN
    };
    // Starts outside, is moved in after the window is armed.
    let mut mover = Workload::start(&elsewhere, &plan, &sink, closed_port(), udp_port);
    // Starts inside, is moved out before it works.
    let mut leaver = Workload::start(&target, &plan, &sink, closed_port(), udp_port);

    let dir = target.dir.to_str().unwrap().to_owned();
    let mut run = RecapRun::start(&[
        "window", "--cgroup", &dir, "-d", "120s", "--probes", "syscalls", "-o", "json",
    ]);
    run.wait_armed();
    target.adopt(mover.child.id());
    elsewhere.adopt(leaver.child.id());
    thread::sleep(Duration::from_millis(100));
    mover.go();
    leaver.go();
    mover.wait_done();
    leaver.wait_done();
    let (s, _) = run.interrupt();
    assert_eq!(
        syscall(&s, "getppid"),
        (plan.getppid as u64, 0),
        "only the mover's getppid calls"
    );
    mover.stop();
    leaver.stop();
    assert_no_residue();
}

/// A multi-threaded process moved into the target counts in every thread from the move (the
/// kernel hook follows the whole thread group, not only its leader, and no resync is waited
/// for), however many threads it has.
#[test]
fn every_thread_of_a_process_moved_in_counts_from_the_move() {
    if !require_root() {
        return;
    }
    use std::io::{BufRead, BufReader, Write};
    const THREADS: usize = 300;
    const CALLS: usize = 1_000;
    let target = TestCgroup::new("threads-in");
    let elsewhere = TestCgroup::new("threads-out");
    let mut child = elsewhere
        .command(test_bin("recap-threads"))
        .args([THREADS.to_string(), CALLS.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let dir = target.dir.to_str().unwrap().to_owned();
    let mut run = RecapRun::start(&[
        "window", "--local", "--cgroup", &dir, "-d", "120s", "--probes", "syscalls", "-o", "json",
    ]);
    run.wait_armed();
    target.adopt(child.id());
    // At once: well within the 1 s resync, so only the kernel hook can have marked the threads.
    writeln!(child.stdin.as_mut().unwrap(), "go").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "done");
    let (s, _) = run.interrupt();
    assert_eq!(
        syscall(&s, "getppid").0,
        (THREADS * CALLS) as u64,
        "every thread's calls"
    );
    drop(child.stdin.take());
    let _ = child.wait();
    assert_no_residue();
}

/// A window covers its target and everything below it, for every family: a workload in a child
/// cgroup that existed before the window, one moved into a grandchild created during it, and
/// nothing from outside.
#[test]
fn counts_the_whole_subtree() {
    if !require_root() {
        return;
    }
    let target = TestCgroup::new("subtree");
    let elsewhere = TestCgroup::new("subtree-out");
    let child = target.dir.join("child");
    std::fs::create_dir(&child).unwrap();
    let sink = TcpSink::start();
    let (_udp, udp_port) = udp_sink();
    let plan = |getppid| WorkloadPlan {
        connects: 1,
        refused: 0,
        kept_open: 0,
        execs: 1,
        spin_ms: 0,
        getppid,
        ..PLAN
    };
    let in_child = TestCgroup { dir: child.clone() };
    let mut a = Workload::start(&in_child, &plan(3_000), &sink, closed_port(), udp_port);
    let mut b = Workload::start(&elsewhere, &plan(4_000), &sink, closed_port(), udp_port);
    let mut c = Workload::start(&elsewhere, &plan(5_000), &sink, closed_port(), udp_port);

    let dir = target.dir.to_str().unwrap().to_owned();
    let mut run = RecapRun::start(&[
        "window", "--cgroup", &dir, "-d", "120s", "--probes", "all", "-o", "json",
    ]);
    run.wait_armed();
    let grandchild = target.dir.join("later/deeper");
    std::fs::create_dir_all(&grandchild).unwrap();
    let in_grandchild = TestCgroup {
        dir: grandchild.clone(),
    };
    in_grandchild.adopt(b.child.id());
    let cpu_before = target.cpu_usage();
    thread::sleep(Duration::from_millis(100));
    for w in [&mut a, &mut b, &mut c] {
        w.go();
    }
    for w in [&mut a, &mut b, &mut c] {
        w.wait_done();
    }
    thread::sleep(Duration::from_millis(100));
    let cpu_used = target.cpu_usage() - cpu_before;
    let (s, _) = run.interrupt();
    assert_eq!(
        syscall(&s, "getppid").0,
        7_000,
        "the child's and the grandchild's, not the outsider's"
    );
    assert_eq!(u(&s, "/tcp/connect_established"), 2);
    assert_eq!(u(&s, "/proc/execs"), 2);
    let on_cpu = Duration::from_nanos(u(&s, "/cpu/on_cpu_ns"));
    assert!(
        (on_cpu.as_secs_f64() - cpu_used.as_secs_f64()).abs()
            <= cpu_used.as_secs_f64() * 0.01 + 0.001,
        "on-CPU {on_cpu:?} vs the subtree's cpu.stat {cpu_used:?}"
    );
    for w in [a, b, c] {
        w.stop();
    }
    // Innermost first: a cgroup with children cannot be removed.
    drop(in_grandchild);
    let _ = std::fs::remove_dir(target.dir.join("later"));
    drop(in_child);
    assert_no_residue();
}

/// `--target-only`: the target cgroup's own tasks and sockets, and nothing of the cgroups
/// below it (a child that existed before, a grandchild a process moves into during the window),
/// in every family.
#[test]
fn target_only_counts_the_target_cgroup_alone() {
    if !require_root() {
        return;
    }
    let target = TestCgroup::new("alone");
    let child = target.dir.join("child");
    std::fs::create_dir(&child).unwrap();
    let in_child = TestCgroup { dir: child.clone() };
    let sink = TcpSink::start();
    let (_udp, udp_port) = udp_sink();
    let plan = |getppid, connects, datagrams| WorkloadPlan {
        connects,
        refused: 0,
        kept_open: 0,
        execs: 1,
        spin_ms: 50,
        getppid,
        datagrams,
        ..PLAN
    };
    // In the target itself: 2,000 getppid, 2 connects, 3 datagrams; below it: other numbers.
    let mut own = Workload::start(&target, &plan(2_000, 2, 3), &sink, closed_port(), udp_port);
    let mut below = Workload::start(
        &in_child,
        &plan(3_000, 1, 5),
        &sink,
        closed_port(),
        udp_port,
    );
    let mut moved_down =
        Workload::start(&target, &plan(4_000, 1, 7), &sink, closed_port(), udp_port);
    let dir = target.dir.to_str().unwrap().to_owned();
    let mut run = RecapRun::start(&[
        "window",
        "--cgroup",
        &dir,
        "--target-only",
        "-d",
        "120s",
        "--probes",
        "all",
        "-o",
        "json",
    ]);
    run.wait_armed();
    let grandchild = child.join("deeper");
    std::fs::create_dir(&grandchild).unwrap();
    let in_grandchild = TestCgroup {
        dir: grandchild.clone(),
    };
    in_grandchild.adopt(moved_down.child.id());
    let cpu_before = cgroup_cpu_alone(&target.dir);
    for w in [&mut own, &mut below, &mut moved_down] {
        w.go();
    }
    for w in [&mut own, &mut below, &mut moved_down] {
        w.wait_done();
    }
    thread::sleep(Duration::from_millis(100));
    let cpu_used = cgroup_cpu_alone(&target.dir) - cpu_before;
    let (s, _) = run.interrupt();
    assert_eq!(s["target"]["target_only"], true);
    assert_eq!(
        syscall(&s, "getppid").0,
        2_000,
        "the target's own tasks only"
    );
    assert_eq!(
        u(&s, "/tcp/connect_established"),
        2,
        "the target's own sockets only"
    );
    // A socket belongs to the cgroup it was made in (the kernel's rule, for every socket
    // family): the moved process made its UDP socket in the target before it moved, so its 7
    // datagrams count; its TCP connects, made after the move, do not.
    assert_eq!(u(&s, "/net/tx/packets/udp"), 3 + 7);
    assert_eq!(u(&s, "/proc/execs"), 1);
    let on_cpu = u(&s, "/cpu/on_cpu_ns") as f64 / 1e9;
    assert!(
        (on_cpu - cpu_used).abs() <= cpu_used * 0.02 + 0.002,
        "on-CPU {on_cpu} s vs the target's own cpu.stat share {cpu_used} s"
    );
    for w in [own, below, moved_down] {
        w.stop();
    }
    drop(in_grandchild);
    drop(in_child);
    assert_no_residue();
}

/// CPU seconds of a cgroup's own tasks: its cpu.stat less its children's.
fn cgroup_cpu_alone(dir: &std::path::Path) -> f64 {
    let usage = |d: &std::path::Path| -> f64 {
        let stat = std::fs::read_to_string(d.join("cpu.stat")).unwrap();
        stat.lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap()
            / 1e6
    };
    let children: f64 = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| usage(&e.path()))
        .sum();
    usage(dir) - children
}

#[test]
fn completes_on_time_and_pid_target_exit_ends_the_window() {
    if !require_root() {
        return;
    }
    let cg = TestCgroup::new("pid");
    let mut sleeper = cg.command("sleep").arg("1.5").spawn().unwrap();
    let pid = sleeper.id().to_string();
    let (code, out, err) = recap(&["window", "--pid", &pid, "-d", "30s", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let s = summary(&out);
    assert_eq!(s["status"], "target_exited");
    assert!(s["duration_s"].as_f64().unwrap() < 5.0);
    assert_eq!(s["target"]["kind"], "pid");
    let _ = sleeper.wait();

    let (code, out, err) = recap(&[
        "window",
        "--cgroup",
        cg.dir.to_str().unwrap(),
        "-d",
        "1s",
        "-o",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let s = summary(&out);
    assert_eq!(s["status"], "completed");
    let ran = s["duration_s"].as_f64().unwrap();
    assert!((1.0..3.0).contains(&ran), "ran {ran}s");
    assert!(s.get("syscalls").is_none(), "syscalls is opt-in");
    assert_no_residue();
}

#[test]
fn sigterm_and_sigkill_leave_nothing_behind() {
    if !require_root() {
        return;
    }
    let cg = TestCgroup::new("signals");
    let dir = cg.dir.to_str().unwrap().to_owned();

    let mut run = RecapRun::start(&[
        "window", "--cgroup", &dir, "-d", "60s", "--probes", "all", "-o", "json",
    ]);
    run.wait_armed();
    assert!(
        !residue().is_empty(),
        "programs should be loaded while the window is open"
    );
    run.signal(libc::SIGTERM);
    let (code, out, err) = run.finish();
    assert_eq!(code, 0, "{err}");
    assert_eq!(summary(&out)["status"], "interrupted");
    assert_no_residue();

    let mut run = RecapRun::start(&["window", "--cgroup", &dir, "-d", "60s", "--probes", "all"]);
    run.wait_armed();
    run.signal(libc::SIGKILL);
    let (code, _, _) = run.finish();
    assert_eq!(code, -1, "killed by a signal");
    assert_no_residue();
}

#[test]
fn bad_input_fails_clearly_and_leaves_nothing() {
    if !require_root() {
        return;
    }
    // A zombie: a child of this test that has exited and is not reaped (yet).
    let zombie = std::process::Command::new("true").spawn().unwrap();
    thread::sleep(Duration::from_millis(200));
    let zombie_pid = zombie.id().to_string();
    let cg = TestCgroup::new("bad-input");
    let file_in_cgroup = cg.dir.join("cgroup.procs");
    let file_in_cgroup = file_in_cgroup.to_str().unwrap();
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["window", "--pid", &zombie_pid, "-d", "1s"],
            1,
            "is a zombie",
        ),
        (
            &["window", "--pid", "2", "-d", "1s"],
            1,
            "is a kernel thread",
        ),
        (
            &["window", "--container", "", "-d", "1s"],
            2,
            "an empty name matches nothing",
        ),
        (
            &["window", "--cgroup", file_in_cgroup, "-d", "1s"],
            1,
            "not a cgroup directory",
        ),
        (&["window", "--pid", "1", "-d", "-1s"], 2, "negative"),
        (
            &["window", "--pid", "1", "-d", "inf"],
            2,
            "cannot read duration",
        ),
        (
            &["window", "--pid", "1", "-d", "1e99"],
            2,
            "cannot read duration",
        ),
        (
            &["window", "--pid", "1", "-d", "99999999999999999999s"],
            2,
            "cannot read duration",
        ),
        (
            &["window", "--pid", "1", "--prometheus-linger", "inf"],
            2,
            "cannot read duration",
        ),
        (
            &["window", "--pid", "1", "--capsule-max-size", "1"],
            2,
            "at least 4KiB",
        ),
        (
            &[
                "window",
                "--pid",
                "1",
                "--capsule-max-size",
                "9223372036854775808",
            ],
            2,
            "too large",
        ),
        (
            &[
                "window",
                "--pid",
                "1",
                "--capsule",
                "strace=busybox sh -c id",
            ],
            2,
            "starts nothing",
        ),
        (
            &[
                "window",
                "--pid",
                "1",
                "--otlp-endpoint",
                "http://127.0.0.1:1",
                "--otlp-header",
                "x=1\r\nX-Injected: yes",
            ],
            2,
            "control characters",
        ),
        (
            &["window", "--cgroup", "/nonexistent/cg", "-d", "1s"],
            1,
            "does not exist",
        ),
        (
            &["window", "--cgroup", "/tmp", "-d", "1s"],
            1,
            "not a cgroup v2 directory",
        ),
        (
            &["window", "--pid", "999999999", "-d", "1s"],
            1,
            "no process with PID",
        ),
        (&["window", "--pid", "1", "-d", "0s"], 2, "more than 0"),
        (&["window", "--pid", "1", "--duration=-3s"], 2, "negative"),
        (&["window", "--pid", "1", "-d", "2h"], 2, "over the maximum"),
        (
            &["window", "--pid", "1", "--probes", "tcp,bogus"],
            2,
            "unknown probe family",
        ),
        (&["window", "-d", "1s"], 2, "--cgroup"),
    ];
    for (args, want_code, want_msg) in cases {
        let (code, _, err) = recap(args);
        assert_eq!(code, *want_code, "{args:?}: {err}");
        assert!(
            err.contains(want_msg),
            "{args:?}: expected `{want_msg}` in:\n{err}"
        );
    }
    drop(zombie);
    // An engine that is not this machine's is refused, not ignored.
    let out = std::process::Command::new(recap_bin())
        .args(["window", "--container", "web", "-d", "1s"])
        .env("DOCKER_HOST", "tcp://127.0.0.1:2375")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("only a local engine"), "{err}");
    // stdout closed before the summary (`recap window ... | true`): an error, not a panic.
    let mut child = std::process::Command::new(recap_bin())
        .args([
            "window",
            "--local",
            "--cgroup",
            cg.dir.to_str().unwrap(),
            "-d",
            "300ms",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("writing to stdout"), "{err}");
    // Not root: run as nobody with no capabilities.
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(recap_bin())
        .args(["window", "--pid", "1", "-d", "1s"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("needs root") && err.contains("CAP_BPF"),
        "{err}"
    );
    assert_no_residue();
}

/// recap inside its own target cgroup does not count itself in the task families, and says
/// that its sockets would count.
#[test]
fn recap_in_the_target_cgroup_leaves_itself_out() {
    if !require_root() {
        return;
    }
    let cg = TestCgroup::new("self");
    let out = cg
        .command(recap_bin())
        .args([
            "window",
            "--cgroup",
            cg.dir.to_str().unwrap(),
            "-d",
            "1s",
            "--probes",
            "syscalls,cpu",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = summary(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        s["syscalls"]["total_calls"], 0,
        "recap's own syscalls were counted"
    );
    assert_eq!(s["cpu"]["voluntary_switches"], 0);
    assert_eq!(s["cpu"]["involuntary_switches"], 0);
    assert!(
        s["warnings"]
            .to_string()
            .contains("recap itself runs in the target cgroup"),
        "{}",
        s["warnings"]
    );
    assert_no_residue();
}
