//! The Kubernetes manifests in deploy/kubernetes/, checked offline: against the Kubernetes API
//! schema (kubernetes-validate, strict: no unknown fields), and against RECap itself (the
//! DaemonSet's arguments parse as `recap agent`'s, the ConfigMap's policy as a policy).

use std::{path::Path, process::Command};

use clap::Parser;
use recap_agent::{agent::policy::Policy, cli::Cli};
use serde_json::Value;

fn manifests() -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in {}", dir.display());
    files
}

/// Every document of a YAML file, as JSON (PyYAML comes with kubernetes-validate).
fn documents(file: &Path) -> Vec<Value> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))",
        ])
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn manifests_follow_the_kubernetes_schema() {
    for file in manifests() {
        let out = Command::new("python3")
            .args(["-m", "kubernetes_validate", "--strict", "--quiet"])
            .arg(&file)
            .output()
            .expect("python3 -m kubernetes_validate (cargo xtask setup installs it)");
        assert!(
            out.status.success(),
            "{}: {}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_daemonset_runs_an_agent_recap_accepts() {
    let docs: Vec<Value> = manifests().iter().flat_map(|f| documents(f)).collect();
    let ds = docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("a DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    let agent = &pod["containers"][0];
    assert_eq!(agent["securityContext"]["privileged"], true);
    let mounts: Vec<&str> = agent["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    for needed in [
        "/sys/fs/cgroup",
        "/sys/kernel/btf",
        "/run/containerd/containerd.sock",
    ] {
        assert!(
            mounts.contains(&needed),
            "{needed} is not mounted: {mounts:?}"
        );
    }
    // Its arguments, with Kubernetes' $(VAR) expanded, are `recap agent`'s.
    let mut argv = vec!["recap".to_string()];
    argv.extend(
        agent["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().replace("$(NODE_NAME)", "node-1")),
    );
    // Its environment: the variables recap reads as options, and the two that are not.
    for env in agent["env"].as_array().unwrap() {
        let (name, value) = (env["name"].as_str().unwrap(), env["value"].as_str());
        match (name, value) {
            ("RECAP_ETCD", Some(v)) => argv.extend(["--etcd".to_string(), v.to_string()]),
            ("NODE_NAME", None) | ("RUST_LOG", Some(_)) => {}
            other => panic!("an environment variable this test does not know: {other:?}"),
        }
    }
    if let Err(e) = Cli::try_parse_from(&argv) {
        panic!("{argv:?}: {e}");
    }
    // The policy it mounts is one the agent accepts.
    let policy = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap")
        .and_then(|c| c["data"]["policy.toml"].as_str())
        .expect("a ConfigMap with policy.toml");
    let policy = Policy::parse(policy, "deploy/kubernetes").unwrap();
    // No copy of the family list to drift: the rule allows the families on by default.
    assert!(policy.rules.iter().all(|r| r.families.is_none()));
}
