//! OTLP export of a window: metrics (cumulative sums, gauges, and histograms whose bounds are
//! the kernel's buckets) and window start/end log records, over gRPC or HTTP/protobuf.
//!
//! Messages are built from `opentelemetry-proto` types directly rather than through SDK
//! instruments: the kernel hands over cumulative counts and pre-bucketed histograms, which
//! SDK instruments cannot take as they are, and the export must equal the summary exactly.
//! A collector that is down never fails or stalls the window: every send has a short timeout,
//! the final flush is tried twice, and what was not delivered is reported.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::{logs_service_client::LogsServiceClient, ExportLogsServiceRequest},
        metrics::v1::{metrics_service_client::MetricsServiceClient, ExportMetricsServiceRequest},
    },
    common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber},
    metrics::v1::{
        metric, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint,
        Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    },
    resource::v1::Resource,
};
use prost::Message;

use super::catalog::{self, Kind, Value, WINDOW};
use crate::report::WindowSummary;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "grpc" => Ok(Protocol::Grpc),
            "http/protobuf" => Ok(Protocol::HttpProtobuf),
            other => Err(format!(
                "unknown OTLP protocol `{other}`; use grpc or http/protobuf"
            )),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct OtlpConfig {
    /// `http://host:port` (TLS endpoints are not supported yet).
    pub endpoint: String,
    pub protocol: Protocol,
    pub headers: Vec<(String, String)>,
    pub resource: Vec<(String, String)>,
    pub interval: Duration,
}

/// Flags first, then the standard variables. None if no endpoint is configured anywhere.
pub fn config(
    endpoint: Option<String>,
    protocol: Option<Protocol>,
    headers: &[(String, String)],
    resource: &[(String, String)],
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<OtlpConfig>, String> {
    let Some(endpoint) = endpoint.or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT")) else {
        return Ok(None);
    };
    let protocol = match protocol {
        Some(p) => p,
        None => env("OTEL_EXPORTER_OTLP_PROTOCOL")
            .map(|p| p.parse())
            .transpose()?
            .unwrap_or(Protocol::Grpc),
    };
    if !endpoint.starts_with("http://") {
        return Err(format!(
            "OTLP endpoint `{endpoint}`: only http:// endpoints are supported (no TLS yet)"
        ));
    }
    let mut all_headers = env("OTEL_EXPORTER_OTLP_HEADERS")
        .map(|h| parse_pairs(&h))
        .transpose()?
        .unwrap_or_default();
    all_headers.extend(headers.iter().cloned());
    for (k, v) in &all_headers {
        validate_header(k, v)?;
    }
    let mut all_resource = env("OTEL_RESOURCE_ATTRIBUTES")
        .map(|r| parse_pairs(&r))
        .transpose()?
        .unwrap_or_default();
    all_resource.extend(resource.iter().cloned());
    let interval = match env("OTEL_METRIC_EXPORT_INTERVAL") {
        Some(ms) => Duration::from_millis(
            ms.trim()
                .parse()
                .map_err(|_| format!("OTEL_METRIC_EXPORT_INTERVAL=`{ms}` is not milliseconds"))?,
        ),
        None => Duration::from_secs(10),
    };
    Ok(Some(OtlpConfig {
        endpoint: endpoint.trim_end_matches('/').to_string(),
        protocol,
        headers: all_headers,
        resource: all_resource,
        interval,
    }))
}

/// `k=v,k2=v2` as in the OTEL_* variables (values may be percent-encoded).
pub fn parse_pairs(s: &str) -> Result<Vec<(String, String)>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| format!("`{p}` is not key=value"))?;
            Ok((k.trim().to_string(), percent_decode(v.trim())))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn kv(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Each send gives up after this; the final flush is tried twice.
const SEND_TIMEOUT: Duration = Duration::from_millis(1500);

pub struct Exporter {
    config: OtlpConfig,
    transport: Transport,
    start_ns: u64,
    failures: Vec<String>,
    sent: usize,
}

impl Exporter {
    /// Needs a tokio runtime (the gRPC channel's worker is spawned on it).
    pub fn new(config: OtlpConfig) -> anyhow::Result<Self> {
        Ok(Exporter {
            transport: Transport::new(&config)?,
            config,
            start_ns: now_ns(),
            failures: Vec::new(),
            sent: 0,
        })
    }

    pub fn config(&self) -> &OtlpConfig {
        &self.config
    }

    fn resource(&self, s: &WindowSummary) -> Resource {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim()
            .to_string();
        let mut attributes = vec![
            kv("service.name", "recap"),
            kv("service.version", env!("CARGO_PKG_VERSION")),
            kv("host.name", host),
        ];
        attributes.extend(
            catalog::target_attrs(s)
                .into_iter()
                .map(|(otel, _, v)| kv(otel, v)),
        );
        attributes.extend(self.config.resource.iter().map(|(k, v)| kv(k, v.clone())));
        Resource {
            attributes,
            ..Default::default()
        }
    }

    fn scope() -> InstrumentationScope {
        InstrumentationScope {
            name: "recap".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        }
    }

    pub fn metrics_request(&self, s: &WindowSummary) -> ExportMetricsServiceRequest {
        let now = now_ns();
        let samples = catalog::samples(s);
        let metrics = catalog::all()
            .into_iter()
            .filter_map(|def| {
                let of_def: Vec<_> = samples
                    .iter()
                    .filter(|x| std::ptr::eq(x.def, def))
                    .collect();
                if of_def.is_empty() {
                    return None;
                }
                let attrs = |sample: &catalog::Sample| {
                    let mut a = vec![kv(WINDOW.otel, s.meta.window_id.clone())];
                    a.extend(
                        sample
                            .attrs
                            .iter()
                            .map(|(attr, v)| kv(attr.otel, v.clone())),
                    );
                    a
                };
                let number = |sample: &catalog::Sample| NumberDataPoint {
                    attributes: attrs(sample),
                    start_time_unix_nano: self.start_ns,
                    time_unix_nano: now,
                    value: Some(match &sample.value {
                        Value::Count(n) => number_data_point::Value::AsInt(*n as i64),
                        Value::Seconds(v) => number_data_point::Value::AsDouble(*v),
                        Value::Histogram { .. } => unreachable!("histograms are not numbers"),
                    }),
                    ..Default::default()
                };
                let data = match def.kind {
                    Kind::Counter => metric::Data::Sum(Sum {
                        data_points: of_def.iter().map(|x| number(x)).collect(),
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        is_monotonic: true,
                    }),
                    Kind::Gauge => metric::Data::Gauge(Gauge {
                        data_points: of_def.iter().map(|x| number(x)).collect(),
                    }),
                    Kind::Histogram => metric::Data::Histogram(Histogram {
                        data_points: of_def
                            .iter()
                            .filter_map(|x| match &x.value {
                                Value::Histogram {
                                    bounds_s,
                                    counts,
                                    count,
                                    sum_s,
                                } => Some(HistogramDataPoint {
                                    attributes: attrs(x),
                                    start_time_unix_nano: self.start_ns,
                                    time_unix_nano: now,
                                    count: *count,
                                    sum: Some(*sum_s),
                                    bucket_counts: counts.clone(),
                                    explicit_bounds: bounds_s.clone(),
                                    ..Default::default()
                                }),
                                _ => None,
                            })
                            .collect(),
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    }),
                };
                Some(Metric {
                    name: def.otel.into(),
                    description: def.help.into(),
                    unit: def.unit.into(),
                    data: Some(data),
                    ..Default::default()
                })
            })
            .collect();
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(self.resource(s)),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(Self::scope()),
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    /// A window start or end record.
    pub fn log_request(&self, s: &WindowSummary, event: &str) -> ExportLogsServiceRequest {
        let mut attributes = vec![
            kv("event.name", format!("recap.window.{event}")),
            kv(WINDOW.otel, s.meta.window_id.clone()),
            kv("recap.target", s.meta.target.describe()),
            kv(
                "recap.window.families",
                s.meta
                    .families
                    .keys()
                    .map(|f| f.name())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            kv(
                "recap.window.duration_requested_s",
                s.meta.requested_duration_s.to_string(),
            ),
        ];
        if event == "end" {
            attributes.push(kv("recap.window.status", s.meta.status.describe()));
            attributes.push(kv(
                "recap.window.duration_s",
                format!("{:.3}", s.meta.duration_s),
            ));
            for c in &s.meta.capsules {
                attributes.push(kv(
                    &format!(
                        "recap.capsule.{}.artifact",
                        c.capsule.split('=').next().unwrap_or("capsule")
                    ),
                    c.artifact.clone(),
                ));
            }
        }
        let body = match event {
            "start" => format!(
                "RECap window {} opened on {}",
                s.meta.window_id,
                s.meta.target.describe()
            ),
            _ => format!(
                "RECap window {} on {} ended: {}",
                s.meta.window_id,
                s.meta.target.describe(),
                s.meta.status.describe()
            ),
        };
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(self.resource(s)),
                scope_logs: vec![ScopeLogs {
                    scope: Some(Self::scope()),
                    log_records: vec![LogRecord {
                        time_unix_nano: now_ns(),
                        observed_time_unix_nano: now_ns(),
                        severity_number: SeverityNumber::Info as i32,
                        severity_text: "INFO".into(),
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(body)),
                        }),
                        attributes,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    /// One send of the window's metrics; failures are recorded, never raised.
    pub async fn export_metrics(&mut self, s: &WindowSummary, attempts: usize) {
        let request = self.metrics_request(s);
        self.send("metrics", attempts, |t, cfg| {
            let (t, cfg, request) = (t.clone(), cfg.clone(), request.clone());
            Box::pin(async move { t.send_metrics(&cfg, request).await })
        })
        .await;
    }

    /// A metrics send in the background, for the periodic exports; `absorb` its result.
    pub fn spawn_metrics(&self, s: &WindowSummary) -> tokio::task::JoinHandle<Option<String>> {
        let (config, request) = (self.config.clone(), self.metrics_request(s));
        let transport = self.transport.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(SEND_TIMEOUT, transport.send_metrics(&config, request)).await
            {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("metrics: {e:#}")),
                Err(_) => Some("metrics: no answer within 1.5 s".into()),
            }
        })
    }

    /// A log record sent in the background (the window's start: arming must not wait on a
    /// collector); `absorb` its result.
    pub fn spawn_log(
        &self,
        s: &WindowSummary,
        event: &str,
    ) -> tokio::task::JoinHandle<Option<String>> {
        let (config, request) = (self.config.clone(), self.log_request(s, event));
        let transport = self.transport.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(SEND_TIMEOUT, transport.send_logs(&config, request)).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("logs: {e:#}")),
                Err(_) => Some("logs: no answer within 1.5 s".into()),
            }
        })
    }

    pub fn absorb(&mut self, failure: Option<String>) {
        match failure {
            None => self.sent += 1,
            Some(f) => self.failures.push(f),
        }
    }

    pub async fn export_log(&mut self, s: &WindowSummary, event: &str, attempts: usize) {
        let request = self.log_request(s, event);
        self.send("logs", attempts, |t, cfg| {
            let (t, cfg, request) = (t.clone(), cfg.clone(), request.clone());
            Box::pin(async move { t.send_logs(&cfg, request).await })
        })
        .await;
    }

    async fn send<F>(&mut self, what: &str, attempts: usize, make: F)
    where
        F: Fn(
            &Transport,
            &OtlpConfig,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>>,
    {
        let mut last = None;
        for attempt in 0..attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            match tokio::time::timeout(SEND_TIMEOUT, make(&self.transport, &self.config)).await {
                Ok(Ok(())) => {
                    self.sent += 1;
                    return;
                }
                Ok(Err(e)) => last = Some(format!("{e:#}")),
                Err(_) => last = Some("no answer within 1.5 s".into()),
            }
        }
        let reason = last.unwrap_or_default();
        log::debug!(
            "OTLP {what} export to {} failed: {reason}",
            self.config.endpoint
        );
        self.failures.push(format!("{what}: {reason}"));
    }

    /// What was not delivered, as one warning, if anything.
    pub fn undelivered(&self) -> Option<String> {
        let last = self.failures.last()?;
        Some(format!(
            "OTLP: {} of {} exports to {} were not delivered (last: {last}); the numbers above are complete, the collector's are not",
            self.failures.len(),
            self.failures.len() + self.sent,
            self.config.endpoint
        ))
    }
}

/// How messages reach the collector: one gRPC channel or one HTTP client for the exporter's
/// life, so periodic sends reuse the connection instead of opening one each time.
#[derive(Clone)]
enum Transport {
    Grpc(tonic::transport::Channel),
    Http(Box<HttpTransport>),
}

#[derive(Clone)]
struct HttpTransport {
    client: Client<HttpConnector, Full<Bytes>>,
    headers: HeaderMap,
}

impl Transport {
    fn new(cfg: &OtlpConfig) -> anyhow::Result<Self> {
        Ok(match cfg.protocol {
            // Lazy: connecting (and reconnecting after a collector restart) happens on send.
            Protocol::Grpc => Transport::Grpc(
                tonic::transport::Endpoint::from_shared(cfg.endpoint.clone())
                    .with_context(|| format!("OTLP endpoint `{}`", cfg.endpoint))?
                    .connect_timeout(SEND_TIMEOUT)
                    .timeout(SEND_TIMEOUT)
                    .connect_lazy(),
            ),
            Protocol::HttpProtobuf => Transport::Http(Box::new(HttpTransport {
                client: Client::builder(TokioExecutor::new()).build_http(),
                headers: header_map(&cfg.headers)?,
            })),
        })
    }

    async fn send_metrics(
        &self,
        cfg: &OtlpConfig,
        request: ExportMetricsServiceRequest,
    ) -> anyhow::Result<()> {
        match self {
            Transport::Grpc(channel) => {
                MetricsServiceClient::new(channel.clone())
                    .export(grpc_request(cfg, request)?)
                    .await
                    .context("gRPC export")?;
                Ok(())
            }
            Transport::Http(http) => http.post(cfg, "/v1/metrics", request.encode_to_vec()).await,
        }
    }

    async fn send_logs(
        &self,
        cfg: &OtlpConfig,
        request: ExportLogsServiceRequest,
    ) -> anyhow::Result<()> {
        match self {
            Transport::Grpc(channel) => {
                LogsServiceClient::new(channel.clone())
                    .export(grpc_request(cfg, request)?)
                    .await
                    .context("gRPC export")?;
                Ok(())
            }
            Transport::Http(http) => http.post(cfg, "/v1/logs", request.encode_to_vec()).await,
        }
    }
}

/// Header names and values as HTTP allows them (no CR/LF, no separators in names): a value
/// that could smuggle another header line is refused when the configuration is read.
fn validate_header(k: &str, v: &str) -> Result<(), String> {
    HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
        format!(
            "OTLP header name `{}` is not a valid HTTP header name",
            k.escape_debug()
        )
    })?;
    HeaderValue::from_str(v).map_err(|_| {
        format!(
            "OTLP header `{k}` has a value with characters HTTP does not allow in a header (control characters such as CR/LF): `{}`",
            v.escape_debug()
        )
    })?;
    Ok(())
}

fn header_map(headers: &[(String, String)]) -> anyhow::Result<HeaderMap> {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).with_context(|| format!("OTLP header `{k}`"))?,
            HeaderValue::from_str(v).with_context(|| format!("OTLP header `{k}`"))?,
        );
    }
    Ok(map)
}

fn grpc_request<T>(cfg: &OtlpConfig, message: T) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    for (k, v) in &cfg.headers {
        let key = tonic::metadata::MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
            .map_err(|_| anyhow!("bad OTLP header name `{k}`"))?;
        request.metadata_mut().insert(
            key,
            v.parse()
                .map_err(|_| anyhow!("bad OTLP header value for `{k}`"))?,
        );
    }
    Ok(request)
}

impl HttpTransport {
    /// POST of a protobuf body to `<endpoint><path>` (plain http only).
    async fn post(&self, cfg: &OtlpConfig, path: &str, body: Vec<u8>) -> anyhow::Result<()> {
        let uri = format!("{}{path}", cfg.endpoint);
        let mut request = hyper::Request::post(&uri)
            .header(hyper::header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(Bytes::from(body)))
            .with_context(|| format!("OTLP endpoint `{uri}`"))?;
        request.headers_mut().extend(self.headers.clone());
        let response = self
            .client
            .request(request)
            .await
            .with_context(|| format!("sending to {uri}"))?;
        let status = response.status();
        // Read the answer to its end so the connection can be reused.
        let _ = response.into_body().collect().await;
        if !status.is_success() {
            bail!("HTTP export to {uri} answered {status}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_from_flags_and_standard_variables() {
        let env = |k: &str| match k {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://collector:4318/".to_string()),
            "OTEL_EXPORTER_OTLP_PROTOCOL" => Some("http/protobuf".to_string()),
            "OTEL_EXPORTER_OTLP_HEADERS" => Some("api-key=abc%20def,x=1".to_string()),
            "OTEL_RESOURCE_ATTRIBUTES" => Some("deployment.environment=prod".to_string()),
            "OTEL_METRIC_EXPORT_INTERVAL" => Some("2500".to_string()),
            _ => None,
        };
        let c = config(None, None, &[], &[], env).unwrap().unwrap();
        assert_eq!(c.endpoint, "http://collector:4318");
        assert_eq!(c.protocol, Protocol::HttpProtobuf);
        assert_eq!(c.headers[0], ("api-key".to_string(), "abc def".to_string()));
        assert_eq!(c.resource[0].0, "deployment.environment");
        assert_eq!(c.interval, Duration::from_millis(2500));
        // Flags win over the variables.
        let c = config(
            Some("http://127.0.0.1:4317".into()),
            Some(Protocol::Grpc),
            &[],
            &[],
            env,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (c.endpoint.as_str(), c.protocol),
            ("http://127.0.0.1:4317", Protocol::Grpc)
        );
        assert_eq!(
            config(None, None, &[], &[], |_| None).unwrap(),
            None,
            "no endpoint, no export"
        );
        assert!(config(Some("https://x".into()), None, &[], &[], |_| None).is_err());
        assert!(parse_pairs("novalue").is_err());
        // A header value that would smuggle another header line is refused, from a flag or
        // from the variable (percent-decoded first).
        let injected = [("x".to_string(), "1\r\nX-Injected: yes".to_string())];
        let e = config(
            Some("http://127.0.0.1:4318".into()),
            None,
            &injected,
            &[],
            |_| None,
        )
        .unwrap_err();
        assert!(e.contains("control characters"), "{e}");
        let env = |k: &str| {
            (k == "OTEL_EXPORTER_OTLP_HEADERS").then(|| "x=1%0d%0aX-Injected: yes".to_string())
        };
        assert!(config(Some("http://127.0.0.1:4318".into()), None, &[], &[], env).is_err());
        let bad_name = [("bad name".to_string(), "v".to_string())];
        assert!(config(Some("http://h:1".into()), None, &bad_name, &[], |_| None).is_err());
    }
}
