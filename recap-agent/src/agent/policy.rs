//! Who may open which windows through the agent: a TOML file (default
//! `/etc/recap/policy.toml`). Root may do anything within the agent's limits; any other caller
//! needs a rule naming its uid or one of its groups, and each request must fit that rule:
//! targets (cgroup path prefixes, Docker label selectors), duration, families, capsule tools,
//! concurrent windows, OTLP export. A refusal names the rule and what it did not allow.
//!
//! ```toml
//! max_windows_total = 128
//!
//! [[rule]]
//! name = "sre"
//! uids = [1000]
//! gids = []
//! cgroup_prefixes = ["/sys/fs/cgroup/unified/docker"]
//! container_labels = ["recap.allow=true"]
//! families = ["tcp", "net", "proc", "cpu"]
//! capsules = ["tcpdump"]
//! images = ["team/tools:1"]    # capsules of the caller's own image (`image=REF,cmd=...`)
//! max_duration = "10m"
//! max_windows = 4
//! otlp = false
//! artifact_quota = "1GiB"
//! read_all = false          # see others' windows too (list/show/wait/watch)
//! ```
//!
//! Reading is authorised like opening: a caller sees its own windows; root and rules with
//! `read_all = true` see every window.

use std::{path::Path, time::Duration};

use serde::Deserialize;

use crate::{families::Family, targets::Target, text::units::parse_duration, window::WindowSpec};

/// Windows the agent holds at most (its kernel maps have this many slots, less one).
pub const MAX_WINDOWS_TOTAL: usize = (recap_common::MAX_WINDOWS - 1) as usize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default = "default_total")]
    pub max_windows_total: usize,
    #[serde(default, rename = "rule")]
    pub rules: Vec<Rule>,
    /// Where it was read from, for messages.
    #[serde(skip)]
    pub source: String,
}

fn default_total() -> usize {
    MAX_WINDOWS_TOTAL
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    #[serde(default)]
    pub uids: Vec<u32>,
    #[serde(default)]
    pub gids: Vec<u32>,
    /// Cgroup (and PID) targets must resolve to a directory under one of these.
    #[serde(default)]
    pub cgroup_prefixes: Vec<String>,
    /// Container targets must carry one of these labels (`KEY=VALUE`, or `KEY` for any value).
    #[serde(default)]
    pub container_labels: Vec<String>,
    /// Families allowed (default: the families on by default).
    pub families: Option<Vec<String>>,
    /// Capsule tools allowed (default: none).
    #[serde(default)]
    pub capsules: Vec<String>,
    /// The caller's own capsule images allowed (`--capsule image=REF,...`), each by its exact
    /// reference (default: none).
    #[serde(default)]
    pub images: Vec<String>,
    #[serde(default = "default_max_duration", deserialize_with = "duration")]
    pub max_duration: Duration,
    #[serde(default = "default_max_windows")]
    pub max_windows: usize,
    /// Whether the caller may make the agent send OTLP to an endpoint of its choosing.
    #[serde(default)]
    pub otlp: bool,
    /// What the caller's captures may take on disk, those kept from earlier windows plus the
    /// most the new window's capsules may write (`--capsule-max-size` each).
    #[serde(default = "default_quota", deserialize_with = "size")]
    pub artifact_quota: u64,
    /// Whether the caller may see every window (list, show, wait, watch), not only its own.
    #[serde(default)]
    pub read_all: bool,
}

impl Rule {
    /// The families it allows: its list (checked when the policy was read), or the families on
    /// by default.
    pub fn allowed_families(&self) -> Vec<Family> {
        match &self.families {
            Some(names) => names.iter().filter_map(|n| n.parse().ok()).collect(),
            None => Family::defaults(),
        }
    }
}

fn default_quota() -> u64 {
    1 << 30
}

fn size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let s = String::deserialize(d)?;
    crate::text::units::parse_size(&s).map_err(serde::de::Error::custom)
}

fn default_max_duration() -> Duration {
    Duration::from_secs(600)
}

fn default_max_windows() -> usize {
    4
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

/// The caller, from the socket's peer credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
    /// On whose behalf, when the socket's peer is not the person asking (a fleet part: the
    /// etcd user and the request id). Recorded in the audit log and the history.
    pub origin: Option<String>,
    /// Supplementary groups, as the kernel gave them for the socket (None: the primary only).
    pub groups: Option<Vec<u32>>,
}

impl Caller {
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// The caller's groups: its primary group and the supplementary groups the kernel gave
    /// for its socket when it connected (`SO_PEERGROUPS`). Never read from `/proc/<pid>`: the
    /// process may be gone and its PID another's.
    fn groups(&self) -> Vec<u32> {
        let mut groups = vec![self.gid];
        groups.extend(self.groups.iter().flatten());
        groups
    }
}

/// Why a request was refused (shown to the caller, and in the audit log).
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal(pub String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Policy {
    /// Root only: what an agent without a policy file allows.
    pub fn root_only() -> Self {
        Policy {
            max_windows_total: MAX_WINDOWS_TOTAL,
            rules: Vec::new(),
            source: "no policy file: root only".into(),
        }
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                log::info!(
                    "no policy at {}: only root may open windows",
                    path.display()
                );
                return Ok(Self::root_only());
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("reading {}", path.display())))
            }
        };
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, source: &str) -> anyhow::Result<Self> {
        let mut policy: Policy =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("policy {source}: {e}"))?;
        policy.source = source.to_string();
        if policy.max_windows_total > MAX_WINDOWS_TOTAL {
            anyhow::bail!(
                "policy {source}: max_windows_total {} is over what the agent can hold ({MAX_WINDOWS_TOTAL})",
                policy.max_windows_total
            );
        }
        for rule in &policy.rules {
            for family in rule.families.iter().flatten() {
                family
                    .parse::<crate::families::Family>()
                    .map_err(|e| anyhow::anyhow!("policy {source}, rule `{}`: {e}", rule.name))?;
            }
            for tool in &rule.capsules {
                if !crate::capsule::Tool::ALL
                    .iter()
                    .any(|t| t.name() == tool.as_str())
                {
                    anyhow::bail!(
                        "policy {source}, rule `{}`: unknown capsule tool `{tool}`",
                        rule.name
                    );
                }
            }
        }
        Ok(policy)
    }

    /// The rule that applies to `caller` (root needs none).
    pub fn rule_for(&self, caller: &Caller) -> Result<Option<&Rule>, Refusal> {
        if caller.is_root() {
            return Ok(None);
        }
        let groups = caller.groups();
        self.rules
            .iter()
            .find(|r| r.uids.contains(&caller.uid) || r.gids.iter().any(|g| groups.contains(g)))
            .map(Some)
            .ok_or_else(|| {
                Refusal(format!(
                    "no rule of the policy ({}) lets uid {} open windows; ask the node's administrator",
                    self.source, caller.uid
                ))
            })
    }

    /// Whether `caller` may see windows other callers opened: root, or a rule with `read_all`.
    pub fn may_read_all(&self, caller: &Caller) -> bool {
        match self.rule_for(caller) {
            Ok(None) => true,
            Ok(Some(rule)) => rule.read_all,
            Err(_) => false,
        }
    }

    /// Checks a request before anything is resolved or attached. `open_by_caller` and
    /// `open_total` are the windows open now.
    pub fn admit(
        &self,
        caller: &Caller,
        spec: &WindowSpec,
        artifacts_given: bool,
        artifacts_used: u64,
        open_by_caller: usize,
        open_total: usize,
    ) -> Result<(), Refusal> {
        if open_total >= self.max_windows_total {
            return Err(Refusal(format!(
                "the agent has {open_total} windows open, its limit (max_windows_total in {}); try again when one ends",
                self.source
            )));
        }
        let Some(rule) = self.rule_for(caller)? else {
            return Ok(());
        };
        let refuse = |what: String| {
            Err(Refusal(format!(
                "refused by rule `{}` of {}: {what}",
                rule.name, self.source
            )))
        };
        if spec.duration > rule.max_duration {
            return refuse(format!(
                "duration {} is over its max_duration {}",
                crate::text::units::format_duration(spec.duration),
                crate::text::units::format_duration(rule.max_duration)
            ));
        }
        if open_by_caller >= rule.max_windows {
            return refuse(format!(
                "uid {} has {open_by_caller} windows open, its max_windows",
                caller.uid
            ));
        }
        let allowed = rule.allowed_families();
        if let Some(f) = spec.families.iter().find(|f| !allowed.contains(f)) {
            let names: Vec<&str> = allowed.iter().map(|f| f.name()).collect();
            return refuse(format!(
                "family `{f}` is not in its families ({})",
                names.join(", ")
            ));
        }
        for c in &spec.capsules.specs {
            match c.custom_image() {
                Some(theirs) if !rule.images.iter().any(|i| i == theirs) => {
                    return refuse(format!(
                        "capsule image `{theirs}` is not in its images ({})",
                        rule.images.join(", ")
                    ));
                }
                Some(_) => {}
                None if !rule.capsules.iter().any(|t| t == c.tool.name()) => {
                    return refuse(format!(
                        "capsule `{}` is not in its capsules ({})",
                        c.tool.name(),
                        rule.capsules.join(", ")
                    ));
                }
                None => {}
            }
        }
        if artifacts_given {
            return refuse("--artifacts is for root; capsules of other callers write under the agent's artifact directory".into());
        }
        let wanted = spec
            .capsules
            .max_bytes
            .saturating_mul(spec.capsules.specs.len() as u64);
        if wanted > 0 && artifacts_used.saturating_add(wanted) > rule.artifact_quota {
            return refuse(format!(
                "its artifact_quota of {} bytes: earlier captures take {artifacts_used} and this window's capsules may write {wanted} (--capsule-max-size each); remove old windows' artifacts or ask for less",
                rule.artifact_quota
            ));
        }
        if spec.export.otlp.is_some() && !rule.otlp {
            return refuse(
                "OTLP export to an endpoint of the caller's choosing (otlp = false)".into(),
            );
        }
        // The agent would read them as root: a caller could name any file on the host.
        if spec
            .export
            .otlp
            .as_ref()
            .is_some_and(|o| o.tls.names_files())
        {
            return refuse("OTEL_EXPORTER_OTLP_CERTIFICATE, _CLIENT_CERTIFICATE and _CLIENT_KEY name files the agent would read as root; an https:// endpoint is checked against the system's roots, or configure TLS on the agent".into());
        }
        if spec.export.prometheus.is_some() {
            return refuse("--prometheus: the agent serves /metrics itself".into());
        }
        Ok(())
    }

    /// Checks the resolved target against the caller's rule, before anything is attached.
    pub fn admit_target(&self, caller: &Caller, target: &Target) -> Result<(), Refusal> {
        let Some(rule) = self.rule_for(caller)? else {
            return Ok(());
        };
        let refuse = |what: String| {
            Err(Refusal(format!(
                "refused by rule `{}` of {}: {what}",
                rule.name, self.source
            )))
        };
        match &target.container {
            Some(c) => {
                let labelled =
                    rule.container_labels
                        .iter()
                        .any(|selector| match selector.split_once('=') {
                            Some((k, v)) => c.labels.get(k).is_some_and(|have| have == v),
                            None => c.labels.contains_key(selector),
                        });
                if !labelled {
                    return refuse(format!(
                        "container {} carries none of its container_labels ({})",
                        c.name,
                        rule.container_labels.join(", ")
                    ));
                }
            }
            None => {
                if !rule
                    .cgroup_prefixes
                    .iter()
                    .any(|p| target.cgroup_dir.starts_with(p))
                {
                    return refuse(format!(
                        "cgroup {} is under none of its cgroup_prefixes ({})",
                        target.cgroup_dir.display(),
                        rule.cgroup_prefixes.join(", ")
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::window::WindowArgs;
    use clap::Parser;

    fn spec(args: &[&str]) -> WindowSpec {
        spec_with_env(args, &[])
    }

    fn spec_with_env(args: &[&str], env: &[(&str, &str)]) -> WindowSpec {
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: WindowArgs,
        }
        let mut argv = vec!["recap"];
        argv.extend(args);
        Wrapper::parse_from(argv)
            .args
            .into_spec_with_env(|k| {
                env.iter()
                    .find(|(name, _)| *name == k)
                    .map(|(_, v)| v.to_string())
            })
            .unwrap()
            .0
    }

    const POLICY: &str = r#"
max_windows_total = 10
[[rule]]
name = "sre"
uids = [1000]
cgroup_prefixes = ["/sys/fs/cgroup/unified/allowed"]
container_labels = ["recap.allow=true"]
capsules = ["tcpdump"]
images = ["team/tools:1"]
max_duration = "5m"
max_windows = 2
"#;

    #[test]
    fn requests_are_checked_against_the_callers_rule() {
        let policy = Policy::parse(POLICY, "policy.toml").unwrap();
        let sre = Caller {
            uid: 1000,
            gid: 1000,
            pid: None,
            origin: None,
            groups: None,
        };
        let stranger = Caller {
            uid: 1234,
            gid: 1234,
            pid: None,
            origin: None,
            groups: None,
        };
        let root = Caller {
            uid: 0,
            gid: 0,
            pid: None,
            origin: None,
            groups: None,
        };
        let ok = spec(&["--pid", "1", "-d", "1m"]);
        assert_eq!(policy.admit(&sre, &ok, false, 0, 0, 0), Ok(()));
        assert_eq!(
            policy.admit(
                &root,
                &spec(&["--pid", "1", "-d", "1h", "--probes", "all"]),
                true,
                0,
                0,
                0
            ),
            Ok(())
        );
        let refused = |caller, s: &WindowSpec, artifacts, by_caller| {
            policy
                .admit(caller, s, artifacts, 0, by_caller, 0)
                .unwrap_err()
                .0
        };
        assert!(refused(&stranger, &ok, false, 0).contains("no rule"));
        assert!(refused(&sre, &spec(&["--pid", "1", "-d", "10m"]), false, 0).contains("rule `sre`"));
        assert!(refused(&sre, &spec(&["--pid", "1", "-d", "10m"]), false, 0)
            .contains("max_duration 5m"));
        assert!(refused(&sre, &ok, false, 2).contains("max_windows"));
        assert!(refused(
            &sre,
            &spec(&["--pid", "1", "--probes", "syscalls"]),
            false,
            0
        )
        .contains("family `syscalls`"));
        assert!(refused(
            &sre,
            &spec(&["--container", "x", "--capsule", "strace"]),
            false,
            0
        )
        .contains("capsule `strace`"));
        let custom = |image: &str| {
            spec(&[
                "--container",
                "x",
                "--capsule",
                &format!("image={image},cmd=/bin/true"),
            ])
        };
        assert_eq!(
            policy.admit(&sre, &custom("team/tools:1"), false, 0, 0, 0),
            Ok(())
        );
        assert!(refused(&sre, &custom("team/other:1"), false, 0)
            .contains("capsule image `team/other:1` is not in its images (team/tools:1)"));
        assert_eq!(
            policy.admit(&root, &custom("anything:2"), false, 0, 0, 0),
            Ok(())
        );
        assert!(refused(&sre, &ok, true, 0).contains("--artifacts"));
        assert!(refused(
            &sre,
            &spec(&["--pid", "1", "--otlp-endpoint", "http://127.0.0.1:1"]),
            false,
            0
        )
        .contains("otlp"));
        // With otlp allowed: an https:// endpoint is, a certificate file the agent would
        // read as root is not.
        let otlp_policy = Policy::parse(
            &POLICY.replace("max_windows = 2", "max_windows = 2\notlp = true"),
            "policy.toml",
        )
        .unwrap();
        let https = ["--pid", "1", "--otlp-endpoint", "https://collector:4317"];
        assert_eq!(
            otlp_policy.admit(&sre, &spec(&https), false, 0, 0, 0),
            Ok(())
        );
        let naming_a_file =
            spec_with_env(&https, &[("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/shadow")]);
        assert!(otlp_policy
            .admit(&sre, &naming_a_file, false, 0, 0, 0)
            .unwrap_err()
            .0
            .contains("would read as root"));
        assert_eq!(
            otlp_policy.admit(&root, &naming_a_file, false, 0, 0, 0),
            Ok(())
        );
        assert!(policy
            .admit(&root, &ok, false, 0, 0, 10)
            .unwrap_err()
            .0
            .contains("max_windows_total"));
        // Quota: 600 MiB kept plus two 300 MiB capsules is over 1 GiB; one is not.
        let with_quota = POLICY
            .replace(
                "capsules = [\"tcpdump\"]",
                "capsules = [\"tcpdump\", \"strace\"]",
            )
            .replace(
                "max_windows = 2",
                "max_windows = 2\nartifact_quota = \"1GiB\"",
            );
        let quota = Policy::parse(&with_quota, "p").unwrap();
        let one = spec(&[
            "--container",
            "x",
            "--capsule",
            "tcpdump",
            "--capsule-max-size",
            "300MiB",
        ]);
        assert_eq!(quota.admit(&sre, &one, false, 600 << 20, 0, 0), Ok(()));
        let two = spec(&[
            "--container",
            "x",
            "--capsule",
            "tcpdump",
            "--capsule",
            "strace",
            "--capsule-max-size",
            "300MiB",
        ]);
        let e = quota
            .admit(&sre, &two, false, 600 << 20, 0, 0)
            .unwrap_err()
            .0;
        assert!(e.contains("artifact_quota"), "{e}");
    }

    #[test]
    fn the_shipped_example_policy_parses() {
        let text = include_str!("../../../deploy/policy.example.toml");
        let policy = Policy::parse(text, "policy.example.toml").unwrap();
        assert_eq!(policy.rules[0].name, "sre-on-call");
        assert_eq!(policy.max_windows_total, 64);
    }

    #[test]
    fn bad_policies_are_refused_with_a_reason() {
        assert!(Policy::parse("max_windows_total = 100000", "p")
            .unwrap_err()
            .to_string()
            .contains("over what the agent can hold"));
        assert!(
            Policy::parse("[[rule]]\nname = \"x\"\nfamilies = [\"grpc\"]", "p")
                .unwrap_err()
                .to_string()
                .contains("unknown probe family")
        );
        assert!(Policy::parse("[[rule]]\nname = \"x\"\ncapsules = [\"lldb\"]", "p").is_err());
        assert!(Policy::parse("[[rule]]\nname = \"x\"\ncapsules = [\"gdb\"]", "p").is_ok());
        assert!(Policy::parse("surprise = 1", "p").is_err());
        assert!(Policy::parse("[[rule]]\nname = \"x\"\nmax_duration = \"inf\"", "p").is_err());
    }
}
