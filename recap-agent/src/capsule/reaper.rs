//! Removes capsule containers whose window is gone (what a crash or a `kill -9` left): every
//! window runs this before it starts its own capsules.

use std::collections::HashMap;

use bollard::{
    query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder},
    Docker,
};

use super::{LABEL_OWNER, LABEL_WINDOW};
use crate::target::cgroup;

/// A capsule that was removed, and why.
#[derive(Debug)]
pub struct Reaped {
    pub name: String,
    pub window: String,
}

pub async fn reap_orphans(docker: &Docker) -> anyhow::Result<Vec<Reaped>> {
    let filters = HashMap::from([("label".to_string(), vec![LABEL_WINDOW.to_string()])]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let mut reaped = Vec::new();
    for c in docker.list_containers(Some(options)).await? {
        let labels = c.labels.unwrap_or_default();
        if labels
            .get(LABEL_OWNER)
            .is_some_and(|owner| owner_alive(owner))
        {
            continue;
        }
        let Some(id) = c.id else { continue };
        let name = c
            .names
            .and_then(|n| n.first().cloned())
            .unwrap_or_else(|| id.clone());
        let remove = RemoveContainerOptionsBuilder::new().force(true).build();
        docker.remove_container(&id, Some(remove)).await?;
        let window = labels.get(LABEL_WINDOW).cloned().unwrap_or_default();
        log::warn!(
            "removed orphan capsule {} of window {window}: the recap process that ran it is gone",
            name.trim_start_matches('/')
        );
        reaped.push(Reaped { name, window });
    }
    Ok(reaped)
}

/// Whether `PID:STARTTIME` names a live process (same PID and same start time).
pub fn owner_alive(owner: &str) -> bool {
    let Some((pid, start)) = owner.split_once(':') else {
        return false;
    };
    let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else {
        return false;
    };
    cgroup::process_running(pid) && cgroup::process_start_time(pid) == Some(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_matched_by_pid_and_start_time() {
        let me = std::process::id();
        let start = cgroup::process_start_time(me).unwrap();
        assert!(owner_alive(&format!("{me}:{start}")));
        assert!(
            !owner_alive(&format!("{me}:{}", start + 1)),
            "a reused PID is not the owner"
        );
        assert!(!owner_alive("4294967295:1"));
        assert!(!owner_alive("garbage"));
    }
}
