//! `cargo xtask bench`: how fast a window arms and tears down, and what open windows cost a
//! process *outside* the target, side by side in one run. Prints medians and ratios to the
//! no-window baseline; never asserts timings (these machines are shared and noisy).

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use clap::Args;
use recap_harness::cgroup::ScratchCgroup;

use crate::{
    docker,
    run::{release_binaries, status},
};

#[derive(Args)]
pub struct BenchArgs {
    /// Repetitions per measurement (medians are reported).
    #[arg(long, default_value_t = 20)]
    reps: usize,
    /// getppid calls per repetition.
    #[arg(long, default_value_t = 200_000)]
    calls: usize,
    /// Pipe ping-pong round trips per repetition.
    #[arg(long, default_value_t = 20_000)]
    rounds: usize,
    /// Only one part: arm/teardown, cost outside the target, arming with a capsule, the
    /// agent (arming warm vs in-process, 1 to 128 open windows, its footprint), or HTTP
    /// (wrk against nginx in the target, request families on and off), or fleet windows
    /// (request → every node counting, 1 to 10 agents on etcd), or a uprobe's cost by the
    /// instruction it is on.
    #[arg(long, value_parser = ["arm", "cost", "capsule", "agent", "http", "https", "http2", "uprobe", "fleet", "footprint"])]
    only: Option<String>,
    /// Seconds of wrk load per repetition of the HTTP benchmark.
    #[arg(long, default_value_t = 5)]
    http_seconds: u64,
}

/// The families on by default, as the built `recap families --defaults` says (never a copy
/// kept here). Call after `release_binaries`.
pub fn default_families() -> &'static str {
    static DEFAULTS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DEFAULTS.get_or_init(|| {
        let recap = crate::run::workspace().join("target/release/recap");
        let out = std::process::Command::new(&recap)
            .args(["families", "--defaults"])
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", recap.display()));
        assert!(out.status.success(), "recap families --defaults: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    })
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let bin = release_binaries("the benchmark")?;
    let target = IdleTarget::start()?;
    println!(
        "# cargo xtask bench --reps {} --calls {} --rounds {}\n",
        args.reps, args.calls, args.rounds
    );
    println!(
        "kernel {}, {} CPUs\n",
        kernel_release(),
        thread::available_parallelism().map_or(0, |n| n.get())
    );
    if args.only.is_none() || args.only.as_deref() == Some("arm") {
        arm_and_teardown(&bin, &target, args.reps)?;
    }
    if args.only.is_none() || args.only.as_deref() == Some("cost") {
        cost_outside(&bin, &target, &args)?;
    }
    if args.only.is_none() || args.only.as_deref() == Some("capsule") {
        capsule_arming(&bin, args.reps)?;
        crate::test::pod_capsule_bench(&bin, args.reps)?;
    }
    if args.only.is_none() || args.only.as_deref() == Some("agent") {
        crate::bench_agent::run(&bin, args.reps)?;
    }
    if args.only.is_none() || args.only.as_deref() == Some("footprint") {
        crate::bench_agent::footprint(&bin)?;
    }
    for scheme in [
        crate::bench_http::Scheme::Http,
        crate::bench_http::Scheme::Https,
        crate::bench_http::Scheme::Http2,
    ] {
        if args.only.is_none() || args.only.as_deref() == Some(scheme.name()) {
            crate::bench_http::run(&bin, scheme, args.reps.min(6), args.http_seconds)?;
        }
    }
    if args.only.is_none() || args.only.as_deref() == Some("uprobe") {
        crate::bench_uprobe::run(args.reps.min(8))?;
    }
    if args.only.is_none() || args.only.as_deref() == Some("fleet") {
        crate::test::fleet_bench(&bin)?;
    }
    Ok(())
}

/// Time to arm (command issued → every probe counting) and to tear down.
fn arm_and_teardown(bin: &Path, target: &IdleTarget, reps: usize) -> anyhow::Result<()> {
    println!("## Arming and teardown (median of {reps})\n");
    println!("| families | command → armed (external) | arm_ms (recap's own) | teardown_ms (detach + unload) |");
    println!("|---|---|---|---|");
    for families in [default_families(), "all"] {
        let (mut external, mut arm, mut teardown) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..reps {
            let started = Instant::now();
            let mut hook = Hook::spawn(
                Command::new(bin.join("recap"))
                    .args(["window", "--local", "--cgroup"])
                    .arg(&target.scratch.dir)
                    .args(["-d", "200ms", "--probes", families, "-o", "json"]),
                HookReady::StderrContains(" armed on "),
            )?;
            hook.wait_ready()?;
            external.push(started.elapsed().as_secs_f64() * 1e3);
            let out = hook.child.wait_with_output()?;
            let summary: serde_json::Value =
                serde_json::from_slice(&out.stdout).context("recap's JSON summary")?;
            arm.push(summary["arm_ms"].as_f64().unwrap_or(f64::NAN));
            teardown.push(summary["teardown_ms"].as_f64().unwrap_or(f64::NAN));
        }
        println!(
            "| {families} | {:.1} ms | {:.1} ms | {:.1} ms |",
            median(&mut external),
            median(&mut arm),
            median(&mut teardown)
        );
    }
    println!();
    Ok(())
}

struct Config {
    name: String,
    start: Option<Box<dyn Fn() -> anyhow::Result<Hook>>>,
}

/// Cost per syscall and per context switch for a process outside the target.
fn cost_outside(bin: &Path, target: &IdleTarget, args: &BenchArgs) -> anyhow::Result<()> {
    let window = |families: &'static str| -> Config {
        let (recap, cgroup) = (bin.join("recap"), target.scratch.dir.clone());
        Config {
            name: format!("window: {families}"),
            start: Some(Box::new(move || Hook::window(&recap, &cgroup, families))),
        }
    };
    let bench_bin = bin.join("recap-bench");
    mount_tracefs()?;
    let cgroup_id = target.scratch.id();
    let configs = vec![
        Config {
            name: "no window".into(),
            start: None,
        },
        window("tcp"),
        window("http"),
        window("dns"),
        window("net"),
        window("proc"),
        window("cpu"),
        window("mem"),
        window("disk"),
        window(default_families()),
        window("syscalls"),
        window("all"),
        Config {
            name: "bare no-op raw tracepoint on sys_enter".into(),
            start: Some(Box::new(move || {
                Hook::spawn(
                    Command::new(&bench_bin).arg("nop-hook"),
                    HookReady::StdoutContains("attached"),
                )
            })),
        },
        Config {
            name: "bpftrace one-liner, same scope".into(),
            start: Some(Box::new(move || {
                let program = format!(
                    "tracepoint:raw_syscalls:sys_enter /cgroup == {cgroup_id}/ {{ @[args->id] = count(); }}"
                );
                Hook::spawn(
                    Command::new("bpftrace").args(["-e", &program]),
                    HookReady::StdoutContains("Attaching"),
                )
            })),
        },
    ];

    println!(
        "## Cost to a process outside the target (median of {} interleaved reps; getppid × {}, pipe ping-pong × {} round trips)\n",
        args.reps, args.calls, args.rounds
    );
    // Round-robin: every repetition visits every configuration (attach, measure, detach), so
    // the host's slow drifts hit all configurations alike instead of whichever ran then.
    let load = bin.join("recap-bench");
    let mut syscall = vec![Vec::new(); configs.len()];
    let mut sockio = vec![Vec::new(); configs.len()];
    let mut pingpong = vec![Vec::new(); configs.len()];
    let mut faults = vec![Vec::new(); configs.len()];
    let mut directio = vec![Vec::new(); configs.len()];
    for rep in 0..args.reps {
        eprint!("\rxtask: cost, repetition {}/{}", rep + 1, args.reps);
        for (i, config) in configs.iter().enumerate() {
            let hook = match &config.start {
                Some(start) => {
                    let mut hook = start()?;
                    hook.wait_ready()
                        .with_context(|| format!("starting `{}`", config.name))?;
                    // Let the hook's own start-up work (and the kernel's) settle first.
                    thread::sleep(Duration::from_millis(200));
                    Some(hook)
                }
                None => None,
            };
            syscall[i].extend(measure(&load, "syscall", 1, args.calls)?);
            sockio[i].extend(measure(&load, "sockio", 1, args.calls / 4)?);
            pingpong[i].extend(measure(&load, "pingpong", 1, args.rounds)?);
            faults[i].extend(measure(&load, "faults", 1, 20_000)?);
            directio[i].extend(measure(&load, "directio", 1, 2_000)?);
            if let Some(hook) = hook {
                hook.stop();
            }
        }
    }
    eprintln!();
    // Paired within each repetition (the hooks ran one after the other in it), before the
    // medians sort the columns: whether `syscalls` over the bare hook is noise or real.
    let index = |prefix: &str| configs.iter().position(|c| c.name.starts_with(prefix));
    let paired = match (index("window: syscalls"), index("bare no-op")) {
        (Some(ours), Some(nop)) => {
            let mut d: Vec<f64> = syscall[ours]
                .iter()
                .zip(&syscall[nop])
                .map(|(o, n)| o - n)
                .collect();
            d.sort_by(|a, b| a.total_cmp(b));
            d
        }
        _ => Vec::new(),
    };
    println!("| what is open | CPU ns per getppid | added | ratio | CPU ns per socket send or receive | added | ratio | CPU ns per ping-pong round trip (2 switches, both sides) | added | ratio |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let results: Vec<(String, f64, f64, f64)> = configs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            (
                c.name.clone(),
                median(&mut syscall[i]),
                median(&mut sockio[i]),
                median(&mut pingpong[i]),
            )
        })
        .collect();
    let (base_sys, base_sock, base_pp) = (results[0].1, results[0].2, results[0].3);
    for (name, sys, sock, pp) in &results {
        println!(
            "| {name} | {sys:.1} | {:+.1} | {:.2}× | {sock:.1} | {:+.1} | {:.2}× | {pp:.0} | {:+.0} | {:.2}× |",
            sys - base_sys,
            sys / base_sys,
            sock - base_sock,
            sock / base_sock,
            pp - base_pp,
            pp / base_pp
        );
    }
    let get = |prefix: &str| index(prefix).map_or(f64::NAN, |i| results[i].1);
    let base = results[0].1;
    let (nop, ours, bpftrace) = (get("bare no-op"), get("window: syscalls"), get("bpftrace"));
    println!();
    println!("- `syscalls` window vs bare no-op `sys_enter` raw tracepoint: {:+.1} ns per syscall (goal: ≤ +15 ns)", ours - nop);
    if let (Some(low), Some(high)) = (paired.first(), paired.last()) {
        let quartile = |q: usize| paired[(paired.len() - 1) * q / 4];
        println!(
            "  paired within each of the {} repetitions: median {:+.1} ns, quartiles {:+.1} / {:+.1} ns, range {low:+.1} to {high:+.1} ns",
            paired.len(),
            quartile(2),
            quartile(1),
            quartile(3)
        );
    }
    println!(
        "- added cost per syscall, bpftrace one-liner / `syscalls` window: {:.1} ns / {:.1} ns = {:.2}× (goal: ≥ 1.5×)",
        bpftrace - base,
        ours - base,
        (bpftrace - base) / (ours - base)
    );
    println!(
        "- default families (no syscall hook): {:+.1} ns per syscall (goal: ≤ 5 ns)",
        get(&format!("window: {}", default_families())) - base
    );
    let sock = |prefix: &str| {
        results
            .iter()
            .find(|r| r.0.starts_with(prefix))
            .map_or(f64::NAN, |r| r.2)
    };
    println!(
        "- `http` window: {:+.1} ns per non-socket syscall (goal: ≤ 5 ns), {:+.1} ns per socket send or receive of a process outside the target",
        get("window: http") - base,
        sock("window: http") - base_sock
    );
    println!();
    println!("| what is open | CPU ns per minor page fault | added | ratio | CPU ns per 4 KiB O_DIRECT write (the writer's thread) | added | ratio |");
    println!("|---|---|---|---|---|---|---|");
    let (base_fault, base_dio) = (median(&mut faults[0]), median(&mut directio[0]));
    for (i, c) in configs.iter().enumerate() {
        let (f, d) = (median(&mut faults[i]), median(&mut directio[i]));
        println!(
            "| {} | {f:.1} | {:+.1} | {:.2}× | {d:.0} | {:+.0} | {:.2}× |",
            c.name,
            f - base_fault,
            f / base_fault,
            d - base_dio,
            d / base_dio
        );
    }
    println!("\n(Goal for default-on: within noise per fault and per block request outside the target. `mem` has no hook on the fault path; `disk` runs a map lookup per bio of the host.)");
    Ok(())
}

/// bpftrace finds tracepoints through tracefs, which a fresh VM may not have mounted.
fn mount_tracefs() -> anyhow::Result<()> {
    if Path::new("/sys/kernel/tracing/events").exists() {
        return Ok(());
    }
    status(Command::new("mount").args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"]))
}

/// Arming a window with a capsule, next to `docker exec` into the target and a bare
/// `docker run` of the capsule image (the RECap paper's comparison: 0.243 s vs 0.083 s exec).
fn capsule_arming(bin: &Path, reps: usize) -> anyhow::Result<()> {
    docker::ensure_engine()?;
    let recap = bin.join("recap");
    let image = String::from_utf8(Command::new(&recap).arg("capsule-image").output()?.stdout)?
        .trim()
        .to_string();
    let target = docker::ScratchContainer::run(
        "recap-bench-target",
        &image,
        &["/usr/bin/busybox", "sleep", "3600"],
    )?;
    let name = target.name.as_str();
    let timed = |cmd: &mut Command| -> anyhow::Result<f64> {
        let t = Instant::now();
        let st = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status()?;
        if !st.success() {
            bail!("{cmd:?} failed");
        }
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    let (mut window, mut exec, mut run) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps {
        let t = Instant::now();
        let mut hook = Hook::spawn(
            Command::new(&recap).args([
                "window",
                "--local",
                "--container",
                name,
                "-d",
                "200ms",
                "--capsule",
                "tcpdump",
            ]),
            HookReady::StderrContains(" armed on "),
        )?;
        hook.wait_ready()?;
        window.push(t.elapsed().as_secs_f64() * 1e3);
        hook.child.wait()?;
        exec.push(timed(Command::new("docker").args([
            "exec",
            name,
            "/usr/bin/busybox",
            "true",
        ]))?);
        run.push(timed(Command::new("docker").args([
            "run",
            "--rm",
            "--network",
            "none",
            &image,
            "/usr/bin/busybox",
            "true",
        ]))?);
    }
    drop(target);
    let (w, e, r) = (median(&mut window), median(&mut exec), median(&mut run));
    println!("## Arming a window with a capsule (median of {reps}, interleaved)\n");
    println!("| what | median | ratio to `docker exec` | ratio to `docker run` |");
    println!("|---|---|---|---|");
    println!("| `recap window --container T --capsule tcpdump`: command → probes counting and tcpdump listening | {w:.0} ms | {:.2}× | {:.2}× |", w / e, w / r);
    println!(
        "| `docker exec T true` | {e:.0} ms | 1.00× | {:.2}× |",
        e / r
    );
    println!(
        "| `docker run --rm {image} true` | {r:.0} ms | {:.2}× | 1.00× |",
        r / e
    );
    println!("\n(RECap paper: 243 ms for its capsule, 83 ms for `docker exec`. Goal: ≤ 1.2× `docker exec`.)");
    Ok(())
}

fn measure(load: &Path, mode: &str, reps: usize, n: usize) -> anyhow::Result<Vec<f64>> {
    let out = Command::new(load)
        .args([mode, &reps.to_string(), &n.to_string()])
        .output()?;
    if !out.status.success() {
        bail!(
            "recap-bench {mode} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect())
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string()
}

enum HookReady {
    StdoutContains(&'static str),
    StderrContains(&'static str),
}

/// A process that holds probes attached while it runs.
pub struct Hook {
    child: Child,
    lines: mpsc::Receiver<String>,
    ready: &'static str,
}

impl Hook {
    /// An in-process `recap window` on `cgroup` for an hour, JSON summary on stdout; ready
    /// when armed.
    pub fn window(recap: &Path, cgroup: &Path, families: &str) -> anyhow::Result<Hook> {
        Hook::spawn(
            Command::new(recap)
                .args(["window", "--local", "--cgroup"])
                .arg(cgroup)
                .args(["-d", "1h", "--probes", families, "-o", "json"]),
            HookReady::StderrContains(" armed on "),
        )
    }

    fn spawn(cmd: &mut Command, ready: HookReady) -> anyhow::Result<Hook> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
        let (tx, lines) = mpsc::channel();
        let (watched, ready): (Box<dyn std::io::Read + Send>, _) = match ready {
            HookReady::StdoutContains(s) => (Box::new(child.stdout.take().unwrap()), s),
            HookReady::StderrContains(s) => (Box::new(child.stderr.take().unwrap()), s),
        };
        thread::spawn(move || {
            for line in BufReader::new(watched).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Ok(Hook {
            child,
            lines,
            ready,
        })
    }

    pub fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(50)) {
                Ok(line) if line.contains(self.ready) => return Ok(()),
                Ok(line) => seen.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        bail!("not ready; it printed:\n{}", seen.join("\n"))
    }

    /// SIGINT (recap and bpftrace end cleanly on it), then wait.
    fn stop(self) {
        self.stop_output();
    }

    /// `stop`, returning what it printed on stdout (a window's JSON summary).
    pub fn stop_output(mut self) -> String {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        drop(self.child.stdin.take());
        self.child
            .wait_with_output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

/// A cgroup holding one idle process: the windows' target, so the measured load is outside.
struct IdleTarget {
    sleeper: Child,
    // Dropped after the sleeper is killed.
    scratch: ScratchCgroup,
}

impl IdleTarget {
    fn start() -> anyhow::Result<Self> {
        let scratch = ScratchCgroup::create("recap-bench")?;
        let sleeper = Command::new("sleep").arg("infinity").spawn()?;
        std::fs::write(scratch.dir.join("cgroup.procs"), sleeper.id().to_string())?;
        Ok(IdleTarget { sleeper, scratch })
    }
}

impl Drop for IdleTarget {
    fn drop(&mut self) {
        let _ = self.sleeper.kill();
        let _ = self.sleeper.wait();
    }
}
