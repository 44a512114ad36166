//! Prometheus export: the windows' numbers encoded through `prometheus-client`'s custom-collector
//! API (the kernel hands over cumulative counts and pre-bucketed histograms, which a collector
//! passes on as they are), served at `/metrics` by axum.
//!
//! The text format 0.0.4 is the default (what `promtool check metrics` reads); a scraper that
//! asks for OpenMetrics in its `Accept` header gets OpenMetrics.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, RwLock},
};

use anyhow::Context;
use axum::{
    http::{header, HeaderMap, StatusCode},
    response::IntoResponse,
    routing::get,
    Router,
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, NoLabelSet},
    metrics::MetricType,
    registry::Registry,
};
use tokio::{net::TcpListener, task::JoinHandle};

use super::catalog;
use crate::metrics::{Kind, MetricDef, Sample, Value, WINDOW};
use crate::{
    limits::{self, Gate, Guarded, Limits, Peer},
    report::WindowSummary,
};

/// `9464` or `:9464` mean loopback; a full address binds where it says.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let with_host = if s.starts_with(':') {
        format!("127.0.0.1{s}")
    } else if s.parse::<u16>().is_ok() {
        format!("127.0.0.1:{s}")
    } else {
        s.to_string()
    };
    with_host
        .parse()
        .map_err(|_| format!("cannot read `{s}` as an address; use e.g. 127.0.0.1:9464 or :9464"))
}

/// The latest summary of every window being exported, by window id. The window (or the
/// agent) writes it; each scrape encodes what is there at that moment.
#[derive(Clone, Debug, Default)]
pub struct Published(Arc<RwLock<BTreeMap<String, WindowSummary>>>);

impl Published {
    pub fn publish(&self, summary: &WindowSummary) {
        if let Ok(mut windows) = self.0.write() {
            windows.insert(summary.meta.window_id.clone(), summary.clone());
        }
    }

    pub fn remove(&self, window_id: &str) {
        if let Ok(mut windows) = self.0.write() {
            windows.remove(window_id);
        }
    }
}

/// The labels of one sample: the window's, then the metric's own attributes.
fn labels(s: &WindowSummary, sample: &Sample) -> Vec<(String, String)> {
    let mut out = vec![(WINDOW.prom.to_string(), s.meta.window_id.clone())];
    if let Some(c) = &s.meta.target.container {
        out.push(("container_name".into(), c.name.clone()));
    }
    out.extend(
        sample
            .attrs
            .iter()
            .map(|(a, v)| (a.prom.to_string(), v.clone())),
    );
    if std::ptr::eq(sample.def, &catalog::WINDOW_INFO) {
        out.extend(
            catalog::target_attrs(s)
                .into_iter()
                .map(|(_, prom, v)| (prom.to_string(), v)),
        );
    }
    out
}

impl Collector for Published {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Ok(windows) = self.0.read() else {
            return Ok(());
        };
        let samples: Vec<(&WindowSummary, Vec<Sample>)> =
            windows.values().map(|s| (s, catalog::samples(s))).collect();
        // One descriptor per metric, then every window's samples of it.
        for def in catalog::all() {
            let of_def: Vec<(&WindowSummary, &Sample)> = samples
                .iter()
                .flat_map(|(s, all)| all.iter().map(move |x| (*s, x)))
                .filter(|(_, x)| std::ptr::eq(x.def, def))
                .collect();
            if of_def.is_empty() {
                continue;
            }
            let (name, metric_type) = descriptor(def);
            let mut metric = encoder.encode_descriptor(name, def.help, None, metric_type)?;
            for (s, sample) in of_def {
                let labels = labels(s, sample);
                let mut series = metric.encode_family(&labels)?;
                match (&sample.value, def.kind) {
                    (Value::Count(n), Kind::Counter) => {
                        series.encode_counter::<NoLabelSet, _, u64>(n, None)?
                    }
                    (Value::Seconds(v), Kind::Counter) => {
                        series.encode_counter::<NoLabelSet, _, f64>(v, None)?
                    }
                    (Value::Count(n), _) => series.encode_gauge(&(*n as i64))?,
                    (Value::Seconds(v), _) => series.encode_gauge(v)?,
                    (
                        Value::Histogram {
                            bounds_s,
                            counts,
                            count,
                            sum_s,
                        },
                        _,
                    ) => {
                        // The last kernel bucket is open-ended: prometheus-client writes `+Inf`
                        // from `count`.
                        let buckets: Vec<(f64, u64)> = bounds_s
                            .iter()
                            .copied()
                            .zip(counts.iter().copied())
                            .collect();
                        series.encode_histogram::<NoLabelSet>(*sum_s, *count, &buckets, None)?
                    }
                }
            }
        }
        Ok(())
    }
}

/// prometheus-client appends `_total` to counters itself; the catalogue names the full series.
fn descriptor(def: &MetricDef) -> (&'static str, MetricType) {
    match def.kind {
        Kind::Counter => (
            def.prom.strip_suffix("_total").unwrap_or(def.prom),
            MetricType::Counter,
        ),
        Kind::Gauge => (def.prom, MetricType::Gauge),
        Kind::Histogram => (def.prom, MetricType::Histogram),
    }
}

/// Another source of series on the same endpoint (the agent's own metrics).
#[derive(Clone, Debug)]
struct Extra(Arc<dyn Collector>);

impl Collector for Extra {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }
}

/// What an endpoint serves: the windows' series and any extra collectors.
#[derive(Clone, Debug, Default)]
struct Exposition {
    published: Published,
    extra: Vec<Extra>,
}

/// The exposition of what is published, as text format 0.0.4 or OpenMetrics.
pub fn render(published: &Published, openmetrics: bool) -> String {
    render_all(
        &Exposition {
            published: published.clone(),
            extra: Vec::new(),
        },
        openmetrics,
    )
}

fn render_all(exposition: &Exposition, openmetrics: bool) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(exposition.published.clone()));
    for extra in &exposition.extra {
        registry.register_collector(Box::new(extra.clone()));
    }
    let mut out = String::new();
    let encoded = if openmetrics {
        prometheus_client::encoding::text::encode(&mut out, &registry)
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
    };
    // Writing into a String cannot fail; a failure would be a bug in the collector.
    if let Err(e) = encoded {
        log::error!("encoding the Prometheus exposition: {e}");
    }
    out
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

async fn metrics(
    axum::extract::State(exposition): axum::extract::State<Exposition>,
    request: HeaderMap,
) -> impl IntoResponse {
    let openmetrics = request
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let content_type = if openmetrics {
        OPENMETRICS
    } else {
        prometheus_client::encoding::prometheus_text::CONTENT_TYPE
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, content_type)],
        render_all(&exposition, openmetrics),
    )
}

/// Serves `app` on `listener` under `Limits::METRICS`: connections capped per address and in
/// all, a request head must arrive within 5 s, a connection that goes quiet is closed.
async fn serve(listener: TcpListener, app: Router) {
    let gate = Gate::new("the Prometheus endpoint", Limits::METRICS);
    let service = hyper_util::service::TowerToHyperService::new(app);
    let mut last_report = None;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                limits::after_accept_error("the Prometheus endpoint", &e, &mut last_report).await;
                continue;
            }
        };
        let Some(permit) = gate.admit(Peer::Ip(peer.ip())) else {
            continue;
        };
        let io = hyper_util::rt::TokioIo::new(Guarded::new(stream, permit));
        let service = service.clone();
        tokio::spawn(async move {
            let served = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(5))
                .max_buf_size(64 * 1024)
                .serve_connection(io, service)
                .await;
            if let Err(e) = served {
                log::debug!("/metrics connection from {peer}: {e}");
            }
        });
    }
}

/// Serves `/metrics` until dropped.
pub struct Endpoint {
    pub addr: SocketAddr,
    pub published: Published,
    task: JoinHandle<()>,
}

impl Endpoint {
    /// Serves what is `published`, from now until dropped.
    pub async fn bind(addr: SocketAddr, published: Published) -> anyhow::Result<Self> {
        Self::bind_with(addr, published, Vec::new()).await
    }

    /// Serves what is `published` and the series of `extra` collectors.
    pub async fn bind_with(
        addr: SocketAddr,
        published: Published,
        extra: Vec<Arc<dyn Collector>>,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the Prometheus endpoint to {addr} (is the port in use? pick another with --prometheus)"))?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/metrics", get(metrics))
            .with_state(Exposition {
                published: published.clone(),
                extra: extra.into_iter().map(Extra).collect(),
            });
        let task = tokio::spawn(serve(listener, app));
        Ok(Endpoint {
            addr,
            published,
            task,
        })
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_default_to_loopback() {
        assert_eq!(parse_addr("9464").unwrap().to_string(), "127.0.0.1:9464");
        assert_eq!(parse_addr(":9464").unwrap().to_string(), "127.0.0.1:9464");
        assert_eq!(
            parse_addr("0.0.0.0:9000").unwrap().to_string(),
            "0.0.0.0:9000"
        );
        assert!(parse_addr("nowhere").is_err());
    }

    #[test]
    fn counters_keep_their_catalogue_names() {
        for def in catalog::all() {
            let (name, _) = descriptor(def);
            let series = match def.kind {
                Kind::Counter => format!("{name}_total"),
                _ => name.to_string(),
            };
            assert_eq!(series, def.prom);
        }
    }
}
