//! Window slots: slot 0 means "no window", so slots 1..=capacity are handed out (the agent's
//! capacity is `MAX_WINDOWS - 1`; a one-shot command's, the windows it opens). A slot that
//! held a window keeps its numbers until it is reused, and then only what the new window will
//! read is zeroed (the syscall table alone is 1,024 entries): closing and opening stay cheap.

use std::collections::BTreeMap;

use crate::families::Family;

pub struct Slots {
    capacity: u32,
    free: Vec<u32>,
    /// Per used slot, the families whose maps still hold an earlier window's numbers.
    dirty: BTreeMap<u32, Vec<Family>>,
}

/// What must be zeroed before a slot is used again.
#[derive(Debug, PartialEq, Eq)]
pub struct Stale {
    /// The shared counters hold an earlier window's numbers.
    pub counters: bool,
    pub families: Vec<Family>,
}

impl Slots {
    /// Slots 1..=`capacity`.
    pub fn new(capacity: u32) -> Self {
        Slots {
            capacity,
            free: (1..=capacity).rev().collect(),
            dirty: BTreeMap::new(),
        }
    }

    /// A free slot for a window that will run `families`, and what of it must be zeroed first.
    /// Families the new window does not run stay dirty for a later one.
    pub fn take(&mut self, families: &[Family]) -> Option<(u32, Stale)> {
        let slot = self.free.pop()?;
        let stale = match self.dirty.get_mut(&slot) {
            None => Stale {
                counters: false,
                families: Vec::new(),
            },
            Some(dirty) => {
                let stale: Vec<Family> = dirty
                    .iter()
                    .filter(|f| families.contains(f))
                    .copied()
                    .collect();
                dirty.retain(|f| !families.contains(f));
                Stale {
                    counters: true,
                    families: stale,
                }
            }
        };
        Some((slot, stale))
    }

    /// A window closed: its families' maps hold its numbers.
    pub fn give_back(&mut self, slot: u32, families: &[Family]) {
        let dirty = self.dirty.entry(slot).or_default();
        for f in families {
            if !dirty.contains(f) {
                dirty.push(*f);
            }
        }
        self.free.push(slot);
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    pub fn open(&self) -> usize {
        self.capacity as usize - self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use recap_common::MAX_WINDOWS;

    use super::*;

    #[test]
    fn a_reused_slot_zeroes_what_the_new_window_reads() {
        let mut slots = Slots::new(MAX_WINDOWS - 1);
        let (a, stale) = slots.take(&[Family::TCP]).unwrap();
        assert_eq!(a, 1);
        assert_eq!(
            stale,
            Stale {
                counters: false,
                families: vec![]
            }
        );
        assert_eq!(slots.open(), 1);
        slots.give_back(a, &[Family::SYSCALLS, Family::TCP]);
        // The next window on slot 1 runs tcp only: the syscall table waits.
        let (b, stale) = slots.take(&[Family::TCP]).unwrap();
        assert_eq!(
            (b, stale),
            (
                1,
                Stale {
                    counters: true,
                    families: vec![Family::TCP]
                }
            )
        );
        slots.give_back(b, &[Family::TCP]);
        let (_, stale) = slots.take(&[Family::SYSCALLS]).unwrap();
        assert_eq!(
            stale.families,
            vec![Family::SYSCALLS],
            "still dirty from the first window"
        );
        slots.give_back(1, &[]);
        let all: Vec<_> = std::iter::from_fn(|| slots.take(&[])).collect();
        assert_eq!(
            all.len(),
            (MAX_WINDOWS - 1) as usize,
            "slot 0 is never handed out"
        );
        assert!(all.iter().all(|(s, _)| *s != 0));
    }
}
