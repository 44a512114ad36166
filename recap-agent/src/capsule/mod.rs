//! Capsules: a tool sidecar (tcpdump, strace) that joins the target container's PID and network
//! namespaces for the length of a window, writes into the window's artifact directory, and is
//! removed when the window ends. Whatever a crash leaves is found by label and removed by the
//! next window (`reaper`).

pub mod image;
pub mod reaper;
pub mod sidecar;

use std::{fmt, str::FromStr};

use serde::Serialize;

/// Labels on every capsule container.
pub const LABEL_WINDOW: &str = "recap.window";
pub const LABEL_TARGET: &str = "recap.target";
/// `PID:STARTTIME` of the recap process that owns the capsule: how the reaper tells a live
/// window from one whose process is gone (PIDs are reused, start times are not).
pub const LABEL_OWNER: &str = "recap.owner";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tool {
    Tcpdump,
    Strace,
}

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Tool::Tcpdump => "tcpdump",
            Tool::Strace => "strace",
        }
    }

    pub fn artifact(self) -> &'static str {
        match self {
            Tool::Tcpdump => "tcpdump.pcap",
            Tool::Strace => "strace.log",
        }
    }
}

/// `--capsule tcpdump[=FILTER]` or `--capsule strace[=ARGS]`. The text after `=` is split on
/// whitespace into argv words: it never goes through a shell.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CapsuleSpec {
    pub tool: Tool,
    pub args: Vec<String>,
}

impl FromStr for CapsuleSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, rest) = s.split_once('=').unwrap_or((s, ""));
        let tool = match name.trim() {
            "tcpdump" => Tool::Tcpdump,
            "strace" => Tool::Strace,
            other => {
                return Err(format!(
                    "unknown capsule `{other}`; known: tcpdump[=FILTER], strace[=ARGS]"
                ))
            }
        };
        Ok(CapsuleSpec {
            tool,
            args: rest.split_whitespace().map(str::to_owned).collect(),
        })
    }
}

impl fmt::Display for CapsuleSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.tool.name())?;
        if !self.args.is_empty() {
            write!(f, "={}", self.args.join(" "))?;
        }
        Ok(())
    }
}

/// How a capsule ended, for the summary.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum CapsuleOutcome {
    /// Ran until the window ended.
    Ok,
    /// Stopped early because its artifact reached the size cap.
    SizeCapReached { cap_bytes: u64 },
    /// Exited early on its own.
    Exited { exit_code: i64, log_tail: String },
    /// Could not start.
    Failed { reason: String },
}

#[derive(Clone, Debug, Serialize)]
pub struct CapsuleReport {
    pub capsule: String,
    pub container_name: String,
    pub artifact: String,
    pub artifact_bytes: u64,
    #[serde(flatten)]
    pub outcome: CapsuleOutcome,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tools_and_argv_without_a_shell() {
        let c: CapsuleSpec = "tcpdump=tcp port 80".parse().unwrap();
        assert_eq!(c.tool, Tool::Tcpdump);
        assert_eq!(c.args, ["tcp", "port", "80"]);
        let c: CapsuleSpec = "strace=-e trace=accept4;rm -rf /".parse().unwrap();
        assert_eq!(
            c.args,
            ["-e", "trace=accept4;rm", "-rf", "/"],
            "words, never a shell line"
        );
        let c: CapsuleSpec = "strace".parse().unwrap();
        assert!(c.args.is_empty());
        assert_eq!(c.to_string(), "strace");
        assert!("gdb"
            .parse::<CapsuleSpec>()
            .unwrap_err()
            .contains("unknown capsule"));
    }
}
