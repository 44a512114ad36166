//! The summary model: how the window went, plus what each family measured (each family's
//! report is defined in its own module under `families/`).

use std::{collections::BTreeMap, sync::Arc};

use recap_common::Counter;
use serde::{Deserialize, Serialize};

use crate::{
    capsule::CapsuleReport,
    families::raw::RawCounts,
    families::{Family, FamilyReport, FamilyStatus},
    probes::TlsSeen,
    targets::Target,
};

pub const SCHEMA: &str = "recap.window/v1";

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WindowStatus {
    /// Still open (a live snapshot, as exported while the window runs).
    Open,
    /// Ran for the requested duration.
    Completed,
    /// Ended early by Ctrl-C or SIGTERM.
    Interrupted,
    /// The target (process or cgroup) went away during the window.
    TargetExited,
}

impl WindowStatus {
    /// As the history, the API and JSON name it (`target_exited`).
    pub fn name(self) -> &'static str {
        match self {
            WindowStatus::Open => "open",
            WindowStatus::Completed => "completed",
            WindowStatus::Interrupted => "interrupted",
            WindowStatus::TargetExited => "target_exited",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            WindowStatus::Open => "open",
            WindowStatus::Completed => "completed",
            WindowStatus::Interrupted => "interrupted",
            WindowStatus::TargetExited => "target exited",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct WindowSummary {
    pub schema: &'static str,
    /// How the window went; flattened, so its fields sit at the top of the JSON document.
    #[serde(flatten)]
    pub meta: WindowMeta,
    /// What each family that ran measured, under the family's name (`"tcp": {...}`).
    #[serde(flatten)]
    reports: Reports,
    pub warnings: Vec<String>,
}

/// The families' reports, in `Family::ALL` order; serialised as a map from family name.
#[derive(Clone, Debug, Default)]
struct Reports(Vec<(Family, Arc<dyn FamilyReport>)>);

impl Serialize for Reports {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (family, report) in &self.0 {
            map.serialize_entry(family.name(), &report.to_json())?;
        }
        map.end()
    }
}

/// Everything the summary says besides what was counted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WindowMeta {
    pub window_id: String,
    pub target: Target,
    pub started_at: String,
    pub requested_duration_s: f64,
    pub duration_s: f64,
    /// From the command starting to every probe counting, and from the end to all detached.
    pub arm_ms: f64,
    pub teardown_ms: f64,
    pub status: WindowStatus,
    pub families: BTreeMap<Family, FamilyStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capsules: Vec<CapsuleReport>,
    /// `http`: the TLS code the target's processes run, and whether its plaintext was read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<TlsSeen>,
}

impl WindowSummary {
    pub fn build(meta: WindowMeta, counts: &RawCounts) -> Self {
        let mut warnings = Vec::new();
        let misses = counts.get(Counter::TaskTrackMisses);
        if misses > 0 {
            warnings.push(format!("{misses} thread(s) could not be tracked (thread id beyond pid_max at load): task counts are low"));
        }
        let reports = meta
            .families
            .iter()
            .filter(|(_, status)| **status == FamilyStatus::Ok)
            .map(|(family, _)| (*family, family.summarise(counts)))
            .collect();
        WindowSummary {
            schema: SCHEMA,
            meta,
            reports: Reports(reports),
            warnings,
        }
    }

    /// Reads a summary back from its JSON (as the agent stores and sends it).
    pub fn from_json(text: &str) -> anyhow::Result<Self> {
        let value: serde_json::Value = serde_json::from_str(text)?;
        let meta = WindowMeta::deserialize(&value)?;
        let mut reports = Vec::new();
        for family in Family::ALL {
            if let Some(v) = value.get(family.name()) {
                reports.push((family, family.report_from_json(v.clone())?));
            }
        }
        let warnings = value
            .get("warnings")
            .map(Vec::<String>::deserialize)
            .transpose()?
            .unwrap_or_default();
        Ok(WindowSummary {
            schema: SCHEMA,
            meta,
            reports: Reports(reports),
            warnings,
        })
    }

    /// What each family that ran measured, in `Family::ALL` order.
    pub fn reports(&self) -> impl Iterator<Item = (Family, &dyn FamilyReport)> {
        self.reports.0.iter().map(|(f, r)| (*f, r.as_ref()))
    }
}
