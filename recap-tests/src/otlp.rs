//! Real OTLP receivers for the tests: the collector's gRPC services (from opentelemetry-proto,
//! served with tonic) and an HTTP/protobuf endpoint, both recording what they receive.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener},
    sync::{Arc, Mutex},
    thread,
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

#[derive(Default)]
pub struct Received {
    pub metrics: Vec<ExportMetricsServiceRequest>,
    pub logs: Vec<ExportLogsServiceRequest>,
}

pub type Shared = Arc<Mutex<Received>>;

struct Collector(Shared);

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().metrics.push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().logs.push(request.into_inner());
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

/// An OTLP gRPC receiver on a loopback port, running until the test process ends.
pub fn grpc_receiver() -> (SocketAddr, Shared) {
    let addr = free_port();
    let shared = Shared::default();
    let (m, l) = (Collector(shared.clone()), Collector(shared.clone()));
    thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            tonic::transport::Server::builder()
                .add_service(MetricsServiceServer::new(m))
                .add_service(LogsServiceServer::new(l))
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
            let mut data = Vec::new();
            let mut buf = [0u8; 65536];
            // Headers, then Content-Length bytes of body.
            let (head_end, length) = loop {
                let n = conn.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    break (0, 0);
                }
                data.extend_from_slice(&buf[..n]);
                if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    break (end + 4, length);
                }
            };
            while data.len() < head_end + length {
                let n = conn.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    break;
                }
                data.extend_from_slice(&buf[..n]);
            }
            let first = String::from_utf8_lossy(&data)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string();
            let body = &data[head_end..(head_end + length).min(data.len())];
            let ok = if first.starts_with("POST /v1/metrics ") {
                ExportMetricsServiceRequest::decode(body)
                    .map(|r| store.lock().unwrap().metrics.push(r))
                    .is_ok()
            } else if first.starts_with("POST /v1/logs ") {
                ExportLogsServiceRequest::decode(body)
                    .map(|r| store.lock().unwrap().logs.push(r))
                    .is_ok()
            } else {
                false
            };
            let status = if ok { "200 OK" } else { "400 Bad Request" };
            let _ = conn.write_all(
                format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            );
        }
    });
    (addr, shared)
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
