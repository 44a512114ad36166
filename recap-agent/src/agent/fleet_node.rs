//! The agent's side of fleet windows: registered while it runs, it takes its part of every
//! request made while it was registered: one window per matching container, each opened
//! through the agent itself (same parser, same policy, same history), ending at the request's
//! absolute deadline; then it publishes the part's result.

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::fleet::{
    limits::UserLedger,
    now_unix_ms,
    selector::{matching_containers, matching_pods},
    Claim, Coordinator, FleetRequest, Incoming, PartResult, TargetResult,
};
use crate::{
    agent::{
        api::WindowRecord,
        audit,
        policy::Caller,
        windows::{Agent, StartError},
        wire,
    },
    targets::Target,
};

/// How often the node asks whether the coordinator's access control (etcd's auth) is on.
const AUTH_CHECK_EVERY: Duration = Duration::from_secs(5);

/// What the node knows of the coordinator's access control.
const AUTH_UNKNOWN: u8 = 0;
const AUTH_ON: u8 = 1;
const AUTH_OFF: u8 = 2;

pub struct FleetNode {
    pub node: String,
    pub coordinator: Arc<dyn Coordinator>,
    pub agent: Arc<Agent>,
    /// Whom the policy sees as the caller of fleet parts (`--fleet-uid`); each part's caller
    /// adds on whose behalf (the etcd user and the request id).
    pub caller: Caller,
    /// Per etcd user: windows open, requests per minute (`--fleet-user-*`).
    pub limits: UserLedger,
    /// Take requests while etcd's auth is off (`--etcd-allow-no-auth`).
    pub allow_no_auth: bool,
    /// The agent's shutdown.
    pub stop: CancellationToken,
    /// The parts being run; waited for (briefly) at shutdown so that they publish.
    pub parts: TaskTracker,
    /// Labels that make a container this node's (`--fleet-scope`).
    pub scope: Option<crate::fleet::Selector>,
    /// `AUTH_*`: what the last check found.
    pub auth: AtomicU8,
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
        // Whether auth is on is known before the first request is looked at, then checked
        // again and again (it can be turned off under a running agent).
        while self.auth.load(Ordering::Relaxed) == AUTH_UNKNOWN {
            self.check_auth().await;
            if self.auth.load(Ordering::Relaxed) != AUTH_UNKNOWN {
                break;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        let checker = self.clone();
        let checker_stop = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = checker_stop.cancelled() => return,
                    _ = tokio::time::sleep(AUTH_CHECK_EVERY) => checker.check_auth().await,
                }
            }
        });
        let mut requests = match self.coordinator.requests().await {
            Ok(rx) => rx,
            Err(e) => {
                log::error!("fleet: watching requests: {e:#}");
                return;
            }
        };
        let mut seen = HashSet::new();
        loop {
            let incoming = tokio::select! {
                _ = stop.cancelled() => break,
                r = requests.recv() => match r { Some(r) => r, None => break },
            };
            let request = match incoming {
                Incoming::Request(r) => r,
                Incoming::Malformed { key, part, error } => {
                    if part.as_ref().is_some_and(|p| !seen.insert(p.clone())) {
                        continue;
                    }
                    self.malformed(key, part, error).await;
                    continue;
                }
            };
            // Only nodes registered when the request was made take part: the CLI waits for
            // exactly those.
            if !request.nodes.contains(&self.node)
                || !seen.insert((request.user.clone(), request.id.clone()))
            {
                continue;
            }
            if let Err(why) = self.admissible(&request) {
                self.refuse(&request, &why).await;
                continue;
            }
            let me = self.clone();
            if request.deadline_unix_ms <= now_unix_ms() {
                // Over before this agent saw it (it was down, or restarted since).
                self.parts
                    .spawn(async move { me.settle_past(request).await });
                continue;
            }
            if let Err(why) = self.limits.admit_request(&request.user, Instant::now()) {
                self.refuse(&request, &why).await;
                continue;
            }
            self.parts.spawn(async move { me.take_part(request).await });
        }
        self.parts.close();
        self.parts.wait().await;
    }

    /// Asks the coordinator whether its access control is on; says so when that changes.
    async fn check_auth(&self) {
        let now = match self.coordinator.auth_on().await {
            Ok(true) => AUTH_ON,
            Ok(false) => AUTH_OFF,
            Err(e) => {
                log::debug!("fleet: {e:#}");
                return;
            }
        };
        let before = self.auth.swap(now, Ordering::Relaxed);
        if before == now {
            return;
        }
        match (before, now, self.allow_no_auth) {
            (_, AUTH_ON, _) if before == AUTH_OFF => {
                log::warn!("fleet: etcd's auth is on again: taking fleet requests")
            }
            (_, AUTH_ON, _) => {}
            (AUTH_ON, _, false) => log::error!(
                "fleet: etcd's auth was turned off: anyone who reaches etcd could request windows or forge results; this node refuses fleet requests until it is on again (--etcd-allow-no-auth takes them anyway)"
            ),
            (_, _, false) => log::error!(
                "fleet: etcd's auth is off: anyone who reaches etcd could request windows or forge results; this node refuses fleet requests (turn auth on, or start the agent with --etcd-allow-no-auth to take them anyway)"
            ),
            (_, _, true) => log::warn!(
                "fleet: etcd's auth is off: taking fleet requests anyway (--etcd-allow-no-auth); anyone who reaches etcd can make this node open windows"
            ),
        }
    }

    /// The caller a part of `request` runs as: the fleet uid, on behalf of the etcd user.
    fn caller_for(&self, user: &str, id: &str) -> Caller {
        Caller {
            origin: Some(format!("fleet request {id} by etcd user {user}")),
            ..self.caller.clone()
        }
    }

    /// Whether this node takes `request` at all: auth on (or allowed off), and a request
    /// that passes `FleetRequest::check`.
    fn admissible(&self, request: &FleetRequest) -> Result<(), String> {
        if self.auth.load(Ordering::Relaxed) != AUTH_ON && !self.allow_no_auth {
            return Err("etcd's auth is off: this node takes no fleet requests without it (its agent's --etcd-allow-no-auth would)".into());
        }
        request.check(now_unix_ms())
    }

    /// A refusal: one bounded audit line, and a result that says why.
    async fn refuse(&self, request: &FleetRequest, why: &str) {
        let caller = self.caller_for(&request.user, &request.id);
        audit::log(
            &caller,
            &format!(
                "fleet part refused {}: {}",
                audit::args_line(&wire::command_line(&wire::fleet_part(
                    &request.window,
                    None,
                    Duration::from_millis(
                        request
                            .deadline_unix_ms
                            .saturating_sub(request.created_unix_ms)
                    )
                ))),
                audit::message(why)
            ),
        );
        let result = self.result("refused", Vec::new(), Some(audit::message(why)));
        self.publish_soon(request.clone(), result);
    }

    /// A request the node cannot read: one bounded log line, and (when its key names where)
    /// a result that says why.
    async fn malformed(&self, key: String, part: Option<(String, String)>, error: String) {
        log::warn!(
            "fleet: malformed request {}: {}",
            audit::message(&key),
            audit::message(&error)
        );
        let Some((user, id)) = part else { return };
        let (status, why) = match self.limits.admit_request(&user, Instant::now()) {
            Ok(()) => ("invalid", error),
            Err(rate) => ("refused", rate),
        };
        let stub = FleetRequest {
            id,
            user,
            selector: crate::fleet::Selector(Default::default()),
            window: Default::default(),
            created_unix_ms: now_unix_ms(),
            deadline_unix_ms: now_unix_ms(),
            nodes: vec![self.node.clone()],
            lease: 0,
        };
        let result = self.result(status, Vec::new(), Some(audit::message(&why)));
        self.publish_soon(stub, result);
    }

    /// Publishes in the background (etcd may be away: publishing retries).
    fn publish_soon(&self, request: FleetRequest, result: PartResult) {
        let coordinator = self.coordinator.clone();
        self.parts.spawn(async move {
            if let Err(e) = coordinator.publish(&request, &result).await {
                log::warn!("fleet: publishing request {}: {e:#}", request.id);
            }
        });
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

    /// The containers of this node that `request` selects and the node's policy lets the
    /// fleet caller watch; and how many more it selected that the policy does not.
    async fn targets(
        &self,
        request: &FleetRequest,
        caller: &Caller,
    ) -> Result<(Vec<crate::fleet::selector::Matched>, usize), String> {
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
        // Docker's containers and the CRI runtime's pods, from whichever answers.
        let docker = crate::docker::connect().await.ok();
        let endpoint = self.agent.cri_endpoint();
        if docker.is_none() && !endpoint.exists() {
            return Err(format!(
                "no Docker engine answers and no CRI socket is at {}",
                endpoint.display()
            ));
        }
        if conflict {
            return Ok((Vec::new(), 0));
        }
        let mut matched = Vec::new();
        if let Some(docker) = &docker {
            matched.extend(
                matching_containers(docker, &selector)
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        if endpoint.exists() {
            match matching_pods(endpoint, &selector).await {
                Ok(pods) => matched.extend(pods),
                // A containerd without its CRI plugin (Docker's own) has no pods to give.
                Err(e) if docker.is_some() => log::warn!("fleet: no pods: {e}"),
                Err(e) => return Err(e.to_string()),
            }
        }
        let mut allowed = Vec::new();
        let mut left_out = 0;
        for m in matched {
            let spec = m.target();
            // A container or pod that went meanwhile is simply not there.
            let resolved = match &docker {
                Some(docker) if m.pod_of.is_none() => {
                    Target::resolve_with_docker(&spec, docker).await
                }
                _ => Target::resolve_pod(&spec).await,
            };
            let Ok(target) = resolved else {
                continue;
            };
            // The agent's own policy (it checks again when it arms).
            match self.agent.policy().admit_target(caller, &target) {
                Ok(()) => allowed.push(m),
                Err(_) => left_out += 1,
            }
        }
        Ok((allowed, left_out))
    }

    async fn take_part(&self, request: FleetRequest) {
        let caller = self.caller_for(&request.user, &request.id);
        let matched = self.targets(&request, &caller).await;
        // The claim names only what the policy lets through: whoever reads the parts learns
        // nothing of the containers this caller may not watch.
        let claim = Claim {
            node: self.node.clone(),
            claimed_unix_ms: now_unix_ms(),
            targets: matched
                .as_ref()
                .map(|(m, _)| m.iter().map(|c| c.name.clone()).collect())
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
        let (matched, left_out) = match matched {
            Ok(m) => m,
            Err(e) => {
                let failed = self.result("failed", Vec::new(), Some(audit::message(&e)));
                let _ = self.coordinator.publish(&request, &failed).await;
                return;
            }
        };
        let note = (left_out > 0).then(|| {
            format!("{left_out} more matching container(s) left out: this node's policy does not let fleet windows watch them")
        });
        if matched.is_empty() {
            let _ = self
                .coordinator
                .publish(&request, &self.result("no_targets", Vec::new(), note))
                .await;
            return;
        }
        // Per etcd user, besides the fleet uid's policy: the whole part, or none of it.
        let reservation = match self.limits.reserve(&request.user, matched.len()) {
            Ok(r) => r,
            Err(why) => {
                self.refuse(&request, &why).await;
                return;
            }
        };
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
            let spec = wire::fleet_part(
                &request.window,
                Some(&container.target()),
                Duration::from_millis(remaining),
            );
            let outcome = self
                .agent
                .start(caller.clone(), spec)
                .await
                .map(|(id, _)| id)
                .map_err(|e| match e {
                    StartError::Invalid(m) | StartError::Refused(m) | StartError::Failed(m) => {
                        audit::message(&m)
                    }
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
        drop(reservation);
        let status = if targets.iter().all(|t| t.status == "completed") {
            "completed"
        } else {
            "partial"
        };
        let result = self.result(status, targets, note);
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
        status: super::wire::status_name(r.status),
        summary: serde_json::from_str(&r.summary_json).ok(),
        error: (!r.error.is_empty()).then(|| r.error.clone()),
    }
}
