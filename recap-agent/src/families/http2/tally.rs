//! What a window's HTTP/2 streams came to, in the shapes the `http` family reads from
//! `RawCounts`: request groups keyed as the kernel's HTTP/1.x ones (with version 2), gRPC
//! calls by path and status, and the family's counters.

use std::collections::{BTreeMap, BTreeSet};

use recap_common::{Counter, HTTP_BUCKETS, HTTP_VERSION_2};

use crate::{
    families::http::{GrpcKey, RequestKey},
    families::raw::RawCounts,
};

/// gRPC paths (`/package.Service/Method`) told apart per window by default (`--grpc-paths`);
/// calls to paths beyond these are counted as `other` (label cardinality stays bounded).
pub const GRPC_PATHS: usize = 64;
/// The name the calls beyond `GRPC_PATHS` are counted under.
pub const GRPC_OTHER: &str = "other";

/// A count, a sum and a log2 histogram of durations, as the kernel's `HttpStat`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stat {
    pub count: u64,
    pub sum_ns: u64,
    pub buckets: Vec<u64>,
}

impl Stat {
    pub fn add(&mut self, ns: u64) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; HTTP_BUCKETS as usize];
        }
        self.count += 1;
        self.sum_ns += ns;
        let bucket = (63 - ns.max(1).leading_zeros()).min(HTTP_BUCKETS - 1);
        self.buckets[bucket as usize] += 1;
    }

    /// `[count, sum, buckets...]`, as `families::Named` holds it.
    fn values(&self) -> Vec<u64> {
        let mut v = vec![self.count, self.sum_ns];
        v.extend(&self.buckets);
        v.resize(2 + HTTP_BUCKETS as usize, 0);
        v
    }
}

/// One window's HTTP/2 results (for the window `epoch` of its slot).
#[derive(Debug, Default)]
pub struct Tally {
    pub epoch: u64,
    requests: BTreeMap<RequestKey, Stat>,
    grpc: BTreeMap<GrpcKey, Stat>,
    grpc_paths: BTreeSet<String>,
    /// Distinct paths told apart at most.
    pub paths_limit: usize,
    counters: BTreeMap<u32, u64>,
}

impl Tally {
    pub fn new(epoch: u64) -> Self {
        Tally {
            epoch,
            paths_limit: GRPC_PATHS,
            ..Default::default()
        }
    }

    pub fn count(&mut self, counter: Counter, n: u64) {
        *self.counters.entry(counter as u32).or_default() += n;
    }

    /// A request answered with a final status (0: the status field was unknown).
    pub fn request(&mut self, server: bool, method: &'static str, status: u16, tls: bool, ns: u64) {
        let key = RequestKey {
            server,
            method,
            status,
            tls,
            version: HTTP_VERSION_2,
        };
        self.requests.entry(key).or_default().add(ns);
    }

    /// A gRPC call ended with its trailers (`code`: `grpc-status`, `None` if unknown).
    pub fn grpc_call(&mut self, server: bool, path: &str, code: Option<u32>, tls: bool, ns: u64) {
        let path = if self.grpc_paths.contains(path) {
            path.to_string()
        } else if self.grpc_paths.len() < self.paths_limit {
            self.grpc_paths.insert(path.to_string());
            path.to_string()
        } else {
            self.count(Counter::GrpcOtherCalls, 1);
            GRPC_OTHER.to_string()
        };
        let key = GrpcKey {
            server,
            path,
            code,
            tls,
        };
        self.grpc.entry(key).or_default().add(ns);
    }

    /// Adds this tally to a window's counts read from the kernel.
    pub fn merge_into(&self, counts: &mut RawCounts) {
        for (&counter, &n) in &self.counters {
            if let Some(c) = counts.counters.get_mut(counter as usize) {
                *c += n;
            }
        }
        if let Some(c) = counts.counters.get_mut(Counter::GrpcPathsLimit as usize) {
            *c = self.paths_limit as u64;
        }
        let named = counts.named.entry("http").or_default();
        for (key, stat) in &self.requests {
            named.push((key.to_string(), stat.values()));
        }
        for (key, stat) in &self.grpc {
            named.push((key.to_string(), stat.values()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_paths_beyond_the_bound_are_other() {
        let mut t = Tally::new(1);
        for i in 0..GRPC_PATHS + 3 {
            t.grpc_call(true, &format!("/s.S/M{i}"), Some(0), false, 1_000);
        }
        t.grpc_call(true, "/s.S/M0", Some(5), false, 1_000);
        let other: u64 = t
            .grpc
            .iter()
            .filter(|(k, _)| k.path == GRPC_OTHER)
            .map(|(_, s)| s.count)
            .sum();
        assert_eq!(other, 3);
        assert_eq!(t.grpc.len(), GRPC_PATHS + 2);
    }

    #[test]
    fn durations_land_in_the_kernels_buckets() {
        let mut s = Stat::default();
        s.add(2048);
        s.add(4095);
        s.add(1);
        assert_eq!(s.buckets[11], 2);
        assert_eq!(s.buckets[0], 1);
        assert_eq!(s.values().len(), 2 + HTTP_BUCKETS as usize);
    }
}
