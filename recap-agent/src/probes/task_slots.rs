//! User space's side of `TASK_SLOTS`: seeding a window with the threads already in its cgroup,
//! a periodic resync (threads of a multi-threaded process moved in, which the kernel hook sees
//! only by their leader), and clearing a window's threads when it closes.
//!
//! The kernel writes single bytes; user space writes whole 64-tid chunks, so a chunk write can
//! race with a kernel write to a neighbouring tid. Each resync re-checks against the cgroup and
//! repairs such a loss within a second.

use std::{collections::BTreeSet, path::Path};

use aya::maps::{Array, MapData, MapError};
use recap_common::{TaskSlotChunk, TIDS_PER_ENTRY};

use crate::targets::cgroup;

type Slots<'a> = Array<&'a mut MapData, TaskSlotChunk>;

/// Brings the window's threads in `TASK_SLOTS` in line with `cgroup.threads` of `dir`.
/// Returns how many threads were added and removed.
pub fn sync(map: &mut Slots<'_>, dir: &Path, slot: u32) -> Result<(usize, usize), MapError> {
    let Ok(wanted) = cgroup::threads(dir) else {
        return Ok((0, 0)); // cgroup gone: the window ends on its own
    };
    // recap's own threads are never a target: counting them would measure the measurer.
    let own = own_threads();
    let wanted: BTreeSet<u32> = wanted
        .into_iter()
        .filter(|tid| !own.contains(tid))
        .collect();
    let marked = marked_tids(map, slot)?;
    let mut added = 0;
    for &tid in wanted.difference(&marked) {
        if set(map, tid, slot)? {
            added += 1;
        }
    }
    let mut removed = 0;
    for &tid in marked.difference(&wanted) {
        // Not listed a moment ago; it may be a thread forked since. Drop it only if it is
        // really gone or elsewhere.
        if !thread_in_cgroup(tid, dir) {
            set(map, tid, 0)?;
            removed += 1;
        }
    }
    Ok((added, removed))
}

/// Clears every thread of `slot`.
pub fn clear(map: &mut Slots<'_>, slot: u32) -> Result<(), MapError> {
    for index in 0..map.len() {
        let mut chunk = map.get(&index, 0)?;
        if chunk.iter().any(|&s| s as u32 == slot) {
            chunk
                .iter_mut()
                .filter(|s| **s as u32 == slot)
                .for_each(|s| *s = 0);
            map.set(index, chunk, 0)?;
        }
    }
    Ok(())
}

fn own_threads() -> BTreeSet<u32> {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn marked_tids(map: &Slots<'_>, slot: u32) -> Result<BTreeSet<u32>, MapError> {
    let mut out = BTreeSet::new();
    for index in 0..map.len() {
        let chunk = map.get(&index, 0)?;
        for (i, &s) in chunk.iter().enumerate() {
            if s as u32 == slot {
                out.insert(index * TIDS_PER_ENTRY + i as u32);
            }
        }
    }
    Ok(out)
}

/// Sets one tid's slot; false if the tid is beyond the map.
fn set(map: &mut Slots<'_>, tid: u32, slot: u32) -> Result<bool, MapError> {
    let index = tid / TIDS_PER_ENTRY;
    if index >= map.len() {
        return Ok(false);
    }
    let mut chunk = map.get(&index, 0)?;
    chunk[(tid % TIDS_PER_ENTRY) as usize] = slot as u8;
    map.set(index, chunk, 0)?;
    Ok(true)
}

fn thread_in_cgroup(tid: u32, dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{tid}/cgroup")) else {
        return false;
    };
    let Some(rel) = cgroup::parse_v2_cgroup_line(&text) else {
        return false;
    };
    let rel = rel.trim_start_matches('/');
    dir.ends_with(rel) && (rel.is_empty() || dir.to_string_lossy().ends_with(&format!("/{rel}")))
}
