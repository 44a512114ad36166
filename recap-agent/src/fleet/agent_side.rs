//! The agent's side of fleet windows: registered while it runs, it takes its part of every
//! request made while it was registered: one window per matching container, each opened
//! through the agent itself (same parser, same policy, same history), ending at the request's
//! absolute deadline; then it publishes the part's result.

use std::{collections::HashSet, sync::Arc, time::Duration};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    now_unix_ms, selector::matching_containers, Claim, Coordinator, FleetRequest, PartResult,
    TargetResult,
};
use crate::agent::{
    api::WindowRecord,
    policy::Caller,
    windows::{Agent, StartError},
};

pub struct FleetNode {
    pub node: String,
    pub coordinator: Arc<dyn Coordinator>,
    pub agent: Arc<Agent>,
    /// Whom the policy sees as the caller of fleet parts (`--fleet-uid`).
    pub caller: Caller,
    /// The agent's shutdown.
    pub stop: CancellationToken,
    /// The parts being run; waited for (briefly) at shutdown so that they publish.
    pub parts: TaskTracker,
    /// Labels that make a container this node's (`--fleet-scope`).
    pub scope: Option<super::Selector>,
}

impl FleetNode {
    /// Registers the node and serves requests until `stop`.
    pub async fn run(self: Arc<Self>) {
        let stop = self.stop.clone();
        let mut delay = Duration::from_millis(200);
        loop {
            match self.coordinator.register(&self.node).await {
                Ok(()) => break,
                Err(e) => log::warn!("fleet: registering node {}: {e:#}; retrying", self.node),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        log::info!("fleet: node {} registered", self.node);
        let mut requests = match self.coordinator.requests().await {
            Ok(rx) => rx,
            Err(e) => {
                log::error!("fleet: watching requests: {e:#}");
                return;
            }
        };
        let mut seen = HashSet::new();
        loop {
            let request = tokio::select! {
                _ = stop.cancelled() => break,
                r = requests.recv() => match r { Some(r) => r, None => break },
            };
            // Only nodes registered when the request was made take part: the CLI waits for
            // exactly those.
            if !request.nodes.contains(&self.node) || !seen.insert(request.id.clone()) {
                continue;
            }
            let me = self.clone();
            if request.deadline_unix_ms <= now_unix_ms() {
                // Over before this agent saw it (it was down, or restarted since).
                self.parts
                    .spawn(async move { me.settle_past(request).await });
                continue;
            }
            self.parts.spawn(async move { me.take_part(request).await });
        }
        self.parts.close();
        self.parts.wait().await;
    }

    fn result(
        &self,
        status: &str,
        targets: Vec<TargetResult>,
        error: Option<String>,
    ) -> PartResult {
        PartResult {
            node: self.node.clone(),
            status: status.into(),
            targets,
            error,
        }
    }

    /// A request whose deadline passed before this agent saw it: its part was `lost` if an
    /// earlier life of this agent claimed it (and published nothing: the first result stands),
    /// else `expired`.
    async fn settle_past(&self, request: FleetRequest) {
        let claim = Claim {
            node: self.node.clone(),
            claimed_unix_ms: now_unix_ms(),
            targets: Vec::new(),
        };
        let result = match self.coordinator.claim(&request, &claim).await {
            Ok(true) => self.result(
                "expired",
                Vec::new(),
                Some("seen after its deadline".into()),
            ),
            Ok(false) => self.result(
                "lost",
                Vec::new(),
                Some("the agent stopped while the part was open".into()),
            ),
            Err(e) => {
                log::warn!("fleet: settling request {}: {e:#}", request.id);
                return;
            }
        };
        let _ = self.coordinator.publish(&request, &result).await;
    }

    async fn take_part(&self, request: FleetRequest) {
        // Both the request's labels and the node's scope must hold (a key both give with two
        // values matches nothing).
        let mut selector = request.selector.clone();
        let mut conflict = false;
        for (k, v) in self.scope.iter().flat_map(|s| s.0.iter()) {
            conflict |= selector
                .0
                .insert(k.clone(), v.clone())
                .is_some_and(|old| &old != v);
        }
        let matched = match crate::docker::connect().await {
            Ok(_) if conflict => Ok(Vec::new()),
            Ok(docker) => matching_containers(&docker, &selector)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let claim = Claim {
            node: self.node.clone(),
            claimed_unix_ms: now_unix_ms(),
            targets: matched
                .as_ref()
                .map(|m| m.iter().map(|c| c.name.clone()).collect())
                .unwrap_or_default(),
        };
        match self.coordinator.claim(&request, &claim).await {
            Ok(true) => {}
            Ok(false) => {
                // An earlier life of this agent claimed it and died with it open (its windows
                // went with it): say so, unless that life published a result.
                let lost = self.result(
                    "lost",
                    Vec::new(),
                    Some("the agent stopped while the part was open".into()),
                );
                let _ = self.coordinator.publish(&request, &lost).await;
                return;
            }
            Err(e) => {
                log::warn!("fleet: claiming request {}: {e:#}", request.id);
                return;
            }
        }
        let matched = match matched {
            Ok(m) => m,
            Err(e) => {
                let failed = self.result("failed", Vec::new(), Some(e));
                let _ = self.coordinator.publish(&request, &failed).await;
                return;
            }
        };
        if matched.is_empty() {
            let _ = self
                .coordinator
                .publish(&request, &self.result("no_targets", Vec::new(), None))
                .await;
            return;
        }
        // The window ends at the request's deadline, however late this node starts it.
        let remaining = request.deadline_unix_ms.saturating_sub(now_unix_ms());
        if remaining == 0 {
            let expired = self.result(
                "expired",
                Vec::new(),
                Some("seen after its deadline".into()),
            );
            let _ = self.coordinator.publish(&request, &expired).await;
            return;
        }
        let mut started = Vec::new();
        for container in &matched {
            let mut args = request.args.clone();
            args.extend([
                "--container".to_string(),
                container.id.clone(),
                "-d".to_string(),
                format!("{remaining}ms"),
            ]);
            let outcome = self
                .agent
                .start(self.caller.clone(), args, Default::default())
                .await
                .map(|(id, _)| id)
                .map_err(|e| match e {
                    StartError::Invalid(m) | StartError::Refused(m) | StartError::Failed(m) => m,
                });
            started.push((container, outcome));
        }
        let mut targets = Vec::new();
        for (container, outcome) in started {
            targets.push(match outcome {
                Ok(window_id) => {
                    let record = self.wait_end(&window_id).await;
                    target_result(&container.name, Some(window_id), record)
                }
                Err(error) => TargetResult {
                    container: container.name.clone(),
                    window_id: None,
                    status: "failed".into(),
                    summary: None,
                    error: Some(error),
                },
            });
        }
        let status = if targets.iter().all(|t| t.status == "completed") {
            "completed"
        } else {
            "partial"
        };
        let result = self.result(status, targets, None);
        if let Err(e) = self.coordinator.publish(&request, &result).await {
            log::warn!("fleet: publishing request {}: {e:#}", request.id);
        }
    }

    /// Waits for a window's end and returns its final record.
    async fn wait_end(&self, window_id: &str) -> Option<WindowRecord> {
        if let Some(mut live) = self.agent.watch(window_id) {
            while live.borrow().ended.is_none() {
                if live.changed().await.is_err() {
                    break;
                }
            }
        }
        self.agent.get(window_id)
    }
}

fn target_result(
    container: &str,
    window_id: Option<String>,
    record: Option<WindowRecord>,
) -> TargetResult {
    let Some(r) = record else {
        return TargetResult {
            container: container.into(),
            window_id,
            status: "failed".into(),
            summary: None,
            error: Some("the window's record is missing".into()),
        };
    };
    TargetResult {
        container: container.into(),
        window_id,
        status: r.status.clone(),
        summary: serde_json::from_str(&r.summary_json).ok(),
        error: (!r.error.is_empty()).then(|| r.error.clone()),
    }
}
