//! Probe families, one module each, beside their kernel file `recap-ebpf/src/probes/<name>.rs`.
//!
//! A family says which kernel hooks it needs, which per-window maps it keeps, how its counts
//! become a summary, a table section, a live line and metric samples. The engine, the summary,
//! the table, the live view and the metric catalogue iterate over `Family::ALL` and never name
//! a family (in the manner of retis's collectors). Adding a family is a module here, its kernel
//! file, its counters in `recap-common`, and one line in `families!` (the wire's `Family` enum
//! gets its value too: a unit test of `agent::wire` fails until it has one).

pub mod cpu;
pub mod disk;
pub mod dns;
pub mod engine_error;
pub mod http;
pub mod http2;
pub mod log2;
pub mod mem;
pub mod net;
pub mod proc;
pub mod raw;
pub mod syscall_names;
pub mod syscalls;
pub mod tcp;
pub mod tcp_health;

use std::{fmt, hash::Hash, path::Path, str::FromStr, sync::Arc};

use aya::Ebpf;
use recap_common::Counter;
use serde::{de::DeserializeOwned, Deserialize, Deserializer, Serialize, Serializer};

use self::{engine_error::EngineError, raw::RawCounts};
use crate::metrics::{MetricDef, Sample};

/// A raw tracepoint on a kernel event every process goes through (BTF-typed, `tp_btf`, when
/// the program needs the kernel's types); the program finds the window of the current thread
/// in `TASK_SLOTS`.
#[derive(Clone, Copy, Debug)]
pub struct TaskHook {
    pub program: &'static str,
    pub tracepoint: &'static str,
    /// On a path every process takes often (every syscall; every socket send and receive):
    /// never kept attached without a window that needs it.
    pub hot_path: bool,
    /// A `tp_btf` program: loading it needs the kernel's BTF (parsed once, on first use).
    pub btf_typed: bool,
}

/// A program attached to the target's cgroup for one window, tagged with the window's slot.
#[derive(Clone, Copy, Debug)]
pub enum CgroupHook {
    SockOps {
        program: &'static str,
    },
    Skb {
        program: &'static str,
        ingress: bool,
    },
}

/// How a family reaches the kernel.
#[derive(Clone, Copy, Debug)]
pub enum Hooks {
    /// Global raw tracepoints; needs task tracking (`TASK_SLOTS`).
    Tasks(&'static [TaskHook]),
    /// Programs attached to the target's cgroup: cost nothing outside it.
    Cgroup(&'static [CgroupHook]),
}

/// A per-CPU `u64` array holding `len` entries per window slot, from `slot * len`. The engine
/// sizes, reads and zeroes it for the family.
#[derive(Clone, Copy, Debug)]
pub struct SlotArray {
    pub map: &'static str,
    pub len: u32,
}

/// One family of probes.
pub trait ProbeFamily: Sync {
    /// What `--probes` calls it, and its key in the summary.
    fn name(&self) -> &'static str;
    /// On unless `--probes` says otherwise. A family that costs every process on the host is
    /// chosen explicitly.
    fn on_by_default(&self) -> bool {
        true
    }
    fn hooks(&self) -> Hooks;
    fn slot_arrays(&self) -> &'static [SlotArray] {
        &[]
    }
    /// Counts the family keeps by name in maps of its own (e.g. exec'd programs: one value per
    /// name; HTTP requests by side, method and status: a count, a sum and a histogram).
    fn read_named(&self, _ebpf: &Ebpf, _slot: u32) -> Result<Vec<Named>, EngineError> {
        Ok(Vec::new())
    }
    /// Forgets a previous window's named counts, before a slot is reused.
    fn clear_named(&self, _ebpf: &mut Ebpf, _slot: u32) -> Result<(), EngineError> {
        Ok(())
    }
    /// Figures the kernel already keeps per cgroup or per task, read by user space rather than
    /// counted by a program: their values when the window opens (`None`: the family has none);
    /// `subtree`: with the cgroups below the target, or the target's own alone.
    fn cgroup_baseline(&self, _cgroup_dir: &Path, _subtree: bool) -> Option<Vec<u64>> {
        None
    }
    /// This window's share of those figures now, each added to its counter as the kernel
    /// left it (wrapping: a share may be negative against what the kernel counted; `None` if
    /// they cannot be read, e.g. the cgroup is gone: the last shares read stand).
    fn cgroup_share(
        &self,
        _cgroup_dir: &Path,
        _baseline: &[u64],
        _subtree: bool,
    ) -> Option<Vec<(Counter, u64)>> {
        None
    }
    /// Family-specific set-up for a window, before its hooks are attached (e.g. telling the
    /// kernel which cgroups to count); an error makes the family unavailable, with the reason.
    fn arm(
        &self,
        _ebpf: &mut Ebpf,
        _slot: u32,
        _cgroup_dir: &Path,
        _subtree: bool,
    ) -> Result<(), String> {
        Ok(())
    }
    /// Undoes `arm` as the window closes.
    fn disarm(&self, _ebpf: &mut Ebpf, _slot: u32) {}
    /// Counters of `cgroup_share` that keep the highest value read in the window.
    fn peak_counters(&self) -> &'static [Counter] {
        &[]
    }
    fn summarise(&self, counts: &RawCounts) -> Arc<dyn FamilyReport>;
    /// Its report read back from the summary's JSON.
    fn report_from_json(&self, v: serde_json::Value) -> serde_json::Result<Arc<dyn FamilyReport>>;
    /// One line of the live view.
    fn live(&self, counts: &RawCounts) -> String;
    /// Its metrics, in catalogue order.
    fn metrics(&self) -> &'static [&'static MetricDef];
}

/// What a family measured in a window: its part of the JSON summary, of the table and of
/// the exported metrics.
pub trait FamilyReport: fmt::Debug + Send + Sync {
    fn to_json(&self) -> serde_json::Value;
    fn table(&self, out: &mut String, top: usize);
    fn samples(&self) -> Vec<Sample>;
}

/// `report_from_json` for a report type that reads back as it was written.
pub(crate) fn report_from_json<T: FamilyReport + DeserializeOwned + 'static>(
    v: serde_json::Value,
) -> serde_json::Result<Arc<dyn FamilyReport>> {
    Ok(Arc::new(serde_json::from_value::<T>(v)?))
}

/// A name and the values a family keeps for it.
pub type Named = (String, Vec<u64>);

/// A handle on a family: small, `Copy`, ordered as in `Family::ALL`, named in JSON.
#[derive(Clone, Copy)]
pub struct Family(&'static dyn ProbeFamily);

/// Every family, one line each (its constant and its module's type), in the order the summary,
/// the table and the catalogue show them: this list is `Family::ALL` and nothing else names them.
macro_rules! families {
    ($($name:ident => $ty:path),* $(,)?) => {
        impl Family {
            $(pub const $name: Family = Family(&$ty);)*
            pub const ALL: [Family; [$(stringify!($name)),*].len()] = [$(Family::$name),*];
        }
    };
}

families! {
    TCP => tcp::Tcp,
    TCP_HEALTH => tcp_health::TcpHealth,
    HTTP => http::Http,
    DNS => dns::Dns,
    NET => net::Net,
    SYSCALLS => syscalls::Syscalls,
    PROC => proc::Proc,
    CPU => cpu::Cpu,
    MEM => mem::Mem,
    DISK => disk::Disk,
}

impl Family {
    pub fn defaults() -> Vec<Family> {
        Family::ALL
            .into_iter()
            .filter(|f| f.0.on_by_default())
            .collect()
    }

    pub fn name(self) -> &'static str {
        self.0.name()
    }

    /// Families that find their window through `TASK_SLOTS` (and so need task tracking).
    pub fn is_task_based(self) -> bool {
        matches!(self.0.hooks(), Hooks::Tasks(_))
    }

    fn position(self) -> usize {
        Family::ALL
            .iter()
            .position(|f| f.name() == self.name())
            .unwrap_or(usize::MAX)
    }
}

impl std::ops::Deref for Family {
    type Target = dyn ProbeFamily;
    fn deref(&self) -> &Self::Target {
        self.0
    }
}

impl PartialEq for Family {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}
impl Eq for Family {}
impl PartialOrd for Family {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Family {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.position().cmp(&other.position())
    }
}
impl Hash for Family {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name().hash(state)
    }
}
impl fmt::Debug for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
impl Serialize for Family {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Family {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for Family {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Family::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = Family::ALL.iter().map(|f| f.name()).collect();
                format!("unknown probe family `{s}`; known: {}", known.join(", "))
            })
    }
}

/// Whether a family ran in a window, or why not.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum FamilyStatus {
    Ok,
    Unavailable { reason: String },
}

/// `  label ........ value` rows of the table.
pub(crate) fn row(o: &mut String, label: &str, v: u64) {
    use std::fmt::Write;
    let _ = writeln!(o, "  {label:<40} {v:>14}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_named_ordered_and_parsed() {
        let names: Vec<&str> = Family::ALL.iter().map(|f| f.name()).collect();
        assert_eq!(
            names,
            [
                "tcp",
                "tcp_health",
                "http",
                "dns",
                "net",
                "syscalls",
                "proc",
                "cpu",
                "mem",
                "disk"
            ]
        );
        assert!(Family::TCP < Family::CPU);
        assert_eq!("proc".parse::<Family>(), Ok(Family::PROC));
        assert!("grpc"
            .parse::<Family>()
            .unwrap_err()
            .contains("known: tcp, tcp_health, http, dns, net"));
        assert!(
            !Family::defaults().contains(&Family::SYSCALLS),
            "syscalls is opt-in"
        );
        assert_eq!(Family::defaults().len(), 8);
        assert!(Family::CPU.is_task_based() && !Family::NET.is_task_based());
        for f in Family::ALL {
            for def in f.metrics() {
                // Ours, or an OpenTelemetry semantic-convention metric under its own name.
                let semconv = [".seconds", ".bytes", ".total", ".bytes.total"]
                    .iter()
                    .any(|unit| def.prom.replace('_', ".") == format!("{}{unit}", def.otel));
                assert!(def.prom.starts_with("recap_") || semconv, "{}", def.prom);
            }
        }
    }
}
