//! `http`: HTTP/1.x requests of the target's threads as server and as client: by method and
//! exact status code, their durations, requests still in flight at the end, and what could not
//! be read (kernel side: `recap-ebpf/src/probes/http.rs`, `tp_btf` programs on the socket
//! layer's send/receive tracepoints). Syscalls that are not socket I/O pay nothing.
//!
//! Over TLS, the same parser reads the plaintext of the TLS library's calls (uprobes on
//! OpenSSL's `SSL_read`/`SSL_write`, `probes/tls.rs`), and the requests are marked `tls`.
//!
//! Durations: server, request's first byte read → response's first byte written; client,
//! request's first byte written → response's first byte read. Not seen: TLS code other than
//! OpenSSL's API (Go's `crypto/tls`, GnuTLS, rustls: named in the window's warnings),
//! HTTP/2 and HTTP/3, io_uring and sendfile I/O (their bytes are not behind a syscall
//! buffer), requests pipelined on one connection (counted as an anomaly).

use std::{collections::BTreeMap, fmt::Write, sync::Arc};

use aya::{
    maps::{MapData, PerCpuHashMap},
    Ebpf,
};
use recap_common::{
    maps, programs, Counter, HttpKey, HttpStat, HTTP_BUCKETS, HTTP_METHODS, HTTP_ROLE_SERVER,
    HTTP_VERSIONS,
};
use serde::{Deserialize, Serialize};

use super::{
    log2::{self, fmt_ns, histogram, Histogram},
    row, FamilyReport, Hooks, Named, ProbeFamily, TaskHook,
};
use crate::{
    families::{
        engine_error::{map_err, missing_map, EngineError},
        raw::RawCounts,
    },
    metric,
    metrics::{Attr, MetricDef, Sample, Value},
};

pub struct Http;

pub const METHOD: Attr = Attr {
    otel: "http.request.method",
    prom: "http_request_method",
};
pub const STATUS: Attr = Attr {
    otel: "http.response.status_code",
    prom: "http_response_status_code",
};
/// `http` or `https` (OTel: the scheme of the request; TLS or not).
pub const SCHEME: Attr = Attr {
    otel: "url.scheme",
    prom: "url_scheme",
};
/// `1.0`, `1.1` or `2`.
pub const VERSION: Attr = Attr {
    otel: "network.protocol.version",
    prom: "network_protocol_version",
};
pub const RPC_SYSTEM: Attr = Attr {
    otel: "rpc.system",
    prom: "rpc_system",
};
pub const RPC_SERVICE: Attr = Attr {
    otel: "rpc.service",
    prom: "rpc_service",
};
pub const RPC_METHOD: Attr = Attr {
    otel: "rpc.method",
    prom: "rpc_method",
};
pub const GRPC_STATUS: Attr = Attr {
    otel: "rpc.grpc.status_code",
    prom: "rpc_grpc_status_code",
};
pub const SIDE: Attr = Attr {
    otel: "recap.http.side",
    prom: "side",
};
pub const ANOMALY: Attr = Attr {
    otel: "recap.http.anomaly",
    prom: "anomaly",
};

metric!(
    SERVER_DURATION,
    "http_server_request_duration_seconds",
    "http.server.request.duration",
    Histogram,
    "s",
    "HTTP requests the target served, by method, status, scheme (https: read from the TLS library's plaintext) and protocol version (HTTP/2: per stream): request's start read to response's status written (log2 buckets).",
    [METHOD, STATUS, SCHEME, VERSION]
);
metric!(
    CLIENT_DURATION,
    "http_client_request_duration_seconds",
    "http.client.request.duration",
    Histogram,
    "s",
    "HTTP requests the target made, by method, status, scheme (https: read from the TLS library's plaintext) and protocol version (HTTP/2: per stream): request's start written to response's status read (log2 buckets).",
    [METHOD, STATUS, SCHEME, VERSION]
);
metric!(
    RPC_SERVER_DURATION,
    "rpc_server_duration_seconds",
    "rpc.server.duration",
    Histogram,
    "s",
    "gRPC calls the target served, by service, method and grpc-status: request headers read to trailers written, a streaming call once with its whole duration (log2 buckets).",
    [RPC_SYSTEM, RPC_SERVICE, RPC_METHOD, GRPC_STATUS]
);
metric!(
    RPC_CLIENT_DURATION,
    "rpc_client_duration_seconds",
    "rpc.client.duration",
    Histogram,
    "s",
    "gRPC calls the target made, by service, method and grpc-status: request headers written to trailers read (log2 buckets).",
    [RPC_SYSTEM, RPC_SERVICE, RPC_METHOD, GRPC_STATUS]
);
metric!(
    IN_FLIGHT,
    "recap_http_requests_in_flight",
    "recap.http.requests.in_flight",
    Gauge,
    "{request}",
    "HTTP requests started in the window and not yet answered, as server and as client.",
    [SIDE]
);
metric!(
    ABORTED,
    "recap_http_requests_aborted_total",
    "recap.http.requests.aborted",
    Counter,
    "{request}",
    "HTTP requests whose connection closed before a final response.",
    [SIDE]
);
metric!(
    INTERIM,
    "recap_http_interim_responses_total",
    "recap.http.interim_responses",
    Counter,
    "{response}",
    "Interim 1xx responses (e.g. 100 Continue), not counted as responses.",
    []
);
metric!(
    ANOMALIES,
    "recap_http_anomalies_total",
    "recap.http.anomalies",
    Counter,
    "{event}",
    "What the http family saw but did not count as a request, or counted with a field unknown: pipelined requests, responses to requests before the window, response starts it could not read, TLS records written by TLS code it does not read; HTTP/2 streams reset, GOAWAY frames, requests with a field unknown (HPACK state from before the window), connections joined from before the window, frames lost, connections whose framing was lost.",
    [ANOMALY]
);

static METRICS: [&MetricDef; 8] = [
    &SERVER_DURATION,
    &CLIENT_DURATION,
    &RPC_SERVER_DURATION,
    &RPC_CLIENT_DURATION,
    &IN_FLIGHT,
    &ABORTED,
    &INTERIM,
    &ANOMALIES,
];

impl ProbeFamily for Http {
    fn name(&self) -> &'static str {
        "http"
    }

    fn hooks(&self) -> Hooks {
        Hooks::Tasks(&[
            TaskHook {
                program: programs::HTTP_SEND,
                tracepoint: "sock_send_length",
                hot_path: true,
                btf_typed: true,
            },
            TaskHook {
                program: programs::HTTP_RECV,
                tracepoint: "sock_recv_length",
                hot_path: true,
                btf_typed: true,
            },
            TaskHook {
                program: programs::HTTP_CLOSE,
                tracepoint: "tcp_destroy_sock",
                hot_path: false,
                btf_typed: true,
            },
            // New processes of the target, to instrument their TLS code at once.
            TaskHook {
                program: programs::TLS_EXEC,
                tracepoint: "sched_process_exec",
                hot_path: false,
                btf_typed: false,
            },
            TaskHook {
                program: programs::TLS_FORK,
                tracepoint: "sched_process_fork",
                hot_path: false,
                btf_typed: false,
            },
        ])
    }

    fn read_named(&self, ebpf: &Ebpf, slot: u32) -> Result<Vec<Named>, EngineError> {
        let map = ebpf
            .map(maps::HTTP_REQS)
            .ok_or_else(|| missing_map(maps::HTTP_REQS))?;
        let reqs: PerCpuHashMap<&MapData, HttpKey, HttpStat> =
            PerCpuHashMap::try_from(map).map_err(map_err("opening HTTP_REQS"))?;
        let mut out = Vec::new();
        for entry in reqs.iter() {
            let (key, per_cpu) = entry.map_err(map_err("reading HTTP_REQS"))?;
            if key.slot != slot {
                continue;
            }
            let mut values = vec![0u64; 2 + HTTP_BUCKETS as usize];
            for stat in per_cpu.iter() {
                values[0] += stat.count;
                values[1] += stat.sum_ns;
                for (v, b) in values[2..].iter_mut().zip(stat.buckets) {
                    *v += b;
                }
            }
            out.push((RequestKey::from(key).to_string(), values));
        }
        Ok(out)
    }

    fn clear_named(&self, ebpf: &mut Ebpf, slot: u32) -> Result<(), EngineError> {
        let map = ebpf
            .map_mut(maps::HTTP_REQS)
            .ok_or_else(|| missing_map(maps::HTTP_REQS))?;
        let mut reqs: PerCpuHashMap<&mut MapData, HttpKey, HttpStat> =
            PerCpuHashMap::try_from(map).map_err(map_err("opening HTTP_REQS"))?;
        let stale: Vec<HttpKey> = reqs
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.slot == slot)
            .collect();
        for key in stale {
            let _ = reqs.remove(&key);
        }
        Ok(())
    }

    fn summarise(&self, counts: &RawCounts) -> Arc<dyn FamilyReport> {
        Arc::new(summarise(counts))
    }

    fn report_from_json(&self, v: serde_json::Value) -> serde_json::Result<Arc<dyn FamilyReport>> {
        super::report_from_json::<HttpSummary>(v)
    }

    fn live(&self, c: &RawCounts) -> String {
        let s = summarise(c);
        format!(
            "http served {} ({} 5xx), made {} ({} 5xx)",
            s.server.completed,
            s.server.status_5xx(),
            s.client.completed,
            s.client.status_5xx()
        )
    }

    fn metrics(&self) -> &'static [&'static MetricDef] {
        &METRICS
    }
}

/// The side, method, status, scheme and version of a group of requests, as named counts
/// carry it (`server GET 200 https 1.1`): read back from the kernel's key (HTTP/1.x) or made
/// by the HTTP/2 decoder (`http2::tally`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RequestKey {
    pub server: bool,
    /// One of `HTTP_METHODS`, or `other`, or `unknown` (HTTP/2: not decodable).
    pub method: &'static str,
    /// 0: unknown (HTTP/2: not decodable).
    pub status: u16,
    /// Read from a TLS library's plaintext.
    pub tls: bool,
    /// `HTTP_VERSIONS` index.
    pub version: u8,
}

/// Methods an HTTP/2 request may have beyond `HTTP_METHODS`.
const OTHER_METHODS: [&str; 2] = ["other", crate::families::http2::streams::UNKNOWN];

impl From<HttpKey> for RequestKey {
    fn from(k: HttpKey) -> Self {
        RequestKey {
            server: k.role == HTTP_ROLE_SERVER,
            method: HTTP_METHODS.get(k.method as usize).copied().unwrap_or(""),
            status: k.status,
            tls: k.tls != 0,
            version: k.version,
        }
    }
}

impl std::fmt::Display for RequestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let side = if self.server { "server" } else { "client" };
        let scheme = if self.tls { "https" } else { "http" };
        let version = HTTP_VERSIONS
            .get(self.version as usize)
            .copied()
            .unwrap_or("");
        write!(
            f,
            "{side} {} {} {scheme} {version}",
            self.method, self.status
        )
    }
}

impl RequestKey {
    fn parse(s: &str) -> Option<Self> {
        let mut parts = s.split(' ');
        let server = side(parts.next()?)?;
        let method = parts.next()?;
        let method = HTTP_METHODS
            .iter()
            .chain(&OTHER_METHODS)
            .copied()
            .find(|m| !m.is_empty() && *m == method)?;
        let status = parts.next()?.parse().ok()?;
        let tls = scheme(parts.next()?)?;
        let version = parts.next()?;
        let version = HTTP_VERSIONS.iter().position(|v| *v == version)? as u8;
        parts.next().is_none().then_some(RequestKey {
            server,
            method,
            status,
            tls,
            version,
        })
    }
}

fn side(s: &str) -> Option<bool> {
    match s {
        "server" => Some(true),
        "client" => Some(false),
        _ => None,
    }
}

fn scheme(s: &str) -> Option<bool> {
    match s {
        "https" => Some(true),
        "http" => Some(false),
        _ => None,
    }
}

/// A group of gRPC calls as named counts carry it (`grpc server 0 https /pkg.Svc/Method`):
/// `code` is `grpc-status`, `None` when it could not be read.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GrpcKey {
    pub server: bool,
    pub path: String,
    pub code: Option<u32>,
    pub tls: bool,
}

impl std::fmt::Display for GrpcKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let side = if self.server { "server" } else { "client" };
        let scheme = if self.tls { "https" } else { "http" };
        let code = self
            .code
            .map_or(crate::families::http2::streams::UNKNOWN.to_string(), |c| {
                c.to_string()
            });
        write!(f, "grpc {side} {code} {scheme} {}", self.path)
    }
}

impl GrpcKey {
    fn parse(s: &str) -> Option<Self> {
        let mut parts = s.splitn(5, ' ');
        if parts.next()? != "grpc" {
            return None;
        }
        let server = side(parts.next()?)?;
        let code = parts.next()?;
        let code = if code == crate::families::http2::streams::UNKNOWN {
            None
        } else {
            Some(code.parse().ok()?)
        };
        let tls = scheme(parts.next()?)?;
        let path = parts.next()?.to_string();
        Some(GrpcKey {
            server,
            path,
            code,
            tls,
        })
    }
}

/// Requests with one method and status.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RequestGroup {
    pub method: String,
    pub status: u16,
    /// Over TLS (`https`), read from the TLS library's plaintext.
    #[serde(default)]
    pub tls: bool,
    /// `network.protocol.version`: `1.0`, `1.1` or `2`.
    #[serde(default)]
    pub version: String,
    pub duration: Histogram,
}

/// gRPC calls with one path and status.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GrpcGroup {
    /// `package.Service` and `Method` from `:path` (`other`: beyond the window's bound on
    /// distinct paths; `unknown`: not decodable).
    pub service: String,
    pub method: String,
    /// `grpc-status` (0 OK, 5 NOT_FOUND, 14 UNAVAILABLE, ...); `None`: not readable.
    pub status_code: Option<u32>,
    pub tls: bool,
    pub duration: Histogram,
}

/// gRPC, served and made.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct GrpcSummary {
    pub server: Vec<GrpcGroup>,
    pub client: Vec<GrpcGroup>,
    /// Distinct paths told apart per window (`--grpc-paths`); calls beyond are under
    /// service `other`.
    pub paths_limit: usize,
    /// Calls counted under `other`: the bound was reached.
    pub other_calls: u64,
}

impl GrpcSummary {
    /// Calls by side, `Service/Method` and status.
    pub fn count(&self, server: bool, path: &str, code: Option<u32>) -> u64 {
        let side = if server { &self.server } else { &self.client };
        side.iter()
            .filter(|g| format!("{}/{}", g.service, g.method) == path && g.status_code == code)
            .map(|g| g.duration.count)
            .sum()
    }
}

/// What HTTP/2 connections said beyond their requests.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Http2Notes {
    /// Connections that began in the window (their preface seen) and were read.
    pub connections: u64,
    /// Connections older than the window joined at a frame's start (no preface seen): their
    /// header-compression state from before is unknown, so some fields may be `unknown`.
    pub joined: u64,
    /// Streams reset (`RST_STREAM`) or refused by `GOAWAY` while their request waited.
    pub streams_reset: u64,
    pub goaways: u64,
    /// Requests counted with a method, status or path `unknown` (HPACK state not seen).
    pub unknown_fields: u64,
    /// Frames the kernel could not hand over (buffer full), and connection directions whose
    /// framing was lost: their requests from there on may be missing or `unknown`.
    pub frames_lost: u64,
    pub connections_desynced: u64,
}

/// One side (server or client) of the target's HTTP traffic.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct HttpSide {
    /// Requests whose start was seen in the window.
    pub started: u64,
    /// Of those or earlier ones, answered with a final status (`requests` holds them).
    pub completed: u64,
    /// Started, then the connection closed before a final response.
    pub aborted: u64,
    /// Started, and the response's start could not be read as a status line.
    pub unparsable_responses: u64,
    /// Started in the window and not answered when it ended.
    pub in_flight: u64,
    /// By method and status, most frequent first.
    pub requests: Vec<RequestGroup>,
}

impl HttpSide {
    pub fn status_5xx(&self) -> u64 {
        self.requests
            .iter()
            .filter(|g| (500..600).contains(&g.status))
            .map(|g| g.duration.count)
            .sum()
    }

    pub fn count(&self, method: &str, status: u16) -> u64 {
        self.requests
            .iter()
            .filter(|g| g.method == method && g.status == status)
            .map(|g| g.duration.count)
            .sum()
    }

    /// Requests over TLS (`tls` true) or in plaintext.
    pub fn count_tls(&self, tls: bool) -> u64 {
        self.requests
            .iter()
            .filter(|g| g.tls == tls)
            .map(|g| g.duration.count)
            .sum()
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct HttpSummary {
    pub server: HttpSide,
    pub client: HttpSide,
    /// Interim `1xx` responses (not counted in `completed`).
    pub interim_responses: u64,
    /// Request starts on a connection whose previous request had no response yet: not
    /// counted as requests.
    pub pipelined: u64,
    /// Responses whose request was before the window: not counted.
    pub unmatched_responses: u64,
    /// TLS records the target wrote from TLS code whose plaintext is not read (a process not
    /// instrumented yet, or a library not supported; `tls` in the summary says which): a
    /// sign of requests not counted, not a count of them.
    #[serde(default)]
    pub tls_records_not_read: u64,
    #[serde(default)]
    pub http2: Http2Notes,
    #[serde(default)]
    pub grpc: GrpcSummary,
}

pub fn summarise(c: &RawCounts) -> HttpSummary {
    let mut sides: BTreeMap<bool, Vec<RequestGroup>> = BTreeMap::new();
    let mut grpc = GrpcSummary {
        paths_limit: match c.get(Counter::GrpcPathsLimit) {
            0 => crate::families::http2::tally::GRPC_PATHS,
            n => n as usize,
        },
        other_calls: c.get(Counter::GrpcOtherCalls),
        ..Default::default()
    };
    for (name, values) in c.named("http") {
        let duration = histogram(
            values.get(2..).unwrap_or_default(),
            values.get(1).copied().unwrap_or(0),
        );
        if let Some(key) = RequestKey::parse(name) {
            sides.entry(key.server).or_default().push(RequestGroup {
                method: key.method.to_string(),
                status: key.status,
                tls: key.tls,
                version: HTTP_VERSIONS
                    .get(key.version as usize)
                    .copied()
                    .unwrap_or("")
                    .to_string(),
                duration,
            });
        } else if let Some(key) = GrpcKey::parse(name) {
            let path = key.path.trim_start_matches('/');
            // `other` and `unknown` (and a path not of gRPC's form) stand for both.
            let (service, method) = path.split_once('/').unwrap_or((path, path));
            let side = if key.server {
                &mut grpc.server
            } else {
                &mut grpc.client
            };
            side.push(GrpcGroup {
                service: service.to_string(),
                method: method.to_string(),
                status_code: key.code,
                tls: key.tls,
                duration,
            });
        }
    }
    for side in [&mut grpc.server, &mut grpc.client] {
        side.sort_by_key(|g| std::cmp::Reverse(g.duration.count));
    }
    let mut side = |server: bool, started, aborted, unparsable| {
        let mut requests = sides.remove(&server).unwrap_or_default();
        requests.sort_by(|a, b| {
            b.duration.count.cmp(&a.duration.count).then_with(|| {
                (&a.method, a.status, a.tls, &a.version)
                    .cmp(&(&b.method, b.status, b.tls, &b.version))
            })
        });
        let completed: u64 = requests.iter().map(|g| g.duration.count).sum();
        let started: u64 = c.get(started);
        let aborted = c.get(aborted);
        let unparsable_responses = c.get(unparsable);
        HttpSide {
            started,
            completed,
            aborted,
            unparsable_responses,
            in_flight: started.saturating_sub(completed + aborted + unparsable_responses),
            requests,
        }
    };
    HttpSummary {
        server: side(
            true,
            Counter::HttpServerStarted,
            Counter::HttpServerAborted,
            Counter::HttpServerUnparsable,
        ),
        client: side(
            false,
            Counter::HttpClientStarted,
            Counter::HttpClientAborted,
            Counter::HttpClientUnparsable,
        ),
        interim_responses: c.get(Counter::HttpInterim),
        pipelined: c.get(Counter::HttpPipelined),
        unmatched_responses: c.get(Counter::HttpUnmatchedResponses),
        tls_records_not_read: c.get(Counter::HttpTlsNotRead),
        http2: Http2Notes {
            connections: c.get(Counter::HttpH2Connections),
            joined: c.get(Counter::Http2Joined),
            streams_reset: c.get(Counter::Http2Resets),
            goaways: c.get(Counter::Http2Goaways),
            unknown_fields: c.get(Counter::Http2Unknown),
            frames_lost: c.get(Counter::Http2Lost),
            connections_desynced: c.get(Counter::Http2Desync),
        },
        grpc,
    }
}

impl FamilyReport for HttpSummary {
    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    fn table(&self, o: &mut String, top: usize) {
        o.push_str("\nhttp\n");
        for (label, side) in [("served", &self.server), ("made", &self.client)] {
            if side.started == 0 && side.completed == 0 {
                continue;
            }
            row(o, &format!("requests {label}, answered"), side.completed);
            row(o, "  5xx", side.status_5xx());
            row(o, "  in flight at the end", side.in_flight);
            row(o, "  aborted (connection closed)", side.aborted);
            for g in side.requests.iter().take(top) {
                let q = |v: Option<u64>| v.map_or("-".to_string(), fmt_ns);
                let _ = writeln!(
                    o,
                    "    {} {} HTTP/{}{} ×{}, p50 ≤ {}, p99 ≤ {}",
                    g.method,
                    status_text(g.status),
                    g.version,
                    if g.tls { " (TLS)" } else { "" },
                    g.duration.count,
                    q(g.duration.p50_le_ns),
                    q(g.duration.p99_le_ns)
                );
            }
        }
        for (label, side) in [("served", &self.grpc.server), ("made", &self.grpc.client)] {
            if side.is_empty() {
                continue;
            }
            row(
                o,
                &format!("gRPC calls {label}"),
                side.iter().map(|g| g.duration.count).sum(),
            );
            for g in side.iter().take(top) {
                let q = |v: Option<u64>| v.map_or("-".to_string(), fmt_ns);
                let code = g
                    .status_code
                    .map_or("unknown".to_string(), |c| c.to_string());
                let _ = writeln!(
                    o,
                    "    {}/{} status {code}{} ×{}, p50 ≤ {}, p99 ≤ {}",
                    g.service,
                    g.method,
                    if g.tls { " (TLS)" } else { "" },
                    g.duration.count,
                    q(g.duration.p50_le_ns),
                    q(g.duration.p99_le_ns)
                );
            }
        }
        row(o, "interim 1xx responses", self.interim_responses);
        let h2 = &self.http2;
        if h2.connections + h2.joined > 0 {
            let _ = writeln!(
                o,
                "  HTTP/2: {} connections, {} joined from before the window, {} streams reset, {} GOAWAY, {} requests with a field unknown, {} frames lost, {} connections whose framing was lost",
                h2.connections,
                h2.joined,
                h2.streams_reset,
                h2.goaways,
                h2.unknown_fields,
                h2.frames_lost,
                h2.connections_desynced
            );
        }
        let unread = self.pipelined
            + self.unmatched_responses
            + self.tls_records_not_read
            + self.server.unparsable_responses
            + self.client.unparsable_responses;
        if unread > 0 {
            let _ = writeln!(
                o,
                "  not counted: {} pipelined, {} responses to earlier requests, {} unreadable response starts, {} TLS records written by TLS code not read",
                self.pipelined,
                self.unmatched_responses,
                self.server.unparsable_responses + self.client.unparsable_responses,
                self.tls_records_not_read,
            );
        }
    }

    fn samples(&self) -> Vec<Sample> {
        let mut out = Vec::new();
        for (def, side, name) in [
            (&SERVER_DURATION, &self.server, "server"),
            (&CLIENT_DURATION, &self.client, "client"),
        ] {
            for g in &side.requests {
                let mut s = log2::sample(def, &g.duration, HTTP_BUCKETS);
                s.attrs = vec![
                    (METHOD, g.method.clone()),
                    (STATUS, status_text(g.status)),
                    (SCHEME, if g.tls { "https" } else { "http" }.into()),
                    (VERSION, g.version.clone()),
                ];
                out.push(s);
            }
            out.push(Sample::new(
                &IN_FLIGHT,
                vec![(SIDE, name.into())],
                Value::Count(side.in_flight),
            ));
            out.push(Sample::new(
                &ABORTED,
                vec![(SIDE, name.into())],
                Value::Count(side.aborted),
            ));
        }
        for (def, side) in [
            (&RPC_SERVER_DURATION, &self.grpc.server),
            (&RPC_CLIENT_DURATION, &self.grpc.client),
        ] {
            for g in side {
                let mut s = log2::sample(def, &g.duration, HTTP_BUCKETS);
                s.attrs = vec![
                    (RPC_SYSTEM, "grpc".into()),
                    (RPC_SERVICE, g.service.clone()),
                    (RPC_METHOD, g.method.clone()),
                    (
                        GRPC_STATUS,
                        g.status_code
                            .map_or("unknown".to_string(), |c| c.to_string()),
                    ),
                ];
                out.push(s);
            }
        }
        out.push(Sample::new(
            &INTERIM,
            vec![],
            Value::Count(self.interim_responses),
        ));
        for (anomaly, n) in [
            ("pipelined", self.pipelined),
            ("unmatched_response", self.unmatched_responses),
            (
                "unparsable_response",
                self.server.unparsable_responses + self.client.unparsable_responses,
            ),
            ("tls_record_not_read", self.tls_records_not_read),
            ("http2_stream_reset", self.http2.streams_reset),
            ("http2_goaway", self.http2.goaways),
            ("http2_unknown_field", self.http2.unknown_fields),
            ("http2_connection_joined", self.http2.joined),
            ("http2_frame_lost", self.http2.frames_lost),
            ("http2_framing_lost", self.http2.connections_desynced),
        ] {
            out.push(Sample::new(
                &ANOMALIES,
                vec![(ANOMALY, anomaly.into())],
                Value::Count(n),
            ));
        }
        out
    }
}

/// A status code as shown and exported: `unknown` for 0 (HTTP/2, not decodable).
fn status_text(status: u16) -> String {
    if status == 0 {
        crate::families::http2::streams::UNKNOWN.to_string()
    } else {
        status.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use recap_common::HTTP_ROLE_CLIENT;

    #[test]
    fn request_keys_read_back() {
        let key = RequestKey::from(HttpKey {
            slot: 3,
            status: 404,
            role: HTTP_ROLE_CLIENT,
            method: 2,
            tls: 0,
            version: 2,
            _pad: [0; 2],
        });
        assert_eq!(key.to_string(), "client HEAD 404 http 1.1");
        assert_eq!(RequestKey::parse("client HEAD 404 http 1.1"), Some(key));
        let tls = RequestKey::from(HttpKey {
            slot: 3,
            status: 200,
            role: HTTP_ROLE_SERVER,
            method: 1,
            tls: 1,
            version: 2,
            _pad: [0; 2],
        });
        assert_eq!(tls.to_string(), "server GET 200 https 1.1");
        assert_eq!(RequestKey::parse("server GET 200 https 1.1"), Some(tls));
        assert_eq!(RequestKey::parse("server GET 200 h2 1.1"), None);
        assert_eq!(RequestKey::parse("server BREW 418 http 2"), None);
        let h2 = RequestKey::parse("server unknown 0 https 2").unwrap();
        assert_eq!((h2.method, h2.status, h2.version), ("unknown", 0, 3));
        let grpc = GrpcKey::parse("grpc client 14 http /pkg.Echo/Say hi").unwrap();
        assert_eq!(grpc.path, "/pkg.Echo/Say hi");
        assert_eq!(grpc.code, Some(14));
        assert_eq!(GrpcKey::parse(&grpc.to_string()), Some(grpc));
    }

    #[test]
    fn in_flight_is_started_minus_ended() {
        let mut c = RawCounts::zeroed();
        c.counters[Counter::HttpServerStarted as usize] = 10;
        c.counters[Counter::HttpServerAborted as usize] = 1;
        let mut get = vec![0u64; 2 + HTTP_BUCKETS as usize];
        get[0] = 7;
        get[1] = 7_000;
        get[2 + 10] = 7;
        c.named
            .insert("http", vec![("server GET 200 http 1.1".into(), get)]);
        let s = summarise(&c);
        assert_eq!(s.server.completed, 7);
        assert_eq!(s.server.in_flight, 2);
        assert_eq!(s.server.count("GET", 200), 7);
        assert_eq!(s.server.requests[0].duration.p50_le_ns, Some(2048));
    }
}
