//! `mem` against ground truth: page faults equal the kernel's own per-process counts
//! (`/proc/PID/stat` `minflt`/`majflt`, read while the process is idle before and after), a
//! process outside the target counts 0; an OOM kill in a container with a memory limit is
//! counted once, with its victim, and the container's memory cgroup is read for usage; the
//! faults in a container equal the kernel's count too.

use std::process::{Command, Stdio};

use recap_tests::{docker::AppContainer, scripted::Client, *};

/// (minflt, majflt) of a process, from `/proc/PID/stat`.
fn faults(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    (f[7].parse().unwrap(), f[9].parse().unwrap())
}

fn pages(cg: Option<&TestCgroup>, n: usize) -> Client {
    let program = test_bin("recap-pages");
    let mut cmd = command_in(cg, &program);
    cmd.arg(n.to_string());
    Client::start(cmd)
}

#[test]
fn page_faults_equal_the_kernels_count_and_outside_is_0() {
    if !require_root() {
        return;
    }
    let cg = TestCgroup::new("mem-faults");
    let mut inside = pages(Some(&cg), 3000);
    let mut outside = pages(None, 3000);
    let before = faults(inside.pid());
    let psi = || {
        recap_agent::targets::cgroup::pressure_totals(&cg.dir, "memory.pressure")
            .expect("PSI in cgroup v2")
    };
    let psi_before = psi();
    let run = RecapRun::armed_window(&["--cgroup", cg.dir.to_str().unwrap()], "mem");
    for _ in 0..3 {
        assert_eq!(inside.go(), "done");
        assert_eq!(outside.go(), "done");
    }
    let (s, err) = run.interrupt();
    let after = faults(inside.pid());
    let psi_after = psi();
    let mem = &s["mem"];
    let (minor, major) = (after.0 - before.0, after.1 - before.1);
    assert!(minor >= 3, "the kernel counted {minor}");
    assert_eq!(mem["minor_faults"], minor, "{mem:#}\n{err}");
    assert_eq!(mem["major_faults"], major, "{mem:#}");
    assert_eq!(mem["oom_kills"], 0, "{mem:#}");
    assert_eq!(
        mem["pressure"]["some_us"],
        psi_after.0 - psi_before.0,
        "{mem:#}"
    );
    assert_eq!(
        mem["pressure"]["full_us"],
        psi_after.1 - psi_before.1,
        "{mem:#}"
    );
    // A plain cgroup v2 directory on this hybrid host has no memory controller: no usage,
    // said so, never the host's figure.
    if !cg.dir.join("memory.current").exists() {
        assert!(mem["usage"].is_null(), "{mem:#}");
        assert!(mem["usage_unavailable"].is_string(), "{mem:#}");
    }
    drop((inside, outside));
    assert_no_residue();
}

/// A process forked in the window that exits before it ends: its faults come from the
/// kernel's exit hook, and equal what the kernel counted for it (its parent's `cminflt`).
#[test]
fn page_faults_of_a_process_that_exited_in_the_window_are_counted() {
    if !require_root() {
        return;
    }
    let cg = TestCgroup::new("mem-exited");
    let mut shell = Client::start({
        let mut cmd = cg.command("/bin/sh");
        // Says ready; then on each line runs recap-pages once to completion.
        cmd.arg("-c").arg(format!(
            "echo ready; while read l; do echo | {} 2000 >/dev/null; echo done; done",
            test_bin("recap-pages").display()
        ));
        cmd
    });
    let cminflt = |pid: u32| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let rest = &stat[stat.rfind(')').unwrap() + 1..];
        rest.split_whitespace().nth(8).unwrap().parse().unwrap()
    };
    let (shell_before, children_before) = (faults(shell.pid()).0, cminflt(shell.pid()));
    let run = RecapRun::armed_window(&["--cgroup", cg.dir.to_str().unwrap()], "mem,proc");
    assert_eq!(shell.go(), "done");
    let (s, err) = run.interrupt();
    let shell_faults = faults(shell.pid()).0 - shell_before;
    let children = cminflt(shell.pid()) - children_before;
    assert!(children > 0);
    // The pipeline's two processes (a subshell for echo, recap-pages) exited in the window.
    assert!(s["proc"]["exits"].as_u64().unwrap() >= 1, "{:#}", s["proc"]);
    assert_eq!(
        s["mem"]["minor_faults"],
        shell_faults + children,
        "shell {shell_faults} + exited child {children}: {:#}\n{err}",
        s["mem"]
    );
    drop(shell);
    assert_no_residue();
}

/// (minflt + cminflt, majflt + cmajflt) of a process: its own faults and its waited-for
/// children's.
fn faults_with_children(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(7)
        .take(4)
        .map(|v| v.parse().unwrap())
        .collect();
    (f[0] + f[1], f[2] + f[3])
}

/// In a container: a shell in it (started before the window: the target's already) runs
/// busybox dd, which touches a fresh 4 MiB buffer and exits, three times; the window's faults
/// equal what the kernel counted for the shell and its exited children, read from the host's
/// /proc while the shell is idle before and after.
#[test]
fn page_faults_in_a_container_equal_the_kernels_count() {
    if !require_root() {
        return;
    }
    let app = AppContainer::run("recap-mem-faults");
    let mut shell = Client::start({
        let mut cmd = Command::new("docker");
        cmd.args(["exec", "-i", &app.id, "/bin/busybox", "sh", "-c"]);
        cmd.arg(
            "echo ready; while read l; do \
             /bin/busybox dd if=/dev/zero of=/dev/null bs=4M count=1 2>/dev/null; echo done; done",
        );
        cmd
    });
    // The shell's PID on the host: the container's process that is not its init.
    let cgroup_procs = {
        let line = std::fs::read_to_string(format!("/proc/{}/cgroup", app.pid())).unwrap();
        let path = line
            .lines()
            .find_map(|l| l.split_once(":memory:"))
            .map(|(_, p)| p.to_string())
            .expect("a memory cgroup");
        format!("/sys/fs/cgroup/memory{path}/cgroup.procs")
    };
    let others: Vec<u32> = std::fs::read_to_string(&cgroup_procs)
        .unwrap()
        .lines()
        .map(|p| p.parse().unwrap())
        .filter(|p| *p != app.pid())
        .collect();
    assert_eq!(others.len(), 1, "init and the shell only: {others:?}");
    let sh = others[0];
    let before = faults_with_children(sh);
    let run = RecapRun::armed_window(&["--container", &app.name], "mem");
    for _ in 0..3 {
        assert_eq!(shell.go(), "done");
    }
    let (s, err) = run.interrupt();
    let after = faults_with_children(sh);
    let mem = &s["mem"];
    let (minor, major) = (after.0 - before.0, after.1 - before.1);
    assert!(minor >= 3 * 1024, "4 MiB touched three times: {minor}");
    assert_eq!(mem["minor_faults"], minor, "{mem:#}\n{err}");
    assert_eq!(mem["major_faults"], major, "{mem:#}");
    drop(shell);
    drop(app);
    assert_no_residue();
}

#[test]
fn an_oom_kill_in_a_container_is_counted_with_its_victim() {
    if !require_root() {
        return;
    }
    let app = AppContainer::run_with(
        "recap-mem-oom",
        &[],
        &["--memory", "48m", "--memory-swap", "48m"],
    );
    let run = RecapRun::armed_window(&["--container", &app.name], "mem");
    // busybox dd reads 100 MiB into one buffer: over the 48 MiB limit, the kernel kills it.
    let status = Command::new("docker")
        .args([
            "exec",
            &app.id,
            "/bin/busybox",
            "dd",
            "if=/dev/zero",
            "of=/dev/null",
        ])
        .args(["bs=100M", "count=1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(137), "dd should have been OOM-killed");
    assert!(app.exists(), "the container keeps running");
    let (s, err) = run.interrupt();
    let mem = &s["mem"];
    assert_eq!(mem["oom_kills"], 1, "{mem:#}\n{err}");
    let victims = mem["oom_victims"].as_array().unwrap();
    assert_eq!(victims.len(), 1, "{mem:#}");
    assert_eq!(victims[0]["command"], "busybox", "{mem:#}");
    assert_ne!(
        victims[0]["pid"],
        app.pid() as u64,
        "the victim is not the init"
    );
    let rss = victims[0]["rss_bytes"].as_u64().unwrap();
    // About the limit: its anon pages were charged up to 48 MiB; file pages it maps (its own
    // binary) count in its resident size too.
    assert!(
        (32 << 20..=64 << 20).contains(&rss),
        "resident at the kill: {rss} {mem:#}"
    );
    let usage = &mem["usage"];
    assert_eq!(usage["limit_bytes"], 48u64 << 20, "{mem:#}");
    assert!(
        usage["cgroup_peak_bytes"].as_u64().unwrap() > 40 << 20,
        "the kill happened at the limit: {mem:#}"
    );
    assert!(mem["minor_faults"].as_u64().unwrap() > 1000, "{mem:#}");
    // At its limit the cgroup reclaimed before it killed: dd stalled in reclaim.
    assert!(
        mem["reclaim_stalls"]["count"].as_u64().unwrap() >= 1,
        "{mem:#}"
    );
    drop(app);
    assert_no_residue();
}
