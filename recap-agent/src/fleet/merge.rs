//! One answer from many windows: per-family totals summed over every window's summary, beside
//! the per-node and per-target summaries themselves.
//!
//! Summing is generic over the summary's JSON, so a new family merges without code here:
//! counts add up; lists of named entries (`[{name, count}]`, `[{method, status, duration}]`,
//! histogram buckets) add up entry by entry; quantile bounds (`*_le_ns`), which do not add,
//! are dropped from the totals; configured bounds (`*_limit`) are the largest of them.

use serde_json::{Map, Value};

/// Fields that name a list entry rather than count it.
const IDENTITY: [&str; 11] = [
    "name",
    "method",
    "status",
    "ge_ns",
    "lt_ns",
    "nr",
    "capsule",
    // http's request groups (`tls`, `version`) and gRPC's call groups.
    "tls",
    "version",
    "service",
    "status_code",
];

/// The totals of `summaries`' family sections (`families` names them).
pub fn totals<'a>(
    summaries: impl IntoIterator<Item = &'a Value>,
    families: &[&str],
) -> Map<String, Value> {
    let mut out = Map::new();
    for s in summaries {
        for family in families {
            if let Some(section) = s.get(*family) {
                let merged = match out.remove(*family) {
                    Some(acc) => sum(acc, section),
                    None => strip(section.clone()),
                };
                out.insert(family.to_string(), merged);
            }
        }
    }
    out
}

fn is_quantile(key: &str) -> bool {
    key.ends_with("_le_ns")
}

/// A first value as it enters the totals: without quantile bounds.
fn strip(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(k, _)| !is_quantile(k))
                .map(|(k, v)| (k, strip(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(strip).collect()),
        other => other,
    }
}

fn identity(v: &Value) -> Option<Vec<(String, Value)>> {
    let m = v.as_object()?;
    let id: Vec<(String, Value)> = IDENTITY
        .iter()
        .filter_map(|k| m.get(*k).map(|v| (k.to_string(), v.clone())))
        .collect();
    (!id.is_empty()).then_some(id)
}

fn sum(acc: Value, add: &Value) -> Value {
    match (acc, add) {
        (Value::Object(mut a), Value::Object(b)) => {
            for (k, v) in b {
                if is_quantile(k) {
                    continue;
                }
                let merged = match a.remove(k) {
                    // Identity fields of a list entry stay as they are.
                    Some(existing) if IDENTITY.contains(&k.as_str()) => existing,
                    Some(existing) if k.ends_with("_limit") => {
                        let (x, y) = (existing.as_u64(), v.as_u64());
                        Value::from(x.max(y).unwrap_or(0))
                    }
                    Some(existing) => sum(existing, v),
                    None => strip(v.clone()),
                };
                a.insert(k.clone(), merged);
            }
            Value::Object(a)
        }
        (Value::Number(a), Value::Number(b)) => match (a.as_u64(), b.as_u64()) {
            (Some(x), Some(y)) => Value::from(x.saturating_add(y)),
            _ => Value::from(a.as_f64().unwrap_or(0.0) + b.as_f64().unwrap_or(0.0)),
        },
        (Value::Array(mut a), Value::Array(b)) => {
            for entry in b {
                let id = identity(entry);
                match id.and_then(|id| a.iter().position(|x| identity(x).as_ref() == Some(&id))) {
                    Some(i) => {
                        let existing = std::mem::take(&mut a[i]);
                        a[i] = sum(existing, entry);
                    }
                    None => a.push(strip(entry.clone())),
                }
            }
            Value::Array(a)
        }
        (acc, _) => acc,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_and_named_entries_add_up_quantiles_are_dropped() {
        let a = json!({
            "tcp": {"accepted": 3, "connect_attempts": 1},
            "http": {"server": {"completed": 2, "requests": [
                {"method": "GET", "status": 200, "duration": {"count": 2, "sum_ns": 10, "p50_le_ns": 8,
                 "buckets": [{"ge_ns": 4, "lt_ns": 8, "count": 2}]}}]}},
            "proc": {"exec_names": [{"name": "sh", "count": 1}]},
            "status": "completed"
        });
        let b = json!({
            "tcp": {"accepted": 4, "connect_attempts": 0},
            "http": {"server": {"completed": 5, "requests": [
                {"method": "GET", "status": 200, "duration": {"count": 4, "sum_ns": 30, "p50_le_ns": 16,
                 "buckets": [{"ge_ns": 4, "lt_ns": 8, "count": 1}, {"ge_ns": 8, "lt_ns": 16, "count": 3}]}},
                {"method": "GET", "status": 404, "duration": {"count": 1, "sum_ns": 1, "buckets": []}}]}},
            "proc": {"exec_names": [{"name": "true", "count": 2}, {"name": "sh", "count": 2}]}
        });
        let t = totals([&a, &b], &["tcp", "http", "proc"]);
        assert_eq!(t["tcp"], json!({"accepted": 7, "connect_attempts": 1}));
        let server = &t["http"]["server"];
        assert_eq!(server["completed"], 7);
        let get200 = &server["requests"][0];
        assert_eq!(get200["status"], 200);
        assert_eq!(get200["duration"]["count"], 6);
        assert_eq!(get200["duration"]["sum_ns"], 40);
        assert!(get200["duration"].get("p50_le_ns").is_none());
        assert_eq!(
            get200["duration"]["buckets"],
            json!([{"ge_ns": 4, "lt_ns": 8, "count": 3}, {"ge_ns": 8, "lt_ns": 16, "count": 3}])
        );
        assert_eq!(server["requests"][1]["status"], 404);
        assert_eq!(
            t["proc"]["exec_names"],
            json!([{"name": "sh", "count": 3}, {"name": "true", "count": 2}])
        );
        assert!(!t.contains_key("status"));
    }

    #[test]
    fn request_groups_of_other_versions_and_grpc_statuses_stay_apart() {
        let group = |version: &str, n: u64| {
            json!({"method": "GET", "status": 200, "tls": true, "version": version,
                   "duration": {"count": n}})
        };
        let call = |code: u64, n: u64| {
            json!({"service": "s.S", "method": "M", "status_code": code, "tls": false,
                   "duration": {"count": n}})
        };
        let a = json!({"http": {"server": {"requests": [group("1.1", 1), group("2", 2)]},
                                "grpc": {"server": [call(0, 1)], "paths_limit": 64}}});
        let b = json!({"http": {"server": {"requests": [group("2", 3)]},
                                "grpc": {"server": [call(0, 2), call(5, 1)], "paths_limit": 128}}});
        let t = totals([&a, &b], &["http"]);
        let requests = &t["http"]["server"]["requests"];
        assert_eq!(requests[0]["duration"]["count"], 1, "{requests}");
        assert_eq!(requests[1]["duration"]["count"], 5, "{requests}");
        let calls = &t["http"]["grpc"]["server"];
        assert_eq!(calls.as_array().unwrap().len(), 2, "{calls}");
        assert_eq!(calls[0]["duration"]["count"], 3);
        assert_eq!(t["http"]["grpc"]["paths_limit"], 128);
    }
}
