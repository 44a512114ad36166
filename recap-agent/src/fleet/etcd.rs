//! The fleet coordinator on etcd: registrations under leases, requests and results as keys,
//! claims by create-only transactions, progress by watches.
//!
//! Keys, under the prefix (default `/recap/`):
//! - `nodes/<node>`: a live agent (bound to its lease);
//! - `requests/<user>/<id>`: a request; `<user>` is the etcd user allowed to write there
//!   (roles grant each user its own `requests/<user>/` only), and it is read from the key, never
//!   from the request's body;
//!   (`<id>` is 12 hex digits, nothing else: a key with more after the id is no request);
//! - `parts/<user>/<id>/claim/<node>`, `parts/<user>/<id>/result/<node>`: a node's claim and
//!   its result, under the requesting user (so that a request alice writes with bob's id
//!   never reaches bob's parts), bound to a lease the node grants (whatever the request says).

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    PutOptions, TlsOptions, Txn, TxnOp, WatchOptions,
};
use tokio::sync::mpsc;

use super::{
    is_key_name, is_request_id, now_unix_ms, Claim, Coordinator, FleetRequest, Incoming,
    PartResult, Progress, MAX_REQUEST_BYTES,
};

/// How long a request and its parts stay in etcd after the deadline (their lease).
const KEEP_AFTER_DEADLINE_S: i64 = 3600;

/// The TTL of a lease that keeps a request's keys until an hour after its deadline.
fn ttl_until_after(deadline_unix_ms: u64) -> i64 {
    deadline_unix_ms
        .saturating_sub(now_unix_ms())
        .div_ceil(1000)
        .min(24 * 3600) as i64
        + KEEP_AFTER_DEADLINE_S
}

/// Whether etcd's auth is on, as an anonymous request finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthState {
    On,
    Off,
}

/// How to reach etcd, from `--etcd*` options.
#[derive(Clone, Debug, Default)]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub user: Option<(String, String)>,
    /// CA bundle to check the servers' certificates with (TLS when set).
    pub ca: Option<PathBuf>,
    /// Client certificate and key, for servers that ask for one.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// A node's registration lasts this long without a keep-alive.
    pub lease_ttl: Duration,
}

/// A handle on the cluster; clones share the client's connections (spawned watchers take one).
#[derive(Clone)]
pub struct Etcd {
    client: Client,
    options: ConnectOptions,
    /// Members that did not answer at connect time.
    left_out: Vec<String>,
    prefix: String,
    user: String,
    lease_ttl: Duration,
    /// A client without a user (same TLS), to find out whether etcd's auth is on.
    anonymous: Client,
}

fn read(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

impl Etcd {
    /// Mistakes in the options (no endpoint, https without a CA, unreadable files), found
    /// without reaching etcd: an agent refuses to start on them, while an etcd that does not
    /// answer yet is waited for.
    pub fn check(config: &EtcdConfig) -> anyhow::Result<()> {
        if config.endpoints.is_empty() {
            anyhow::bail!(
                "give etcd's endpoints (e.g. --etcd https://10.0.0.1:2379,https://10.0.0.2:2379)"
            );
        }
        if config.ca.is_none() && config.endpoints.iter().any(|e| e.starts_with("https://")) {
            anyhow::bail!(
                "https endpoints need --etcd-ca (the CA that signed etcd's certificates)"
            );
        }
        for file in [&config.ca, &config.cert, &config.key]
            .into_iter()
            .flatten()
        {
            read(file)?;
        }
        Ok(())
    }

    pub async fn connect(config: &EtcdConfig) -> anyhow::Result<Self> {
        if config.endpoints.is_empty() {
            anyhow::bail!(
                "give etcd's endpoints (e.g. --etcd https://10.0.0.1:2379,https://10.0.0.2:2379)"
            );
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
        if let Some((user, password)) = &config.user {
            options = options.with_user(user, password);
        }
        if let Some(ca) = &config.ca {
            let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(read(ca)?));
            if let (Some(cert), Some(key)) = (&config.cert, &config.key) {
                tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            options = options.with_tls(tls);
        } else if config.endpoints.iter().any(|e| e.starts_with("https://")) {
            anyhow::bail!(
                "https endpoints need --etcd-ca (the CA that signed etcd's certificates)"
            );
        }
        // Only members that answer now: a dead member in the client's list gets requests that
        // fail or time out (the fleet tests kill members on purpose). The agent adds the others
        // when they answer (`rejoin_members`).
        let probes = config
            .endpoints
            .iter()
            .map(|endpoint| probe_member(endpoint, &options));
        let (live, dead): (Vec<_>, Vec<_>) = futures_util::future::join_all(probes)
            .await
            .into_iter()
            .zip(&config.endpoints)
            .partition(|(answer, _)| answer.is_ok());
        let left_out: Vec<String> = dead.iter().map(|(_, e)| e.to_string()).collect();
        let live: Vec<String> = live.into_iter().map(|(_, e)| e.clone()).collect();
        let dead: Vec<String> = dead.into_iter().filter_map(|(a, _)| a.err()).collect();
        if live.is_empty() {
            anyhow::bail!("no etcd member answers: {}", dead.join("; "));
        }
        if !dead.is_empty() {
            log::info!("etcd members not answering (left out): {}", dead.join("; "));
        }
        let client = match Client::connect(&live, Some(options.clone())).await {
            Ok(client) => client,
            Err(e) if e.to_string().contains("authentication is not enabled") => {
                anyhow::bail!(
                    "etcd's auth is off at {}, but --etcd-user was given: turn etcd's auth on (`etcdctl auth enable`, users and roles as the README says); without it anyone can write requests and results",
                    live.join(",")
                )
            }
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("connecting to etcd at {}", live.join(","))))
            }
        };
        let mut anonymous_options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(5));
        if let Some(ca) = &config.ca {
            let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(read(ca)?));
            if let (Some(cert), Some(key)) = (&config.cert, &config.key) {
                tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            anonymous_options = anonymous_options.with_tls(tls);
        }
        let anonymous = Client::connect(&live, Some(anonymous_options))
            .await
            .with_context(|| format!("connecting to etcd at {}", live.join(",")))?;
        let prefix = if config.prefix.ends_with('/') {
            config.prefix.clone()
        } else {
            format!("{}/", config.prefix)
        };
        Ok(Etcd {
            client,
            options,
            left_out,
            prefix,
            user: config
                .user
                .as_ref()
                .map_or_else(|| "root".to_string(), |(u, _)| u.clone()),
            lease_ttl: config.lease_ttl.max(Duration::from_secs(1)),
            anonymous,
        })
    }

    /// Whether etcd's auth is on: an anonymous read of the nodes answers only when it is off
    /// (with it on, etcd says `user name is empty`, or denies the certificate's name).
    pub async fn auth_state(&self) -> anyhow::Result<AuthState> {
        let mut c = self.anonymous.clone();
        let probe = c.get(
            self.key("nodes/"),
            Some(GetOptions::new().with_prefix().with_count_only()),
        );
        match tokio::time::timeout(Duration::from_secs(5), probe).await {
            Ok(Ok(_)) => Ok(AuthState::Off),
            Ok(Err(etcd_client::Error::GRpcStatus(status)))
                if matches!(
                    status.code(),
                    tonic::Code::PermissionDenied | tonic::Code::Unauthenticated
                ) || status.message().contains("user name")
                    || status.message().contains("auth") =>
            {
                Ok(AuthState::On)
            }
            Ok(Err(e)) => Err(anyhow::Error::new(e).context("asking etcd whether its auth is on")),
            Err(_) => anyhow::bail!("asking etcd whether its auth is on: no answer within 5 s"),
        }
    }

    /// Adds each member left out at connect time to the client once it answers, so that a
    /// long-lived agent started while a member was down survives a later loss of the others.
    /// Runs until every member is in (or the agent stops).
    pub async fn rejoin_members(&self) {
        let mut waiting = self.left_out.clone();
        while !waiting.is_empty() {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let mut still = Vec::new();
            for endpoint in waiting {
                if probe_member(&endpoint, &self.options).await.is_err() {
                    still.push(endpoint);
                    continue;
                }
                match self.client.add_endpoint(&endpoint).await {
                    Ok(()) => log::info!("etcd member {endpoint} answers again: in use"),
                    Err(e) => {
                        log::warn!("adding etcd member {endpoint}: {e}");
                        still.push(endpoint);
                    }
                }
            }
            waiting = still;
        }
    }

    /// The etcd user requests are written as.
    pub fn user(&self) -> &str {
        &self.user
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    fn request_key(&self, r: &FleetRequest) -> String {
        self.key(&format!("requests/{}/{}", r.user, r.id))
    }

    /// Where a request's claims and results go: under its user and its id.
    fn parts_prefix(&self, user: &str, id: &str) -> String {
        self.key(&format!("parts/{user}/{id}/"))
    }

    /// What a key under the requests is for this node: a request, something malformed, or
    /// nothing (a request over an hour past its deadline, which its own lease should have
    /// removed: a hand-written one without a lease is deleted here, so that it is not read
    /// again at every agent's start).
    async fn incoming(&self, key: &[u8], value: &[u8]) -> Option<Incoming> {
        let parsed = parse_request(&self.prefix, key, value)?;
        if let Incoming::Request(r) = &parsed {
            let forget_after = r
                .deadline_unix_ms
                .saturating_add(KEEP_AFTER_DEADLINE_S as u64 * 1000);
            if forget_after < now_unix_ms() {
                let mut c = self.client.clone();
                if let Err(e) = c.delete(key, None).await {
                    log::debug!("removing the expired request {}: {e}", r.id);
                }
                return None;
            }
        }
        Some(parsed)
    }

    /// Puts `value` at `key` unless the key exists, bound to a lease of this node's that ends an
    /// hour after `deadline_unix_ms`. True if it was put.
    async fn create_bound(
        &self,
        key: &str,
        value: &str,
        deadline_unix_ms: u64,
    ) -> anyhow::Result<bool> {
        let mut c = self.client.clone();
        let lease = c
            .lease_grant(ttl_until_after(deadline_unix_ms), None)
            .await?
            .id();
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key,
                value,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let put = c.txn(txn).await?.succeeded();
        if !put {
            // Nothing is bound to it: let it go now rather than at its TTL.
            let _ = c.lease_revoke(lease).await;
        }
        Ok(put)
    }
}

/// A request from its key and value; the user comes from the key. A key that is not
/// exactly `requests/<user>/<id>` names no part (`Malformed` without one); a body that
/// cannot be read names the key's.
pub(crate) fn parse_request(prefix: &str, key: &[u8], value: &[u8]) -> Option<Incoming> {
    let key = String::from_utf8_lossy(key).into_owned();
    let rest = key.strip_prefix(&format!("{prefix}requests/"))?;
    let malformed = |part: Option<(String, String)>, error: String| {
        Some(Incoming::Malformed {
            key: key.clone(),
            part,
            error,
        })
    };
    let Some((user, id)) = rest.split_once('/') else {
        return malformed(None, "not requests/<user>/<id>".into());
    };
    if !is_key_name(user) {
        return malformed(None, "the user part of the key is not a valid name".into());
    }
    if !is_request_id(id) {
        return malformed(
            None,
            "the id part of the key is not 12 hex digits (nothing may follow it)".into(),
        );
    }
    let part = Some((user.to_string(), id.to_string()));
    if value.len() > MAX_REQUEST_BYTES {
        return malformed(
            part,
            format!(
                "the request is {} bytes, over the {MAX_REQUEST_BYTES} a fleet request may take",
                value.len()
            ),
        );
    }
    let mut r: FleetRequest = match serde_json::from_slice(value) {
        Ok(r) => r,
        Err(e) => return malformed(part, format!("not a fleet request: {e}")),
    };
    if r.id != id {
        return malformed(part, "the body's id is not the key's".into());
    }
    r.user = user.to_string();
    Some(Incoming::Request(r))
}

/// A claim or result of the request `user`/`id`: exactly `claim/<node>` or
/// `result/<node>` below its parts, whose value names that same node; anything else there
/// is not believed.
pub(crate) fn parse_part(
    prefix: &str,
    user: &str,
    id: &str,
    key: &[u8],
    value: &[u8],
) -> Option<Progress> {
    let key = std::str::from_utf8(key).ok()?;
    let rest = key.strip_prefix(&format!("{prefix}parts/{user}/{id}/"))?;
    let (kind, node) = rest.split_once('/')?;
    if !is_key_name(node) {
        return None;
    }
    match kind {
        "claim" => serde_json::from_slice::<Claim>(value)
            .ok()
            .filter(|c| c.node == node)
            .map(Progress::Claimed),
        "result" => serde_json::from_slice::<PartResult>(value)
            .ok()
            .filter(|r| r.node == node)
            .map(Progress::Result),
        _ => None,
    }
}

/// Retries `op` for up to 15 s: a member going away makes a leader election, during which
/// etcd answers `Unavailable` for a moment.
/// Whether one member answers a status request within 3 s (with the cluster's options).
async fn probe_member(endpoint: &str, options: &ConnectOptions) -> Result<(), String> {
    let probe = async {
        let mut c = Client::connect([endpoint], Some(options.clone())).await?;
        c.status().await?;
        anyhow::Ok(())
    };
    match tokio::time::timeout(Duration::from_secs(3), probe).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("{endpoint}: {e:#}")),
        Err(_) => Err(format!("{endpoint}: no answer within 3 s")),
    }
}

async fn briefly_retrying<T, F, Fut>(what: &str, mut op: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let give_up = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut delay = Duration::from_millis(100);
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if tokio::time::Instant::now() + delay < give_up => {
                log::debug!("{what}: {e:#}; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e.context(what.to_string())),
        }
    }
}

/// Retries `op` until it succeeds: etcd may be away (no quorum) for a while.
async fn retrying<T, F, Fut>(what: &str, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut delay = Duration::from_millis(200);
    loop {
        match op().await {
            Ok(v) => return v,
            Err(e) => {
                log::warn!("{what}: {e:#}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[async_trait::async_trait]
impl Coordinator for Etcd {
    async fn register(&self, node: &str) -> anyhow::Result<()> {
        let key = self.key(&format!("nodes/{node}"));
        let ttl = self.lease_ttl.as_secs() as i64;
        let mut client = self.client.clone();
        let lease = client.lease_grant(ttl, None).await?.id();
        let value = serde_json::json!({"node": node, "since_unix_ms": now_unix_ms()}).to_string();
        client
            .put(
                key.clone(),
                value.clone(),
                Some(PutOptions::new().with_lease(lease)),
            )
            .await
            .context("registering the node")?;
        // Keep-alives every third of the TTL; when etcd was away long enough for the lease to
        // expire (it answers TTL 0), register again under a new one.
        tokio::spawn(async move {
            let mut lease = lease;
            let period = Duration::from_millis((ttl as u64 * 1000 / 3).max(300));
            loop {
                tokio::time::sleep(period).await;
                let alive = async {
                    let (mut keeper, mut stream) = client.lease_keep_alive(lease).await?;
                    keeper.keep_alive().await?;
                    let answer = stream.message().await?;
                    anyhow::Ok(answer.is_some_and(|a| a.ttl() > 0))
                }
                .await;
                match alive {
                    Ok(true) => {}
                    // etcd unreachable for now: the lease may still be alive; try again.
                    Err(e) => log::debug!("keeping {key} registered: {e:#}"),
                    // Expired while etcd was away: register under a new lease.
                    Ok(false) => {
                        let again = async {
                            let id = client.lease_grant(ttl, None).await?.id();
                            client
                                .put(
                                    key.clone(),
                                    value.clone(),
                                    Some(PutOptions::new().with_lease(id)),
                                )
                                .await?;
                            anyhow::Ok(id)
                        }
                        .await;
                        match again {
                            Ok(id) => {
                                log::info!("registered {key} again (lease {id:x})");
                                lease = id;
                            }
                            Err(e) => log::debug!("registration of {key}: {e:#}"),
                        }
                    }
                }
            }
        });
        Ok(())
    }

    async fn auth_on(&self) -> anyhow::Result<bool> {
        // A leader election (a member just went) answers `Unavailable` for a moment.
        let state =
            briefly_retrying("asking etcd whether its auth is on", || self.auth_state()).await?;
        Ok(state == AuthState::On)
    }

    async fn nodes(&self) -> anyhow::Result<Vec<String>> {
        let prefix = self.key("nodes/");
        let got = briefly_retrying("listing the registered nodes", || {
            let (mut c, p) = (self.client.clone(), prefix.clone());
            async move {
                anyhow::Ok(
                    c.get(p, Some(GetOptions::new().with_prefix().with_keys_only()))
                        .await?,
                )
            }
        })
        .await?;
        let mut nodes: Vec<String> = got
            .kvs()
            .iter()
            .filter_map(|kv| kv.key_str().ok()?.strip_prefix(&prefix).map(str::to_string))
            .collect();
        nodes.sort();
        Ok(nodes)
    }

    async fn submit(&self, mut request: FleetRequest) -> anyhow::Result<FleetRequest> {
        // The request, its claims and its results go an hour after the deadline.
        let ttl = ttl_until_after(request.deadline_unix_ms);
        request.lease = briefly_retrying("granting the request's lease", || {
            let mut c = self.client.clone();
            async move { anyhow::Ok(c.lease_grant(ttl, None).await?.id()) }
        })
        .await?;
        let key = self.request_key(&request);
        let value = serde_json::to_string(&request)?;
        let lease = request.lease;
        let what = format!("writing the request {key} (etcd user `{}`)", self.user);
        briefly_retrying(&what, || {
            let (mut c, key, value) = (self.client.clone(), key.clone(), value.clone());
            async move {
                let txn = Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(
                        key.clone(),
                        value.clone(),
                        Some(PutOptions::new().with_lease(lease)),
                    )]);
                if c.txn(txn).await?.succeeded() {
                    return Ok(());
                }
                // Written by an earlier attempt whose answer was lost?
                let got = c.get(key.clone(), None).await?;
                match got.kvs().first() {
                    Some(kv) if kv.value() == value.as_bytes() => Ok(()),
                    _ => Err(anyhow::anyhow!("a request {key} exists already")),
                }
            }
        })
        .await?;
        Ok(request)
    }

    async fn requests(&self) -> anyhow::Result<mpsc::Receiver<Incoming>> {
        let prefix = self.key("requests/");
        let mut client = self.client.clone();
        let (tx, rx) = mpsc::channel(64);
        let me = self.clone();
        tokio::spawn(async move {
            let mut next_revision = 0i64;
            loop {
                // The requests there now (on the first pass and after a lost watch), then the
                // watch from the revision after them: nothing put in between is missed.
                if next_revision == 0 {
                    let got =
                        retrying("reading the fleet requests", || {
                            let (mut c, p) = (client.clone(), prefix.clone());
                            async move {
                                anyhow::Ok(c.get(p, Some(GetOptions::new().with_prefix())).await?)
                            }
                        })
                        .await;
                    next_revision = got.header().map_or(0, |h| h.revision()) + 1;
                    for kv in got.kvs() {
                        if let Some(r) = me.incoming(kv.key(), kv.value()).await {
                            if tx.send(r).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                let options = WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(next_revision);
                let mut stream = match client.watch(prefix.clone(), Some(options)).await {
                    Ok(stream) => stream,
                    Err(e) => {
                        log::warn!("watching the fleet requests: {e:#}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                while let Ok(Some(resp)) = stream.message().await {
                    if resp.compact_revision() > 0 {
                        next_revision = 0; // compacted past us: read everything again
                        break;
                    }
                    for event in resp.events() {
                        let Some(kv) = event.kv() else { continue };
                        next_revision = next_revision.max(kv.mod_revision() + 1);
                        if event.event_type() != EventType::Put {
                            continue;
                        }
                        if let Some(r) = me.incoming(kv.key(), kv.value()).await {
                            if tx.send(r).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Ok(rx)
    }

    async fn claim(&self, request: &FleetRequest, claim: &Claim) -> anyhow::Result<bool> {
        let key = format!(
            "{}claim/{}",
            self.parts_prefix(&request.user, &request.id),
            claim.node
        );
        let value = serde_json::to_string(claim)?;
        briefly_retrying("claiming a part", || {
            let (mut c, key, value) = (self.client.clone(), key.clone(), value.clone());
            async move {
                if self
                    .create_bound(&key, &value, request.deadline_unix_ms)
                    .await?
                {
                    return Ok(true);
                }
                // Ours from an attempt whose answer was lost, or an earlier life's.
                let got = c.get(key, None).await?;
                Ok(got
                    .kvs()
                    .first()
                    .is_some_and(|kv| kv.value() == value.as_bytes()))
            }
        })
        .await
    }

    async fn publish(&self, request: &FleetRequest, result: &PartResult) -> anyhow::Result<()> {
        let key = format!(
            "{}result/{}",
            self.parts_prefix(&request.user, &request.id),
            result.node
        );
        let value = serde_json::to_string(result)?;
        // Create-only: a part has one result, and the first word stands (a restarted agent's
        // `lost` never replaces what its earlier life published).
        retrying("publishing a part's result", || {
            let (k, v) = (key.clone(), value.clone());
            async move {
                self.create_bound(&k, &v, request.deadline_unix_ms).await?;
                anyhow::Ok(())
            }
        })
        .await;
        Ok(())
    }

    async fn follow(&self, request: &FleetRequest) -> anyhow::Result<mpsc::Receiver<Progress>> {
        let parts = self.parts_prefix(&request.user, &request.id);
        let nodes = self.key("nodes/");
        let client = self.client.clone();
        let got = briefly_retrying("reading the request's parts", || {
            let (mut c, p) = (client.clone(), parts.clone());
            async move { anyhow::Ok(c.get(p, Some(GetOptions::new().with_prefix())).await?) }
        })
        .await?;
        let revision = got.header().map_or(0, |h| h.revision()) + 1;
        let (tx, rx) = mpsc::channel(256);
        for kv in got.kvs() {
            if let Some(p) = parse_part(
                &self.prefix,
                &request.user,
                &request.id,
                kv.key(),
                kv.value(),
            ) {
                let _ = tx.send(p).await;
            }
        }
        let id = request.id.clone();
        let user = request.user.clone();
        let me = self.clone();
        // Parts and registrations, one watch each, from the revision read above.
        for (prefix, is_nodes) in [(parts, false), (nodes, true)] {
            let (tx, mut client, me, id, user) = (
                tx.clone(),
                client.clone(),
                me.clone(),
                id.clone(),
                user.clone(),
            );
            tokio::spawn(async move {
                let mut next = revision;
                loop {
                    let options = WatchOptions::new().with_prefix().with_start_revision(next);
                    let Ok(mut stream) = client.watch(prefix.clone(), Some(options)).await else {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    };
                    while let Ok(Some(resp)) = stream.message().await {
                        for event in resp.events() {
                            let Some(kv) = event.kv() else { continue };
                            next = next.max(kv.mod_revision() + 1);
                            let progress = if is_nodes {
                                (event.event_type() == EventType::Delete)
                                    .then(|| {
                                        kv.key_str().ok()?.strip_prefix(&prefix).map(str::to_string)
                                    })
                                    .flatten()
                                    .map(Progress::NodeGone)
                            } else if event.event_type() == EventType::Put {
                                parse_part(&me.prefix, &user, &id, kv.key(), kv.value())
                            } else {
                                None
                            };
                            if let Some(p) = progress {
                                if tx.send(p).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    if tx.is_closed() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            });
        }
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/recap/";

    fn request(id: &str) -> String {
        serde_json::json!({
            "id": id, "user": "someone-else", "selector": {"app": "x"}, "window": {},
            "created_unix_ms": 1, "deadline_unix_ms": 2, "nodes": ["n1"], "lease": 0
        })
        .to_string()
    }

    #[test]
    fn a_request_key_is_exactly_user_and_a_12_hex_digit_id() {
        let id = "0123456789ab";
        let good = format!("{P}requests/alice/{id}");
        match parse_request(P, good.as_bytes(), request(id).as_bytes()) {
            Some(Incoming::Request(r)) => {
                assert_eq!((r.user.as_str(), r.id.as_str()), ("alice", id))
            }
            other => panic!("{other:?}"),
        }
        // An id with more after it (`/` included) names nothing: no result can be written for
        // it, so it cannot reach into another request's parts.
        for key in [
            format!("{P}requests/alice/{id}/result/zz"),
            format!("{P}requests/alice/{id}x"),
            format!("{P}requests/alice/short"),
            format!("{P}requests/alice/0123456789AB"),
            format!("{P}requests/alice"),
        ] {
            match parse_request(P, key.as_bytes(), request(id).as_bytes()) {
                Some(Incoming::Malformed { part: None, .. }) => {}
                other => panic!("{key}: {other:?}"),
            }
        }
        // A well-formed key with a body that does not fit: malformed, answered at the key.
        for body in [
            "{",
            &request("ffffffffffff"),
            &"x".repeat(MAX_REQUEST_BYTES + 1),
        ] {
            match parse_request(P, good.as_bytes(), body.as_bytes()) {
                Some(Incoming::Malformed {
                    part: Some((u, i)),
                    error,
                    ..
                }) => {
                    assert_eq!((u.as_str(), i.as_str()), ("alice", id));
                    assert!(error.len() < 300, "{error}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn only_result_and_claim_keys_of_the_same_node_are_believed() {
        let (user, id) = ("bob", "0123456789ab");
        let result = |node: &str| {
            serde_json::json!({"node": node, "status": "completed", "targets": []}).to_string()
        };
        let key = |rest: &str| format!("{P}parts/{user}/{id}/{rest}");
        assert!(matches!(
            parse_part(P, user, id, key("result/n1").as_bytes(), result("n1").as_bytes()),
            Some(Progress::Result(r)) if r.node == "n1"
        ));
        for (k, v) in [
            (key("result/zz/result/n1"), result("n1")),
            (key("result/zz"), result("n1")),
            (key("other/n1"), result("n1")),
            (format!("{P}parts/alice/{id}/result/n1"), result("n1")),
            (format!("{P}parts/{id}/result/n1"), result("n1")),
        ] {
            assert!(
                parse_part(P, user, id, k.as_bytes(), v.as_bytes()).is_none(),
                "{k}"
            );
        }
    }
}
