//! OTLP messages of a window: metrics (cumulative sums, gauges, and histograms whose bounds are
//! the kernel's buckets) and window start/end log records, built from `opentelemetry-proto`
//! types directly rather than through SDK instruments: the kernel hands over cumulative counts
//! and pre-bucketed histograms, which SDK instruments cannot take as they are, and the export
//! must equal the summary exactly.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::{
    collector::{logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest},
    common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber},
    metrics::v1::{
        metric, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint,
        Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    },
    resource::v1::Resource,
};

use crate::{
    export::catalog,
    metrics::{Kind, Value, WINDOW},
    report::WindowSummary,
};

/// The parts every message of one window shares.
pub struct Encoder {
    /// The caller's resource attributes (after RECap's own).
    resource: Vec<(String, String)>,
    /// The start of every cumulative point: when the exporter was made.
    start_ns: u64,
}

impl Encoder {
    pub fn new(resource: Vec<(String, String)>) -> Self {
        Encoder {
            resource,
            start_ns: now_ns(),
        }
    }

    fn resource_of(&self, s: &WindowSummary) -> Resource {
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
        attributes.extend(self.resource.iter().map(|(k, v)| kv(k, v.clone())));
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
                let attrs = |sample: &crate::metrics::Sample| {
                    let mut a = vec![kv(WINDOW.otel, s.meta.window_id.clone())];
                    a.extend(
                        sample
                            .attrs
                            .iter()
                            .map(|(attr, v)| kv(attr.otel, v.clone())),
                    );
                    a
                };
                let number = |sample: &crate::metrics::Sample| NumberDataPoint {
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
                resource: Some(self.resource_of(s)),
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
                resource: Some(self.resource_of(s)),
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
