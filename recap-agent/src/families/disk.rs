//! `disk`: block I/O charged to the target, as the kernel charges it (each bio's blkcg), by
//! direction and device, with its latency from queued to completed (kernel side:
//! `recap-ebpf/src/probes/disk.rs`). The kernel is told which blkio/io cgroups are the
//! target's: its own cgroup v2 directory when the io controller is on there, and on a hybrid
//! host the v1 blkio cgroup at the same path (Docker's containers). Write-back is charged as
//! the kernel charges it: on cgroup v1 to the root (the flusher's), so a container's buffered
//! writes show when it syncs them itself or writes with `O_DIRECT`. Costs a map lookup per
//! bio on the host; nothing per syscall.

use std::{collections::BTreeMap, fmt::Write, os::unix::fs::MetadataExt, path::Path, sync::Arc};

use aya::{
    maps::{HashMap as BpfHashMap, MapData, PerCpuHashMap, PerCpuValues},
    Ebpf,
};
use recap_common::{maps, programs, Counter, DiskKey, DISK_BUCKETS};
use serde::{Deserialize, Serialize};

use super::{
    log2::{self, fmt_ns, histogram, Histogram},
    row, FamilyReport, Hooks, Named, ProbeFamily, SlotArray, TaskHook,
};
use crate::{
    families::{
        engine_error::{map_err, missing_map, EngineError},
        raw::RawCounts,
    },
    metric,
    metrics::{Attr, MetricDef, Sample, Value},
    targets::cgroup,
};

pub struct Disk;

/// OpenTelemetry's `disk.io.direction`: `read` or `write`.
const DIRECTION: Attr = Attr {
    otel: "disk.io.direction",
    prom: "direction",
};
/// OpenTelemetry's `system.device`: `MAJOR:MINOR`.
const DEVICE: Attr = Attr {
    otel: "system.device",
    prom: "device",
};

metric!(
    DISK_IO,
    "system_disk_io_bytes_total",
    "system.disk.io",
    Counter,
    "By",
    "Bytes of block I/O charged to the target's cgroup, by direction and device.",
    [DIRECTION, DEVICE]
);
metric!(
    DISK_OPERATIONS,
    "system_disk_operations_total",
    "system.disk.operations",
    Counter,
    "{operation}",
    "Block I/O operations (bios) charged to the target's cgroup, by direction and device.",
    [DIRECTION, DEVICE]
);
metric!(
    DISK_LATENCY,
    "recap_disk_io_latency_seconds",
    "recap.disk.io.latency",
    Histogram,
    "s",
    "Block I/O latency of the target's bios, queued to completed, by direction (log2 buckets).",
    [DIRECTION]
);

static METRICS: [&MetricDef; 3] = [&DISK_IO, &DISK_OPERATIONS, &DISK_LATENCY];

/// `DISK_HIST[slot][direction][bucket]`.
const LATENCY: SlotArray = SlotArray {
    map: maps::DISK_HIST,
    len: 2 * DISK_BUCKETS,
};

static HOOKS: [TaskHook; 3] = [
    TaskHook {
        program: programs::DISK_QUEUE,
        tracepoint: "block_bio_queue",
        hot_path: false,
        btf_typed: false,
    },
    TaskHook {
        program: programs::DISK_ISSUE,
        tracepoint: "block_rq_issue",
        hot_path: false,
        btf_typed: false,
    },
    TaskHook {
        program: programs::DISK_DONE,
        tracepoint: "block_rq_complete",
        hot_path: false,
        btf_typed: false,
    },
];

/// The kernfs ids of the target's blkio/io cgroups: its v2 directory if the io controller is
/// on there, the v1 blkio directory at its path if there is one.
fn blkio_cgroups(dir: &Path) -> Vec<u64> {
    let mut ids = Vec::new();
    if dir.join("io.stat").is_file() {
        ids.extend(std::fs::metadata(dir).ok().map(|m| m.ino()));
    }
    if let Some(v1) = cgroup::v1_dir_at_same_path(dir, "blkio") {
        ids.extend(std::fs::metadata(v1).ok().map(|m| m.ino()));
    }
    ids
}

fn forget_slot(ebpf: &mut Ebpf, slot: u32) {
    let Some(map) = ebpf.map_mut(maps::DISK_CGROUPS) else {
        return;
    };
    let Ok(mut cgroups) = BpfHashMap::<&mut MapData, u64, u32>::try_from(map) else {
        return;
    };
    let stale: Vec<u64> = cgroups
        .iter()
        .filter_map(Result::ok)
        .filter(|&(_, s)| s == slot)
        .map(|(id, _)| id)
        .collect();
    for id in stale {
        let _ = cgroups.remove(&id);
    }
}

impl ProbeFamily for Disk {
    fn name(&self) -> &'static str {
        "disk"
    }

    /// Its hook runs for every bio of the host, and that cost is not measured yet: opt-in.
    fn on_by_default(&self) -> bool {
        false
    }

    fn hooks(&self) -> Hooks {
        Hooks::Tasks(&HOOKS)
    }

    fn slot_arrays(&self) -> &'static [SlotArray] {
        &[LATENCY]
    }

    fn arm(
        &self,
        ebpf: &mut Ebpf,
        slot: u32,
        cgroup_dir: &Path,
        _subtree: bool,
    ) -> Result<(), String> {
        forget_slot(ebpf, slot);
        let ids = blkio_cgroups(cgroup_dir);
        if ids.is_empty() {
            return Err("the target has no block I/O cgroup of its own (no io controller on its cgroup v2 directory, no v1 blkio cgroup at its path): the kernel charges its I/O to another cgroup".into());
        }
        let map = ebpf
            .map_mut(maps::DISK_CGROUPS)
            .ok_or_else(|| format!("map {} missing", maps::DISK_CGROUPS))?;
        let mut cgroups: BpfHashMap<&mut MapData, u64, u32> =
            BpfHashMap::try_from(map).map_err(|e| e.to_string())?;
        for id in ids {
            cgroups.insert(id, slot, 0).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn disarm(&self, ebpf: &mut Ebpf, slot: u32) {
        forget_slot(ebpf, slot);
    }

    /// Per device and direction: `"DEV read"` -> [bytes, operations].
    fn read_named(&self, ebpf: &Ebpf, slot: u32) -> Result<Vec<Named>, EngineError> {
        let map = ebpf
            .map(maps::DISK_DEVICES)
            .ok_or_else(|| missing_map(maps::DISK_DEVICES))?;
        let devices: PerCpuHashMap<&MapData, DiskKey, [u64; 2]> =
            PerCpuHashMap::try_from(map).map_err(map_err("opening DISK_DEVICES"))?;
        let mut out: BTreeMap<String, [u64; 2]> = BTreeMap::new();
        for entry in devices.iter() {
            let (key, values): (DiskKey, PerCpuValues<[u64; 2]>) =
                entry.map_err(map_err("reading DISK_DEVICES"))?;
            if key.slot != slot {
                continue;
            }
            let dev = format!("{}:{}", key.dev >> 20, key.dev & 0xfffff);
            let name = format!("{dev} {}", if key.dir == 0 { "read" } else { "write" });
            let sum = out.entry(name).or_default();
            for v in values.iter() {
                sum[0] += v[0];
                sum[1] += v[1];
            }
        }
        Ok(out.into_iter().map(|(k, v)| (k, v.to_vec())).collect())
    }

    fn clear_named(&self, ebpf: &mut Ebpf, slot: u32) -> Result<(), EngineError> {
        let map = ebpf
            .map_mut(maps::DISK_DEVICES)
            .ok_or_else(|| missing_map(maps::DISK_DEVICES))?;
        let mut devices: PerCpuHashMap<&mut MapData, DiskKey, [u64; 2]> =
            PerCpuHashMap::try_from(map).map_err(map_err("opening DISK_DEVICES"))?;
        let stale: Vec<DiskKey> = devices
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.slot == slot)
            .collect();
        for key in stale {
            let _ = devices.remove(&key);
        }
        Ok(())
    }

    fn summarise(&self, counts: &RawCounts) -> Arc<dyn FamilyReport> {
        Arc::new(summarise(counts))
    }

    fn report_from_json(&self, v: serde_json::Value) -> serde_json::Result<Arc<dyn FamilyReport>> {
        super::report_from_json::<DiskSummary>(v)
    }

    fn live(&self, c: &RawCounts) -> String {
        format!(
            "disk read {} KiB, written {} KiB",
            c.get(Counter::DiskReadBytes) >> 10,
            c.get(Counter::DiskWriteBytes) >> 10
        )
    }

    fn metrics(&self) -> &'static [&'static MetricDef] {
        &METRICS
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceIo {
    /// `MAJOR:MINOR`.
    pub device: String,
    /// `read` or `write`.
    pub direction: String,
    pub bytes: u64,
    pub operations: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DiskSummary {
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub read_operations: u64,
    pub write_operations: u64,
    /// Flushes, discards and the like.
    pub other_operations: u64,
    pub devices: Vec<DeviceIo>,
    pub read_latency: Histogram,
    pub write_latency: Histogram,
}

pub fn summarise(c: &RawCounts) -> DiskSummary {
    let buckets = c.array(LATENCY.map);
    let half = |dir: usize| -> &[u64] {
        let n = DISK_BUCKETS as usize;
        buckets.get(dir * n..(dir + 1) * n).unwrap_or(&[])
    };
    DiskSummary {
        read_bytes: c.get(Counter::DiskReadBytes),
        write_bytes: c.get(Counter::DiskWriteBytes),
        read_operations: c.get(Counter::DiskReadOps),
        write_operations: c.get(Counter::DiskWriteOps),
        other_operations: c.get(Counter::DiskOtherOps),
        devices: c
            .named("disk")
            .iter()
            .filter_map(|(name, v)| {
                let (device, direction) = name.split_once(' ')?;
                Some(DeviceIo {
                    device: device.to_string(),
                    direction: direction.to_string(),
                    bytes: v.first().copied().unwrap_or(0),
                    operations: v.get(1).copied().unwrap_or(0),
                })
            })
            .collect(),
        read_latency: histogram(half(0), c.get(Counter::DiskReadNs)),
        write_latency: histogram(half(1), c.get(Counter::DiskWriteNs)),
    }
}

impl FamilyReport for DiskSummary {
    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    fn table(&self, o: &mut String, _top: usize) {
        o.push_str("\ndisk\n");
        row(o, "bytes read", self.read_bytes);
        row(o, "bytes written", self.write_bytes);
        row(o, "reads", self.read_operations);
        row(o, "writes", self.write_operations);
        row(
            o,
            "other operations (flush, discard)",
            self.other_operations,
        );
        for d in &self.devices {
            let _ = writeln!(
                o,
                "  {} {}: {} bytes in {} operations",
                d.device, d.direction, d.bytes, d.operations
            );
        }
        let q = |v: Option<u64>| v.map_or("-".to_string(), fmt_ns);
        for (what, h) in [("read", &self.read_latency), ("write", &self.write_latency)] {
            if h.count > 0 {
                let _ = writeln!(
                    o,
                    "  {what} latency: p50 ≤ {}, p99 ≤ {}",
                    q(h.p50_le_ns),
                    q(h.p99_le_ns)
                );
            }
        }
    }

    fn samples(&self) -> Vec<Sample> {
        let mut out = Vec::new();
        for d in &self.devices {
            let attrs = vec![(DIRECTION, d.direction.clone()), (DEVICE, d.device.clone())];
            out.push(Sample::new(&DISK_IO, attrs.clone(), Value::Count(d.bytes)));
            out.push(Sample::new(
                &DISK_OPERATIONS,
                attrs,
                Value::Count(d.operations),
            ));
        }
        for (dir, h) in [("read", &self.read_latency), ("write", &self.write_latency)] {
            let mut s = log2::sample(&DISK_LATENCY, h, DISK_BUCKETS);
            s.attrs.push((DIRECTION, dir.into()));
            out.push(s);
        }
        out
    }
}
