//! Fleet windows: one request, a window on every matching container of every node, one merged
//! answer. A `Coordinator` carries requests to the node agents and their results back; etcd is
//! the implementation here (`etcd.rs`), a Kubernetes custom resource the next one.
//!
//! The protocol, whatever carries it:
//! - an agent registers its node while it lives (a lease: a dead agent's registration goes);
//! - the CLI writes a request: a selector, `recap window`'s options, an absolute deadline, and
//!   the nodes registered at that moment (those are the ones it waits for);
//! - each agent claims its part of a request once (a create-only transaction: a restarted agent
//!   finds its claim and never runs a part twice), runs one window per matching container until
//!   the deadline, and publishes its part's result (retrying while the coordinator is away);
//! - the CLI follows the parts and merges the results; a node whose registration goes before
//!   its result is `lost`, one that never claims is `no_answer`.

pub mod client;
pub mod etcd;
pub mod limits;
pub mod merge;
pub mod selector;

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use selector::Selector;

use crate::{capsule::CapsuleSpec, families::Family};

/// A fleet window request, as the CLI writes it. Nothing else is one (unknown fields are
/// refused): in particular it has no place for OTLP headers, whose values (`authorization=Bearer
/// ...`) would sit in clear in the coordinator, readable by every agent; a fleet's OTLP export
/// and its headers belong on the nodes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FleetRequest {
    pub id: String,
    /// Who asked (the coordinator's user, e.g. the etcd user).
    pub user: String,
    pub selector: Selector,
    /// What every target's window counts and runs (each node gives the target and the
    /// duration up to the deadline).
    #[serde(default)]
    pub window: FleetWindow,
    pub created_unix_ms: u64,
    /// The window ends here on every node, whenever a node starts it.
    pub deadline_unix_ms: u64,
    /// The nodes registered when the request was made: the parts the CLI waits for.
    pub nodes: Vec<String>,
    /// The coordinator's handle on the request's lifetime (etcd: a lease the request, its
    /// claims and results are bound to, so that they go an hour after the deadline).
    #[serde(default)]
    pub lease: i64,
}

/// The window options of a fleet request: typed as the agent's API types them, checked on each
/// node as the agent checks any request.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FleetWindow {
    /// Empty: the families on by default.
    #[serde(default)]
    pub families: Vec<Family>,
    #[serde(default)]
    pub capsules: Vec<CapsuleSpec>,
    /// Each capsule's artifact cap; 0: the default.
    #[serde(default)]
    pub capsule_max_bytes: u64,
}

/// The most a request may weigh as the coordinator holds it (a request the CLI writes is a few
/// hundred bytes; one over this is refused unread).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// The furthest ahead a deadline may be (the CLI's `--duration` is at most 1h; a minute of
/// slack for clocks).
pub const MAX_DEADLINE_AHEAD_MS: u64 = 3_660_000;

/// A request id: 12 lowercase hex digits, as `new_window_id` makes them. Nothing else (no `/`,
/// no other length) is a request id, so that no request's keys can reach into another's.
pub fn is_request_id(id: &str) -> bool {
    id.len() == 12 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A user or node name as it may appear in a key: 1 to 128 bytes, no `/`, no control
/// characters, no spaces.
pub fn is_key_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name
            .chars()
            .any(|c| c == '/' || c.is_control() || c.is_whitespace())
}

impl FleetRequest {
    /// What a node checks before it takes part, beyond what its parser and policy check: a
    /// mistake or a trick in a hand-written request is refused here, with the reason.
    pub fn check(&self, now_ms: u64) -> Result<(), String> {
        if !is_request_id(&self.id) {
            return Err("the request id is not 12 hex digits".into());
        }
        if !is_key_name(&self.user) {
            return Err("the requesting user is not a valid name".into());
        }
        if self.selector.0.is_empty() {
            return Err("the selector is empty: give at least one KEY=VALUE (a fleet window never watches every container)".into());
        }
        // Labels as the CLI's parser takes them (no control characters, bounded).
        if let Err(e) = self.selector.to_string().parse::<Selector>() {
            return Err(format!("selector: {e}"));
        }
        if self.deadline_unix_ms > now_ms.saturating_add(MAX_DEADLINE_AHEAD_MS) {
            return Err("the deadline is more than 1h away".into());
        }
        if let Some(n) = self.nodes.iter().find(|n| !is_key_name(n)) {
            return Err(format!("node name `{}` is not valid", n.escape_debug()));
        }
        Ok(())
    }
}

/// A node's claim on its part of a request.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claim {
    pub node: String,
    pub claimed_unix_ms: u64,
    /// The containers it is opening windows on.
    pub targets: Vec<String>,
}

/// What one node did with its part.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PartResult {
    pub node: String,
    /// `completed` (every window ran), `partial` (some failed), `no_targets`, `failed`,
    /// `lost` (the agent died with the part open), `expired` (seen after its deadline),
    /// `refused` (the node would not take it: per-user limits, etcd auth off, a request that
    /// does not pass `FleetRequest::check`), `invalid` (the request could not be read).
    pub status: String,
    pub targets: Vec<TargetResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One window of a part.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TargetResult {
    pub container: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_id: Option<String>,
    pub status: String,
    /// The window's summary (schema recap.window/v1), when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What moved in a request, as the CLI follows it.
#[derive(Clone, Debug)]
pub enum Progress {
    Claimed(Claim),
    Result(PartResult),
    /// A node's registration went (its lease expired).
    NodeGone(String),
}

/// What a node finds under the requests.
#[derive(Clone, Debug)]
pub enum Incoming {
    Request(FleetRequest),
    /// A request the node cannot read. `part` is the (user, id) its result goes to when its key
    /// was well-formed (none: nowhere, the node only logs it).
    Malformed {
        key: String,
        part: Option<(String, String)>,
        error: String,
    },
}

/// Carries requests and results between the CLI and the agents.
#[async_trait::async_trait]
pub trait Coordinator: Send + Sync {
    /// Keeps this node registered until the returned guard is dropped or the process dies.
    async fn register(&self, node: &str) -> anyhow::Result<()>;
    /// Whether the coordinator checks who writes what (etcd: its auth is on). Without that,
    /// anyone who reaches it could request windows and forge results.
    async fn auth_on(&self) -> anyhow::Result<bool>;
    /// The nodes registered now.
    async fn nodes(&self) -> anyhow::Result<Vec<String>>;
    /// Writes a new request; returns it as written (with its lifetime handle).
    async fn submit(&self, request: FleetRequest) -> anyhow::Result<FleetRequest>;
    /// Requests there now, then every new one, as they come (requests long past their
    /// deadline are dropped).
    async fn requests(&self) -> anyhow::Result<tokio::sync::mpsc::Receiver<Incoming>>;
    /// Claims `node`'s part of a request; false if it was claimed before (by an earlier life of
    /// this agent).
    async fn claim(&self, request: &FleetRequest, claim: &Claim) -> anyhow::Result<bool>;
    /// Publishes a part's result; the first one published stands. Claims and results go an
    /// hour after the request's deadline, whatever the request's body says.
    async fn publish(&self, request: &FleetRequest, result: &PartResult) -> anyhow::Result<()>;
    /// The claims and results of a request so far, then every change, as they come.
    async fn follow(
        &self,
        request: &FleetRequest,
    ) -> anyhow::Result<tokio::sync::mpsc::Receiver<Progress>>;
}

pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> FleetRequest {
        FleetRequest {
            id: "0123456789ab".into(),
            user: "alice".into(),
            selector: "app=x".parse().unwrap(),
            window: FleetWindow {
                families: vec![Family::TCP],
                ..Default::default()
            },
            created_unix_ms: 1_000,
            deadline_unix_ms: 5_000,
            nodes: vec!["n1".into()],
            lease: 0,
        }
    }

    #[test]
    fn a_node_refuses_requests_the_cli_would_not_write_with_the_reason() {
        assert_eq!(request().check(1_000), Ok(()));
        let refused = |edit: &dyn Fn(&mut FleetRequest)| {
            let mut r = request();
            edit(&mut r);
            r.check(1_000).unwrap_err()
        };
        assert!(refused(&|r| r.selector.0.clear()).contains("selector is empty"));
        assert!(refused(&|r| {
            r.selector.0.insert("a\n".into(), "b".into());
        })
        .contains("control"));
        assert!(refused(&|r| r.deadline_unix_ms = 1_000 + 2 * 3_600_000).contains("1h"));
        assert!(refused(&|r| r.id = "../../x".into()).contains("12 hex"));
        assert!(refused(&|r| r.nodes.push("a/b".into())).contains("node name"));
    }

    #[test]
    fn a_request_has_no_place_for_a_secret_a_target_or_a_duration() {
        let mut json = serde_json::to_value(request()).unwrap();
        json["window"]["families"] = serde_json::json!(["tcp", "http"]);
        let back: FleetRequest = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back.window.families, vec![Family::TCP, Family::HTTP]);
        for (at, field) in [
            ("window", "otlp_headers"),
            ("window", "pid"),
            ("window", "duration"),
            ("", "args"),
        ] {
            let mut j = json.clone();
            let place = if at.is_empty() { &mut j } else { &mut j[at] };
            place[field] = serde_json::json!(["authorization=Bearer s3cret"]);
            let e = serde_json::from_value::<FleetRequest>(j)
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("unknown field `{field}`")), "{e}");
            assert!(!e.contains("s3cret"), "{e}");
        }
    }

    #[test]
    fn ids_and_names_are_what_keys_can_hold() {
        assert!(is_request_id("0123456789ab"));
        for id in [
            "0123456789a",
            "0123456789abc",
            "0123456789AB",
            "01234567/9ab",
            "",
        ] {
            assert!(!is_request_id(id), "{id}");
        }
        assert!(is_key_name("node-a.example"));
        for n in ["", "a/b", "a b", "a\nb", &"x".repeat(129)] {
            assert!(!is_key_name(n), "{n:?}");
        }
    }
}
