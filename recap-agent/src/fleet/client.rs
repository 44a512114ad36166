//! The CLI's side of a fleet window: write the request, follow every node's part until its
//! result, a timeout or its loss, and merge what came back.

use std::{collections::BTreeMap, fmt::Write, time::Duration};

use serde_json::{json, Value};

use super::{merge, now_unix_ms, Claim, Coordinator, FleetRequest, PartResult, Progress, Selector};
use crate::families::Family;

pub struct FleetWindowSpec {
    pub selector: Selector,
    pub duration: Duration,
    /// What every target's window counts and runs.
    pub window: super::FleetWindow,
    pub claim_timeout: Duration,
    pub result_grace: Duration,
}

/// Where a node's part stands.
#[derive(Clone, Debug)]
pub enum NodePart {
    Waiting,
    Claimed(Claim),
    Done(PartResult),
    /// Its agent's registration went before its result came.
    Lost,
    /// It never claimed its part.
    NoAnswer,
    /// It claimed, but its result did not come in time (e.g. etcd unreachable from it).
    NotCollected(Claim),
}

impl NodePart {
    fn status(&self) -> String {
        match self {
            NodePart::Waiting => "waiting".into(),
            NodePart::Claimed(_) => "running".into(),
            NodePart::Done(r) => r.status.clone(),
            NodePart::Lost => "lost".into(),
            NodePart::NoAnswer => "no_answer".into(),
            NodePart::NotCollected(_) => "not_collected".into(),
        }
    }
}

pub struct FleetOutcome {
    pub request: FleetRequest,
    pub parts: BTreeMap<String, NodePart>,
    /// From submitting the request to every node having claimed its part.
    pub all_claimed_after: Option<Duration>,
}

impl FleetOutcome {
    /// Every node's part came back (whatever it says).
    pub fn complete(&self) -> bool {
        self.parts
            .values()
            .all(|p| matches!(p, NodePart::Done(r) if r.status != "lost"))
    }

    /// Every node's part came back and ran all it was asked to: every window completed, or
    /// the node had no matching container. Anything else (`partial`, `refused`, `failed`,
    /// `lost`, ...) makes `recap fleet window` exit 1.
    pub fn succeeded(&self) -> bool {
        self.parts.values().all(
            |p| matches!(p, NodePart::Done(r) if r.status == "completed" || r.status == "no_targets"),
        )
    }

    fn summaries(&self) -> impl Iterator<Item = &Value> {
        self.parts
            .values()
            .filter_map(|p| match p {
                NodePart::Done(r) => Some(r.targets.iter().filter_map(|t| t.summary.as_ref())),
                _ => None,
            })
            .flatten()
    }

    pub fn totals(&self) -> serde_json::Map<String, Value> {
        let families: Vec<&str> = Family::ALL.iter().map(|f| f.name()).collect();
        merge::totals(self.summaries(), &families)
    }

    pub fn to_json(&self) -> Value {
        let nodes: Vec<Value> = self
            .parts
            .iter()
            .map(|(node, part)| {
                let (targets, error) = match part {
                    NodePart::Done(r) => (
                        serde_json::to_value(&r.targets).unwrap_or_default(),
                        r.error.clone(),
                    ),
                    NodePart::Claimed(c) | NodePart::NotCollected(c) => (
                        json!(c
                            .targets
                            .iter()
                            .map(|t| json!({"container": t}))
                            .collect::<Vec<_>>()),
                        None,
                    ),
                    _ => (json!([]), None),
                };
                json!({"node": node, "status": part.status(), "targets": targets, "error": error})
            })
            .collect();
        json!({
            "schema": "recap.fleet/v1",
            "request_id": self.request.id,
            "user": self.request.user,
            "selector": self.request.selector.to_string(),
            "created_unix_ms": self.request.created_unix_ms,
            "deadline_unix_ms": self.request.deadline_unix_ms,
            "complete": self.complete(),
            "all_claimed_ms": self.all_claimed_after.map(|d| d.as_millis() as u64),
            "windows": self.summaries().count(),
            "totals": self.totals(),
            "nodes": nodes,
        })
    }

    pub fn table(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "RECap fleet window {} on {} ({} nodes, {} windows)",
            self.request.id,
            self.request.selector,
            self.parts.len(),
            self.summaries().count()
        );
        for (node, part) in &self.parts {
            let _ = writeln!(o, "  {node}: {}", part.status());
            if let NodePart::Done(r) = part {
                for t in &r.targets {
                    let _ = writeln!(
                        o,
                        "    {} window {} {}{}",
                        t.container,
                        t.window_id.as_deref().unwrap_or("-"),
                        t.status,
                        t.error
                            .as_ref()
                            .map(|e| format!(": {e}"))
                            .unwrap_or_default()
                    );
                }
                if let Some(e) = &r.error {
                    let _ = writeln!(o, "    {e}");
                }
            }
        }
        o.push_str("\ntotals\n");
        let mut lines = Vec::new();
        flatten("", &Value::Object(self.totals()), &mut lines);
        for (k, v) in lines {
            let _ = writeln!(o, "  {k:<50} {v:>14}");
        }
        o
    }
}

/// `a.b.c  N` for every count of the totals (lists of entries by their name fields).
fn flatten(path: &str, v: &Value, out: &mut Vec<(String, u64)>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                flatten(&p, v, out);
            }
        }
        Value::Array(a) => {
            for entry in a {
                let name: Vec<String> = ["name", "method", "status"]
                    .iter()
                    .filter_map(|k| {
                        entry
                            .get(*k)
                            .map(|v| v.to_string().trim_matches('"').to_string())
                    })
                    .collect();
                if name.is_empty() {
                    continue; // histogram buckets: see the JSON
                }
                let p = format!("{path}[{}]", name.join(" "));
                match entry
                    .get("count")
                    .or_else(|| entry.pointer("/duration/count"))
                {
                    Some(Value::Number(n)) => out.push((p, n.as_u64().unwrap_or(0))),
                    _ => flatten(&p, entry, out),
                }
            }
        }
        Value::Number(n) if !path.ends_with("_ns") || path.ends_with("on_cpu_ns") => {
            if let Some(n) = n.as_u64() {
                out.push((path.to_string(), n));
            }
        }
        _ => {}
    }
}

/// Writes the request and follows it to the end. Progress lines go to stderr.
pub async fn run_fleet_window(
    coordinator: &dyn Coordinator,
    user: &str,
    spec: FleetWindowSpec,
) -> anyhow::Result<FleetOutcome> {
    let nodes = coordinator.nodes().await?;
    if nodes.is_empty() {
        anyhow::bail!(
            "no agent is registered: start `recap agent --node NAME --etcd ...` on the nodes (`recap fleet nodes` lists them)"
        );
    }
    if !super::is_key_name(user) {
        anyhow::bail!(
            "etcd user `{}` cannot make fleet requests: a user name of 1 to 128 characters without `/`, spaces or control characters",
            user.escape_debug()
        );
    }
    let created = now_unix_ms();
    let request = FleetRequest {
        id: crate::window::new_window_id(),
        user: user.to_string(),
        selector: spec.selector,
        window: spec.window,
        created_unix_ms: created,
        deadline_unix_ms: created + spec.duration.as_millis() as u64,
        nodes: nodes.clone(),
        lease: 0,
    };
    let mut progress = coordinator.follow(&request).await?;
    let submitted = tokio::time::Instant::now();
    let request = coordinator.submit(request).await?;
    eprintln!(
        "recap: fleet window {} on {} for {}: {} nodes ({})",
        request.id,
        request.selector,
        crate::text::units::format_duration(spec.duration),
        nodes.len(),
        nodes.join(", ")
    );
    let mut parts: BTreeMap<String, NodePart> = nodes
        .iter()
        .map(|n| (n.clone(), NodePart::Waiting))
        .collect();
    let claim_by = submitted + spec.claim_timeout;
    let results_by = submitted + spec.duration + spec.result_grace;
    let mut all_claimed_after = None;
    let open = |parts: &BTreeMap<String, NodePart>| {
        parts
            .values()
            .any(|p| matches!(p, NodePart::Waiting | NodePart::Claimed(_)))
    };
    while open(&parts) {
        let deadline = if parts.values().any(|p| matches!(p, NodePart::Waiting)) {
            claim_by.min(results_by)
        } else {
            results_by
        };
        let event = tokio::select! {
            e = progress.recv() => e,
            _ = tokio::time::sleep_until(deadline) => None,
        };
        match event {
            Some(Progress::Claimed(c)) => {
                if let Some(p @ NodePart::Waiting) = parts.get_mut(&c.node) {
                    eprintln!("recap: {}: claimed, {} target(s)", c.node, c.targets.len());
                    *p = NodePart::Claimed(c);
                }
                if all_claimed_after.is_none()
                    && parts.values().all(|p| !matches!(p, NodePart::Waiting))
                {
                    all_claimed_after = Some(submitted.elapsed());
                }
            }
            Some(Progress::Result(r)) => {
                if let Some(p) = parts.get_mut(&r.node) {
                    if !matches!(p, NodePart::Done(_)) {
                        eprintln!("recap: {}: {}", r.node, r.status);
                        *p = NodePart::Done(r);
                    }
                }
            }
            Some(Progress::NodeGone(node)) => {
                if let Some(p) = parts.get_mut(&node) {
                    if matches!(p, NodePart::Waiting | NodePart::Claimed(_)) {
                        eprintln!("recap: {node}: lost (its agent's registration expired)");
                        *p = NodePart::Lost;
                    }
                }
            }
            None => {
                // A timeout (or the coordinator went away): whoever is still open now is
                // reported as such, not waited for.
                let now = tokio::time::Instant::now();
                for (node, p) in parts.iter_mut() {
                    match p {
                        NodePart::Waiting if now >= claim_by => {
                            eprintln!("recap: {node}: no answer");
                            *p = NodePart::NoAnswer;
                        }
                        NodePart::Claimed(c) if now >= results_by => {
                            eprintln!("recap: {node}: result not collected");
                            *p = NodePart::NotCollected(c.clone());
                        }
                        _ => {}
                    }
                }
                if now < claim_by.min(results_by) && progress.is_closed() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
    Ok(FleetOutcome {
        request,
        parts,
        all_claimed_after,
    })
}
