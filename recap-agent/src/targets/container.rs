//! Docker containers as targets: a name, a full id or an unambiguous id prefix, resolved to
//! the container's init process and so to its cgroup.

use bollard::{query_parameters::ListContainersOptionsBuilder, Docker};
use serde::{Deserialize, Serialize};

use super::TargetError;
use crate::docker::{api, DockerError};

/// What the summary (and exported labels) say about a container target.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContainerMeta {
    pub id: String,
    pub name: String,
    pub image: String,
    /// The container's init process, as the host sees it.
    pub pid: u32,
    /// Its Docker labels (for the agent's policy; not in the summary).
    #[serde(skip)]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// Finds the one container `wanted` names.
pub async fn resolve(docker: &Docker, wanted: &str) -> Result<ContainerMeta, TargetError> {
    let all = docker
        .list_containers(Some(ListContainersOptionsBuilder::new().all(true).build()))
        .await
        .map_err(api("listing containers"))?;
    let candidates: Vec<(String, Vec<String>)> = all
        .into_iter()
        .map(|c| (c.id.unwrap_or_default(), c.names.unwrap_or_default()))
        .collect();
    let id = pick(&candidates, wanted)?;
    let info = docker
        .inspect_container(&id, None)
        .await
        .map_err(api(format!("inspecting container {wanted}")))?;
    let state = info.state.unwrap_or_default();
    let name = info
        .name
        .unwrap_or_default()
        .trim_start_matches('/')
        .to_string();
    if state.running != Some(true) {
        let status = state
            .status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "unknown".into());
        return Err(TargetError::ContainerNotRunning { name, status });
    }
    let pid = state
        .pid
        .filter(|&p| p > 0)
        .ok_or_else(|| TargetError::ContainerNotRunning {
            name: name.clone(),
            status: "no init process".into(),
        })? as u32;
    let config = info.config.unwrap_or_default();
    let image = config.image.unwrap_or_default();
    let labels = config.labels.unwrap_or_default().into_iter().collect();
    Ok(ContainerMeta {
        id,
        name,
        image,
        pid,
        labels,
    })
}

/// Docker's own rule: an exact name, an exact id, or an id prefix matching one container.
pub fn pick(candidates: &[(String, Vec<String>)], wanted: &str) -> Result<String, TargetError> {
    let name = wanted.trim_start_matches('/');
    if let Some((id, _)) = candidates
        .iter()
        .find(|(id, names)| id == wanted || names.iter().any(|n| n.trim_start_matches('/') == name))
    {
        return Ok(id.clone());
    }
    let by_prefix: Vec<&String> = candidates
        .iter()
        .map(|(id, _)| id)
        .filter(|id| id.starts_with(wanted))
        .collect();
    match by_prefix.as_slice() {
        [] => Err(TargetError::NoSuchContainer {
            wanted: wanted.into(),
        }),
        [one] => Ok((*one).clone()),
        many => Err(TargetError::AmbiguousContainer {
            wanted: wanted.into(),
            matches: many
                .iter()
                .map(|id| id[..12.min(id.len())].to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

impl From<DockerError> for TargetError {
    fn from(e: DockerError) -> Self {
        TargetError::Docker(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn containers() -> Vec<(String, Vec<String>)> {
        vec![
            ("abc123def".into(), vec!["/web".into()]),
            ("abc999fff".into(), vec!["/db".into()]),
            ("fed000aaa".into(), vec!["/cache".into()]),
        ]
    }

    #[test]
    fn names_ids_and_prefixes() {
        assert_eq!(pick(&containers(), "web").unwrap(), "abc123def");
        assert_eq!(pick(&containers(), "/db").unwrap(), "abc999fff");
        assert_eq!(pick(&containers(), "fed").unwrap(), "fed000aaa");
        assert_eq!(pick(&containers(), "abc123def").unwrap(), "abc123def");
        assert!(matches!(
            pick(&containers(), "abc"),
            Err(TargetError::AmbiguousContainer { .. })
        ));
        assert!(matches!(
            pick(&containers(), "nope"),
            Err(TargetError::NoSuchContainer { .. })
        ));
        let msg = pick(&containers(), "abc").unwrap_err().to_string();
        assert!(
            msg.contains("abc123def") && msg.contains("abc999fff"),
            "{msg}"
        );
    }
}
