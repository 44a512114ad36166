//! Removes capsule containers whose window is gone (what a crash or a `kill -9` left): every
//! window runs this before it starts its own capsules. Only what RECap provably created and
//! provably abandoned is removed: RECap's capsule image, an owner label in RECap's format, and
//! that owner no longer running. A container that merely carries a `recap.window` label is
//! somebody else's and is left alone.

use std::collections::HashMap;

use bollard::{
    query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder},
    Docker,
};

use super::{LABEL_OWNER, LABEL_WINDOW};
use crate::targets::cgroup;

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
        let ours = c
            .image
            .as_deref()
            .is_some_and(|i| super::is_capsule(i, &labels));
        let abandoned = labels
            .get(LABEL_OWNER)
            .is_some_and(|owner| owner_gone(owner));
        if !(ours && abandoned) {
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

/// `PID:STARTTIME`, as RECap writes it.
fn parse_owner(owner: &str) -> Option<(u32, u64)> {
    let (pid, start) = owner.split_once(':')?;
    Some((pid.parse().ok()?, start.parse().ok()?))
}

/// Whether `PID:STARTTIME` names a live process (same PID and same start time).
pub fn owner_alive(owner: &str) -> bool {
    parse_owner(owner).is_some_and(|(pid, start)| {
        cgroup::process_running(pid) && cgroup::process_start_time(pid) == Some(start)
    })
}

/// Whether `PID:STARTTIME` is in RECap's format and names a process that is gone. A label
/// RECap did not write is never taken as a dead owner.
pub fn owner_gone(owner: &str) -> bool {
    parse_owner(owner).is_some() && !owner_alive(owner)
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
        assert!(owner_gone("4294967295:1"));
        assert!(
            !owner_gone("garbage"),
            "not RECap's label: not ours to judge"
        );
        assert!(!owner_gone(&format!("{me}:{start}")));
    }
}
