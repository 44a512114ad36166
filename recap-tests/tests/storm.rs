//! Kill storm: windows (some with a capsule) killed with SIGKILL at moments spread from start to
//! teardown. Afterwards nothing of ours is in the kernel, no capsule runs once the last window's
//! deadline and grace have passed (no further window needed: each capsule's lifeline ends with
//! its owner), and the next window is exact. CI runs a scaled-down storm (12 windows);
//! `cargo xtask storm` runs 500 (RECAP_STORM_WINDOWS).

use std::{
    thread,
    time::{Duration, Instant},
};

use recap_tests::{docker::*, *};

/// A small deterministic generator: the storm is the same every run, its moments spread out.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn a_kill_storm_leaves_nothing_behind_and_the_next_window_is_exact() {
    if !require_root() {
        return;
    }
    let windows: usize = std::env::var("RECAP_STORM_WINDOWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let app = AppContainer::run("recap-storm");
    let cg = TestCgroup::new("storm");
    let dir = cg.dir.to_str().unwrap().to_owned();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut killed_armed = 0;
    for i in 0..windows {
        let with_capsule = i % 3 == 0;
        let mut args = vec!["window", "--local", "-d", "3s", "--probes", "all"];
        if with_capsule {
            args.extend(["--container", &app.name, "--capsule", "tcpdump"]);
        } else {
            args.extend(["--cgroup", &dir]);
        }
        let run = RecapRun::start(&args);
        // From at once (mid-load) to well after arming (mid-window).
        thread::sleep(Duration::from_millis(next(&mut rng) % 1500));
        run.signal(libc::SIGKILL);
        let (_, _, err) = run.finish();
        if err.contains(" armed on ") {
            killed_armed += 1;
        }
    }
    eprintln!("{windows} windows killed, {killed_armed} of them after arming");
    assert!(
        killed_armed > 0 && killed_armed < windows,
        "the storm should hit windows both while arming and while open"
    );
    assert_no_residue();
    // The last window's deadline (3 s) and the capsules' grace (5 s), then at most 10 s.
    let deadline = Instant::now() + Duration::from_secs(18);
    loop {
        let running: Vec<String> = capsule_containers()
            .into_iter()
            .filter(|id| container_running(id))
            .collect();
        if running.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "capsules still running with no window left: {running:?}"
        );
        thread::sleep(Duration::from_millis(200));
    }
    // The next window is exact (and removes what the storm left stopped).
    const GETS: usize = 5;
    let mut run = RecapRun::start(&[
        "window",
        "--local",
        "--container",
        &app.name,
        "-d",
        "30s",
        "--probes",
        "tcp",
        "-o",
        "json",
    ]);
    run.wait_armed();
    app.http_gets(GETS);
    thread::sleep(Duration::from_millis(200));
    let (s, _) = run.interrupt();
    assert_eq!(s["tcp"]["accepted"], GETS as u64);
    assert_no_residue();
    assert_eq!(capsule_containers(), Vec::<String>::new(), "capsules left");
}
