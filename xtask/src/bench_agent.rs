//! `cargo xtask bench --only agent`: arming through a warm agent next to the in-process CLI,
//! side by side; arm latency as 1 to 128 windows are open; the agent's memory and CPU idle
//! and with 32 windows open. Prints medians; asserts nothing.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

use recap_harness::cgroup::ScratchCgroup;

const FAMILIES: &str = "tcp,net,proc,cpu";

struct Agent {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
}

impl Agent {
    fn start(recap: &Path) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("recap-bench-agent-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let socket = dir.join("recap.sock");
        let child = Command::new(recap)
            .arg("agent")
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--policy")
            .arg(dir.join("none.toml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting recap agent")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if Instant::now() > deadline {
                bail!("the agent did not listen on {}", socket.display());
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(Agent { child, dir, socket })
    }

    fn recap<'a>(
        &self,
        recap: &Path,
        args: impl IntoIterator<Item = &'a str>,
    ) -> anyhow::Result<String> {
        let out = Command::new(recap)
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .stderr(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!("recap through the agent failed ({})", out.status);
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// (RSS in MiB, CPU seconds so far) of the agent process.
    fn usage(&self) -> (f64, f64) {
        let pid = self.child.id();
        let rss_kib: f64 = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(f64::NAN);
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command name (which may hold spaces) start at index 2 = state.
        let fields: Vec<&str> = stat
            .rsplit_once(") ")
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        (rss_kib / 1024.0, (ticks(11) + ticks(12)) / hz)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn arm_ms(summary_json: &str) -> anyhow::Result<f64> {
    let v: serde_json::Value = serde_json::from_str(summary_json).context("a JSON summary")?;
    v["arm_ms"].as_f64().context("arm_ms in the summary")
}

/// One window through the agent on `cgroup`: (its arm_ms, the `window start` command's wall time).
fn agent_window(agent: &Agent, recap: &Path, cgroup: &Path) -> anyhow::Result<(f64, f64)> {
    let dir = cgroup.to_str().unwrap();
    let t = Instant::now();
    let id = agent.recap(
        recap,
        [
            "window", "start", "--cgroup", dir, "-d", "1h", "--probes", FAMILIES,
        ],
    )?;
    let wall = t.elapsed().as_secs_f64() * 1e3;
    let summary = agent.recap(recap, ["window", "cancel", &id, "-o", "json"])?;
    Ok((arm_ms(&summary)?, wall))
}

pub fn run(bin: &Path, reps: usize) -> anyhow::Result<()> {
    let recap = bin.join("recap");
    let target = ScratchCgroup::create("recap-bench-agent")?;
    let agent = Agent::start(&recap)?;
    agent_window(&agent, &recap, &target.dir)?; // warm: every program of these families loaded
    let (rss_idle, cpu0) = agent.usage();
    thread::sleep(Duration::from_secs(5));
    let (_, cpu1) = agent.usage();
    let idle_cpu = (cpu1 - cpu0) / 5.0;

    // Side by side, interleaved: through the warm agent, and a window in its own process.
    let (mut via_agent, mut via_agent_wall, mut local, mut local_wall) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps {
        let (arm, wall) = agent_window(&agent, &recap, &target.dir)?;
        via_agent.push(arm);
        via_agent_wall.push(wall);
        let t = Instant::now();
        let out = Command::new(&recap)
            .args(["window", "--local", "--cgroup"])
            .arg(&target.dir)
            .args(["-d", "100ms", "--probes", FAMILIES, "-o", "json"])
            .stderr(Stdio::null())
            .output()?;
        local_wall.push(t.elapsed().as_secs_f64() * 1e3);
        local.push(arm_ms(&String::from_utf8_lossy(&out.stdout))?);
    }
    println!("## Arming through the agent vs in-process (median of {reps}, interleaved; families {FAMILIES}, cgroup target)\n");
    println!("| how | arm_ms (request → counting) | client command, wall |");
    println!("|---|---|---|");
    let (a, l) = (median(&mut via_agent), median(&mut local));
    println!(
        "| warm agent (`recap window start`) | {a:.2} ms | {:.1} ms |",
        median(&mut via_agent_wall)
    );
    println!("| in-process (`recap window --local`, load + attach) | {l:.2} ms | {:.1} ms (whole 100 ms window) |", median(&mut local_wall));
    println!(
        "\n- warm agent / in-process arm time: {:.3}× (goal: ≤ 2 ms warm)\n",
        a / l
    );

    // Arm latency as windows accumulate (each held open on a cgroup of its own).
    println!("## Arm latency through the agent with N windows already open (median of {reps})\n");
    println!("| open before | arm_ms | ratio to 0 open |");
    println!("|---|---|---|");
    let held: Vec<ScratchCgroup> = (0..127)
        .map(|i| ScratchCgroup::create(&format!("recap-bench-held-{i}")))
        .collect::<Result<_, _>>()?;
    let mut open = 0;
    let mut base = f64::NAN;
    let mut usage_at_32 = None;
    for level in [0usize, 1, 32, 64, 127] {
        while open < level {
            let dir = held[open].dir.to_str().unwrap();
            agent.recap(
                &recap,
                [
                    "window", "start", "--cgroup", dir, "-d", "1h", "--probes", FAMILIES,
                ],
            )?;
            open += 1;
        }
        if level == 32 {
            let (rss, c0) = agent.usage();
            thread::sleep(Duration::from_secs(5));
            let (_, c1) = agent.usage();
            usage_at_32 = Some((rss, (c1 - c0) / 5.0));
        }
        let mut arms = Vec::new();
        for _ in 0..reps {
            arms.push(agent_window(&agent, &recap, &target.dir)?.0);
        }
        let m = median(&mut arms);
        if level == 0 {
            base = m;
        }
        println!("| {level} | {m:.2} ms | {:.2}× |", m / base);
    }
    println!("\n(goal: flat within ±20 % from 1 to 128 open windows)\n");
    let (rss32, cpu32) = usage_at_32.unwrap_or((f64::NAN, f64::NAN));
    println!("## The agent's footprint\n");
    println!("| state | RSS | CPU |");
    println!("|---|---|---|");
    println!(
        "| idle (programs loaded, no window) | {rss_idle:.1} MiB | {:.2} % of a CPU |",
        idle_cpu * 100.0
    );
    println!(
        "| 32 windows open ({FAMILIES}) | {rss32:.1} MiB | {:.2} % of a CPU |",
        cpu32 * 100.0
    );
    println!("\n(goal: ≤ 25 MB idle, ≤ 40 MB with 32 windows)\n");
    drop(agent);
    drop(held);
    Ok(())
}

/// Sets `/proc/sys/kernel/pid_max` for the bench's life (the agent sizes `TASK_SLOTS` from
/// it when it starts), and puts the host's value back on drop.
struct PidMax(String);

impl PidMax {
    const PATH: &'static str = "/proc/sys/kernel/pid_max";

    fn set(value: u32) -> anyhow::Result<Self> {
        let was = std::fs::read_to_string(Self::PATH)?.trim().to_string();
        std::fs::write(Self::PATH, value.to_string())?;
        Ok(PidMax(was))
    }
}

impl Drop for PidMax {
    fn drop(&mut self) {
        let _ = std::fs::write(Self::PATH, &self.0);
    }
}

/// `cargo xtask bench --only footprint`: the agent's own CPU (from /proc, over 20 s) with 0, 64
/// and 128 idle windows of the default families open, at pid_max 32768 and 4194304 (the
/// systemd default on production hosts), each cgroup idle: the cost of windows themselves.
pub fn footprint(bin: &Path) -> anyhow::Result<()> {
    let recap = bin.join("recap");
    let families = crate::bench::default_families();
    println!(
        "## The agent's CPU with idle windows open (default families {families}, 20 s each)\n"
    );
    println!("| pid_max | windows open | agent CPU | RSS |");
    println!("|---|---|---|---|");
    let cgroups: Vec<ScratchCgroup> = (0..128)
        .map(|i| ScratchCgroup::create(&format!("recap-bench-idle-{i}")))
        .collect::<Result<_, _>>()?;
    for pid_max in [32_768u32, 4_194_304] {
        let _pid_max = PidMax::set(pid_max)?;
        let agent = Agent::start(&recap)?;
        let mut open = 0;
        for level in [0usize, 64, 128] {
            while open < level {
                let dir = cgroups[open].dir.to_str().unwrap();
                agent.recap(
                    &recap,
                    [
                        "window", "start", "--cgroup", dir, "-d", "1h", "--probes", families,
                    ],
                )?;
                open += 1;
            }
            thread::sleep(Duration::from_secs(2)); // arming work settles
            let (_, c0) = agent.usage();
            thread::sleep(Duration::from_secs(20));
            let (rss, c1) = agent.usage();
            println!(
                "| {pid_max} | {level} | {:.2} % of a CPU | {rss:.1} MiB |",
                (c1 - c0) / 20.0 * 100.0
            );
        }
        drop(agent);
    }
    println!("\n(goal: ≤ 0.5 % of a CPU with 128 open windows, independent of pid_max)\n");
    Ok(())
}
