//! `cargo xtask bench --only http` (`https`, `http2`): wrk (h2load for HTTP/2) against nginx
//! (Debian's) in the target, keep-alive, with
//! no window, an `http` window and a window of the default families, interleaved; req/s and
//! latency as ratios to no window, the eBPF time per request from the kernel's run-time stats
//! of our programs, and the window's request count next to wrk's. Prints; asserts nothing.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{bail, Context};

use recap_harness::cgroup::ScratchCgroup;

use crate::bench::default_families;

/// One nginx worker: it gets one CPU, the load the other. Over TLS a self-signed certificate
/// made in `dir`; HTTP/2 over TLS (ALPN h2).
fn nginx_conf(dir: &Path, port: u16, scheme: Scheme) -> String {
    let d = dir.display();
    let (ssl, certs) = if scheme != Scheme::Http {
        (
            if scheme == Scheme::Http2 {
                " ssl http2"
            } else {
                " ssl"
            },
            format!("    ssl_certificate {d}/cert.pem;\n    ssl_certificate_key {d}/key.pem;\n"),
        )
    } else {
        ("", String::new())
    };
    format!(
        "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n\
           server {{\n    listen 127.0.0.1:{port}{ssl};\n{certs}    keepalive_requests 10000000;\n\
             location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n"
    )
}

/// Plaintext HTTP/1.1, HTTPS (HTTP/1.1 over TLS), HTTP/2 over TLS.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
    Http2,
}

impl Scheme {
    /// As `--only` names it.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
            Scheme::Http2 => "http2",
        }
    }

    fn url_scheme(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https | Scheme::Http2 => "https",
        }
    }
}

struct Nginx {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Nginx {
    fn start(cgroup: &Path, scheme: Scheme) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("recap-bench-nginx-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        if scheme != Scheme::Http {
            recap_harness::tls::self_signed(&dir)?;
        }
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, nginx_conf(&dir, port, scheme))?;
        // The shell joins the target cgroup, then becomes nginx: master and worker are in it.
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {}/cgroup.procs && exec nginx -c {} -p {}",
                cgroup.display(),
                conf.display(),
                dir.display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nginx (cargo xtask setup installs nginx-light)")?;
        let nginx = Nginx { child, dir, port };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(nginx);
            }
            thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "nginx did not listen; see {}/error.log",
            nginx.dir.display()
        )
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: signalling our own child (nginx's master stops its worker on SIGTERM).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct WrkRun {
    rps: f64,
    requests: u64,
    latency_avg_us: f64,
    latency_p99_us: f64,
}

/// The load: wrk, or h2load for HTTP/2 (16 connections, one request in flight on each).
fn load(scheme: Scheme, port: u16, seconds: u64) -> anyhow::Result<WrkRun> {
    match scheme {
        Scheme::Http2 => h2load(port, seconds),
        _ => wrk(scheme, port, seconds),
    }
}

/// h2load reports the mean and the maximum time per request, no percentiles: p99 is NaN.
fn h2load(port: u16, seconds: u64) -> anyhow::Result<WrkRun> {
    let out = Command::new("h2load")
        .args(["-t1", "-c16", "-m1", "-D", &seconds.to_string()])
        .arg(format!("https://127.0.0.1:{port}/"))
        .output()
        .context("running h2load (cargo xtask setup installs nghttp2-client)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |prefix: &str| text.lines().find(|l| l.trim_start().starts_with(prefix));
    let parsed = (|| {
        let finished = line("finished in")?;
        let rps: f64 = finished
            .split(", ")
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        let done: u64 = line("requests:")?
            .split(", ")
            .find(|p| p.ends_with(" done"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        let mean = line("time for request:")?
            .split_whitespace()
            .nth(5)?
            .to_string();
        let (num, unit) = mean.split_at(mean.find(|c: char| c.is_alphabetic())?);
        let n: f64 = num.parse().ok()?;
        let mean_us = match unit {
            "us" => n,
            "ms" => n * 1e3,
            "s" => n * 1e6,
            _ => return None,
        };
        Some(WrkRun {
            rps,
            requests: done,
            latency_avg_us: mean_us,
            latency_p99_us: f64::NAN,
        })
    })();
    parsed.with_context(|| format!("reading h2load's output:\n{text}"))
}

fn wrk(scheme: Scheme, port: u16, seconds: u64) -> anyhow::Result<WrkRun> {
    let out = Command::new("wrk")
        .args(["-t1", "-c16", &format!("-d{seconds}s"), "--latency"])
        .arg(format!("{}://127.0.0.1:{port}/", scheme.url_scheme()))
        .output()
        .context("running wrk (cargo xtask setup installs it)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |prefix: &str, index: usize| -> Option<String> {
        text.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(index).map(str::to_string))
    };
    let us = |v: String| -> Option<f64> {
        let (num, unit) = v.split_at(v.find(|c: char| c.is_alphabetic())?);
        let n: f64 = num.parse().ok()?;
        Some(match unit {
            "us" => n,
            "ms" => n * 1e3,
            "s" => n * 1e6,
            _ => return None,
        })
    };
    let parsed = (|| {
        Some(WrkRun {
            rps: field("Requests/sec:", 1)?.parse().ok()?,
            requests: text
                .lines()
                .find(|l| l.contains(" requests in "))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?,
            latency_avg_us: us(field("Latency", 1)?)?,
            latency_p99_us: us(field("99%", 1)?)?,
        })
    })();
    parsed.with_context(|| format!("reading wrk's output:\n{text}"))
}

/// Run count and run time (ns) of each of our loaded programs, by name (bpftool truncates
/// names to 15 characters).
fn bpf_program_stats() -> std::collections::BTreeMap<String, (u64, u64)> {
    let mut stats = std::collections::BTreeMap::new();
    let Ok(out) = Command::new("bpftool")
        .args(["prog", "show", "-j"])
        .output()
    else {
        return stats;
    };
    let progs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    for p in progs.as_array().into_iter().flatten() {
        let Some(name) = p["name"].as_str().filter(|n| n.starts_with("recap_")) else {
            continue;
        };
        let e: &mut (u64, u64) = stats.entry(name.to_string()).or_default();
        e.0 += p["run_cnt"].as_u64().unwrap_or(0);
        e.1 += p["run_time_ns"].as_u64().unwrap_or(0);
    }
    stats
}

/// What each program ran between two `bpf_program_stats`: runs and ns, by name.
fn ran(
    before: &std::collections::BTreeMap<String, (u64, u64)>,
    after: &std::collections::BTreeMap<String, (u64, u64)>,
) -> std::collections::BTreeMap<String, (u64, u64)> {
    after
        .iter()
        .map(|(name, &(cnt, ns))| {
            let (c0, n0) = before.get(name).copied().unwrap_or_default();
            (
                name.clone(),
                (cnt.saturating_sub(c0), ns.saturating_sub(n0)),
            )
        })
        .filter(|(_, (cnt, _))| *cnt > 0)
        .collect()
}

/// Turns the kernel's per-program run statistics on while it lives (they add two clock reads
/// to every program run: on only while the eBPF time is measured).
struct BpfStats(String);

impl BpfStats {
    fn enable() -> anyhow::Result<Self> {
        let path = "/proc/sys/kernel/bpf_stats_enabled";
        let before = std::fs::read_to_string(path)?.trim().to_string();
        std::fs::write(path, "1")?;
        Ok(BpfStats(before))
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", &self.0);
    }
}

struct Sample {
    wrk: WrkRun,
    /// eBPF ns of the `http` programs and of all of ours, per request.
    http_ns: f64,
    all_ns: f64,
    /// Requests of the shorter run with the stats on.
    timed_requests: u64,
    /// Runs and ns of each program in that run.
    programs: std::collections::BTreeMap<String, (u64, u64)>,
    /// Requests the window counted as served (both wrk runs).
    counted: u64,
}

/// Programs of the `http` family (the socket ones, and the TLS uprobes).
fn http_program(name: &str) -> bool {
    name.starts_with("recap_http_") || name.starts_with("recap_tls_")
}

pub fn run(bin: &Path, scheme: Scheme, reps: usize, seconds: u64) -> anyhow::Result<()> {
    let recap = bin.join("recap");
    let cgroup = ScratchCgroup::create("recap-bench-http")?;
    let nginx = Nginx::start(&cgroup.dir, scheme)?;
    // Over TLS also an identical nginx outside the target, loaded while a window is open on
    // the target: the uprobes are per process, so it must pay nothing.
    let other_cgroup = ScratchCgroup::create("recap-bench-outside")?;
    let other = match scheme {
        Scheme::Https | Scheme::Http2 => Some(Nginx::start(&other_cgroup.dir, scheme)?),
        Scheme::Http => None,
    };
    let mut configs: Vec<(&str, Option<&str>, u16)> = vec![
        ("no window", None, nginx.port),
        ("window: http", Some("http"), nginx.port),
        (
            "window: default families",
            Some(default_families()),
            nginx.port,
        ),
    ];
    if let Some(other) = &other {
        configs.push(("nginx outside the target, no window", None, other.port));
        configs.push((
            "nginx outside the target, window: http on the target",
            Some("http"),
            other.port,
        ));
    }
    let mut samples: Vec<Vec<Sample>> = configs.iter().map(|_| Vec::new()).collect();
    for (_, _, port) in &configs {
        load(scheme, *port, 1)?; // warm-up
    }
    for rep in 0..reps {
        eprint!("\rxtask: {}, repetition {}/{reps}", scheme.name(), rep + 1);
        for (i, (_, families, port)) in configs.iter().enumerate() {
            let port = *port;
            let window = match families {
                Some(f) => {
                    let mut hook = crate::bench::Hook::window(&recap, &cgroup.dir, f)?;
                    hook.wait_ready()?;
                    Some(hook)
                }
                None => None,
            };
            // Throughput with the kernel's run-time stats off (they cost two clock reads per
            // program run), then a shorter run with them on for the eBPF time per request.
            let wrk = load(scheme, port, seconds)?;
            let (http_ns, all_ns, timed_requests, programs) = if window.is_some() {
                let stats = BpfStats::enable()?;
                let before = bpf_program_stats();
                let timed = load(scheme, port, 2)?;
                let programs = ran(&before, &bpf_program_stats());
                drop(stats);
                let per_request = |which: &dyn Fn(&str) -> bool| {
                    let ns: u64 = programs
                        .iter()
                        .filter(|(name, _)| which(name))
                        .map(|(_, (_, ns))| ns)
                        .sum();
                    ns as f64 / timed.requests.max(1) as f64
                };
                (
                    per_request(&http_program),
                    per_request(&|_| true),
                    timed.requests,
                    programs,
                )
            } else {
                (0.0, 0.0, 0, Default::default())
            };
            let counted = match window {
                Some(w) => {
                    let summary: serde_json::Value =
                        serde_json::from_str(&w.stop_output()).unwrap_or_default();
                    summary
                        .pointer("/http/server/completed")
                        .and_then(serde_json::Value::as_u64)
                        .unwrap_or(0)
                }
                None => 0,
            };
            samples[i].push(Sample {
                http_ns,
                all_ns,
                timed_requests,
                programs,
                counted,
                wrk,
            });
        }
    }
    eprintln!();
    drop(nginx);
    let title = match scheme {
        Scheme::Http => "HTTP",
        Scheme::Https => "HTTPS (TLS 1.3, OpenSSL 3 in nginx: http reads it through uprobes)",
        Scheme::Http2 => {
            "HTTP/2 over TLS (ALPN h2; frames walked in the kernel, HPACK decoded in recap)"
        }
    };
    let tool = match scheme {
        Scheme::Http2 => "h2load -t1 -c16 -m1",
        _ => "wrk -t1 -c16",
    };
    println!(
        "## {title}: {tool} (keep-alive) against nginx (1 worker) in the target, {seconds} s × {reps} interleaved reps (medians)\n"
    );
    println!("| what is open | req/s | ratio | latency avg | ratio | latency p99 | eBPF ns per request (http programs, stats on) | (all our programs) | requests counted / wrk's |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let med = |v: &mut Vec<f64>| crate::bench::median(v);
    let base_rps = med(&mut samples[0].iter().map(|s| s.wrk.rps).collect());
    let base_lat = med(&mut samples[0].iter().map(|s| s.wrk.latency_avg_us).collect());
    for (i, ((name, families, _), s)) in configs.iter().zip(&samples).enumerate() {
        // Rows of the outside nginx compare with its own no-window row.
        let (base_rps, base_lat) = if i >= 3 {
            (
                med(&mut samples[3].iter().map(|s| s.wrk.rps).collect()),
                med(&mut samples[3].iter().map(|s| s.wrk.latency_avg_us).collect()),
            )
        } else {
            (base_rps, base_lat)
        };
        let rps = med(&mut s.iter().map(|s| s.wrk.rps).collect());
        let lat = med(&mut s.iter().map(|s| s.wrk.latency_avg_us).collect());
        let p99 = med(&mut s.iter().map(|s| s.wrk.latency_p99_us).collect());
        let (ebpf, counts) = if families.is_some() {
            let http = med(&mut s.iter().map(|s| s.http_ns).collect());
            let all = med(&mut s.iter().map(|s| s.all_ns).collect());
            let counted: Vec<String> = s
                .iter()
                .map(|s| format!("{}/{}", s.counted, s.wrk.requests + s.timed_requests))
                .collect();
            (format!("{http:.0} | {all:.0}"), counted.join(", "))
        } else {
            ("- | -".to_string(), "-".to_string())
        };
        println!(
            "| {name} | {rps:.0} | {:.3}× | {lat:.0} µs | {:.3}× | {p99:.0} µs | {ebpf} | {counts} |",
            rps / base_rps,
            lat / base_lat
        );
    }
    // Where the eBPF time of the `http` window goes, program by program (its last rep).
    if let Some(last) = samples[1].last() {
        let requests = last.timed_requests.max(1) as f64;
        println!("\n| program (window: http, last rep) | runs per request | ns per run | ns per request |");
        println!("|---|---|---|---|");
        for (name, (cnt, ns)) in &last.programs {
            println!(
                "| {name} | {:.2} | {:.0} | {:.0} |",
                *cnt as f64 / requests,
                *ns as f64 / (*cnt).max(1) as f64,
                *ns as f64 / requests
            );
        }
    }
    let goal = match scheme {
        Scheme::Http => "≤ 2 % req/s lost, ≤ 250 ns of eBPF time per request; Grafana Beyla publishes ~500 ns",
        Scheme::Https => "≤ 3 % req/s lost; the eBPF time excludes the uprobes' traps, which the req/s ratio includes",
        Scheme::Http2 => "report (the issue sets none); the eBPF time excludes the uprobes' traps and recap's own HPACK decoding, which the req/s ratio includes; h2load gives no p99 (NaN)",
    };
    println!("\n(Goal: {goal}. A window counts responses written; wrk counts responses read before it stops, so the window may be ahead by up to its 16 connections.)");
    Ok(())
}
