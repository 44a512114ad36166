//! Docker containers as targets, with capsules, against a real engine.

use std::{
    path::{Path, PathBuf},
    thread,
    time::Duration,
};

use recap_tests::{docker::*, *};
use serde_json::Value;

fn artifact(summary: &Value, tool: &str) -> (PathBuf, Value) {
    let report = summary["capsules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["capsule"].as_str().unwrap().starts_with(tool))
        .unwrap_or_else(|| panic!("no {tool} capsule in {summary:#}"))
        .clone();
    (PathBuf::from(report["artifact"].as_str().unwrap()), report)
}

fn assert_clean() {
    assert_no_residue();
    assert_eq!(
        capsule_containers(),
        Vec::<String>::new(),
        "capsule containers left"
    );
}

/// Two identical apps; a window with both capsules on one. N requests go to it, M to the other.
#[test]
fn counts_and_captures_only_the_target_container() {
    if !require_root() {
        return;
    }
    let (target, other) = (
        AppContainer::run("recap-web-a"),
        AppContainer::run("recap-web-b"),
    );
    let artifacts = std::env::temp_dir().join(format!("recap-artifacts-{}", std::process::id()));
    let mut run = RecapRun::start(&[
        "window",
        "--container",
        &target.id[..12],
        "-d",
        "60s",
        "--capsule",
        "tcpdump",
        "--capsule",
        "strace=-e trace=accept,accept4",
        "--artifacts",
        artifacts.to_str().unwrap(),
        "-o",
        "json",
    ]);
    run.wait_armed();
    const N: usize = 6;
    const M: usize = 4;
    target.http_gets(N);
    other.http_gets(M);
    thread::sleep(Duration::from_millis(500));
    let (s, _) = run.interrupt();
    assert_eq!(s["target"]["container"]["name"], target.name.as_str());
    assert_eq!(s["target"]["container"]["image"], APP_IMAGE);
    assert_eq!(
        s["tcp"]["accepted"], N as u64,
        "inbound connections of the target only"
    );

    let (pcap, report) = artifact(&s, "tcpdump");
    assert_eq!(report["status"], "ok", "{report:#}");
    assert_eq!(http_gets_in_pcap(&pcap), N, "GETs in {}", pcap.display());
    // Captures hold secrets: the window's directory and its files are the owner's alone.
    let mode = |p: &std::path::Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(pcap.parent().unwrap()), 0o700);
    assert_eq!(mode(&pcap), 0o600);
    assert_eq!(
        report["artifact_bytes"],
        std::fs::metadata(&pcap).unwrap().len()
    );

    let (log, report) = artifact(&s, "strace");
    assert_eq!(report["status"], "ok", "{report:#}");
    assert_eq!(mode(&log), 0o600);
    let text = std::fs::read_to_string(&log).unwrap();
    let accepted = completed_accepts(&text);
    assert_eq!(accepted, N, "strace log:\n{text}");
    let _ = std::fs::remove_dir_all(artifacts);
    assert_clean();
}

/// A burst of requests in a few milliseconds is captured whole, and the capsule says so (its
/// tool's own count of packets the kernel dropped is 0; were it not, the capsule would be
/// reported incomplete, not ok).
#[test]
fn a_burst_is_captured_whole() {
    if !require_root() {
        return;
    }
    const BURST: usize = 40;
    let app = AppContainer::run("recap-web-burst");
    let mut run = RecapRun::start(&[
        "window",
        "--local",
        "--container",
        &app.name,
        "-d",
        "60s",
        "--probes",
        "tcp",
        "--capsule",
        "tcpdump=tcp port 80",
        "-o",
        "json",
    ]);
    run.wait_armed();
    app.http_burst(BURST);
    thread::sleep(Duration::from_millis(300));
    let (s, _) = run.interrupt();
    assert_eq!(s["tcp"]["accepted"], BURST as u64);
    let (pcap, report) = artifact(&s, "tcpdump");
    assert_eq!(report["status"], "ok", "{report:#}");
    assert_eq!(
        http_gets_in_pcap(&pcap),
        BURST,
        "GETs in {}",
        pcap.display()
    );
    let _ = std::fs::remove_dir_all(pcap.parent().unwrap());
    assert_clean();
}

/// Artifacts on a disk that fills up: the capture cannot be whole, and the summary does not
/// call it ok.
#[test]
fn a_capture_cut_by_a_full_disk_is_not_called_ok() {
    if !require_root() {
        return;
    }
    let app = AppContainer::run("recap-web-full");
    let disk = std::env::temp_dir().join(format!("recap-full-disk-{}", std::process::id()));
    std::fs::create_dir_all(&disk).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16k", "tmpfs"])
        .arg(&disk)
        .status()
        .unwrap();
    assert!(mounted.success(), "mounting a small tmpfs");
    let mut run = RecapRun::start(&[
        "window",
        "--local",
        "--container",
        &app.name,
        "-d",
        "60s",
        "--probes",
        "tcp",
        "--capsule",
        "tcpdump",
        "--artifacts",
        disk.to_str().unwrap(),
        "-o",
        "json",
    ]);
    run.wait_armed();
    app.http_burst(60);
    thread::sleep(Duration::from_millis(300));
    run.signal(libc::SIGINT);
    let (code, out, err) = run.finish();
    let _ = std::process::Command::new("umount").arg(&disk).status();
    let _ = std::fs::remove_dir_all(&disk);
    assert_eq!(code, 0, "{err}");
    let s = summary(&out);
    let (_, report) = artifact(&s, "tcpdump");
    assert_ne!(
        report["status"], "ok",
        "a capture on a full disk: {report:#}"
    );
    assert_clean();
}

/// A SIGKILLed recap leaves its capsule behind (Drop cannot run); the kernel side is gone at
/// once, and the next window removes the orphan.
#[test]
fn orphan_capsule_of_a_killed_window_is_removed_by_the_next() {
    if !require_root() {
        return;
    }
    let app = AppContainer::run("recap-web-orphan");
    let mut run = RecapRun::start(&[
        "window",
        "--container",
        &app.name,
        "-d",
        "60s",
        "--capsule",
        "tcpdump",
    ]);
    run.wait_armed();
    run.signal(libc::SIGKILL);
    let _ = run.finish();
    assert_no_residue();
    let left = capsule_containers();
    assert_eq!(left.len(), 1, "the killed window's capsule is still there");
    // Its lifeline ended with its owner: the tool stops by itself, with no other window run.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while container_running(&left[0]) {
        assert!(
            std::time::Instant::now() < deadline,
            "the capsule of a killed recap kept running"
        );
        thread::sleep(Duration::from_millis(100));
    }
    // Somebody else's container that happens to carry RECap's labels, with an owner that is
    // gone: not RECap's image, so not RECap's to remove.
    let not_ours = AppContainer::run_labelled(
        "recap-not-ours",
        &["recap.window=someone-elses", "recap.owner=4294967295:1"],
    );

    let (code, _, err) = recap(&["window", "--container", &app.name, "-d", "1s"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("removed orphan capsule"), "{err}");
    assert!(
        not_ours.exists(),
        "the reaper removed a container RECap did not create: {err}"
    );
    drop(not_ours);
    assert_clean();
}

#[test]
fn stopping_the_target_ends_the_window_and_removes_the_capsule() {
    if !require_root() {
        return;
    }
    let app = AppContainer::run("recap-web-stop");
    let mut run = RecapRun::start(&[
        "window",
        "--container",
        &app.name,
        "-d",
        "60s",
        "--capsule",
        "tcpdump",
        "-o",
        "json",
    ]);
    run.wait_armed();
    app.http_gets(2);
    app.kill();
    let (code, out, err) = run.finish();
    assert_eq!(code, 0, "{err}");
    let s = summary(&out);
    assert_eq!(s["status"], "target_exited");
    assert_eq!(s["tcp"]["accepted"], 2, "what was measured is kept");
    assert!(s["duration_s"].as_f64().unwrap() < 30.0);
    assert_clean();
}

#[test]
fn a_capsule_stops_at_its_size_cap() {
    if !require_root() {
        return;
    }
    let app = AppContainer::run("recap-web-cap");
    let mut run = RecapRun::start(&[
        "window",
        "--container",
        &app.name,
        "-d",
        "60s",
        "--capsule",
        "tcpdump",
        "--capsule-max-size",
        "4KiB",
        "-o",
        "json",
    ]);
    run.wait_armed();
    app.http_gets(20);
    thread::sleep(Duration::from_millis(300));
    let (s, _) = run.interrupt();
    let (pcap, report) = artifact(&s, "tcpdump");
    assert_eq!(report["status"], "size_cap_reached", "{report:#}");
    assert!(std::fs::metadata(&pcap).unwrap().len() <= 4096);
    assert_eq!(
        s["tcp"]["accepted"], 20,
        "the probes go on counting after the capsule stops"
    );
    assert_clean();
}

#[test]
fn container_errors_are_clear_and_leave_nothing() {
    if !require_root() {
        return;
    }
    ensure_engine();
    let (code, _, err) = recap(&[
        "window",
        "--container",
        "recap-no-such-container",
        "-d",
        "1s",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("no container `recap-no-such-container`") && err.contains("docker ps"),
        "{err}"
    );

    let stopped = AppContainer::run("recap-web-stopped");
    stopped.kill();
    let (code, _, err) = recap(&[
        "window",
        "--container",
        &stopped.name,
        "-d",
        "1s",
        "--capsule",
        "strace",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("is not running") && err.contains("docker start"),
        "{err}"
    );

    let out = std::process::Command::new(recap_bin())
        .args(["window", "--container", "x", "-d", "1s"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no Docker engine answers") && err.contains("dockerd"),
        "{err}"
    );

    let (code, _, err) = recap(&["window", "--pid", "1", "--capsule", "tcpdump", "-d", "1s"]);
    assert_eq!(code, 2, "{err}");
    assert_clean();
}

/// A container target's metadata reaches the exports: a `container_name` label on every
/// Prometheus series, `container.*` resource attributes over OTLP.
#[test]
fn container_metadata_is_exported() {
    if !require_root() {
        return;
    }
    let app = AppContainer::run("recap-web-export");
    let (otlp_addr, received) = recap_tests::otlp::grpc_receiver();
    let prom_addr = recap_tests::otlp::free_port();
    let (endpoint, prom) = (format!("http://{otlp_addr}"), prom_addr.to_string());
    let mut run = RecapRun::start(&[
        "window",
        "--container",
        &app.name,
        "-d",
        "3s",
        "--otlp-endpoint",
        &endpoint,
        "--prometheus",
        &prom,
        "--prometheus-linger",
        "1s",
        "-o",
        "json",
    ]);
    run.wait_armed();
    app.http_gets(3);
    thread::sleep(Duration::from_millis(1500));
    let mut conn = std::net::TcpStream::connect(prom_addr).unwrap();
    use std::io::{Read, Write};
    write!(conn, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    let (code, out, err) = run.finish();
    assert_eq!(code, 0, "{err}");
    let s = summary(&out);
    let label = format!("container_name=\"{}\"", app.name);
    let series: Vec<&str> = text.lines().filter(|l| l.starts_with("recap_")).collect();
    assert!(
        !series.is_empty() && series.iter().all(|l| l.contains(&label)),
        "{text}"
    );
    assert!(
        text.contains(&format!("container_image=\"{APP_IMAGE}\"")),
        "recap_window_info carries the image"
    );
    let received = received.lock().unwrap();
    use recap_tests::otlp::resource_attr;
    assert_eq!(
        resource_attr(&received, "container.id").as_deref(),
        Some(app.id.as_str())
    );
    assert_eq!(
        resource_attr(&received, "container.name").as_deref(),
        Some(app.name.as_str())
    );
    assert_eq!(
        resource_attr(&received, "container.image.name").as_deref(),
        Some(APP_IMAGE)
    );
    assert_eq!(s["tcp"]["accepted"], 3);
    assert_clean();
}

/// `--selector`: one window per matching container, each exact, reported together; in this
/// process and through the agent alike.
#[test]
fn a_selector_opens_one_exact_window_per_matching_container() {
    if !require_root() {
        return;
    }
    let app = format!("app=sel-{}", std::process::id());
    let one = AppContainer::run_labelled("sel-one", &[&app]);
    let two = AppContainer::run_labelled("sel-two", &[&app]);
    let other = AppContainer::run_labelled("sel-other", &["app=other"]);
    let agent = recap_tests::agent::AgentProcess::start("selector", None, &[]);
    let socket = agent.socket.to_str().unwrap().to_owned();
    for through_agent in [false, true] {
        let mut args = vec![
            "window",
            "--selector",
            &app,
            "-d",
            "4s",
            "--probes",
            "tcp",
            "-o",
            "json",
        ];
        if through_agent {
            args.extend(["--socket", &socket]);
        } else {
            args.push("--local");
        }
        let mut run = RecapRun::start(&args);
        run.wait_armed();
        run.wait_armed();
        one.http_gets(3);
        two.http_gets(5);
        other.http_gets(4);
        let (code, out, err) = run.finish();
        assert_eq!(code, 0, "{err}");
        let s: Value = serde_json::from_str(&out).unwrap();
        let accepted = |name: &str| {
            s["windows"]
                .as_array()
                .unwrap()
                .iter()
                .find(|w| w["container"] == name)
                .and_then(|w| w.pointer("/summary/tcp/accepted"))
                .and_then(Value::as_u64)
                .unwrap_or_else(|| panic!("no window on {name}: {s:#}"))
        };
        assert_eq!(accepted(&one.name), 3, "through the agent: {through_agent}");
        assert_eq!(accepted(&two.name), 5);
        assert_eq!(s["windows"].as_array().unwrap().len(), 2, "{s:#}");
        assert_eq!(s["totals"]["tcp"]["accepted"], 8);
    }
    // Nothing matches: a clear message, exit 1, nothing left.
    let (code, _, err) = recap(&[
        "window",
        "--local",
        "--selector",
        "app=nothing-matches",
        "-d",
        "1s",
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("nothing running matches") && err.contains("Docker's containers"),
        "{err}"
    );
    drop(agent);
    assert_clean();
}

/// The image `recap-test-blocker:1`: `recap-tests/gdb/blocker.c` built static with symbols,
/// alone in the image (made once per run of the tests).
fn blocker_image() -> &'static str {
    const IMAGE: &str = "recap-test-blocker:1";
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("blocker");
    std::fs::create_dir_all(&dir).unwrap();
    let binary = dir.join("blocker");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("gdb/blocker.c");
    let built = std::process::Command::new("cc")
        .args(["-static", "-O0", "-g", "-pthread", "-o"])
        .arg(&binary)
        .arg(&source)
        .status()
        .expect("a C compiler (cc) with static libc (libc6-dev)");
    assert!(built.success(), "building {}", source.display());
    let tar = dir.join("root.tar");
    let packed = std::process::Command::new("tar")
        .arg("cf")
        .arg(&tar)
        .arg("-C")
        .arg(&dir)
        .arg("blocker")
        .status()
        .unwrap();
    assert!(packed.success());
    let imported = std::process::Command::new("docker")
        .args(["import", tar.to_str().unwrap(), IMAGE])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(imported.success(), "docker import {IMAGE}");
    IMAGE
}

/// Stack dumps written so far to any `stacks.txt` under the artifact directory.
fn dumps_so_far(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                dumps_so_far(&path)
            } else if path.file_name().is_some_and(|n| n == "stacks.txt") {
                std::fs::read_to_string(&path)
                    .unwrap_or_default()
                    .matches("==== process 1 (blocker)")
                    .count()
            } else {
                0
            }
        })
        .sum()
}

/// The gdb capsule on a hung service: every thread's stack, at each `every:` tick and at the
/// end; the blocked thread's function and the main thread's are in them, with their sources.
#[test]
fn a_gdb_capsule_shows_where_every_thread_is_blocked() {
    if !require_root() {
        return;
    }
    let app = AppContainer::run_image("recap-hung", &[], &[], blocker_image(), &["/blocker"]);
    let artifacts = std::env::temp_dir().join(format!("recap-gdb-{}", std::process::id()));
    let mut run = capsule_window(&app, "gdb=every:1s", &artifacts);
    run.wait_armed();
    // Two ticks' dumps in the capsule's output before the window is stopped: each gdb run
    // takes seconds on a loaded machine (its Python library is compiled each time), so wait
    // for them rather than for a time.
    let ticks = (0..450).find(|_| {
        thread::sleep(Duration::from_millis(100));
        dumps_so_far(&artifacts) >= 2
    });
    assert!(ticks.is_some(), "no two gdb ticks in 45 s");
    let (s, err) = run.interrupt();
    let (stacks, report) = artifact(&s, "gdb");
    assert_eq!(report["status"], "ok", "{report:#}\n{err}");
    let text = std::fs::read_to_string(&stacks).unwrap();
    let dumps = text.matches("==== process 1 (blocker)").count();
    // The two ticks waited for, and the one at the end.
    assert!(dumps >= 3, "{dumps} dumps:\n{text}");
    assert_eq!(
        text.matches("in recap_blocked_here () at ").count(),
        dumps,
        "the blocked thread in every dump:\n{text}"
    );
    assert_eq!(text.matches("in main () at ").count(), dumps, "{text}");
    assert!(!text.contains("Python Exception"), "{text}");
    let _ = std::fs::remove_dir_all(&artifacts);
    assert_clean();
}

/// A capsule of the caller's own image (`image=REF,cmd=...`, here the test app image with its
/// busybox's netstat and ps): it runs in the target's network and PID namespaces (it sees the
/// target's listening port and processes), with RECap's supervisor; an image the engine does
/// not have is refused before anything starts (RECap never pulls).
#[test]
fn a_capsule_of_your_own_image_joins_the_target() {
    if !require_root() {
        return;
    }
    let app = AppContainer::run("recap-custom");
    let artifacts = std::env::temp_dir().join(format!("recap-custom-{}", std::process::id()));
    for (cmd, expect) in [
        ("/bin/busybox netstat -tln", ":::80 "),
        ("/bin/busybox ps", "httpd -f -p 80"),
    ] {
        let capsule = format!("image={APP_IMAGE},cmd={cmd}");
        let mut run = capsule_window(&app, &capsule, &artifacts);
        run.wait_armed();
        thread::sleep(Duration::from_millis(500));
        let (s, err) = run.interrupt();
        let (log, report) = artifact(&s, "image=");
        assert_eq!(report["status"], "ok", "{report:#}\n{err}");
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains(expect), "{cmd}:\n{text}");
    }
    let (code, _, err) = recap(&[
        "window",
        "--local",
        "--container",
        &app.name,
        "-d",
        "5s",
        "--capsule",
        "image=recap-test-not-here:1,cmd=/bin/true",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("is not in the local engine") && err.contains("never pulls"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&artifacts);
    assert_clean();
}

/// `archive=`: a tar of paths in the container's filesystem at the window's end. A file written
/// during the window is in it with its bytes; a link inside a directory is stored as a link
/// (its target's files are not in the tar); a path that is a link pointing out of the
/// container is not followed, and the capsule says so.
#[test]
fn an_archive_capsule_never_follows_a_link_out_of_the_container() {
    if !require_root() {
        return;
    }
    let app = AppContainer::run("recap-archive");
    let (ok, _) = docker_exec(
        &app.id,
        "mkdir -p /data/logs && echo first > /data/logs/app.log && ln -s /etc /data/etc && ln -s ../../../../../../.. /escape",
    );
    assert!(ok);
    let artifacts = std::env::temp_dir().join(format!("recap-archive-{}", std::process::id()));
    let mut run = capsule_window(&app, "archive=/data,/escape", &artifacts);
    run.wait_armed();
    assert!(docker_exec(&app.id, "echo second >> /data/logs/app.log").0);
    let (s, err) = run.interrupt();
    let (tar, report) = artifact(&s, "archive");
    assert_eq!(report["status"], "incomplete", "{report:#}\n{err}");
    let reason = report["reason"].as_str().unwrap();
    assert!(
        reason.contains("/escape: a symbolic link") && reason.contains("not followed"),
        "{reason}"
    );
    let listing = std::process::Command::new("tar")
        .arg("tvf")
        .arg(&tar)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).to_string();
    let names: Vec<&str> = listing
        .lines()
        .map(|l| l.split_whitespace().nth(5).unwrap())
        .collect();
    assert_eq!(
        names,
        ["data/", "data/etc", "data/logs/", "data/logs/app.log"],
        "{listing}"
    );
    assert!(listing.contains("data/etc -> /etc"), "{listing}");
    let content = std::process::Command::new("tar")
        .arg("xOf")
        .arg(&tar)
        .arg("data/logs/app.log")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&content.stdout), "first\nsecond\n");
    let _ = std::fs::remove_dir_all(&artifacts);
    assert_clean();
}

/// A one-minute window (`proc` only) on `app` with one capsule, its artifacts under
/// `artifacts`, its summary in JSON.
fn capsule_window(app: &AppContainer, capsule: &str, artifacts: &Path) -> RecapRun {
    RecapRun::start(&[
        "window",
        "--local",
        "--container",
        &app.name,
        "-d",
        "60s",
        "--probes",
        "proc",
        "--capsule",
        capsule,
        "--artifacts",
        artifacts.to_str().unwrap(),
        "-o",
        "json",
    ])
}

/// `docker exec ID sh -c SCRIPT` (busybox): (success, stdout).
fn docker_exec(id: &str, script: &str) -> (bool, String) {
    let out = std::process::Command::new("docker")
        .args(["exec", id, "/bin/busybox", "sh", "-c", script])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// `snapshot`: the target's processes, open files and TCP sockets at the window's start and
/// end. A listener started in the container during the window is in the end's sockets (held by
/// its process), not in the start's, and the summary's note counts it.
#[test]
fn a_snapshot_capsule_says_what_changed_in_the_target() {
    if !require_root() {
        return;
    }
    let app = AppContainer::run("recap-snapshot");
    let artifacts = std::env::temp_dir().join(format!("recap-snapshot-{}", std::process::id()));
    let mut run = capsule_window(&app, "snapshot", &artifacts);
    run.wait_armed();
    // A second listener, and its process, appear.
    let started = std::process::Command::new("docker")
        .args([
            "exec",
            "-d",
            &app.id,
            "/bin/busybox",
            "nc",
            "-l",
            "-p",
            "9999",
        ])
        .status()
        .unwrap();
    assert!(started.success());
    thread::sleep(Duration::from_millis(500));
    let (s, err) = run.interrupt();
    let (path, report) = artifact(&s, "snapshot");
    assert_eq!(report["status"], "ok", "{report:#}\n{err}");
    let note = report["note"].as_str().unwrap();
    assert!(
        note.contains("processes 1 → 2 (+1 −0)") && note.contains("listening 1 → 2"),
        "{note}"
    );
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let listening = |at: &str| -> Vec<String> {
        doc[at]["sockets"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| k["state"] == "LISTEN")
            .map(|k| k["local"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(listening("start"), ["[::]:80"], "{doc:#}");
    let mut end = listening("end");
    end.sort();
    assert_eq!(end, ["[::]:80", "[::]:9999"], "{doc:#}");
    let comms: Vec<&str> = doc["end"]["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["comm"].as_str().unwrap())
        .collect();
    assert_eq!(comms.len(), 2, "{comms:?}");
    // Every socket is held by a process of the target (ss -p).
    for k in doc["end"]["sockets"].as_array().unwrap() {
        assert_eq!(k["users"].as_array().unwrap().len(), 1, "{k}");
    }
    let _ = std::fs::remove_dir_all(&artifacts);
    assert_clean();
}
