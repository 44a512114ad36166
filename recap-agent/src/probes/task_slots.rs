//! User space's side of `TASK_SLOTS`: seeding a window with the threads already in its cgroup,
//! a periodic resync (a safety net: the kernel hooks follow forks, exits and moves, whole
//! thread groups included), and clearing a window's threads when it closes.
//!
//! The array is memory-mapped (`BPF_F_MMAPABLE`): user space reads and writes one byte per
//! thread in place, as the kernel does, so neither side can overwrite the other's update of a
//! neighbouring thread, and a resync costs a memory scan instead of one syscall per 64 tids.

use std::{
    collections::BTreeSet,
    os::fd::{AsFd, AsRawFd},
    path::Path,
    sync::atomic::{AtomicU64, AtomicU8, Ordering},
};

use aya::maps::{Map, MapData};

use crate::targets::cgroup;

/// A resync scans the whole array once in this many; the others look only at the threads a
/// window is known to hold (the scan finds what the kernel marked and no listing showed).
const FULL_SCAN_EVERY: u32 = 30;

/// The mapped bytes of `TASK_SLOTS`: byte `tid` holds the thread's window slot (0: none).
pub struct TaskSlots {
    ptr: *mut AtomicU8,
    len: usize,
    mapped: usize,
    /// Per window slot: the threads it held after its last resync, and how many resyncs.
    known: std::sync::Mutex<std::collections::HashMap<u32, (BTreeSet<u32>, u32)>>,
}

// SAFETY: the mapping is shared memory accessed only through atomics; it lives until `Drop`.
unsafe impl Send for TaskSlots {}
// SAFETY: as for Send: every access to the mapping is atomic, the rest is behind a Mutex.
unsafe impl Sync for TaskSlots {}

impl TaskSlots {
    /// Maps the array. It must outlive nothing but itself: the kernel keeps the map alive while
    /// the mapping exists, even if the map's fd is closed first.
    pub fn map(map: &Map) -> std::io::Result<Self> {
        let data: &MapData = match map {
            Map::Array(data) => data,
            _ => return Err(std::io::Error::other("TASK_SLOTS is not an array")),
        };
        let info = data.info().map_err(std::io::Error::other)?;
        let len = info.max_entries() as usize * info.value_size() as usize;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let mapped = len.div_ceil(page) * page;
        // SAFETY: a shared read-write mapping of an mmapable BPF array of `len` bytes.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                data.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(TaskSlots {
            ptr: ptr.cast(),
            len,
            mapped,
            known: Default::default(),
        })
    }

    fn byte(&self, tid: u32) -> Option<&AtomicU8> {
        let i = tid as usize;
        // SAFETY: `i < len` is inside the mapping, which lives as long as `self`.
        (i < self.len).then(|| unsafe { &*self.ptr.add(i) })
    }

    pub fn get(&self, tid: u32) -> u8 {
        self.byte(tid).map_or(0, |b| b.load(Ordering::Relaxed))
    }

    /// Sets one tid's slot; false if the tid is beyond the map.
    pub fn set(&self, tid: u32, slot: u32) -> bool {
        match self.byte(tid) {
            Some(b) => {
                b.store(slot as u8, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// The threads of `slot`. Every window's tick runs this over the whole array (pid_max
    /// bytes: 4 MiB on a host with pid_max 4M), so it reads 8 bytes at a time and looks inside
    /// only the words that are not all zero: most threads are in no window.
    fn marked(&self, slot: u32) -> BTreeSet<u32> {
        let words = self.len / 8;
        // SAFETY: the mapping is page-aligned and `words * 8 <= len` bytes long.
        let as_words = unsafe { std::slice::from_raw_parts(self.ptr.cast::<AtomicU64>(), words) };
        let mut out = BTreeSet::new();
        for (w, word) in as_words.iter().enumerate() {
            if word.load(Ordering::Relaxed) == 0 {
                continue;
            }
            let first = (w * 8) as u32;
            out.extend((first..first + 8).filter(|&tid| self.get(tid) as u32 == slot));
        }
        // The tail that does not fill a word (never, with 64-tid chunks, but cheap to keep).
        out.extend(
            ((words * 8) as u32..self.len as u32).filter(|&tid| self.get(tid) as u32 == slot),
        );
        out
    }

    /// Brings the window's threads in line with the threads of `dir` and its descendants.
    /// Returns how many threads were added and removed.
    pub fn sync(&self, dir: &Path, slot: u32, subtree: bool) -> (usize, usize) {
        let listed = if subtree {
            cgroup::subtree_threads(dir)
        } else {
            cgroup::threads(dir)
        };
        let Ok(wanted) = listed else {
            return (0, 0); // cgroup gone: the window ends on its own
        };
        // recap's own threads are never a target: counting them would measure the measurer.
        // (Listed only when the cgroup holds threads: most idle targets are empty.)
        let own = if wanted.is_empty() {
            BTreeSet::new()
        } else {
            own_threads()
        };
        let wanted: BTreeSet<u32> = wanted
            .into_iter()
            .filter(|tid| !own.contains(tid))
            .collect();
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let (held, syncs) = known.entry(slot).or_default();
        // A memory scan of pid_max bytes per window per tick was most of the agent's own
        // CPU with many windows open: only every FULL_SCAN_EVERY-th resync does it.
        let marked: BTreeSet<u32> = if *syncs % FULL_SCAN_EVERY == 0 {
            self.marked(slot)
        } else {
            held.iter()
                .copied()
                .filter(|&tid| self.get(tid) as u32 == slot)
                .collect()
        };
        *syncs = syncs.wrapping_add(1);
        let mut added = 0;
        for &tid in wanted.difference(&marked) {
            if self.set(tid, slot) {
                added += 1;
            }
        }
        let mut removed = 0;
        let unlisted: Vec<u32> = marked.difference(&wanted).copied().collect();
        let mut kept = wanted;
        for tid in unlisted {
            // Not listed a moment ago; it may be a thread forked since. Drop it only if it is
            // really gone or elsewhere.
            if !thread_in(tid, dir, subtree) {
                self.set(tid, 0);
                removed += 1;
            } else {
                kept.insert(tid);
            }
        }
        *held = kept;
        (added, removed)
    }

    /// Clears every thread of `slot`.
    pub fn clear(&self, slot: u32) {
        if let Ok(mut known) = self.known.lock() {
            known.remove(&slot);
        }
        for tid in self.marked(slot) {
            // Only if it still holds this window: the kernel may have moved it meanwhile.
            if let Some(b) = self.byte(tid) {
                let _ = b.compare_exchange(slot as u8, 0, Ordering::Relaxed, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for TaskSlots {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped.
        unsafe { libc::munmap(self.ptr.cast(), self.mapped) };
    }
}

fn own_threads() -> BTreeSet<u32> {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn thread_in(tid: u32, dir: &Path, subtree: bool) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{tid}/cgroup")) else {
        return false;
    };
    let Some(rel) = cgroup::parse_v2_cgroup_line(&text) else {
        return false;
    };
    // In `dir` (or below it, for a subtree window): its v2 path, relative to the mount.
    let Ok(root) = cgroup::cgroup2_mount() else {
        return false;
    };
    let own = root.join(rel.trim_start_matches('/'));
    if subtree {
        own.starts_with(dir)
    } else {
        own == dir
    }
}
