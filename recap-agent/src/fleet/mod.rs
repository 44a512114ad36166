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

pub mod agent_side;
pub mod client;
pub mod etcd;
pub mod merge;
pub mod selector;

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use selector::Selector;

/// A fleet window request, as the CLI writes it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FleetRequest {
    pub id: String,
    /// Who asked (the coordinator's user, e.g. the etcd user).
    pub user: String,
    pub selector: Selector,
    /// `recap window`'s options without a target (duration, probes, capsules, export...).
    pub args: Vec<String>,
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
    /// `lost` (the agent died with the part open), `expired` (seen after its deadline).
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

/// Carries requests and results between the CLI and the agents.
#[async_trait::async_trait]
pub trait Coordinator: Send + Sync {
    /// Keeps this node registered until the returned guard is dropped or the process dies.
    async fn register(&self, node: &str) -> anyhow::Result<()>;
    /// The nodes registered now.
    async fn nodes(&self) -> anyhow::Result<Vec<String>>;
    /// Writes a new request; returns it as written (with its lifetime handle).
    async fn submit(&self, request: FleetRequest) -> anyhow::Result<FleetRequest>;
    /// Requests not yet past their deadline, then every new one, as they come.
    async fn requests(&self) -> anyhow::Result<tokio::sync::mpsc::Receiver<FleetRequest>>;
    /// Claims `node`'s part of a request; false if it was claimed before (by an earlier life of
    /// this agent).
    async fn claim(&self, request: &FleetRequest, claim: &Claim) -> anyhow::Result<bool>;
    /// Publishes a part's result; the first one published stands.
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
