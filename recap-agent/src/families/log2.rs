//! Log2 histograms as the kernel side keeps them (bucket b: values in [2^b, 2^(b+1)) ns, bucket
//! 0 also holds 0, the last open-ended), summarised for the report and the exporters.

use serde::{Deserialize, Serialize};

use crate::metrics::{MetricDef, Sample, Value};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Bucket {
    /// Samples in `[ge_ns, lt_ns)`; the last bucket has no upper bound.
    pub ge_ns: u64,
    pub lt_ns: Option<u64>,
    pub count: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Histogram {
    pub count: u64,
    /// Sum of all samples.
    pub sum_ns: u64,
    /// Upper bound of the bucket holding the quantile (log2 buckets: within 2×).
    pub p50_le_ns: Option<u64>,
    pub p99_le_ns: Option<u64>,
    /// Non-empty buckets only.
    pub buckets: Vec<Bucket>,
}

/// Log2 buckets: bucket b covers [2^b, 2^(b+1)) ns, bucket 0 also holds 0 ns.
pub fn histogram(buckets: &[u64], sum_ns: u64) -> Histogram {
    let last = buckets.len().saturating_sub(1);
    let bounds = |b: usize| -> (u64, Option<u64>) {
        let ge = if b == 0 { 0 } else { 1u64 << b };
        (ge, (b < last).then(|| 1u64 << (b + 1)))
    };
    let count: u64 = buckets.iter().sum();
    let quantile = |q: f64| -> Option<u64> {
        if count == 0 {
            return None;
        }
        let rank = (q * count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, &n) in buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(bounds(b).1.unwrap_or(u64::MAX));
            }
        }
        None
    };
    Histogram {
        count,
        sum_ns,
        p50_le_ns: quantile(0.50),
        p99_le_ns: quantile(0.99),
        buckets: buckets
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(b, &n)| {
                let (ge_ns, lt_ns) = bounds(b);
                Bucket {
                    ge_ns,
                    lt_ns,
                    count: n,
                }
            })
            .collect(),
    }
}

/// The buckets' upper bounds in seconds (one fewer than the buckets: the last is open-ended).
pub fn bounds_s(buckets: u32) -> Vec<f64> {
    (1..buckets).map(|b| (1u64 << b) as f64 / 1e9).collect()
}

/// Every bucket's count, empty ones included, from the report's non-empty ones (what the
/// exporters need).
pub fn dense_counts(h: &Histogram, buckets: u32) -> Vec<u64> {
    let mut counts = vec![0u64; buckets as usize];
    let last = counts.len() - 1;
    for b in &h.buckets {
        let index = if b.ge_ns == 0 {
            0
        } else {
            b.ge_ns.trailing_zeros() as usize
        };
        counts[index.min(last)] = b.count;
    }
    counts
}

/// The histogram as a sample of `def`, every kernel bucket included.
pub fn sample(def: &'static MetricDef, h: &Histogram, buckets: u32) -> Sample {
    Sample::new(
        def,
        vec![],
        Value::Histogram {
            bounds_s: bounds_s(buckets),
            counts: dense_counts(h, buckets),
            count: h.count,
            sum_s: h.sum_ns as f64 / 1e9,
        },
    )
}

/// A duration for a person: `512ns`, `33us`, `4ms`, `2.1s`.
pub fn fmt_ns(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{}us", ns / 1_000),
        1_000_000..1_000_000_000 => format!("{}ms", ns / 1_000_000),
        _ => format!("{:.1}s", ns as f64 / 1e9),
    }
}
