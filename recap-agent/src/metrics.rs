//! The metric vocabulary: a metric's definition (Prometheus and OpenTelemetry names, type, unit,
//! attributes, meaning), the `metric!` macro each family defines its metrics with, and the
//! samples a family's numbers become. Below the families, which use it, and the exporters,
//! which read it (`export::catalog` holds the catalogue of all of them).

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// An attribute: its OpenTelemetry key and its Prometheus label name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    pub otel: &'static str,
    pub prom: &'static str,
}

pub const DIRECTION: Attr = Attr {
    otel: "network.io.direction",
    prom: "direction",
};
pub const TRANSPORT: Attr = Attr {
    otel: "network.transport",
    prom: "transport",
};
/// On every series.
pub const WINDOW: Attr = Attr {
    otel: "recap.window.id",
    prom: "window_id",
};

#[derive(Debug)]
pub struct MetricDef {
    pub prom: &'static str,
    pub otel: &'static str,
    pub kind: Kind,
    /// UCUM unit for OTLP (Prometheus names carry their base unit as a suffix).
    pub unit: &'static str,
    pub help: &'static str,
    pub attrs: &'static [Attr],
}

/// Defines a `static` [`MetricDef`].
#[macro_export]
macro_rules! metric {
    ($ident:ident, $prom:literal, $otel:literal, $kind:ident, $unit:literal, $help:literal, [$($attr:ident),*]) => {
        pub static $ident: $crate::metrics::MetricDef = $crate::metrics::MetricDef {
            prom: $prom,
            otel: $otel,
            kind: $crate::metrics::Kind::$kind,
            unit: $unit,
            help: $help,
            attrs: &[$($attr),*],
        };
    };
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Count(u64),
    Seconds(f64),
    /// Cumulative per bucket: `counts[i]` waits fell at or below `bounds_s[i]` and above the
    /// previous bound; the last count is above every bound.
    Histogram {
        bounds_s: Vec<f64>,
        counts: Vec<u64>,
        count: u64,
        sum_s: f64,
    },
}

#[derive(Clone, Debug)]
pub struct Sample {
    pub def: &'static MetricDef,
    pub attrs: Vec<(Attr, String)>,
    pub value: Value,
}

impl Sample {
    pub fn new(def: &'static MetricDef, attrs: Vec<(Attr, String)>, value: Value) -> Self {
        Sample { def, attrs, value }
    }
}
