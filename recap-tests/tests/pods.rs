//! Kubernetes pods as targets through CRI: a containerd of the test's own with its CRI plugin,
//! a pod made through CRI itself (two containers, host network, a pod cgroup of the test's
//! choosing); a window on the pod counts both containers, one with `--container` only its own.

use std::net::SocketAddr;

use recap_tests::{
    cri::{httpd, remove_pod_cgroups, CriRuntime},
    *,
};

fn gets(port: u16, n: usize) {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for _ in 0..n {
        let (status, _) = http_get(addr, "/").expect("a GET to the pod");
        assert_eq!(status, 200);
    }
}

/// Waits until the pod's servers answer (their containers started).
fn wait_serving(port: u16) {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while http_get(addr, "/").is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the pod does not serve on {port}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn a_pod_window_covers_its_containers_and_one_container_narrows_it() {
    if !require_root() {
        return;
    }
    let mut cri = CriRuntime::start("pods");
    let (web, side) = (free_tcp_port(), free_tcp_port());
    let parent = format!("/recap-test-pod-{}", std::process::id());
    cri.run_pod(
        "shop",
        "checkout-0",
        &parent,
        &[("web", httpd(web)), ("side", httpd(side))],
    );
    wait_serving(web);
    wait_serving(side);
    let socket = cri.socket_path().to_str().unwrap().to_owned();
    for (container, expected) in [(None, (3 + 4) as u64), (Some("side"), 4)] {
        let mut args = vec![
            "window",
            "--local",
            "--pod",
            "shop/checkout-0",
            "--cri-endpoint",
            &socket,
            "-d",
            "60s",
            "--probes",
            "tcp,http",
            "-o",
            "json",
        ];
        if let Some(c) = container {
            args.extend(["--container", c]);
        }
        let mut run = RecapRun::start(&args);
        run.wait_armed();
        // Right after arming (the request heads come in several writes: http_get's `write!`).
        gets(web, 3);
        gets(side, 4);
        let (s, _) = run.interrupt();
        assert_eq!(s["tcp"]["accepted"], expected, "{container:?}: {s:#}");
        assert_eq!(s["http"]["server"]["completed"], expected);
        assert_eq!(s["target"]["kind"], "pod");
        assert_eq!(s["target"]["pod"]["namespace"], "shop");
        assert_eq!(
            s["target"]["pod"]["containers"].as_array().unwrap().len(),
            2
        );
        if container.is_none() {
            let dir = s["target"]["cgroup_dir"].as_str().unwrap();
            assert!(dir.ends_with(&parent), "the pod cgroup: {dir}");
        }
    }
    // A pod that is not there: the reason and the pods that are, exit 1, nothing attached.
    let (code, _, err) = recap(&[
        "window",
        "--local",
        "--pod",
        "shop/nope",
        "--cri-endpoint",
        &socket,
        "-d",
        "1s",
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no ready pod `shop/nope`") && err.contains("shop/checkout-0"),
        "{err}"
    );
    let (code, _, err) = recap(&[
        "window",
        "--local",
        "--pod",
        "shop/checkout-0",
        "--container",
        "db",
        "--cri-endpoint",
        &socket,
        "-d",
        "1s",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("no running container `db`"), "{err}");
    let (code, _, err) = recap(&["window", "--local", "--pod", "checkout-0", "-d", "1s"]);
    assert_eq!(code, 2);
    assert!(err.contains("NAMESPACE/NAME"), "{err}");
    let (code, _, err) = recap(&[
        "window",
        "--local",
        "--pod",
        "a/b",
        "--cri-endpoint",
        "/nonexistent.sock",
        "-d",
        "1s",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("CRI plugin"), "{err}");
    cri.remove_pods();
    drop(cri);
    assert!(remove_pod_cgroups(&parent), "pod cgroups of {parent} left");
    assert_no_residue();
}

/// Capsules the RECap way: a tcpdump and a strace capsule made through CRI inside a pod's
/// sandbox, joined to one of its two containers. The capture holds every request sent to that
/// container (tshark counts them), strace sees that container's accepts and no others, and the
/// pod has exactly its two containers afterwards. A SIGKILLed owner's capsule ends by itself
/// (its lifeline) and the next pod window removes it.
#[test]
fn pod_capsules_are_made_in_the_sandbox_and_leave_nothing() {
    if !require_root() {
        return;
    }
    let mut cri = CriRuntime::start("pod-capsules");
    let (web, side) = (free_tcp_port(), free_tcp_port());
    let parent = format!("/recap-test-podcap-{}", std::process::id());
    cri.run_pod(
        "shop",
        "cart-0",
        &parent,
        &[("web", httpd(web)), ("side", httpd(side))],
    );
    wait_serving(web);
    wait_serving(side);
    let before = cri.containers();
    assert_eq!(before.len(), 2, "{before:?}");
    let socket = cri.socket_path().to_str().unwrap().to_owned();
    let artifacts = std::env::temp_dir().join(format!("recap-podcap-{}", std::process::id()));
    let filter = format!("tcpdump=tcp port {web}");
    let window = |extra: &[&str]| {
        let mut args = vec![
            "window",
            "--local",
            "--pod",
            "shop/cart-0",
            "--container",
            "web",
            "--cri-endpoint",
            &socket,
            "-d",
            "60s",
            "--probes",
            "tcp",
            "--artifacts",
            artifacts.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        RecapRun::start(&args)
    };
    // A capsule joins one container: a pod of two needs --container, and is told so.
    let (code, _, err) = recap(&[
        "window",
        "--local",
        "--pod",
        "shop/cart-0",
        "--cri-endpoint",
        &socket,
        "-d",
        "5s",
        "--capsule",
        "tcpdump",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("give --container NAME") && err.contains("runs side, web"),
        "{err}"
    );
    assert_eq!(cri.containers(), before);
    let mut run = window(&[
        "--capsule",
        &filter,
        "--capsule",
        "strace=-e trace=accept,accept4",
        "-o",
        "json",
    ]);
    run.wait_armed();
    const N: usize = 5;
    gets(web, N);
    gets(side, 3);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (s, err) = run.interrupt();
    assert_eq!(s["tcp"]["accepted"], N as u64, "{s:#}\n{err}");
    let capsules = s["capsules"].as_array().unwrap();
    assert_eq!(capsules.len(), 2, "{s:#}");
    for c in capsules {
        assert_eq!(c["status"], "ok", "{c:#}\n{err}");
    }
    let artifact = |tool: &str| {
        capsules
            .iter()
            .find(|c| c["capsule"].as_str().unwrap().starts_with(tool))
            .map(|c| std::path::PathBuf::from(c["artifact"].as_str().unwrap()))
            .unwrap()
    };
    assert_eq!(
        recap_tests::docker::http_gets_in_pcap_on(&artifact("tcpdump"), web),
        N,
        "GETs to the target container in the pod's capture"
    );
    let text = std::fs::read_to_string(artifact("strace")).unwrap();
    let accepted = completed_accepts(&text);
    assert_eq!(accepted, N, "strace log:\n{text}");
    assert_eq!(
        cri.containers(),
        before,
        "the pod as it was before the window"
    );

    // The owner SIGKILLed: its capsule is left in the sandbox, but stops by itself.
    let mut run = window(&["--capsule", "tcpdump"]);
    run.wait_armed();
    run.signal(libc::SIGKILL);
    let _ = run.finish();
    assert_no_residue();
    let orphans = || -> Vec<(String, i32)> {
        cri.containers()
            .into_iter()
            .filter(|(_, _, window)| window.is_some())
            .map(|(name, state, _)| (name, state))
            .collect()
    };
    assert_eq!(
        orphans().len(),
        1,
        "the killed window's capsule: {:?}",
        cri.containers()
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // CRI ContainerState EXITED = 2.
    while orphans()[0].1 != 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the capsule of a killed recap kept running: {:?}",
            orphans()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // The next window on the pod removes it.
    let (code, _, err) = recap(&[
        "window",
        "--local",
        "--pod",
        "shop/cart-0",
        "--cri-endpoint",
        &socket,
        "-d",
        "1s",
        "--probes",
        "tcp",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("removed orphan capsule"), "{err}");
    assert_eq!(
        cri.containers(),
        before,
        "the pod as it was before the windows"
    );

    let _ = std::fs::remove_dir_all(&artifacts);
    cri.remove_pods();
    drop(cri);
    assert!(remove_pod_cgroups(&parent), "pod cgroups of {parent} left");
    assert_no_residue();
}

/// `--selector` on pod labels: two pods match, one does not; one window (with a strace
/// capsule) in each of the two, exact for each, none in the third.
#[test]
fn a_selector_opens_a_window_with_a_capsule_in_every_matching_pod() {
    if !require_root() {
        return;
    }
    let mut cri = CriRuntime::start("pod-selector");
    let label = format!("sel-{}", std::process::id());
    let parent = |pod: &str| format!("/recap-test-{pod}-{}", std::process::id());
    let mut ports = Vec::new();
    for (pod, app) in [
        ("checkout-a", label.as_str()),
        ("checkout-b", label.as_str()),
        ("other", "other"),
    ] {
        let port = free_tcp_port();
        cri.run_labelled_pod(
            "shop",
            pod,
            &parent(pod),
            &[("app", app)],
            &[("web", httpd(port))],
        );
        wait_serving(port);
        ports.push(port);
    }
    let before = cri.containers();
    let socket = cri.socket_path().to_str().unwrap().to_owned();
    let selector = format!("app={label}");
    let artifacts = std::env::temp_dir().join(format!("recap-podsel-{}", std::process::id()));
    let mut run = RecapRun::start(&[
        "window",
        "--local",
        "--selector",
        &selector,
        "--cri-endpoint",
        &socket,
        "-d",
        "60s",
        "--probes",
        "tcp",
        "--capsule",
        "strace=-e trace=accept,accept4",
        "--artifacts",
        artifacts.to_str().unwrap(),
        "-o",
        "json",
    ]);
    run.wait_armed();
    run.wait_armed();
    gets(ports[0], 2);
    gets(ports[1], 4);
    gets(ports[2], 3);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (s, err) = run.interrupt();
    let windows = s["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 2, "{s:#}\n{err}");
    for (pod, n) in [("shop/checkout-a", 2u64), ("shop/checkout-b", 4)] {
        let w = windows
            .iter()
            .find(|w| w["pod"] == pod)
            .unwrap_or_else(|| panic!("no window on {pod}: {s:#}"));
        assert_eq!(w["summary"]["tcp"]["accepted"], n, "{pod}: {w:#}");
        let capsule = &w["summary"]["capsules"][0];
        assert_eq!(capsule["status"], "ok", "{capsule:#}\n{err}");
        let text = std::fs::read_to_string(capsule["artifact"].as_str().unwrap()).unwrap();
        let accepted = completed_accepts(&text) as u64;
        assert_eq!(accepted, n, "{pod}'s strace:\n{text}");
    }
    assert_eq!(s["totals"]["tcp"]["accepted"], 6);
    assert_eq!(cri.containers(), before, "the pods as they were");
    let _ = std::fs::remove_dir_all(&artifacts);
    cri.remove_pods();
    drop(cri);
    for pod in ["checkout-a", "checkout-b", "other"] {
        assert!(
            remove_pod_cgroups(&parent(pod)),
            "pod cgroups of {pod} left"
        );
    }
    assert_no_residue();
}
