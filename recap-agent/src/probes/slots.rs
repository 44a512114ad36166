//! Window slots: slot 0 means "no window", so slots 1..MAX_WINDOWS are handed out. A slot that
//! held a window keeps its numbers until it is zeroed on reuse (closing stays cheap).

use recap_common::MAX_WINDOWS;

pub struct Slots {
    free: Vec<u32>,
    /// Slots whose counters hold a previous window's numbers.
    dirty: Vec<u32>,
}

impl Slots {
    pub fn new() -> Self {
        Slots {
            free: (1..MAX_WINDOWS).rev().collect(),
            dirty: Vec::new(),
        }
    }

    /// A free slot, and whether it must be zeroed before use.
    pub fn take(&mut self) -> Option<(u32, bool)> {
        let slot = self.free.pop()?;
        Some((slot, self.dirty.contains(&slot)))
    }

    pub fn zeroed(&mut self, slot: u32) {
        self.dirty.retain(|&s| s != slot);
    }

    pub fn give_back(&mut self, slot: u32) {
        if !self.dirty.contains(&slot) {
            self.dirty.push(slot);
        }
        self.free.push(slot);
    }

    pub fn open(&self) -> usize {
        (MAX_WINDOWS - 1) as usize - self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_and_zeroed_on_reuse() {
        let mut slots = Slots::new();
        let (a, dirty) = slots.take().unwrap();
        assert_eq!((a, dirty), (1, false));
        assert_eq!(slots.open(), 1);
        slots.give_back(a);
        assert_eq!(
            slots.take(),
            Some((1, true)),
            "a used slot is zeroed before reuse"
        );
        slots.zeroed(1);
        slots.give_back(1);
        let all: Vec<_> = std::iter::from_fn(|| slots.take()).collect();
        assert_eq!(
            all.len(),
            (MAX_WINDOWS - 1) as usize,
            "slot 0 is never handed out"
        );
        assert!(all.iter().all(|&(s, _)| s != 0));
    }
}
