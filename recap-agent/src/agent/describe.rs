//! `DescribeOptions`: what a window may ask for (families, capsule tools) and what the caller's
//! policy lets it ask, so that a client can offer the choices instead of learning them from
//! refusals.

use super::{
    api,
    policy::{Caller, Policy},
    wire::{duration_to_wire as duration, family_to_wire, tool_to_wire},
};
use crate::{capsule::Tool, families::Family};

/// What `args` holds for each tool (as the proto's `Capsule.args` says).
fn args_of(tool: Tool) -> &'static str {
    match tool {
        Tool::Tcpdump => {
            "a capture filter's words (pcap-filter), e.g. [tcp, port, 80]; none: everything"
        }
        Tool::Strace => "strace's tracing and output options, e.g. [-e, trace=network, -T]",
        Tool::Gdb => "none (stacks at the window's end) or [every:DURATION], 1s to 1h",
        Tool::Image => {
            "[REFERENCE, PROGRAM, ARGS...]: an image present on the node, the program run in it"
        }
        Tool::Archive => "[PATH, ...]: paths in the target's filesystem, links never followed",
        Tool::Snapshot => "none",
    }
}

pub fn options(policy: &Policy, caller: &Caller) -> api::Options {
    let families = Family::ALL
        .into_iter()
        .map(|f| api::FamilyOption {
            family: family_to_wire(f) as i32,
            name: f.name().to_string(),
            on_by_default: Family::defaults().contains(&f),
        })
        .collect();
    let capsule_tools = Tool::ALL
        .into_iter()
        .map(|t| api::CapsuleToolOption {
            tool: tool_to_wire(t) as i32,
            name: t.name().to_string(),
            args: args_of(t).to_string(),
            artifact: t.artifact().to_string(),
        })
        .collect();
    let total = policy.max_windows_total as u32;
    let rule = match policy.rule_for(caller) {
        Ok(None) => api::CallerPolicy {
            root: true,
            families: Family::ALL.map(|f| family_to_wire(f) as i32).to_vec(),
            capsule_tools: Tool::ALL.map(|t| tool_to_wire(t) as i32).to_vec(),
            max_duration: Some(duration(super::wire::MAX_DURATION)),
            max_windows: total,
            otlp: true,
            artifact_quota_bytes: u64::MAX,
            read_all: true,
            max_windows_total: total,
            ..Default::default()
        },
        Ok(Some(rule)) => api::CallerPolicy {
            root: false,
            rule: rule.name.clone(),
            families: rule
                .allowed_families()
                .into_iter()
                .map(|f| family_to_wire(f) as i32)
                .collect(),
            capsule_tools: Tool::ALL
                .into_iter()
                .filter(|t| rule.capsules.iter().any(|c| c == t.name()))
                .map(|t| tool_to_wire(t) as i32)
                .collect(),
            images: rule.images.clone(),
            max_duration: Some(duration(rule.max_duration)),
            max_windows: rule.max_windows as u32,
            otlp: rule.otlp,
            artifact_quota_bytes: rule.artifact_quota,
            read_all: rule.read_all,
            max_windows_total: total,
        },
        // No rule: nothing may be opened (the refusal says why when it is tried).
        Err(_) => api::CallerPolicy {
            max_windows_total: total,
            ..Default::default()
        },
    };
    api::Options {
        families,
        capsule_tools,
        policy: Some(rule),
    }
}
