//! `--selector KEY=VALUE[,KEY=VALUE...]`: containers (Docker's) and pods (the CRI runtime's)
//! whose labels hold every pair, as Kubernetes equality selectors read.

use std::{collections::BTreeMap, fmt, str::FromStr};

use bollard::{query_parameters::ListContainersOptionsBuilder, Docker};
use serde::{Deserialize, Serialize};

use crate::docker::api;
use crate::targets::TargetError;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selector(pub BTreeMap<String, String>);

impl FromStr for Selector {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut pairs = BTreeMap::new();
        for part in s.split(',') {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                format!("`{part}` is not KEY=VALUE (e.g. --selector app=checkout,tier=web)")
            })?;
            if part.chars().any(|c| c.is_control()) {
                return Err(format!(
                    "`{}`: no control characters in a label",
                    part.escape_debug()
                ));
            }
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty() || k.len() > 253 || v.len() > 253 {
                return Err(format!(
                    "`{part}`: a label key must be 1 to 253 characters, a value at most 253"
                ));
            }
            if v.contains('=') {
                return Err(format!("`{part}`: no `=` in a value"));
            }
            if pairs.insert(k.to_string(), v.to_string()).is_some() {
                return Err(format!("label `{k}` given twice"));
            }
        }
        Ok(Selector(pairs))
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        f.write_str(&parts.join(","))
    }
}

impl Selector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// A running container or ready pod the selector matched: its full id (the pod's sandbox id)
/// and name (the pod's `NAMESPACE/NAME`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matched {
    pub id: String,
    pub name: String,
    /// Where the pod was found (its runtime's CRI socket); `None`: a Docker container.
    pub pod_of: Option<std::path::PathBuf>,
}

impl Matched {
    /// The window target for it.
    pub fn target(&self) -> crate::targets::TargetSpec {
        use crate::targets::TargetSpec;
        match &self.pod_of {
            None => TargetSpec::Container {
                name_or_id: self.id.clone(),
            },
            Some(endpoint) => {
                let (namespace, name) = self.name.split_once('/').unwrap_or(("", &self.name));
                TargetSpec::Pod {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                    container: None,
                    cri_endpoint: endpoint.clone(),
                }
            }
        }
    }

    /// "container NAME" or "pod NS/NAME".
    pub fn describe(&self) -> String {
        match self.pod_of {
            None => format!("container {}", self.name),
            Some(_) => format!("pod {}", self.name),
        }
    }
}

/// The ready pods of the CRI runtime at `endpoint` whose labels `selector` matches, by name.
pub async fn matching_pods(
    endpoint: &std::path::Path,
    selector: &Selector,
) -> Result<Vec<Matched>, TargetError> {
    use k8s_cri::v1::{ListPodSandboxRequest, PodSandboxFilter, PodSandboxStateValue};
    let mut cri = crate::targets::pod::connect(endpoint).await?;
    let pods = cri
        .list_pod_sandbox(ListPodSandboxRequest {
            filter: Some(PodSandboxFilter {
                state: Some(PodSandboxStateValue { state: 0 }), // READY
                label_selector: selector.0.clone().into_iter().collect(),
                ..Default::default()
            }),
        })
        .await
        .map_err(|e| TargetError::Cri(format!("listing pods: {}", e.message())))?
        .into_inner()
        .items;
    let mut out: Vec<Matched> = pods
        .into_iter()
        // The runtime filtered; checked again here so that a selector never widens.
        .filter(|p| p.state == 0 && selector.matches(&p.labels.clone().into_iter().collect()))
        .filter_map(|p| {
            let m = p.metadata?;
            Some(Matched {
                id: p.id,
                name: format!("{}/{}", m.namespace, m.name),
                pod_of: Some(endpoint.to_path_buf()),
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The running containers of this node's Docker engine that `selector` matches, by name.
pub async fn matching_containers(
    docker: &Docker,
    selector: &Selector,
) -> Result<Vec<Matched>, TargetError> {
    let filters: Vec<String> = selector.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let options = ListContainersOptionsBuilder::new()
        .filters(&std::collections::HashMap::from([(
            "label".to_string(),
            filters,
        )]))
        .build();
    let list = docker
        .list_containers(Some(options))
        .await
        .map_err(api("listing containers"))?;
    let mut out: Vec<Matched> = list
        .into_iter()
        // Docker filtered; checked again here so that a selector never widens.
        .filter(|c| {
            let labels: BTreeMap<String, String> =
                c.labels.clone().unwrap_or_default().into_iter().collect();
            selector.matches(&labels)
        })
        .map(|c| Matched {
            id: c.id.unwrap_or_default(),
            name: c
                .names
                .unwrap_or_default()
                .first()
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_default(),
            pod_of: None,
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse_match_and_refuse_with_a_reason() {
        let s: Selector = "app=checkout, tier=web".parse().unwrap();
        assert_eq!(s.to_string(), "app=checkout,tier=web");
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(s.matches(&labels(&[("app", "checkout"), ("tier", "web"), ("x", "y")])));
        assert!(!s.matches(&labels(&[("app", "checkout")])));
        assert!(!s.matches(&labels(&[("app", "checkout"), ("tier", "db")])));
        assert!("app".parse::<Selector>().unwrap_err().contains("KEY=VALUE"));
        assert!("=x".parse::<Selector>().unwrap_err().contains("1 to 253"));
        assert!("a=1,a=2".parse::<Selector>().unwrap_err().contains("twice"));
        assert!("a=\n".parse::<Selector>().unwrap_err().contains("control"));
    }
}
