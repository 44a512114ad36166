//! Reading a window's numbers out of the maps (per-CPU values summed), and zeroing a slot
//! before it is reused. Only the maps of families the window runs are read: this runs every
//! second, and the syscall table alone is 1,024 lookups.

use std::os::fd::{AsFd, AsRawFd};

use aya::{
    maps::{Array, Map, MapData, PerCpuArray, PerCpuValues},
    util::nr_cpus,
    Ebpf,
};
use recap_common::{counter_index, maps, Counter};

use super::{map_err, missing_map, EngineError, RawCounts};
use crate::families::{Family, SlotArray};

fn per_cpu_array<'a>(
    ebpf: &'a Ebpf,
    name: &str,
) -> Result<PerCpuArray<&'a MapData, u64>, EngineError> {
    let map = ebpf.map(name).ok_or_else(|| missing_map(name))?;
    PerCpuArray::try_from(map).map_err(map_err(format!("opening {name}")))
}

fn sum(values: PerCpuValues<u64>) -> u64 {
    values.iter().sum()
}

/// The slot's range `[slot * len, slot * len + len)` of a per-CPU array, summed over CPUs:
/// in one `BPF_MAP_LOOKUP_BATCH` (a window's counters are ~150 entries and its histograms
/// dozens more: one syscall each made an idle window cost its agent hundreds of syscalls a
/// second), or entry by entry where the kernel has no batch lookup.
fn read_range(ebpf: &Ebpf, map: &str, start: u32, len: u32) -> Result<Vec<u64>, EngineError> {
    if let Some(Map::PerCpuArray(data)) = ebpf.map(map) {
        if let Some(values) = lookup_batch(data.fd().as_fd().as_raw_fd(), start, len) {
            return Ok(values);
        }
    }
    let array = per_cpu_array(ebpf, map)?;
    (start..start + len)
        .map(|index| {
            array
                .get(&index, 0)
                .map(sum)
                .map_err(map_err(format!("reading {map}")))
        })
        .collect()
}

/// `union bpf_attr`'s part for the `BPF_MAP_*_BATCH` commands.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// Entries `[start, start + len)` of the per-CPU `u64` array `fd`, each summed over the CPUs,
/// in one syscall; `None` if the kernel cannot (then they are read one by one).
fn lookup_batch(fd: i32, start: u32, len: u32) -> Option<Vec<u64>> {
    let cpus = nr_cpus().ok()?;
    let mut keys = vec![0u32; len as usize];
    let mut values = vec![0u64; len as usize * cpus];
    // The batch starts after `in_batch` (the previous key), or at 0 without one.
    let previous = start.wrapping_sub(1);
    let mut next = 0u32;
    let mut attr = BatchAttr {
        in_batch: if start == 0 {
            0
        } else {
            &previous as *const u32 as u64
        },
        out_batch: &mut next as *mut u32 as u64,
        keys: keys.as_mut_ptr() as u64,
        values: values.as_mut_ptr() as u64,
        count: len,
        map_fd: fd as u32,
        ..Default::default()
    };
    // SAFETY: the attribute points at buffers of `len` keys and `len * cpus` values, and at
    // two u32 batch positions, all alive for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_BATCH,
            &mut attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>() as u32,
        )
    };
    // ENOENT: the map's end came with the batch (the last slot): what was asked is there.
    let ended = r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOENT);
    if (r < 0 && !ended) || attr.count != len {
        return None;
    }
    // The keys must be exactly the range asked for.
    if keys.iter().enumerate().any(|(i, &k)| k != start + i as u32) {
        return None;
    }
    Some(values.chunks(cpus).map(|c| c.iter().sum()).collect())
}

/// The window's counts so far.
pub fn read(ebpf: &Ebpf, slot: u32, families: &[Family]) -> Result<RawCounts, EngineError> {
    let mut out = RawCounts::zeroed();
    out.counters = read_range(
        ebpf,
        maps::COUNTERS,
        counter_index(slot, Counter::TcpConnectAttempts),
        Counter::COUNT,
    )?;
    for family in families {
        for SlotArray { map, len } in family.slot_arrays() {
            out.arrays
                .insert(map, read_range(ebpf, map, slot * len, *len)?);
        }
        let named = family.read_named(ebpf, slot)?;
        if !named.is_empty() {
            out.named.insert(family.name(), named);
        }
    }
    Ok(out)
}

/// Zeroes what a previous window left in `slot`: the shared counters, and the maps of
/// `families`.
pub fn zero(ebpf: &mut Ebpf, slot: u32, families: &[Family]) -> Result<(), EngineError> {
    let cpus = nr_cpus().map_err(|(_, e)| EngineError::Map {
        op: "counting CPUs".into(),
        source: aya::maps::MapError::SyscallError(aya::sys::SyscallError {
            call: "nr_cpus",
            io_error: e,
        }),
    })?;
    let zero = || PerCpuValues::try_from(vec![0u64; cpus]).expect("non-empty");
    let mut ranges = vec![(
        maps::COUNTERS,
        counter_index(slot, Counter::TcpConnectAttempts),
        Counter::COUNT,
    )];
    for family in families {
        ranges.extend(
            family
                .slot_arrays()
                .iter()
                .map(|a| (a.map, slot * a.len, a.len)),
        );
    }
    for (name, start, len) in ranges {
        let map = ebpf.map_mut(name).ok_or_else(|| missing_map(name))?;
        let mut array: PerCpuArray<&mut MapData, u64> =
            PerCpuArray::try_from(map).map_err(map_err(format!("opening {name}")))?;
        for index in start..start + len {
            array
                .set(index, zero(), 0)
                .map_err(map_err(format!("zeroing {name}")))?;
        }
    }
    for family in families {
        family.clear_named(ebpf, slot)?;
    }
    next_epoch(ebpf, slot)
}

/// The slot's generation: the current window's per-connection state carries it.
pub fn epoch(ebpf: &Ebpf, slot: u32) -> Result<u64, EngineError> {
    let name = maps::WINDOW_EPOCH;
    let map = ebpf.map(name).ok_or_else(|| missing_map(name))?;
    let epochs: Array<&MapData, u64> =
        Array::try_from(map).map_err(map_err(format!("opening {name}")))?;
    epochs
        .get(&slot, 0)
        .map_err(map_err(format!("reading {name}")))
}

/// Bumps the slot's generation: per-connection state (HTTP, DNS) left by an earlier window in
/// this slot is stale from now on.
fn next_epoch(ebpf: &mut Ebpf, slot: u32) -> Result<(), EngineError> {
    let name = maps::WINDOW_EPOCH;
    let map = ebpf.map_mut(name).ok_or_else(|| missing_map(name))?;
    let mut epochs: Array<&mut MapData, u64> =
        Array::try_from(map).map_err(map_err(format!("opening {name}")))?;
    let epoch = epochs
        .get(&slot, 0)
        .map_err(map_err(format!("reading {name}")))?;
    epochs
        .set(slot, epoch.wrapping_add(1), 0)
        .map_err(map_err(format!("writing {name}")))
}
