//! The catalogue: every exported metric, defined once. Each family defines its metrics in its
//! own module (`families/<name>.rs`) with the vocabulary of `crate::metrics`; this module holds
//! the window-wide metric, the list of all, and `samples`, which takes a window's numbers from
//! its summary, so an export can only say what the summary says. docs/metrics.md is generated from these definitions (`recap metrics-catalog`).

use crate::{
    families::Family,
    metric,
    metrics::{Kind, MetricDef, Sample, Value},
    report::WindowSummary,
};

metric!(
    WINDOW_INFO,
    "recap_window_info",
    "recap.window.info",
    Gauge,
    "1",
    "1 for each window, with its target as labels.",
    []
);

/// Every metric, in catalogue order: the families' in `Family::ALL` order, then the window's.
pub fn all() -> Vec<&'static MetricDef> {
    Family::ALL
        .iter()
        .flat_map(|f| f.metrics().iter().copied())
        .chain([&WINDOW_INFO])
        .collect()
}

/// The labels of `recap_window_info` (and OTLP resource attributes).
pub fn target_attrs(s: &WindowSummary) -> Vec<(&'static str, &'static str, String)> {
    let mut out = vec![(
        "recap.target.cgroup",
        "cgroup",
        s.meta.target.cgroup_dir.display().to_string(),
    )];
    if let Some(c) = &s.meta.target.container {
        out.push(("container.id", "container_id", c.id.clone()));
        out.push(("container.name", "container_name", c.name.clone()));
        out.push(("container.image.name", "container_image", c.image.clone()));
    }
    out
}

/// Every number of the summary, as samples of the catalog's metrics.
pub fn samples(s: &WindowSummary) -> Vec<Sample> {
    let mut out = vec![Sample::new(&WINDOW_INFO, vec![], Value::Count(1))];
    for (_, report) in s.reports() {
        out.extend(report.samples());
    }
    out
}

/// docs/metrics.md, generated from the definitions above.
pub fn markdown() -> String {
    let mut o = String::from(
        "# Metric catalogue\n\nGenerated from `recap-agent/src/export/catalog.rs` by `recap metrics-catalog`; a unit \
         test fails if this file and the code disagree.\n\nEvery series also carries `recap.window.id` (Prometheus: \
         `window_id`). OTLP resource attributes: `service.name=recap`, `host.name`, and for container targets \
         `container.id`, `container.name`, `container.image.name` (plus `OTEL_RESOURCE_ATTRIBUTES`); on Prometheus \
         they are labels of `recap_window_info` and `container_name` is on every series.\n\n\
         | Prometheus | OpenTelemetry | type | unit | attributes (OTel / Prometheus) | meaning |\n|---|---|---|---|---|---|\n",
    );
    for m in all() {
        let kind = match m.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let attrs: Vec<String> = m
            .attrs
            .iter()
            .map(|a| format!("`{}` / `{}`", a.otel, a.prom))
            .collect();
        o.push_str(&format!(
            "| `{}` | `{}` | {kind} | `{}` | {} | {} |\n",
            m.prom,
            m.otel,
            m.unit,
            attrs.join(", "),
            m.help
        ));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_conventions() {
        for m in all() {
            // Ours, or an OpenTelemetry semantic-convention metric under its own name.
            let semconv = [".seconds", ".bytes", ".total", ".bytes.total"]
                .iter()
                .any(|unit| m.prom.replace('_', ".") == format!("{}{unit}", m.otel));
            assert!(
                (m.prom.starts_with("recap_") && m.otel.starts_with("recap.")) || semconv,
                "{}",
                m.prom
            );
            let counter_name = m.prom.ends_with("_total");
            assert_eq!(
                counter_name,
                m.kind == Kind::Counter,
                "{}: only counters end in _total",
                m.prom
            );
            if m.unit == "s" {
                assert!(m.prom.contains("_seconds"), "{}: base unit seconds", m.prom);
            }
            if m.unit == "By" {
                assert!(m.prom.contains("_bytes"), "{}: base unit bytes", m.prom);
            }
        }
    }

    #[test]
    fn docs_metrics_md_is_generated_from_the_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md");
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            on_disk == markdown(),
            "docs/metrics.md is stale: run `recap metrics-catalog > docs/metrics.md`"
        );
    }
}
