//! Raw per-window numbers as the engine reads them from the maps (per-CPU values already
//! summed), for the families to interpret.

use std::collections::BTreeMap;

use recap_common::Counter;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RawCounts {
    /// The shared scalar counters, indexed by `Counter as usize`.
    pub counters: Vec<u64>,
    /// Each family's slot arrays (`families::SlotArray`), by map name: this window's range.
    pub arrays: BTreeMap<&'static str, Vec<u64>>,
    /// Each family's named counts (e.g. exec'd programs), by family name.
    pub named: BTreeMap<&'static str, Vec<crate::families::Named>>,
}

impl RawCounts {
    pub fn zeroed() -> Self {
        RawCounts {
            counters: vec![0; Counter::COUNT as usize],
            ..Default::default()
        }
    }

    pub fn get(&self, c: Counter) -> u64 {
        self.counters.get(c as usize).copied().unwrap_or(0)
    }

    /// A slot array's entries for this window (empty when the family did not run).
    pub fn array(&self, map: &str) -> &[u64] {
        self.arrays.get(map).map(Vec::as_slice).unwrap_or_default()
    }

    pub fn named(&self, family: &str) -> &[crate::families::Named] {
        self.named
            .get(family)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}
