//! `proc`: execs (with program names), process exits and forks (kernel side:
//! `recap-ebpf/src/probes/proc.rs`). Costs only on exec, fork and exit.

use std::{collections::BTreeMap, fmt::Write, sync::Arc};

use aya::{
    maps::{MapData, PerCpuHashMap},
    Ebpf,
};
use recap_common::{maps, programs, Counter, ExecKey};
use serde::{Deserialize, Serialize};

use super::{row, FamilyReport, Hooks, Named, ProbeFamily, TaskHook};
use crate::{
    families::{
        engine_error::{map_err, missing_map, EngineError},
        raw::RawCounts,
    },
    metric,
    metrics::{Attr, MetricDef, Sample, Value},
    text::terminal::safe,
};

pub struct Proc;

pub const PROGRAM: Attr = Attr {
    otel: "process.executable.name",
    prom: "program",
};

metric!(
    EXECS,
    "recap_process_execs_total",
    "recap.process.execs",
    Counter,
    "{exec}",
    "Programs executed by the target.",
    []
);
metric!(
    EXEC_PROGRAMS,
    "recap_process_exec_programs_total",
    "recap.process.exec.programs",
    Counter,
    "{exec}",
    "Programs executed by the target, by program name.",
    [PROGRAM]
);
metric!(
    EXITS,
    "recap_process_exits_total",
    "recap.process.exits",
    Counter,
    "{process}",
    "Processes of the target that exited.",
    []
);
metric!(
    FORKS,
    "recap_process_forks_total",
    "recap.process.forks",
    Counter,
    "{process}",
    "Processes the target created.",
    []
);

static METRICS: [&MetricDef; 4] = [&EXECS, &EXEC_PROGRAMS, &EXITS, &FORKS];

impl ProbeFamily for Proc {
    fn name(&self) -> &'static str {
        "proc"
    }

    fn hooks(&self) -> Hooks {
        Hooks::Tasks(&[TaskHook {
            program: programs::PROC_EXEC,
            tracepoint: "sched_process_exec",
            hot_path: false,
            btf_typed: false,
        }])
    }

    fn read_named(&self, ebpf: &Ebpf, slot: u32) -> Result<Vec<Named>, EngineError> {
        let map = ebpf
            .map(maps::EXECS)
            .ok_or_else(|| missing_map(maps::EXECS))?;
        let execs: PerCpuHashMap<&MapData, ExecKey, u64> =
            PerCpuHashMap::try_from(map).map_err(map_err("opening EXECS"))?;
        let mut names: BTreeMap<String, u64> = BTreeMap::new();
        for entry in execs.iter() {
            let (key, values) = entry.map_err(map_err("reading EXECS"))?;
            if key.slot == slot {
                *names.entry(comm_to_string(&key.comm)).or_default() += values.iter().sum::<u64>();
            }
        }
        Ok(names.into_iter().map(|(name, n)| (name, vec![n])).collect())
    }

    fn clear_named(&self, ebpf: &mut Ebpf, slot: u32) -> Result<(), EngineError> {
        let map = ebpf
            .map_mut(maps::EXECS)
            .ok_or_else(|| missing_map(maps::EXECS))?;
        let mut execs: PerCpuHashMap<&mut MapData, ExecKey, u64> =
            PerCpuHashMap::try_from(map).map_err(map_err("opening EXECS"))?;
        let stale: Vec<ExecKey> = execs
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.slot == slot)
            .collect();
        for key in stale {
            let _ = execs.remove(&key);
        }
        Ok(())
    }

    fn summarise(&self, counts: &RawCounts) -> Arc<dyn FamilyReport> {
        Arc::new(summarise(counts))
    }

    fn report_from_json(&self, v: serde_json::Value) -> serde_json::Result<Arc<dyn FamilyReport>> {
        super::report_from_json::<ProcSummary>(v)
    }

    fn live(&self, c: &RawCounts) -> String {
        format!(
            "execs {}, exits {}",
            c.get(Counter::ProcExecs),
            c.get(Counter::ProcExits)
        )
    }

    fn metrics(&self) -> &'static [&'static MetricDef] {
        &METRICS
    }
}

/// A kernel `comm` (NUL-padded) as text.
pub(crate) fn comm_to_string(comm: &[u8]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NameCount {
    pub name: String,
    pub count: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcSummary {
    pub execs: u64,
    /// Process exits (thread group leaders).
    pub exits: u64,
    /// New processes forked (threads not included).
    pub forks: u64,
    /// Exec'd programs by name (the task's comm after exec), most frequent first.
    pub exec_names: Vec<NameCount>,
}

pub fn summarise(c: &RawCounts) -> ProcSummary {
    let mut exec_names: Vec<NameCount> = c
        .named("proc")
        .iter()
        .map(|(name, values)| NameCount {
            name: name.clone(),
            count: values.iter().sum(),
        })
        .collect();
    exec_names.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    ProcSummary {
        execs: c.get(Counter::ProcExecs),
        exits: c.get(Counter::ProcExits),
        forks: c.get(Counter::ProcForks),
        exec_names,
    }
}

impl FamilyReport for ProcSummary {
    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    fn table(&self, o: &mut String, top: usize) {
        o.push_str("\nproc\n");
        row(o, "execs", self.execs);
        row(o, "exits", self.exits);
        row(o, "forks", self.forks);
        if !self.exec_names.is_empty() {
            let names: Vec<String> = self
                .exec_names
                .iter()
                .take(top)
                .map(|n| format!("{} ×{}", safe(&n.name), n.count))
                .collect();
            let _ = writeln!(o, "  programs: {}", names.join(", "));
        }
    }

    fn samples(&self) -> Vec<Sample> {
        let mut out = vec![
            Sample::new(&EXECS, vec![], Value::Count(self.execs)),
            Sample::new(&EXITS, vec![], Value::Count(self.exits)),
            Sample::new(&FORKS, vec![], Value::Count(self.forks)),
        ];
        out.extend(self.exec_names.iter().map(|n| {
            Sample::new(
                &EXEC_PROGRAMS,
                vec![(PROGRAM, n.name.clone())],
                Value::Count(n.count),
            )
        }));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_names_most_frequent_first() {
        let mut c = RawCounts::zeroed();
        c.named.insert(
            "proc",
            vec![("true".into(), vec![3]), ("sh".into(), vec![4])],
        );
        let p = summarise(&c);
        assert_eq!(
            p.exec_names[0],
            NameCount {
                name: "sh".into(),
                count: 4
            }
        );
    }
}
