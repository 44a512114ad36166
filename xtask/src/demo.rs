//! `cargo xtask demo`: the main job on a fresh machine. Sets up, builds, starts a known
//! workload in a cgroup of its own, opens a 10 s window on it with every probe family, and
//! prints what the workload really did next to what the window measured.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream, UdpSocket},
    os::unix::process::CommandExt,
    path::Path,
    process::{Command, Stdio},
    thread,
};

use anyhow::{bail, Context};
use clap::Args;
use recap_harness::cgroup::ScratchCgroup;

use crate::{
    docker,
    run::{release_binaries, status},
};

#[derive(Args)]
pub struct DemoArgs {
    /// Window length.
    #[arg(long, default_value = "10s")]
    duration: String,
}

// The workload's plan (see recap-tests/src/bin/recap-workload.rs).
const CONNECTS: usize = 50;
const REFUSED: usize = 5;
const KEPT_OPEN: usize = 2;
const BYTES: usize = 4096;
const DATAGRAMS: usize = 20;
const DATAGRAM_SIZE: usize = 512;
const EXECS: usize = 10;
const GETPPID: usize = 10_000;
const SPIN_MS: u64 = 500;
const INBOUND: usize = 5;
const INBOUND_BYTES: usize = 1000;

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let bin = release_binaries("the demo")?;

    let cgroup = ScratchCgroup::create("recap-demo")?;
    let sink = TcpListener::bind("127.0.0.1:0")?;
    let sink_port = sink.local_addr()?.port();
    thread::spawn(move || {
        for mut s in sink.incoming().flatten() {
            thread::spawn(move || {
                let _ = s.read_to_end(&mut Vec::new());
            });
        }
    });
    let udp = UdpSocket::bind("127.0.0.1:0")?;
    let refused = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();

    let procs = cgroup.dir.join("cgroup.procs");
    let mut workload = Command::new(bin.join("recap-workload"));
    workload
        .args([
            format!("127.0.0.1:{sink_port}"),
            refused.to_string(),
            udp.local_addr()?.to_string(),
        ])
        .args(
            [
                CONNECTS,
                REFUSED,
                KEPT_OPEN,
                BYTES,
                DATAGRAMS,
                DATAGRAM_SIZE,
                EXECS,
                GETPPID,
            ]
            .map(|n| n.to_string()),
        )
        .arg(SPIN_MS.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    // SAFETY: writes one file before exec, moving the child into the demo cgroup.
    unsafe { workload.pre_exec(move || std::fs::write(&procs, "0")) };
    let mut workload = workload.spawn().context("starting recap-workload")?;
    let mut wl_out = BufReader::new(workload.stdout.take().unwrap());
    let mut line = String::new();
    wl_out.read_line(&mut line)?;
    let listen_port: u16 = line
        .trim()
        .trim_start_matches("listening ")
        .parse()
        .context("workload port")?;

    eprintln!(
        "xtask: workload pid {} in {}",
        workload.id(),
        cgroup.dir.display()
    );
    let mut cmd = Command::new(bin.join("recap"));
    cmd.args(["window", "--local", "--cgroup"])
        .arg(&cgroup.dir)
        .args(["--duration", &args.duration, "--probes", "all"]);
    let ran = run_window(&mut cmd, || {
        writeln!(workload.stdin.as_mut().unwrap(), "go")?;
        for _ in 0..INBOUND {
            TcpStream::connect(("127.0.0.1", listen_port))?.write_all(&[b'z'; INBOUND_BYTES])?;
        }
        Ok(())
    });
    drop(workload.stdin.take());
    let _ = workload.wait();
    ran?;
    println!(
        "\nground truth (what the workload did): {} outbound connects ({} established, {} refused, {} kept open), \
         {} inbound with {} B each, {} B TCP payload sent, {} UDP datagrams of {} B, {} execs of `true`, \
         {} getppid calls, {} ms of spinning",
        CONNECTS + REFUSED + KEPT_OPEN,
        CONNECTS + KEPT_OPEN,
        REFUSED,
        KEPT_OPEN,
        INBOUND,
        INBOUND_BYTES,
        CONNECTS * BYTES,
        DATAGRAMS,
        DATAGRAM_SIZE,
        EXECS,
        GETPPID,
        SPIN_MS
    );
    container_demo(&bin, &args)
}

const GETS: usize = 25;

/// A busybox httpd container without a network, a window on it with both capsules, and GETs
/// sent from inside its network namespace.
fn container_demo(bin: &Path, args: &DemoArgs) -> anyhow::Result<()> {
    docker::ensure_engine()?;
    let image = "recap-demo-httpd:1";
    if !docker::ask(&["image", "inspect", image]) {
        let dir = std::env::temp_dir().join("recap-demo-rootfs");
        let script = format!(
            "set -e; mkdir -p {d}/bin {d}/www; cp /bin/busybox {d}/bin/; echo hello > {d}/www/index.html; \
             tar -C {d} -c . | docker import - {image} >/dev/null; rm -rf {d}",
            d = dir.display()
        );
        status(Command::new("sh").args(["-c", &script]))?;
    }
    let web = docker::ScratchContainer::run(
        "recap-demo-web",
        image,
        &["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"],
    )?;
    let (name, pid) = (web.name.clone(), web.pid()?);
    println!("\nxtask: container {name} (busybox httpd, no network); {GETS} GETs from inside its network namespace");
    let mut cmd = Command::new(bin.join("recap"));
    cmd.args([
        "window",
        "--local",
        "--container",
        &name,
        "--duration",
        &args.duration,
    ])
    .args([
        "--capsule",
        "tcpdump",
        "--capsule",
        "strace=-e trace=accept,accept4",
        "--artifacts",
        "/var/tmp/recap",
    ]);
    let ran = run_window(&mut cmd, || {
        for _ in 0..GETS {
            status(Command::new("nsenter").args([
                "-t",
                &pid,
                "-n",
                "/bin/busybox",
                "wget",
                "-q",
                "-O",
                "/dev/null",
                "http://127.0.0.1/",
            ]))?;
        }
        Ok(())
    });
    drop(web);
    ran?;
    println!("\nground truth: {GETS} HTTP GETs to the container (inbound accepted above); `tshark -r <artifact> -Y http.request` lists them");
    Ok(())
}

/// Runs `recap window`, forwarding its stderr, and calls `on_armed` once every probe counts.
fn run_window(
    cmd: &mut Command,
    on_armed: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut recap = cmd
        .stderr(Stdio::piped())
        .spawn()
        .context("starting recap")?;
    let mut on_armed = Some(on_armed);
    for line in BufReader::new(recap.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        eprintln!("{line}");
        if line.contains(" armed on ") {
            if let Some(act) = on_armed.take() {
                act()?;
            }
        }
    }
    let status = recap.wait()?;
    if !status.success() {
        bail!("recap window failed ({status})");
    }
    Ok(())
}
