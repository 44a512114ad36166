//! Capsules: a tool sidecar (tcpdump, strace) that joins the target container's PID and network
//! namespaces for the length of a window, writes into the window's artifact directory, and is
//! removed when the window ends: beside a Docker container, or inside a Kubernetes pod's
//! sandbox through CRI (`cri`). Whatever a crash leaves is found by label and removed by the
//! next window (`reaper`, `cri::reap_orphans`).

pub mod archive;
pub mod artifacts;
pub mod cri;
pub mod image;
pub mod reaper;
pub mod sidecar;
pub mod snapshot;

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// Labels on every capsule container.
pub const LABEL_WINDOW: &str = "recap.window";
pub const LABEL_TARGET: &str = "recap.target";
/// `PID:STARTTIME` of the recap process that owns the capsule: how the reaper tells a live
/// window from one whose process is gone (PIDs are reused, start times are not).
pub const LABEL_OWNER: &str = "recap.owner";
/// On a capsule of the caller's image: that image. The reaper removes RECap's images' capsules,
/// and those whose image is the one this label names.
pub const LABEL_CUSTOM_IMAGE: &str = "recap.custom_image";

/// Whether a container (its image, as listed, and its labels) is a RECap capsule: RECap's
/// image, or the caller's image its label names.
pub fn is_capsule(image: &str, labels: &std::collections::HashMap<String, String>) -> bool {
    image::Image::is_ours(image)
        || labels.get(LABEL_CUSTOM_IMAGE).is_some_and(|theirs| {
            let listed = image.strip_prefix("docker.io/library/").unwrap_or(image);
            theirs == image || theirs == listed
        })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tool {
    Tcpdump,
    Strace,
    /// Every thread's stack of the target's processes (gdb), at the window's end and at
    /// `every:` intervals.
    Gdb,
    /// The caller's own image (`image=REF,cmd=...`), with no capabilities.
    Image,
    /// A tar of paths in the target's filesystem at the window's end (`archive.rs`), made by
    /// RECap itself: no container.
    Archive,
    /// The target's processes, open files and sockets at the window's start and end
    /// (`snapshot.rs`), read by RECap itself.
    Snapshot,
}

impl Tool {
    pub const ALL: [Tool; 6] = [
        Tool::Tcpdump,
        Tool::Strace,
        Tool::Gdb,
        Tool::Image,
        Tool::Archive,
        Tool::Snapshot,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Tool::Tcpdump => "tcpdump",
            Tool::Strace => "strace",
            Tool::Gdb => "gdb",
            Tool::Image => "image",
            Tool::Archive => "archive",
            Tool::Snapshot => "snapshot",
        }
    }

    pub fn artifact(self) -> &'static str {
        match self {
            Tool::Tcpdump => "tcpdump.pcap",
            Tool::Strace => "strace.log",
            Tool::Gdb => "stacks.txt",
            Tool::Image => "image.log",
            Tool::Archive => "archive.tar",
            Tool::Snapshot => "snapshot.json",
        }
    }

    /// How long it may take to finish once stopped (gdb dumps the stacks then).
    pub fn stop_grace(self) -> std::time::Duration {
        match self {
            Tool::Gdb => std::time::Duration::from_secs(30),
            Tool::Tcpdump | Tool::Strace | Tool::Image | Tool::Archive | Tool::Snapshot => {
                std::time::Duration::from_secs(5)
            }
        }
    }

    /// RECap's capsule image the tool is in (gdb brings Python's library: an image of its
    /// own); `None`: the caller's image.
    pub fn image(self) -> Option<image::Image> {
        match self {
            Tool::Tcpdump | Tool::Strace => Some(image::Image::Base),
            Tool::Gdb => Some(image::Image::Gdb),
            Tool::Image | Tool::Archive | Tool::Snapshot => None,
        }
    }

    /// Whether RECap itself does the work (reading the target from the host), with no
    /// container.
    pub fn in_recap(self) -> bool {
        matches!(self, Tool::Archive | Tool::Snapshot)
    }
}

/// `--capsule tcpdump[=FILTER]`, `strace[=ARGS]`, `gdb[=every:DURATION]` or
/// `image=REF,cmd=PROGRAM ARGS...`.
/// The text after `=` is split on whitespace into argv words: it never goes through a shell.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapsuleSpec {
    pub tool: Tool,
    pub args: Vec<String>,
}

impl FromStr for CapsuleSpec {
    type Err = String;
    /// `--capsule TOOL[=ARGS]`: the text after `=` made into the tool's words, then checked as
    /// `new` checks them.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, rest) = s.split_once('=').unwrap_or((s, ""));
        let tool = Tool::ALL
            .into_iter()
            .find(|t| t.name() == name.trim())
            .ok_or_else(|| {
                format!(
                    "unknown capsule `{}`; known: tcpdump[=FILTER], strace[=ARGS], gdb[=every:DURATION], image=REF,cmd=PROGRAM, archive=PATH[,PATH...], snapshot",
                    name.trim()
                )
            })?;
        let args = match tool {
            Tool::Image => custom_image(rest)?,
            Tool::Archive => rest
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
            _ => rest.split_whitespace().map(str::to_owned).collect(),
        };
        CapsuleSpec::new(tool, args)
    }
}

impl CapsuleSpec {
    /// A tool with its words, checked: what the command line and the agent's API both take.
    pub fn new(tool: Tool, args: Vec<String>) -> Result<Self, String> {
        match tool {
            Tool::Tcpdump => check_tcpdump_filter(&args)?,
            Tool::Strace => check_strace_options(&args)?,
            Tool::Gdb => {
                gdb_interval(&args)?;
            }
            Tool::Image => match args.as_slice() {
                [reference, _program, ..] => check_image_reference(reference)?,
                _ => return Err("an image capsule takes [REFERENCE, PROGRAM, ARGS...]: RECap runs the program you name in it".into()),
            },
            Tool::Archive => archive::check_paths(&args)?,
            Tool::Snapshot if !args.is_empty() => {
                return Err("the snapshot capsule takes no arguments".into())
            }
            Tool::Snapshot => {}
        }
        Ok(CapsuleSpec { tool, args })
    }
}

/// `REF,cmd=PROGRAM ARGS...` as `[REF, PROGRAM, ARGS...]`: an image reference as Docker
/// writes one (no option, no space), and the program it runs, split into argv words (never
/// through a shell). The image's own entrypoint is not run: the capsule's supervisor is.
fn custom_image(text: &str) -> Result<Vec<String>, String> {
    let (reference, cmd) = text.split_once(",cmd=").ok_or_else(|| {
        "the image capsule is `image=REF,cmd=PROGRAM ARGS...` (e.g. image=myteam/tools:1,cmd=/usr/bin/iperf3 -s): RECap runs the program you name in it".to_string()
    })?;
    let reference = reference.trim();
    check_image_reference(reference)?;
    let mut words = vec![reference.to_string()];
    words.extend(cmd.split_whitespace().map(str::to_owned));
    if words.len() == 1 {
        return Err("image=REF,cmd=: name the program to run".into());
    }
    Ok(words)
}

/// An image reference as Docker writes one (no option, no space).
fn check_image_reference(reference: &str) -> Result<(), String> {
    let valid = !reference.is_empty()
        && reference.len() <= 255
        && !reference.starts_with('-')
        && reference
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._/:@-".contains(c));
    if !valid {
        return Err(format!(
            "`{}` is not an image reference (REPOSITORY[:TAG] or @sha256:DIGEST, as `docker images` shows)",
            reference.escape_debug()
        ));
    }
    Ok(())
}

/// The interval of `gdb=every:DURATION` (1 s to 1 h), `None` for stacks at the end only.
pub fn gdb_interval(words: &[String]) -> Result<Option<std::time::Duration>, String> {
    match words {
        [] => Ok(None),
        [one] => {
            let text = one.strip_prefix("every:").ok_or_else(|| {
                format!(
                    "the gdb capsule takes `every:DURATION` (e.g. gdb=every:10s), not `{}`",
                    one.escape_debug()
                )
            })?;
            let every =
                humantime::parse_duration(text).map_err(|e| format!("gdb=every:{text}: {e}"))?;
            if every < std::time::Duration::from_secs(1)
                || every > std::time::Duration::from_secs(3600)
            {
                return Err(format!("gdb=every:{text}: between 1s and 1h"));
            }
            Ok(Some(every))
        }
        _ => Err("the gdb capsule takes one `every:DURATION` at most".into()),
    }
}

/// tcpdump's capsule takes a capture filter only: an option such as `-z CMD` (run a program
/// after each file), `-w`, `-r` or `-C` would escape what the capsule is for.
fn check_tcpdump_filter(words: &[String]) -> Result<(), String> {
    match words.iter().find(|w| w.starts_with('-')) {
        Some(option) => Err(format!(
            "the tcpdump capsule takes a capture filter (pcap-filter syntax, e.g. `tcp port 80`), not options: `{}`",
            option.escape_debug()
        )),
        None => Ok(()),
    }
}

/// strace options that only change what is traced or how it is printed. Anything else (a
/// program to start, `-o`, `-p`, `-E`, `-u`, ...) is refused: the capsule traces the target's
/// processes and nothing else.
const STRACE_FLAGS: &[&str] = &[
    "-c", "-C", "-T", "-y", "-yy", "-v", "-z", "-Z", "-n", "-r", "-t", "-tt", "-ttt", "-i", "-k",
    "-q", "-qq", "-x", "-xx", "-w",
];
const STRACE_OPTIONS_WITH_VALUE: &[&str] = &["-e", "-s", "-X", "-P", "-a", "-S", "-U", "-I"];

fn check_strace_options(words: &[String]) -> Result<(), String> {
    let mut words = words.iter();
    while let Some(word) = words.next() {
        if STRACE_FLAGS.contains(&word.as_str()) {
            continue;
        }
        if STRACE_OPTIONS_WITH_VALUE.contains(&word.as_str()) {
            if words.next().is_none() {
                return Err(format!("strace option `{word}` needs a value"));
            }
            continue;
        }
        // `-eexpr`, `-s128`: an option with its value attached.
        if STRACE_OPTIONS_WITH_VALUE
            .iter()
            .any(|o| word.len() > 2 && word.starts_with(o))
        {
            continue;
        }
        return Err(format!(
            "the strace capsule takes strace's tracing and output options only ({} and {} VALUE), not `{}`: it traces the target's processes and starts nothing",
            STRACE_FLAGS.join(" "),
            STRACE_OPTIONS_WITH_VALUE.join(" "),
            word.escape_debug()
        ));
    }
    Ok(())
}

impl CapsuleSpec {
    /// The caller's image of an `image=` capsule.
    pub fn custom_image(&self) -> Option<&str> {
        (self.tool == Tool::Image).then(|| self.args[0].as_str())
    }

    /// The image the capsule runs, as the engine (`cri` false) or a CRI runtime names it.
    pub fn image_reference(&self, cri: bool) -> String {
        match (self.tool.image(), self.custom_image()) {
            (Some(ours), _) if cri => ours.cri_reference(),
            (Some(ours), _) => ours.reference(),
            (None, Some(theirs)) => theirs.to_string(),
            (None, None) => unreachable!("a tool without an image"),
        }
    }
}

impl fmt::Display for CapsuleSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.tool.name())?;
        if let [reference, cmd @ ..] = self.args.as_slice() {
            if self.tool == Tool::Image {
                return write!(f, "={reference},cmd={}", cmd.join(" "));
            }
        }
        if self.tool == Tool::Archive {
            return write!(f, "={}", self.args.join(","));
        }
        if !self.args.is_empty() {
            write!(f, "={}", self.args.join(" "))?;
        }
        Ok(())
    }
}

/// How a capsule ended, for the summary.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum CapsuleOutcome {
    /// Ran until the window ended.
    Ok,
    /// Ran until the window ended, but the capture misses packets: the kernel dropped some
    /// before tcpdump read them, or the file ends mid-packet (a full disk).
    Incomplete {
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dropped_by_kernel: Option<u64>,
    },
    /// Stopped early because its artifact reached the size cap.
    SizeCapReached { cap_bytes: u64 },
    /// Exited early on its own.
    Exited { exit_code: i64, log_tail: String },
    /// Could not start.
    Failed { reason: String },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CapsuleReport {
    pub capsule: String,
    pub container_name: String,
    pub artifact: String,
    pub artifact_bytes: u64,
    #[serde(flatten)]
    pub outcome: CapsuleOutcome,
    /// What the artifact says in one line (a snapshot: what changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tools_and_argv_without_a_shell() {
        let c: CapsuleSpec = "tcpdump=tcp port 80".parse().unwrap();
        assert_eq!(c.tool, Tool::Tcpdump);
        assert_eq!(c.args, ["tcp", "port", "80"]);
        let c: CapsuleSpec = "strace=-e trace=accept4,read -s 64 -T".parse().unwrap();
        assert_eq!(c.args, ["-e", "trace=accept4,read", "-s", "64", "-T"]);
        let c: CapsuleSpec = "strace".parse().unwrap();
        assert!(c.args.is_empty());
        assert_eq!(c.to_string(), "strace");
        assert!("lldb"
            .parse::<CapsuleSpec>()
            .unwrap_err()
            .contains("unknown capsule"));
        let c: CapsuleSpec = "gdb=every:10s".parse().unwrap();
        assert_eq!(
            gdb_interval(&c.args),
            Ok(Some(std::time::Duration::from_secs(10)))
        );
        assert_eq!(
            gdb_interval(&"gdb".parse::<CapsuleSpec>().unwrap().args),
            Ok(None)
        );
        for bad in [
            "gdb=every:0s",
            "gdb=every:2h",
            "gdb=-p 1",
            "gdb=every:1s every:2s",
            "gdb=every:x",
        ] {
            assert!(bad.parse::<CapsuleSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn capsule_arguments_never_start_programs() {
        for hostile in [
            "strace=-e trace=accept4;rm -rf /",
            "strace=busybox sh -c id",
            "strace=-f -o /out/x",
            "strace=-E LD_PRELOAD=/x",
            "strace=-p 1",
            "strace=-e",
            "tcpdump=-z /bin/sh",
            "tcpdump=port 80 -w /out/x",
        ] {
            assert!(hostile.parse::<CapsuleSpec>().is_err(), "{hostile}");
        }
        assert!("strace=-etrace=read -s128".parse::<CapsuleSpec>().is_ok());
        let c: CapsuleSpec = "image=team/tools:1,cmd=/bin/iperf3 -s".parse().unwrap();
        assert_eq!(c.custom_image(), Some("team/tools:1"));
        assert_eq!(c.args, ["team/tools:1", "/bin/iperf3", "-s"]);
        assert_eq!(c.to_string(), "image=team/tools:1,cmd=/bin/iperf3 -s");
        for hostile in [
            "image=team/tools:1",
            "image=team/tools:1,cmd=",
            "image=--privileged,cmd=/bin/sh",
            "image=a b,cmd=/bin/sh",
            "image=x;rm,cmd=/bin/sh",
        ] {
            assert!(hostile.parse::<CapsuleSpec>().is_err(), "{hostile}");
        }
    }
}
