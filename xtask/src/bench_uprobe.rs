//! `cargo xtask bench --only uprobe`: what a uprobe costs the probed process, by the kind of
//! instruction it sits on. The kernel emulates a probed `push` of a register, a `nop` and the
//! relative branches, and single-steps any other instruction out of line (a second trap):
//! where `http`'s TLS probes go follows from these figures (recap-agent's
//! `probes/probe_points.rs`). A function of known instructions (below, in this binary) is
//! called in a loop by a child process, with a uprobe through tracefs at one of them (an
//! event whose filter never matches: the trap and the kernel's uprobe path, no tracing).

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

// The probed function: each label one instruction kind, then the same function's end.
std::arch::global_asm!(
    ".globl recap_bench_probed",
    ".globl recap_bench_at_nop",
    ".globl recap_bench_at_push",
    ".globl recap_bench_at_sub",
    ".globl recap_bench_at_ret",
    "recap_bench_probed:",
    "endbr64",
    "recap_bench_at_nop:",
    "nop dword ptr [rax]",
    "recap_bench_at_push:",
    "push r13",
    "recap_bench_at_sub:",
    "sub rsp, 0x18",
    "add rsp, 0x18",
    "pop r13",
    "xor eax, eax",
    "recap_bench_at_ret:",
    "ret",
);

unsafe extern "C" {
    fn recap_bench_probed() -> u32;
    static recap_bench_at_nop: u8;
    static recap_bench_at_push: u8;
    static recap_bench_at_sub: u8;
    static recap_bench_at_ret: u8;
}

/// Calls per measurement.
const CALLS: u64 = 200_000;
/// The tracefs group of the benchmark's events.
const GROUP: &str = "recap_bench_uprobe";

/// Runs in the child (`RECAP_BENCH_UPROBE_CALLS` set): calls the function, prints ns per call.
pub fn child_if_asked() {
    let Ok(calls) = std::env::var("RECAP_BENCH_UPROBE_CALLS") else {
        return;
    };
    let calls: u64 = calls.parse().unwrap_or(CALLS);
    let started = Instant::now();
    let mut sum = 0u64;
    for _ in 0..calls {
        // SAFETY: the function above: it saves and restores what it touches and returns 0.
        sum += u64::from(unsafe { recap_bench_probed() });
    }
    let ns = started.elapsed().as_nanos() as f64 / calls as f64;
    println!("{ns:.1} {sum}");
    std::process::exit(0);
}

/// One probe: the tracefs kind (`p` at an instruction, `r` a return probe there) and where.
struct Probe {
    what: &'static str,
    kind: &'static str,
    at: u64,
}

pub fn run(reps: usize) -> anyhow::Result<()> {
    let tracefs = Path::new("/sys/kernel/tracing");
    if !tracefs.join("uprobe_events").exists() {
        let _ = Command::new("mount")
            .args(["-t", "tracefs", "nodev"])
            .arg(tracefs)
            .status();
    }
    let exe = std::fs::read_link("/proc/self/exe")?;
    let offset = |address: u64| file_offset(address).context("this binary's code in its maps");
    // The addresses of labels in this binary's code, never read through.
    let (start, nop, push, sub, ret) = (
        offset(recap_bench_probed as *const () as u64)?,
        offset(&raw const recap_bench_at_nop as u64)?,
        offset(&raw const recap_bench_at_push as u64)?,
        offset(&raw const recap_bench_at_sub as u64)?,
        offset(&raw const recap_bench_at_ret as u64)?,
    );
    let rows: Vec<(&str, Vec<Probe>)> = vec![
        ("no probe", vec![]),
        (
            "`push %r13` (emulated)",
            vec![Probe {
                what: "push",
                kind: "p",
                at: push,
            }],
        ),
        (
            "`nopl (%rax)` (emulated)",
            vec![Probe {
                what: "nop",
                kind: "p",
                at: nop,
            }],
        ),
        (
            "`endbr64` (single-stepped)",
            vec![Probe {
                what: "endbr",
                kind: "p",
                at: start,
            }],
        ),
        (
            "`sub $0x18,%rsp` (single-stepped)",
            vec![Probe {
                what: "sub",
                kind: "p",
                at: sub,
            }],
        ),
        (
            "`ret` (single-stepped)",
            vec![Probe {
                what: "ret",
                kind: "p",
                at: ret,
            }],
        ),
        (
            "entry and return probe at `push %r13` (http's TLS probes)",
            vec![
                Probe {
                    what: "push",
                    kind: "p",
                    at: push,
                },
                Probe {
                    what: "pushret",
                    kind: "r",
                    at: push,
                },
            ],
        ),
    ];
    let mut ns: Vec<Vec<f64>> = vec![Vec::new(); rows.len()];
    for rep in 0..reps {
        eprint!("\rxtask: uprobe, repetition {}/{reps}", rep + 1);
        for (i, (_, probes)) in rows.iter().enumerate() {
            let events = Events::add(tracefs, &exe, probes)?;
            ns[i].push(measure(&exe)?);
            drop(events);
        }
    }
    eprintln!();
    println!(
        "## A uprobe's cost by the instruction it is on: a function called {CALLS} times by one process, {reps} interleaved reps (medians)\n"
    );
    println!("| probe on | ns per call | added ns |");
    println!("|---|---|---|");
    let base = median(&mut ns[0]);
    for (i, (what, _)) in rows.iter().enumerate() {
        let m = median(&mut ns[i]);
        println!("| {what} | {m:.0} | {:.0} |", m - base);
    }
    println!(
        "\n(A tracefs uprobe event whose filter never matches: the trap and the kernel's uprobe path, no eBPF program.)\n"
    );
    Ok(())
}

fn measure(exe: &Path) -> anyhow::Result<f64> {
    let out = Command::new(exe)
        .env("RECAP_BENCH_UPROBE_CALLS", CALLS.to_string())
        .output()?;
    if !out.status.success() {
        bail!("the probed child failed: {out:?}");
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("the probed child printed {text:?}"))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The file offset of `address` in this process's executable, from its mapping.
fn file_offset(address: u64) -> Option<u64> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let exe = std::fs::read_link("/proc/self/exe").ok()?;
    let exe = exe.to_str()?;
    maps.lines().find_map(|line| {
        let mut f = line.split_whitespace();
        let (range, _perms, offset) = (f.next()?, f.next()?, f.next()?);
        if f.nth(2)? != exe {
            return None;
        }
        let (lo, hi) = range.split_once('-')?;
        let (lo, hi) = (
            u64::from_str_radix(lo, 16).ok()?,
            u64::from_str_radix(hi, 16).ok()?,
        );
        let offset = u64::from_str_radix(offset, 16).ok()?;
        (lo..hi).contains(&address).then(|| address - lo + offset)
    })
}

/// The benchmark's uprobe events, enabled; removed when dropped.
struct Events<'a> {
    tracefs: &'a Path,
    names: Vec<String>,
}

impl<'a> Events<'a> {
    fn add(tracefs: &'a Path, exe: &Path, probes: &[Probe]) -> anyhow::Result<Self> {
        let mut events = Events {
            tracefs,
            names: Vec::new(),
        };
        for p in probes {
            let name = format!("{}_{}", p.what, p.kind);
            let line = format!("{}:{GROUP}/{name} {}:{:#x}\n", p.kind, exe.display(), p.at);
            append(&tracefs.join("uprobe_events"), &line)?;
            events.names.push(name.clone());
            let dir = tracefs.join("events").join(GROUP).join(&name);
            std::fs::write(dir.join("filter"), "common_pid == 1")?;
            std::fs::write(dir.join("enable"), "1")?;
        }
        Ok(events)
    }
}

impl Drop for Events<'_> {
    fn drop(&mut self) {
        for name in &self.names {
            let dir = self.tracefs.join("events").join(GROUP).join(name);
            let _ = std::fs::write(dir.join("enable"), "0");
            let _ = append(
                &self.tracefs.join("uprobe_events"),
                &format!("-:{GROUP}/{name}\n"),
            );
        }
        // The kernel removes a probe when its event goes; give it a moment before the next.
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn append(path: &Path, line: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    f.write_all(line.as_bytes())
        .with_context(|| format!("{}: {line:?}", path.display()))
}
