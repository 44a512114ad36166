//! `recap window`: arguments, validated into a `WindowSpec` before anything touches the kernel.

use std::{
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::{Args, ValueEnum};

use super::{signals::StopSignals, usage};
use crate::{
    capsule::CapsuleSpec,
    export::{
        otlp,
        prometheus::{self, Published},
    },
    families::Family,
    report::{render_table, WindowSummary},
    targets::TargetSpec,
    text::units::{format_duration, parse_duration, parse_size},
    window::{
        live::LiveView, new_window_id, CapsuleOptions, ExportOptions, SharedEngine, Window,
        WindowObserver, WindowSpec,
    },
};

/// `recap window [OPTIONS]` (one window, shown live, summarised), or `recap window ACTION`
/// for windows held by the agent.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct WindowCommand {
    #[command(subcommand)]
    pub action: Option<super::windows::WindowAction>,
    #[command(flatten)]
    pub args: WindowArgs,
    /// Run the window in this process even if an agent answers on the socket.
    #[arg(long)]
    pub local: bool,
    /// The agent's socket.
    #[arg(long, global = true, value_name = "PATH", default_value = crate::agent::DEFAULT_SOCKET, env = "RECAP_SOCKET")]
    pub socket: PathBuf,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).multiple(true).args(["cgroup", "pid", "container", "selector", "pod"])))]
pub struct WindowArgs {
    /// A cgroup v2 directory (e.g. /sys/fs/cgroup/unified/docker/<id>).
    #[arg(long, value_name = "DIR")]
    pub cgroup: Option<PathBuf>,
    /// A process: the window covers its cgroup v2 (and ends if the process exits).
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
    /// A Docker container: name, id, or an unambiguous id prefix.
    #[arg(long, value_name = "NAME|ID")]
    pub container: Option<String>,
    /// A Kubernetes pod, NAMESPACE/NAME, found through the node runtime's CRI API: the window
    /// covers the pod cgroup and every container in it (with --container NAME: that container).
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub pod: Option<String>,
    /// The container runtime's CRI socket (for --pod).
    #[arg(long, value_name = "PATH", default_value = crate::targets::pod::DEFAULT_CRI_ENDPOINT, env = "RECAP_CRI_ENDPOINT")]
    pub cri_endpoint: PathBuf,
    /// Every running Docker container whose labels hold each KEY=VALUE: one window per
    /// container, each exact and isolated, reported together with the totals.
    #[arg(long, value_name = "KEY=VALUE,...")]
    pub selector: Option<crate::fleet::Selector>,
    /// An auxiliary function for the window: a sidecar joining the container's PID and network
    /// namespaces (`tcpdump[=FILTER]`, `strace[=ARGS]`, `gdb[=every:DURATION]`,
    /// `image=REF,cmd=PROGRAM ARGS`: words split on spaces, never through a shell), or made by
    /// RECap (`archive=PATH[,PATH...]`, `snapshot`). Repeat for several. Needs --container or
    /// --pod.
    #[arg(long, value_name = "TOOL[=ARGS]", value_parser = clap::value_parser!(CapsuleSpec))]
    pub capsule: Vec<CapsuleSpec>,
    /// Where capsules write: `<DIR>/<window-id>/{tcpdump.pcap,strace.log,stacks.txt,...}`.
    #[arg(long, value_name = "DIR", default_value = crate::window::DEFAULT_ARTIFACTS)]
    pub artifacts: PathBuf,
    /// Each capsule stops when its artifact reaches this size.
    #[arg(long, value_name = "SIZE", default_value = "100MiB", value_parser = parse_size)]
    pub capsule_max_size: u64,
    /// Serve Prometheus metrics at ADDR/metrics while the window is open (`9464` and `:9464`
    /// mean 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR", value_parser = prometheus::parse_addr)]
    pub prometheus: Option<SocketAddr>,
    /// Keep serving the final values this long after the window, for a last scrape.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub prometheus_linger: Duration,
    /// Send metrics and window start/end logs over OTLP (default from OTEL_EXPORTER_OTLP_ENDPOINT).
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// grpc or http/protobuf (default from OTEL_EXPORTER_OTLP_PROTOCOL, else grpc).
    #[arg(long, value_name = "PROTOCOL")]
    pub otlp_protocol: Option<otlp::Protocol>,
    /// An extra OTLP header, KEY=VALUE (repeatable; also OTEL_EXPORTER_OTLP_HEADERS).
    #[arg(long, value_name = "KEY=VALUE", value_parser = key_value)]
    pub otlp_header: Vec<(String, String)>,
    /// An extra OTLP resource attribute, KEY=VALUE (repeatable; also OTEL_RESOURCE_ATTRIBUTES).
    #[arg(long, value_name = "KEY=VALUE", value_parser = key_value)]
    pub otlp_resource: Vec<(String, String)>,
    /// Count the target cgroup's own tasks and sockets alone, not those of the cgroups below
    /// it (by default a window covers the whole subtree: a pod's containers, a service's
    /// sub-cgroups).
    #[arg(long)]
    pub target_only: bool,
    /// How long the window stays open (500ms, 30s, 5m, 1h).
    #[arg(long, short = 'd', default_value = "30s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub duration: Duration,
    /// Refuse durations above this.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub max_duration: Duration,
    /// Probe families, comma-separated, or `all` (`recap families` lists them). Default: the
    /// families on by default; `syscalls` (~90 ns per syscall of every process on the host while
    /// the window is open) and `disk` are opt-in.
    #[arg(long, value_delimiter = ',', value_name = "FAMILIES")]
    pub probes: Vec<String>,
    /// Summary format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// How many syscalls and program names the table shows.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// gRPC paths (`/package.Service/Method`) told apart per window (1-1024): calls to paths
    /// beyond the first N seen are counted as `other` (bounds the exports' label cardinality).
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub grpc_paths: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

impl WindowArgs {
    pub fn into_spec(self) -> anyhow::Result<(WindowSpec, Output, usize)> {
        self.into_spec_with_env(|k| std::env::var(k).ok())
    }

    /// As `into_spec`, reading the OTEL_* variables through `env` (the agent passes the
    /// caller's).
    pub fn into_spec_with_env(
        self,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<(WindowSpec, Output, usize)> {
        if self.duration > self.max_duration {
            usage!(
                "--duration {} is over the maximum {}; pass --max-duration to allow longer windows",
                format_duration(self.duration),
                format_duration(self.max_duration)
            );
        }
        let families = parse_families(&self.probes)?;
        if self.selector.is_some() {
            usage!("--selector opens one window per container: `recap window --selector ...` does that (an agent's `window start` takes one target)");
        }
        let target = match (self.cgroup, self.pid, self.container, self.pod) {
            (Some(path), None, None, None) => TargetSpec::Cgroup { path },
            (None, Some(pid), None, None) => TargetSpec::Pid { pid },
            (None, None, Some(name_or_id), None) => TargetSpec::Container { name_or_id },
            (None, None, container, Some(pod)) => {
                let (namespace, name) = pod.split_once('/').unwrap_or((&pod, ""));
                TargetSpec::Pod {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                    container,
                    cri_endpoint: self.cri_endpoint,
                }
            }
            _ => usage!("give exactly one of --cgroup, --pid, --container, --pod (with --container for one of its containers) or --selector"),
        };
        let capsules = CapsuleOptions {
            specs: self.capsule,
            artifacts: self.artifacts,
            max_bytes: self.capsule_max_size,
            owner: crate::capsule::artifacts::sudo_requester(),
        };
        let otlp = otlp::config(
            self.otlp_endpoint,
            self.otlp_protocol,
            &self.otlp_header,
            &self.otlp_resource,
            env,
        )
        .map_err(|e| anyhow::Error::new(super::UsageError(e)))?;
        let export = ExportOptions {
            prometheus: self.prometheus,
            prometheus_linger: self.prometheus_linger,
            otlp,
        };
        let spec = WindowSpec {
            target,
            target_only: self.target_only,
            duration: self.duration,
            families,
            capsules,
            export,
            grpc_paths: self.grpc_paths as usize,
        };
        spec.check()
            .map_err(|e| anyhow::Error::new(super::UsageError(e)))?;
        Ok((spec, self.output, self.top))
    }
}

/// The summary on stdout, as a table or JSON. Not `print!`: a closed stdout
/// (`recap window ... | true`) is an error to report, not a panic.
pub fn print_summary(summary: &WindowSummary, output: Output, top: usize) -> anyhow::Result<()> {
    let text = match output {
        Output::Table => render_table(summary, top),
        Output::Json => {
            serde_json::to_string_pretty(summary).context("encoding the summary")? + "\n"
        }
    };
    print_out(&text)
}

pub fn print_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("writing to stdout (was the reading end closed?)")
}

fn key_value(s: &str) -> Result<(String, String), String> {
    otlp::parse_pairs(s)?
        .pop()
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))
}

pub fn parse_families(list: &[String]) -> anyhow::Result<Vec<Family>> {
    if list.is_empty() {
        return Ok(Family::defaults());
    }
    let mut out = Vec::new();
    for item in list.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        if item == "all" {
            out.extend(Family::ALL);
        } else {
            out.push(
                item.parse::<Family>()
                    .map_err(|e| anyhow::Error::new(super::UsageError(e)))?,
            );
        }
    }
    if out.is_empty() {
        usage!("--probes is empty; give families such as tcp,net");
    }
    out.sort();
    out.dedup();
    Ok(out)
}

pub async fn run(mut command: WindowCommand) -> anyhow::Result<()> {
    if let Some(action) = command.action {
        return super::windows::run(action, &command.socket).await;
    }
    if let Some(selector) = command.args.selector.take() {
        return super::selected::run(command.args, selector, command.local, &command.socket).await;
    }
    // Through the agent when one answers (programs already loaded, the window kept in its
    // history); in this process otherwise. `--prometheus` serves from this process, so it runs
    // here.
    if !command.local && command.args.prometheus.is_none() {
        match crate::agent::client::connect(&command.socket).await {
            Ok(client) => {
                let (spec, output, top) = command.args.into_spec()?;
                return super::windows::run_through_agent(client, &spec, output, top).await;
            }
            Err(crate::agent::client::ConnectError::NoAgent(_)) => {}
            Err(e) => log::warn!("{e}; running the window in this process"),
        }
    }
    run_local(command.args).await
}

/// One window in this process: load, attach, count, detach, unload.
pub async fn run_local(args: WindowArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let (spec, output, top) = args.into_spec()?;
    // Signals first, so a Ctrl-C while arming still ends the window (at once, once armed).
    // SIGHUP (the terminal went away) ends it the same way: nothing is left running.
    let mut signals = StopSignals::install(true)?;
    let mut observers: Vec<Box<dyn WindowObserver>> = vec![Box::new(LiveView::new(
        output == Output::Table,
        spec.duration,
    ))];
    // Bound before anything is attached: a busy port fails the window with nothing to undo.
    let endpoint = match spec.export.prometheus {
        Some(addr) => {
            let published = Published::default();
            let endpoint = prometheus::Endpoint::bind(addr, published.clone()).await?;
            eprintln!(
                "recap: Prometheus metrics at http://{}/metrics",
                endpoint.addr
            );
            observers.push(Box::new(published));
            Some(endpoint)
        }
        None => None,
    };
    let engine = SharedEngine::on_demand(1);
    let mut window = Window::arm(&spec, new_window_id(), engine, observers, started, &|_| {
        Ok(())
    })
    .await?;
    let status = window.run_until(signals.next()).await;
    // A second Ctrl-C (or SIGTERM, SIGHUP) while closing cuts the export flush short.
    let summary = window.close(status, signals.next()).await?;
    print_summary(&summary, output, top)?;
    if let Some(endpoint) = &endpoint {
        // The summary is out; keep the final values up for one more scrape, unless told to stop.
        let linger = spec.export.prometheus_linger;
        eprintln!(
            "recap: serving the final metrics at http://{}/metrics for {} (Ctrl-C ends it now)",
            endpoint.addr,
            format_duration(linger)
        );
        tokio::select! {
            _ = tokio::time::sleep(linger) => {}
            _ = signals.next() => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn window_args(args: &[&str]) -> Result<WindowArgs, clap::Error> {
        let mut argv = vec!["recap", "window"];
        argv.extend(args);
        Cli::try_parse_from(argv).map(|cli| match cli.command {
            Command::Window(w) => w.args,
            other => panic!("not a window command: {other:?}"),
        })
    }

    #[test]
    fn defaults_and_families() {
        let (spec, output, _) = window_args(&["--pid", "1"]).unwrap().into_spec().unwrap();
        assert_eq!(spec.duration, Duration::from_secs(30));
        assert_eq!(spec.families, Family::defaults());
        assert_eq!(output, Output::Table);
        let (spec, _, _) = window_args(&["--pid", "1", "--probes", "syscalls,tcp,tcp"])
            .unwrap()
            .into_spec()
            .unwrap();
        assert_eq!(spec.families, vec![Family::TCP, Family::SYSCALLS]);
        let (spec, _, _) = window_args(&["--pid", "1", "--probes", "all"])
            .unwrap()
            .into_spec()
            .unwrap();
        assert_eq!(spec.families.len(), Family::ALL.len());
    }

    #[test]
    fn bad_input_is_refused_with_a_reason() {
        let err = |a: &[&str]| window_args(a).unwrap().into_spec().unwrap_err().to_string();
        assert!(err(&["--pid", "1", "-d", "0s"]).contains("more than 0"));
        assert!(err(&["--pid", "1", "-d", "2h"]).contains("over the maximum 1h"));
        assert!(
            err(&["--pid", "1", "--probes", "tcp,grpc"]).contains("unknown probe family `grpc`")
        );
        assert!(window_args(&["-d", "5s"]).is_err(), "a target is required");
        assert!(
            err(&["--pid", "1", "--cgroup", "/x"]).contains("exactly one"),
            "one target only"
        );
        assert!(err(&["--pod", "checkout", "-d", "5s"]).contains("NAMESPACE/NAME"));
        assert!(err(&["--container", "web", "--pid", "1"]).contains("exactly one"));
        for negative in [
            &["--pid", "1", "--duration=-5s"][..],
            &["--pid", "1", "-d", "-1s"],
        ] {
            let e = window_args(negative).unwrap_err().to_string();
            assert!(e.contains("negative"), "{e}");
        }
        let (spec, _, _) = window_args(&["--pid", "1", "-d", "2h", "--max-duration", "3h"])
            .unwrap()
            .into_spec()
            .unwrap();
        assert_eq!(spec.duration, Duration::from_secs(7200));
    }
}
