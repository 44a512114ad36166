//! Arming a window with a capsule in a pod, the CRI row of `cargo xtask bench --only capsule`
//! (ignored by `cargo test`): `recap window --pod NS/NAME --capsule tcpdump`, command → probes
//! counting and tcpdump listening in the pod's sandbox, next to CRI's `ExecSync` of `busybox
//! true` in the same container (what `crictl exec -s` and the kubelet's exec probes call; from
//! this process, so without a CLI's own start), interleaved. Prints medians; asserts only that
//! each ran (no timings).

use std::time::Instant;

use recap_tests::{
    cri::{httpd, remove_pod_cgroups, CriRuntime},
    *,
};

#[test]
#[ignore = "a benchmark: cargo xtask bench --only capsule"]
fn arming_a_pod_capsule_next_to_cri_exec() {
    if !require_root() {
        return;
    }
    let reps: usize = std::env::var("RECAP_BENCH_REPS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let mut cri = CriRuntime::start("capsule-bench");
    let port = free_tcp_port();
    let parent = format!("/recap-bench-podcap-{}", std::process::id());
    cri.run_pod("bench", "capsule-0", &parent, &[("web", httpd(port))]);
    let socket = cri.socket_path().to_str().unwrap().to_owned();
    // Started: its exec answers (the first one is not counted).
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    while cri.exec_sync("web", &["/bin/busybox", "true"]) != 0 {
        assert!(Instant::now() < deadline, "the pod's container never ran");
    }
    let (mut window, mut exec) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let t = Instant::now();
        let mut run = RecapRun::start(&[
            "window",
            "--local",
            "--pod",
            "bench/capsule-0",
            "--cri-endpoint",
            &socket,
            "-d",
            "200ms",
            "--capsule",
            "tcpdump",
        ]);
        run.wait_armed();
        window.push(t.elapsed().as_secs_f64() * 1e3);
        let (code, _, err) = run.finish();
        assert_eq!(code, 0, "{err}");
        let t = Instant::now();
        assert_eq!(cri.exec_sync("web", &["/bin/busybox", "true"]), 0);
        exec.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (w, e) = (median(window), median(exec));
    println!("\n## Arming a window with a capsule in a pod, through CRI (median of {reps}, interleaved)\n");
    println!("| what | median | ratio to CRI `ExecSync` |");
    println!("|---|---|---|");
    println!("| `recap window --pod NS/NAME --capsule tcpdump`: command → probes counting and tcpdump listening in the sandbox | {w:.0} ms | {:.2}× |", w / e);
    println!("| CRI `ExecSync` of `busybox true` in the pod's container (`crictl exec -s`, without its CLI's start) | {e:.0} ms | 1.00× |");
    println!("\n(goal: ≤ 1.2× `crictl exec`)\n");
    cri.remove_pods();
    drop(cri);
    assert!(remove_pod_cgroups(&parent), "pod cgroups of {parent} left");
    assert_no_residue();
}
