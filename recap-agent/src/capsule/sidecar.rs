//! One capsule container: created with least privilege (beside a Docker container, or in a
//! pod's sandbox through CRI: `cri.rs`), started, watched for its first line of output (the
//! tool is attached), stopped and removed. `Drop` cannot await, so `stop` is an explicit async
//! call; the reaper covers the case where it never runs.

use std::{collections::HashMap, path::Path, sync::Arc, time::Duration};

use anyhow::{bail, Context};
use bollard::{
    models::{
        ContainerCreateBody, HostConfig, HostConfigLogConfig, Mount, MountType, ResourcesUlimits,
    },
    query_parameters::{
        CreateContainerOptionsBuilder, KillContainerOptionsBuilder, LogsOptionsBuilder,
        RemoveContainerOptionsBuilder,
    },
    Docker,
};
use futures_util::StreamExt;

use super::{
    artifacts::SafeDir,
    cri::{CriContainer, NewCapsule, PodSite},
    image, CapsuleOutcome, CapsuleReport, CapsuleSpec, Tool, LABEL_OWNER, LABEL_TARGET,
    LABEL_WINDOW,
};
use crate::targets::cgroup;

/// Where a window's capsules run.
#[derive(Clone)]
pub enum Runtime {
    /// Beside a Docker container, in its namespaces.
    Docker(Docker),
    /// In a pod's sandbox, through the node runtime's CRI API.
    Cri(Arc<PodSite>),
}

/// Everything a capsule needs to know about its window.
pub struct CapsuleContext<'a> {
    pub window_id: &'a str,
    /// The container whose namespaces the capsule joins (Docker's or the CRI runtime's id).
    pub target_id: &'a str,
    /// The target's cgroup: its processes are what strace attaches to.
    pub cgroup_dir: &'a Path,
    /// `<artifacts>/<window-id>`, mounted at /out.
    pub artifact_dir: &'a Arc<SafeDir>,
    pub max_bytes: u64,
    /// Who the artifacts are handed to when the capsule is done (uid, gid).
    pub owner: Option<(u32, u32)>,
    /// The tool ends by itself this long after it starts (the window's duration plus a
    /// grace period), even if nobody stops it.
    pub deadline: Duration,
}

/// The lifeline: a FIFO in the window's artifact directory that the owner (the `recap` process
/// or agent running the window) holds open. Each capsule waits for its end of file, which comes
/// when the owner is gone however it went (the kernel closes its descriptors, even on SIGKILL),
/// and then stops its tool. With the deadline, a capsule never outlives its window by more than
/// the grace period, and never its owner.
pub const LIFELINE: &str = ".lifeline";

/// Runs as the capsule's main process (`BUSYBOX sh -c SCRIPT capsule BUSYBOX DEADLINE_S FSIZE
/// OUT LIFELINE TOOL ARGS...`): sets the file size cap in 512-byte blocks unless FSIZE is `-` (Docker
/// sets it), starts the tool with its arguments as given (never through the shell), its output
/// into OUT unless `-`, forwards SIGTERM to it, stops it when the lifeline ends or the deadline
/// passes, and exits with its status. BUSYBOX: RECap's images have it on their PATH; a caller's
/// image gets the host's static one mounted read-only (`CUSTOM_BUSYBOX`).
const SUPERVISOR: &str = r#"bb="$1"; deadline="$2"; fsize="$3"; out="$4"; lifeline="$5"; shift 5
if [ "$fsize" != - ]; then ulimit -f "$fsize" || exit 125; fi
echo "recap: capsule started"
if [ "$out" = - ]; then "$@" & else "$@" >"$out" 2>&1 & fi
tool=$!
trap 'kill -TERM "$tool" 2>/dev/null' TERM INT
( "$bb" cat "$lifeline" >/dev/null 2>&1; kill -TERM "$tool" 2>/dev/null ) &
( "$bb" sleep "$deadline"; kill -TERM "$tool" 2>/dev/null ) &
wait "$tool"; status=$?
while kill -0 "$tool" 2>/dev/null; do wait "$tool"; status=$?; done
exit "$status""#;

pub struct Capsule {
    pub spec: CapsuleSpec,
    pub name: String,
    container: Container,
    artifact_dir: Arc<SafeDir>,
    max_bytes: u64,
    owner: Option<(u32, u32)>,
}

/// The capsule's container, in the runtime it was made in.
enum Container {
    Docker { docker: Docker, id: String },
    Cri(CriContainer),
}

/// Exit status of a process killed by SIGXFSZ (RLIMIT_FSIZE reached): 128 + 25.
const EXIT_SIGXFSZ: i64 = 153;

impl Capsule {
    /// Creates and starts the capsule, and waits until the tool reports that it is attached.
    pub async fn start(
        runtime: &Runtime,
        spec: &CapsuleSpec,
        ctx: &CapsuleContext<'_>,
    ) -> anyhow::Result<Capsule> {
        let name = format!("recap-{}-{}", ctx.window_id, spec.tool.name());
        let (tool, capabilities) = tool_command(spec, ctx)?;
        let labels = labels(spec, ctx);
        let container = match runtime {
            Runtime::Docker(docker) => {
                let body = docker_create_body(spec, tool, capabilities, labels, ctx)?;
                let options = CreateContainerOptionsBuilder::new().name(&name).build();
                let created = docker
                    .create_container(Some(options), body)
                    .await
                    .with_context(|| format!("creating capsule {name}"))?;
                Container::Docker {
                    docker: docker.clone(),
                    id: created.id,
                }
            }
            Runtime::Cri(_) if spec.tool == Tool::Image => {
                bail!("a capsule of your own image runs beside Docker containers only for now (in a pod, CRI keeps no bound on its output)")
            }
            Runtime::Cri(site) => {
                // CRI sets no file size limit: the supervisor does, in 512-byte blocks.
                let fsize = (ctx.max_bytes / 512).max(1).to_string();
                let command = supervised(spec, ctx, &fsize, tool);
                let made = site
                    .create(NewCapsule {
                        name: &name,
                        image: spec.image_reference(true),
                        busybox: busybox_for(spec)?,
                        command,
                        capabilities: &capabilities,
                        labels,
                        out_dir: ctx.artifact_dir.path(),
                    })
                    .await
                    .with_context(|| format!("creating capsule {name} in the pod"))?;
                Container::Cri(made)
            }
        };
        let capsule = Capsule {
            spec: spec.clone(),
            name,
            container,
            artifact_dir: ctx.artifact_dir.clone(),
            max_bytes: ctx.max_bytes,
            owner: ctx.owner,
        };
        if let Err(e) = capsule.start_and_wait_attached().await {
            let tail = capsule.log_tail().await;
            capsule.remove().await;
            return Err(e.context(format!(
                "capsule {} did not start; its output: {tail}",
                capsule.name
            )));
        }
        Ok(capsule)
    }

    async fn start_and_wait_attached(&self) -> anyhow::Result<()> {
        let attach_line = match self.spec.tool {
            Tool::Tcpdump => "listening on",
            Tool::Strace => "attached",
            Tool::Gdb => STACKS_READY,
            Tool::Image | Tool::Archive | Tool::Snapshot => "recap: capsule started",
        };
        let (docker, id) = match &self.container {
            Container::Docker { docker, id } => (docker, id),
            Container::Cri(c) => {
                c.start().await?;
                return c.wait_for_line(attach_line).await;
            }
        };
        docker
            .start_container(id, None)
            .await
            .context("starting the container")?;
        let options = LogsOptionsBuilder::new()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .build();
        let mut logs = docker.logs(id, Some(options));
        let mut seen = String::new();
        let waited = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(chunk) = logs.next().await {
                let text = chunk.context("reading its output")?.to_string();
                log::debug!("capsule {}: {}", self.name, text.trim());
                if text.contains(attach_line) {
                    return Ok(());
                }
                seen.push_str(&text);
            }
            bail!("it exited: {}", seen.trim().replace('\n', " | "))
        })
        .await;
        match waited {
            Ok(result) => result,
            Err(_) => bail!("no `{attach_line}` line within 10 s"),
        }
    }

    /// Stops the tool (SIGTERM: it flushes) and returns its exit code (-1: unknown).
    async fn stop_container(&self) -> i64 {
        match &self.container {
            Container::Docker { docker, id } => {
                let kill = KillContainerOptionsBuilder::new().signal("SIGTERM").build();
                // It may have stopped by itself (size cap); then there is nothing to signal.
                let _ = docker.kill_container(id, Some(kill)).await;
                let mut wait = docker.wait_container(id, None);
                let _ = tokio::time::timeout(self.spec.tool.stop_grace(), wait.next()).await;
                docker
                    .inspect_container(id, None)
                    .await
                    .ok()
                    .and_then(|i| i.state)
                    .and_then(|s| s.exit_code)
                    .unwrap_or(-1)
            }
            Container::Cri(c) => c.stop(self.spec.tool.stop_grace()).await,
        }
    }

    /// A caller's program's output (the engine's log of it, at most the size cap) into its
    /// artifact, written by RECap; true if the cap cut it.
    async fn save_output(&self) -> std::io::Result<bool> {
        let Container::Docker { docker, id } = &self.container else {
            return Ok(false);
        };
        let options = LogsOptionsBuilder::new().stdout(true).stderr(true).build();
        let mut logs = docker.logs(id, Some(options));
        let mut out = self.artifact_dir.create_new(self.spec.tool.artifact())?;
        let (mut written, mut cut) = (0u64, false);
        use std::io::Write;
        let mut first = true;
        while let Some(Ok(chunk)) = logs.next().await {
            let all = chunk.into_bytes();
            let mut bytes: &[u8] = &all;
            // The supervisor's own first line is RECap's, not the program's.
            if std::mem::take(&mut first) {
                if let Some(rest) = bytes.strip_prefix(b"recap: capsule started\n".as_slice()) {
                    bytes = rest;
                }
            }
            let room = self.max_bytes.saturating_sub(written) as usize;
            let take = bytes.len().min(room);
            out.write_all(&bytes[..take])?;
            written += take as u64;
            if take < bytes.len() {
                cut = true;
                break;
            }
        }
        Ok(cut)
    }

    /// Stops the tool, removes the container, reports the artifact.
    pub async fn stop(self) -> CapsuleReport {
        let exit_code = self.stop_container().await;
        let output_cut = match self.spec.tool {
            Tool::Image => self.save_output().await.unwrap_or_else(|e| {
                log::warn!("saving capsule {}'s output: {e}", self.name);
                false
            }),
            _ => false,
        };
        // tcpdump says on exit how many packets the kernel dropped before it could read them:
        // a capture that lost any is not called complete.
        let dropped = match self.spec.tool {
            Tool::Tcpdump => parse_dropped(&self.log_tail().await),
            Tool::Strace | Tool::Gdb | Tool::Image | Tool::Archive | Tool::Snapshot => None,
        };
        let artifact = self.spec.tool.artifact();
        let truncated = match self.spec.tool {
            Tool::Tcpdump => pcap_truncation(&self.artifact_dir, artifact),
            Tool::Strace | Tool::Gdb | Tool::Image | Tool::Archive | Tool::Snapshot => None,
        };
        let outcome = match exit_code {
            _ if output_cut => CapsuleOutcome::SizeCapReached {
                cap_bytes: self.max_bytes,
            },
            0 | 143 if dropped.is_some_and(|d| d > 0) => CapsuleOutcome::Incomplete {
                reason: format!("{} packets dropped by the kernel", dropped.unwrap_or(0)),
                dropped_by_kernel: dropped,
            },
            0 | 143 if truncated.is_some() => CapsuleOutcome::Incomplete {
                reason: truncated.unwrap_or_default(),
                dropped_by_kernel: dropped,
            },
            // SIGTERM'd by us: tcpdump exits 0, strace re-raises the signal (143) after detaching.
            0 | 143 => CapsuleOutcome::Ok,
            EXIT_SIGXFSZ => CapsuleOutcome::SizeCapReached {
                cap_bytes: self.max_bytes,
            },
            code => CapsuleOutcome::Exited {
                exit_code: code,
                log_tail: self.log_tail().await,
            },
        };
        self.remove().await;
        // Captures hold tokens and passwords: readable by the owner only. Sealed through the
        // directory's descriptor: a link planted in place of the file is reported, not followed.
        let (artifact_bytes, outcome) = match self.artifact_dir.seal(artifact, self.owner) {
            Ok(bytes) => (bytes.unwrap_or(0), outcome),
            Err(e) => {
                log::warn!("sealing capsule {}'s artifact: {e}", self.name);
                (
                    0,
                    CapsuleOutcome::Failed {
                        reason: format!("its artifact was not sealed: {e}"),
                    },
                )
            }
        };
        CapsuleReport {
            capsule: self.spec.to_string(),
            container_name: self.name.clone(),
            artifact_bytes,
            artifact: self
                .artifact_dir
                .path()
                .join(artifact)
                .display()
                .to_string(),
            outcome,
            note: None,
        }
    }

    async fn remove(&self) {
        match &self.container {
            Container::Docker { docker, id } => {
                let options = RemoveContainerOptionsBuilder::new().force(true).build();
                if let Err(e) = docker.remove_container(id, Some(options)).await {
                    log::warn!("removing capsule {}: {e}", self.name);
                }
            }
            Container::Cri(c) => c.remove().await,
        }
    }

    async fn log_tail(&self) -> String {
        let (docker, id) = match &self.container {
            Container::Docker { docker, id } => (docker, id),
            Container::Cri(c) => return c.log_tail(),
        };
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail("5")
            .build();
        let lines: Vec<String> = docker
            .logs(id, Some(options))
            .filter_map(|l| async move { l.ok() })
            .map(|l| l.to_string())
            .collect()
            .await;
        lines.concat().trim().replace('\n', " | ")
    }
}

/// Why a pcap file is not whole, if it is not: it must end exactly at the end of a record.
fn pcap_truncation(dir: &SafeDir, name: &str) -> Option<String> {
    let data = dir.read(name).ok()??;
    pcap_data_truncation(&data)
}

fn pcap_data_truncation(data: &[u8]) -> Option<String> {
    if data.len() < 24 {
        return Some(format!(
            "the capture file has {} bytes, not even its 24-byte header (disk full?)",
            data.len()
        ));
    }
    let little = match data[..4] {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => return Some("the capture file does not start with a pcap header".into()),
    };
    let mut at = 24usize;
    while at < data.len() {
        let Some(header) = data.get(at..at + 16) else {
            return Some(format!(
                "the capture file ends inside a packet header at byte {at} (disk full?)"
            ));
        };
        let field: [u8; 4] = header[8..12].try_into().ok()?;
        let caplen = if little {
            u32::from_le_bytes(field)
        } else {
            u32::from_be_bytes(field)
        } as usize;
        at += 16 + caplen;
        if at > data.len() {
            return Some(format!(
                "the capture file ends inside a packet at byte {} (disk full?)",
                data.len()
            ));
        }
    }
    None
}

/// `N packets dropped by kernel` from tcpdump's closing statistics.
fn parse_dropped(output: &str) -> Option<u64> {
    output.split('|').chain(output.lines()).find_map(|line| {
        let line = line.trim();
        line.strip_suffix("packets dropped by kernel")?
            .trim()
            .parse()
            .ok()
    })
}

/// The tool's command line and the capabilities it needs.
fn tool_command(
    spec: &CapsuleSpec,
    ctx: &CapsuleContext<'_>,
) -> anyhow::Result<(Vec<String>, Vec<&'static str>)> {
    let out = format!("/out/{}", spec.tool.artifact());
    Ok(match spec.tool {
        Tool::Tcpdump => {
            // --immediate-mode: take each packet from the kernel as it arrives (not in ring
            // blocks that retire every second, which SIGTERM would lose); -U: write it at once.
            let mut cmd: Vec<String> = [
                "tcpdump",
                "-i",
                "any",
                "-n",
                "--immediate-mode",
                "-U",
                // In immediate mode every packet takes a ring frame of the snapshot length:
                // with tcpdump's default (262144 B) the default 2 MiB ring holds 8 packets, and
                // a burst of requests lost some. A 64 KiB frame (the largest IP packet) plus
                // its header takes a 128 KiB block (blocks are powers of two), so a 64 MiB ring
                // holds 512 packets, every byte of each kept: room for a burst while the
                // capsule's half CPU is throttled (32 MiB, 256 packets, lost 385 of a burst of
                // 40 requests on a loaded machine).
                "-s",
                "65535",
                "-B",
                "65536",
                "-Z",
                "root",
                "-w",
                &out,
            ]
            .map(String::from)
            .to_vec();
            cmd.extend(spec.args.iter().cloned());
            // NET_RAW to capture, NET_ADMIN for promiscuous mode; SETUID/SETGID because tcpdump
            // always drops privileges (`-Z root` keeps uid 0 but still calls setgid/setuid).
            (cmd, vec!["NET_RAW", "NET_ADMIN", "SETUID", "SETGID"])
        }
        Tool::Strace => {
            let mut cmd: Vec<String> = ["strace", "-f", "-tt", "-o", &out]
                .map(String::from)
                .to_vec();
            cmd.extend(spec.args.iter().cloned());
            let pids = namespace_pids(ctx.cgroup_dir)?;
            if pids.is_empty() {
                bail!("the target container has no processes to trace");
            }
            for pid in pids {
                cmd.extend(["-p".to_string(), pid.to_string()]);
            }
            (cmd, vec!["SYS_PTRACE"])
        }
        Tool::Gdb => {
            let every = super::gdb_interval(&spec.args)
                .map_err(anyhow::Error::msg)?
                .map_or(0, |d| d.as_secs());
            let pids = namespace_pids(ctx.cgroup_dir)?;
            if pids.is_empty() {
                bail!("the target container has no processes to look at");
            }
            let mut cmd: Vec<String> = ["busybox", "sh", "-c", STACKS, "stacks"]
                .map(String::from)
                .to_vec();
            cmd.push(every.to_string());
            cmd.extend(pids.iter().map(u32::to_string));
            // SYS_PTRACE to attach; DAC_OVERRIDE to open the memory of a target that runs as
            // another user (ptrace can change that memory anyway).
            (cmd, vec!["SYS_PTRACE", "DAC_OVERRIDE"])
        }
        // The caller's program, with no capabilities at all.
        Tool::Image => (spec.args[1..].to_vec(), Vec::new()),
        Tool::Archive | Tool::Snapshot => {
            bail!(
                "{} is done by RECap itself, not in a container",
                spec.tool.name()
            )
        }
    })
}

/// What the gdb capsule prints once it is ready.
const STACKS_READY: &str = "stacks: ready";

/// The gdb capsule's tool (`busybox sh -c STACKS stacks EVERY_S PID...`): every thread's stack
/// of each process into /out/stacks.txt when it is stopped (SIGTERM: the window's end) and
/// every EVERY_S seconds if not 0. gdb reads the process's files through its root
/// (`/proc/PID/root`: the capsule shares its PID namespace, not its files), runs no scripts
/// from them (`auto-load off`) and asks no server for debug info; each dump is cut at 30 s.
const STACKS: &str = r#"every="$1"; shift
dump() {
  for pid in "$@"; do
    echo "==== process $pid ($(busybox cat /proc/$pid/comm 2>/dev/null)) at $(busybox date -u +%Y-%m-%dT%H:%M:%SZ)"
    busybox timeout 30 gdb --batch -nx -iex 'set auto-load off' -iex 'set debuginfod enabled off' \
      -iex "set sysroot /proc/$pid/root" -ex 'set pagination off' -ex 'thread apply all bt' \
      -p "$pid" </dev/null 2>&1
  done >>/out/stacks.txt
}
trap 'dump "$@"; exit 0' TERM
echo "stacks: ready ($# processes)"
while :; do
  if [ "$every" -gt 0 ]; then busybox sleep "$every" & wait $!; dump "$@"
  else busybox sleep 3600 & wait $!; fi
done"#;

/// The window, the target and the owner (`PID:STARTTIME`) on every capsule: what the reaper
/// reads.
fn labels(spec: &CapsuleSpec, ctx: &CapsuleContext<'_>) -> HashMap<String, String> {
    let owner = format!(
        "{}:{}",
        std::process::id(),
        cgroup::process_start_time(std::process::id()).unwrap_or(0)
    );
    let mut labels = HashMap::from([
        (LABEL_WINDOW.to_string(), ctx.window_id.to_string()),
        (LABEL_TARGET.to_string(), ctx.target_id.to_string()),
        (LABEL_OWNER.to_string(), owner),
    ]);
    if let Some(theirs) = spec.custom_image() {
        labels.insert(super::LABEL_CUSTOM_IMAGE.to_string(), theirs.to_string());
    }
    labels
}

/// Where a caller's image gets the host's static busybox (read-only), for the supervisor, and
/// the lifeline (read-only: the window's directory is not mounted at all).
pub const CUSTOM_BUSYBOX: &str = "/.recap/busybox";
pub const CUSTOM_LIFELINE: &str = "/.recap/lifeline";
/// The uid and gid a caller's program runs as: nobody (as uid 0 it could leave a set-uid file
/// for the caller, or signal the target's root processes).
const CUSTOM_USER: &str = "65534:65534";

/// The capsule's main process: the supervisor running `tool`.
fn supervised(
    spec: &CapsuleSpec,
    ctx: &CapsuleContext<'_>,
    fsize: &str,
    tool: Vec<String>,
) -> Vec<String> {
    let busybox = match spec.tool {
        Tool::Image => CUSTOM_BUSYBOX,
        _ => "busybox",
    };
    let out = "-".to_string();
    // A caller's image sees no host directory it could write: only the lifeline, read-only.
    let lifeline = match spec.tool {
        Tool::Image => CUSTOM_LIFELINE.to_string(),
        _ => format!("/out/{LIFELINE}"),
    };
    let mut argv: Vec<String> = vec![
        busybox.into(),
        "sh".into(),
        "-c".into(),
        SUPERVISOR.into(),
        "capsule".into(),
        busybox.into(),
        ctx.deadline.as_secs().max(1).to_string(),
        fsize.into(),
        out,
        lifeline,
    ];
    argv.extend(tool);
    argv
}

/// The host's static busybox for a capsule of the caller's image (its supervisor's shell).
fn busybox_for(spec: &CapsuleSpec) -> anyhow::Result<Option<std::path::PathBuf>> {
    match spec.tool {
        Tool::Image => image::static_busybox().map(Some),
        _ => Ok(None),
    }
}

fn docker_create_body(
    spec: &CapsuleSpec,
    tool: Vec<String>,
    capabilities: Vec<&str>,
    labels: HashMap<String, String>,
    ctx: &CapsuleContext<'_>,
) -> anyhow::Result<ContainerCreateBody> {
    let bind = |target: &str, source: String, read_only: bool| Mount {
        target: Some(target.into()),
        source: Some(source),
        typ: Some(MountType::BIND),
        read_only: Some(read_only),
        ..Default::default()
    };
    let out = ctx.artifact_dir.path().display().to_string();
    let mounts = match busybox_for(spec)? {
        Some(busybox) => vec![
            bind(CUSTOM_BUSYBOX, busybox.display().to_string(), true),
            bind(CUSTOM_LIFELINE, format!("{out}/{LIFELINE}"), true),
        ],
        None => vec![bind("/out", out, false)],
    };
    let host_config = HostConfig {
        network_mode: Some(format!("container:{}", ctx.target_id)),
        pid_mode: Some(format!("container:{}", ctx.target_id)),
        cap_drop: Some(vec!["ALL".into()]),
        cap_add: Some(capabilities.into_iter().map(String::from).collect()),
        security_opt: Some(vec!["no-new-privileges".into()]),
        readonly_rootfs: Some(true),
        tmpfs: Some(HashMap::from([(
            "/tmp".to_string(),
            "size=16m".to_string(),
        )])),
        memory: Some(256 << 20),
        nano_cpus: Some(500_000_000),
        pids_limit: Some(64),
        // Mounts, not `binds` strings: a path holding `:` cannot be misread.
        mounts: Some(mounts),
        // A caller's program writes only its output, which the engine keeps to the size cap.
        log_config: (spec.tool == Tool::Image).then(|| HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: Some(HashMap::from([
                ("max-size".to_string(), ctx.max_bytes.max(4096).to_string()),
                ("max-file".to_string(), "1".to_string()),
            ])),
        }),
        // The size cap: the kernel stops the tool (SIGXFSZ) when its file would pass it.
        ulimits: Some(vec![ResourcesUlimits {
            name: Some("fsize".into()),
            soft: Some(ctx.max_bytes as i64),
            hard: Some(ctx.max_bytes as i64),
        }]),
        ..Default::default()
    };
    Ok(ContainerCreateBody {
        image: Some(spec.image_reference(false)),
        cmd: Some(supervised(spec, ctx, "-", tool)),
        entrypoint: Some(vec![]),
        user: (spec.tool == Tool::Image).then(|| CUSTOM_USER.to_string()),
        labels: Some(labels),
        host_config: Some(host_config),
        ..Default::default()
    })
}

/// PIDs of the cgroup's processes as the container's PID namespace numbers them (the capsule
/// shares that namespace), from the last field of `NSpid:` in /proc/PID/status.
fn namespace_pids(cgroup_dir: &Path) -> anyhow::Result<Vec<u32>> {
    let procs = std::fs::read_to_string(cgroup_dir.join("cgroup.procs"))
        .context("reading the target's cgroup.procs")?;
    Ok(procs
        .lines()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).ok())
        .filter_map(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .and_then(|v| v.split_whitespace().last()?.parse().ok())
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pcap_that_ends_mid_packet_is_found() {
        let mut whole = vec![0xd4, 0xc3, 0xb2, 0xa1];
        whole.extend([0u8; 20]);
        let mut record = vec![0u8; 16];
        record[8..12].copy_from_slice(&10u32.to_le_bytes());
        record.extend([7u8; 10]);
        whole.extend(&record);
        assert_eq!(pcap_data_truncation(&whole), None);
        let cut = &whole[..whole.len() - 3];
        assert!(pcap_data_truncation(cut)
            .unwrap()
            .contains("inside a packet"));
        assert!(pcap_data_truncation(&whole[..30])
            .unwrap()
            .contains("packet header"));
        assert!(pcap_data_truncation(&whole[..10]).is_some());
    }

    #[test]
    fn tcpdump_drop_statistics_are_read() {
        let tail = "listening on any | 23 packets captured | 23 packets received by filter | 4 packets dropped by kernel";
        assert_eq!(parse_dropped(tail), Some(4));
        assert_eq!(parse_dropped("0 packets dropped by kernel\n"), Some(0));
        assert_eq!(parse_dropped("nothing"), None);
    }
}
