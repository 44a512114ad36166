//! Real OTLP receivers for the tests: the collector's gRPC services (from opentelemetry-proto,
//! served with tonic) and an HTTP/protobuf endpoint, both recording what they receive, each
//! also over TLS with a client certificate required (rustls), gzip accepted.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener},
    path::Path,
    sync::{Arc, Mutex},
    thread,
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::{
            logs_service_server::{LogsService, LogsServiceServer},
            ExportLogsServiceRequest, ExportLogsServiceResponse,
        },
        metrics::v1::{
            metrics_service_server::{MetricsService, MetricsServiceServer},
            ExportMetricsServiceRequest, ExportMetricsServiceResponse,
        },
    },
    common::v1::{any_value, KeyValue},
    metrics::v1::{metric, number_data_point, Metric},
};
use prost::Message;
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tonic::codec::CompressionEncoding;

use crate::scripted::TestCa;

#[derive(Default)]
pub struct Received {
    pub metrics: Vec<ExportMetricsServiceRequest>,
    pub logs: Vec<ExportLogsServiceRequest>,
    /// Each request's content encoding as it came (`identity` when none was named).
    pub encodings: Vec<String>,
}

pub type Shared = Arc<Mutex<Received>>;

struct Collector(Shared);

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut received = self.0.lock().unwrap();
        received.encodings.push(grpc_encoding(&request));
        received.metrics.push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let mut received = self.0.lock().unwrap();
        received.encodings.push(grpc_encoding(&request));
        received.logs.push(request.into_inner());
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

fn grpc_encoding<T>(request: &tonic::Request<T>) -> String {
    request
        .metadata()
        .get("grpc-encoding")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .to_string()
}

/// An OTLP gRPC receiver on a loopback port, running until the test process ends.
pub fn grpc_receiver() -> (SocketAddr, Shared) {
    serve_grpc(None)
}

/// The same over TLS: `ca`'s server certificate, a client certificate of `ca` required.
pub fn grpc_tls_receiver(ca: &TestCa) -> (SocketAddr, Shared) {
    let (cert, key) = ca.server();
    let read = |p: &Path| std::fs::read(p).unwrap();
    let tls = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(
            read(&cert),
            read(&key),
        ))
        .client_ca_root(tonic::transport::Certificate::from_pem(read(&ca.cert())));
    serve_grpc(Some(tls))
}

fn serve_grpc(tls: Option<tonic::transport::ServerTlsConfig>) -> (SocketAddr, Shared) {
    let addr = free_port();
    let shared = Shared::default();
    let (m, l) = (Collector(shared.clone()), Collector(shared.clone()));
    thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut server = tonic::transport::Server::builder();
            if let Some(tls) = tls {
                server = server.tls_config(tls).unwrap();
            }
            server
                .add_service(
                    MetricsServiceServer::new(m).accept_compressed(CompressionEncoding::Gzip),
                )
                .add_service(LogsServiceServer::new(l).accept_compressed(CompressionEncoding::Gzip))
                .serve(addr)
                .await
                .unwrap();
        });
    });
    wait_listening(addr);
    (addr, shared)
}

/// An OTLP HTTP/protobuf receiver (`POST /v1/metrics`, `POST /v1/logs`).
pub fn http_receiver() -> (SocketAddr, Shared) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let shared = Shared::default();
    let store = shared.clone();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
            serve_http(&mut conn, &store);
        }
    });
    (addr, shared)
}

/// The same over TLS (rustls): `ca`'s server certificate, a client certificate of `ca`
/// required. A handshake that fails ends that connection only.
pub fn http_tls_receiver(ca: &TestCa) -> (SocketAddr, Shared) {
    let (cert, key) = ca.server();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca.cert()).unwrap())
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                CertificateDer::pem_file_iter(&cert)
                    .unwrap()
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap(),
                PrivateKeyDer::from_pem_file(&key).unwrap(),
            )
            .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let shared = Shared::default();
    let store = shared.clone();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(tcp) = conn else { continue };
            let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
            let tls = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut stream = rustls::StreamOwned::new(tls, tcp);
            serve_http(&mut stream, &store);
            stream.conn.send_close_notify();
            let _ = stream.flush();
        }
    });
    (addr, shared)
}

/// One request on `conn`: headers, then Content-Length bytes of body (gunzipped when its
/// Content-Encoding says gzip), recorded if it decodes; answered and closed.
fn serve_http(conn: &mut (impl Read + Write), store: &Shared) {
    let mut data = Vec::new();
    let mut buf = [0u8; 65536];
    let (head, head_end, length) = loop {
        let n = conn.read(&mut buf).unwrap_or(0);
        if n == 0 {
            return;
        }
        data.extend_from_slice(&buf[..n]);
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
            let length = header(&head, "content-length")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            break (head, end + 4, length);
        }
    };
    while data.len() < head_end + length {
        let n = conn.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buf[..n]);
    }
    let first = head.lines().next().unwrap_or_default().to_string();
    let mut body = data[head_end..(head_end + length).min(data.len())].to_vec();
    let encoding = header(&head, "content-encoding").unwrap_or("identity");
    if encoding == "gzip" {
        let mut plain = Vec::new();
        if flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut plain)
            .is_err()
        {
            plain.clear();
        }
        body = plain;
    }
    let mut received = store.lock().unwrap();
    let ok = if first.starts_with("post /v1/metrics ") {
        ExportMetricsServiceRequest::decode(&body[..])
            .map(|r| received.metrics.push(r))
            .is_ok()
    } else if first.starts_with("post /v1/logs ") {
        ExportLogsServiceRequest::decode(&body[..])
            .map(|r| received.logs.push(r))
            .is_ok()
    } else {
        false
    };
    if ok {
        received.encodings.push(encoding.to_string());
    }
    drop(received);
    let status = if ok { "200 OK" } else { "400 Bad Request" };
    let _ = conn.write_all(
        format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
    );
}

/// A header's value in a lower-cased request head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::trim)
    })
}

/// A loopback port that was free a moment ago (for servers that bind by address).
pub fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn wait_listening(addr: SocketAddr) {
    for _ in 0..100 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return;
        }
        thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("receiver on {addr} did not start");
}

/// The metric named `name` in the last metrics export.
pub fn last_metric(received: &Received, name: &str) -> Metric {
    let last = received.metrics.last().expect("no metrics received");
    last.resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("metric {name} not in the last export"))
        .clone()
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    })
}

/// The sum of a metric's number points whose attributes include all of `filter`.
pub fn number(metric: &Metric, filter: &[(&str, &str)]) -> f64 {
    let points = match metric.data.as_ref().unwrap() {
        metric::Data::Sum(s) => &s.data_points,
        metric::Data::Gauge(g) => &g.data_points,
        _ => panic!("{} is not a number metric", metric.name),
    };
    points
        .iter()
        .filter(|p| {
            filter
                .iter()
                .all(|(k, v)| attr(&p.attributes, k) == Some(v))
        })
        .map(|p| match p.value.unwrap() {
            number_data_point::Value::AsInt(i) => i as f64,
            number_data_point::Value::AsDouble(d) => d,
        })
        .sum()
}

/// The string value of a resource attribute in the last metrics export.
pub fn resource_attr(received: &Received, key: &str) -> Option<String> {
    let r = received
        .metrics
        .last()?
        .resource_metrics
        .first()?
        .resource
        .as_ref()?;
    attr(&r.attributes, key).map(str::to_owned)
}

/// Whether a log record with `event.name` = `event` arrived.
pub fn has_log_event(received: &Received, event: &str) -> bool {
    received
        .logs
        .iter()
        .flat_map(|l| &l.resource_logs)
        .flat_map(|r| &r.scope_logs)
        .flat_map(|s| &s.log_records)
        .any(|rec| attr(&rec.attributes, "event.name") == Some(event))
}
