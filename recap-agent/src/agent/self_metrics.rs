//! The agent's own metrics on its `/metrics`: windows opened, open, refused and failed, arm
//! latency, and what each of RECap's programs costs in the kernel (run count and run time from
//! BPF stats, which the agent turns on while it runs), so the probes' cost is measured, not
//! guessed.

use std::{
    collections::BTreeMap,
    os::fd::OwnedFd,
    sync::{atomic::Ordering, Arc},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
};

use super::windows::Agent;

/// BPF run-time statistics, on while this value lives (the kernel counts only while some
/// process holds the fd `BPF_ENABLE_STATS` returned).
pub struct BpfStats(Option<OwnedFd>);

impl BpfStats {
    pub fn enable() -> Self {
        match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
            Ok(fd) => BpfStats(Some(fd)),
            Err(e) => {
                log::warn!(
                    "BPF run-time stats unavailable ({e}); the probes' kernel cost is not reported"
                );
                BpfStats(None)
            }
        }
    }
}

pub struct AgentCollector {
    agent: Arc<Agent>,
    stats: BpfStats,
}

impl std::fmt::Debug for AgentCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentCollector")
    }
}

impl AgentCollector {
    pub fn new(agent: Arc<Agent>, stats: BpfStats) -> Self {
        AgentCollector { agent, stats }
    }
}

/// Run count and run time of every loaded program named `recap_*`, summed by name (another
/// recap process's programs of the same name are included).
fn program_costs() -> BTreeMap<String, (u64, f64)> {
    let mut out: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    for info in aya::programs::loaded_programs().filter_map(Result::ok) {
        let Some(name) = info.name_as_str().filter(|n| n.starts_with("recap_")) else {
            continue;
        };
        let entry = out.entry(name.to_string()).or_default();
        entry.0 += info.run_count();
        entry.1 += info.run_time().as_secs_f64();
    }
    out
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)
}

impl Collector for AgentCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = &self.agent.counters;
        counter(
            &mut encoder,
            "recap_agent_windows_opened",
            "Windows the agent armed.",
            c.opened.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "recap_agent_windows_refused",
            "Requests refused (malformed, or outside the policy).",
            c.refused.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "recap_agent_windows_failed",
            "Admitted requests that could not be armed (no such target, kernel refusal).",
            c.failed.load(Ordering::Relaxed),
        )?;
        let open = ConstGauge::new(self.agent.open_count() as i64);
        open.encode(encoder.encode_descriptor(
            "recap_agent_windows_open",
            "Windows open now.",
            None,
            open.metric_type(),
        )?)?;
        let mut arm = encoder.encode_descriptor(
            "recap_agent_arm_seconds",
            "Time from a request to its probes counting.",
            None,
            MetricType::Histogram,
        )?;
        arm.encode_histogram::<NoLabelSet>(
            c.arm_us_sum.load(Ordering::Relaxed) as f64 / 1e6,
            c.arm_count.load(Ordering::Relaxed),
            &[],
            None,
        )?;
        if self.stats.0.is_some() {
            let costs = program_costs();
            let mut runs = encoder.encode_descriptor(
                "recap_probe_runs",
                "Times each RECap program ran in the kernel (BPF stats).",
                None,
                MetricType::Counter,
            )?;
            for (name, (count, _)) in &costs {
                let labels = [("program", name.as_str())];
                runs.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(count, None)?;
            }
            let mut time = encoder.encode_descriptor(
                "recap_probe_run_seconds",
                "Time each RECap program ran in the kernel (BPF stats).",
                None,
                MetricType::Counter,
            )?;
            for (name, (_, seconds)) in &costs {
                let labels = [("program", name.as_str())];
                time.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, f64>(seconds, None)?;
            }
        }
        Ok(())
    }
}
