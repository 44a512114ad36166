//! A containerd of the test's own with its CRI plugin on (the interface the kubelet uses), and
//! pods made through CRI itself: host network, images imported from the local Docker engine
//! (no registry), a pod cgroup of the test's choosing.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use k8s_cri::v1::{
    runtime_service_client::RuntimeServiceClient, ContainerConfig, ContainerMetadata,
    CreateContainerRequest, ExecSyncRequest, ImageSpec, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, ListContainersRequest, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopPodSandboxRequest,
};
use tonic::transport::Channel;

use crate::docker::{ensure_engine, APP_IMAGE};

const PAUSE: &str = "docker.io/library/recap-test-pause:1";
const APP: &str = "docker.io/library/recap-test-cri-app:1";
/// CRI's NamespaceMode NODE: the host's network.
const NODE: i32 = 2;

pub struct CriRuntime {
    pub dir: PathBuf,
    pub socket: PathBuf,
    child: Child,
    rt: tokio::runtime::Runtime,
    client: RuntimeServiceClient<Channel>,
    pods: Vec<String>,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Docker image made from the test app image's files with another default command (once:
/// made again on every run, the old one would be left behind untagged).
fn image_with_cmd(tag: &str, cmd: &str) {
    let there = Command::new("docker")
        .args(["image", "inspect", tag])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if there {
        return;
    }
    let out = Command::new("docker")
        .args(["create", APP_IMAGE, "/bin/busybox", "true"])
        .output()
        .unwrap();
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    run(Command::new("sh").arg("-c").arg(format!(
        "docker export {id} | docker import --change 'CMD {cmd}' - {tag} >/dev/null"
    )));
    run(Command::new("docker").args(["rm", &id]));
}

/// A container command: busybox's httpd serving `/www` on `port` (host network).
pub fn httpd(port: u16) -> Vec<String> {
    [
        "/bin/busybox",
        "httpd",
        "-f",
        "-p",
        &port.to_string(),
        "-h",
        "/www",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Removes a pod cgroup `parent` from every hierarchy runc made it in (v2 and each v1
/// controller); true if none is left.
pub fn remove_pod_cgroups(parent: &str) -> bool {
    let hierarchies: Vec<_> = std::fs::read_dir("/sys/fs/cgroup")
        .map(|d| d.flatten().map(|h| h.path()).collect())
        .unwrap_or_default();
    for h in &hierarchies {
        let _ = std::fs::remove_dir(format!("{}{parent}", h.display()));
    }
    hierarchies
        .iter()
        .all(|h| !Path::new(&format!("{}{parent}", h.display())).exists())
}

impl CriRuntime {
    pub fn start(name: &str) -> Self {
        ensure_engine();
        let dir = std::env::temp_dir().join(format!("recap-cri-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["cni-bin", "cni-conf"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let socket = dir.join("containerd.sock");
        let d = dir.display();
        // restrict_oom_score_adj: the sandbox asks for -998, which needs CAP_SYS_RESOURCE, and
        // root here (a Firecracker VM) does not have it.
        std::fs::write(
            dir.join("config.toml"),
            format!(
                "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n[grpc]\n  address = \"{}\"\n\
                 [plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"{PAUSE}\"\n  restrict_oom_score_adj = true\n\
                 [plugins.\"io.containerd.grpc.v1.cri\".cni]\n  bin_dir = \"{d}/cni-bin\"\n  conf_dir = \"{d}/cni-conf\"\n",
                socket.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("containerd (Debian containerd)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "containerd did not listen");
            thread::sleep(Duration::from_millis(50));
        }
        // The images, from the local engine: no registry anywhere.
        image_with_cmd(PAUSE, "[\"/bin/busybox\",\"sleep\",\"2147483647\"]");
        image_with_cmd(APP, "[\"/bin/busybox\",\"sleep\",\"2147483647\"]");
        for image in [PAUSE, APP] {
            let tar = dir.join("image.tar");
            run(Command::new("docker").args(["save", image, "-o"]).arg(&tar));
            run(Command::new("ctr")
                .arg("-a")
                .arg(&socket)
                .args(["-n", "k8s.io", "images", "import"])
                .arg(&tar));
            let _ = std::fs::remove_file(&tar);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(async {
            let channel = recap_agent::unix_grpc::unix_channel(&socket, "cri.test")
                .await
                .unwrap();
            RuntimeServiceClient::new(channel)
        });
        CriRuntime {
            dir,
            socket,
            child,
            rt,
            client,
            pods: Vec::new(),
        }
    }

    fn sandbox_config(
        namespace: &str,
        name: &str,
        cgroup_parent: &str,
        labels: &[(&str, &str)],
    ) -> PodSandboxConfig {
        PodSandboxConfig {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                namespace: namespace.into(),
                uid: format!("uid-{name}"),
                attempt: 0,
            }),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: cgroup_parent.into(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NODE,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A pod on the host's network, its cgroup `cgroup_parent` (under the v2 root), with one
    /// container per (name, command).
    pub fn run_pod(
        &mut self,
        namespace: &str,
        name: &str,
        cgroup_parent: &str,
        containers: &[(&str, Vec<String>)],
    ) -> String {
        self.run_labelled_pod(namespace, name, cgroup_parent, &[], containers)
    }

    /// `run_pod`, the pod with these labels.
    pub fn run_labelled_pod(
        &mut self,
        namespace: &str,
        name: &str,
        cgroup_parent: &str,
        labels: &[(&str, &str)],
        containers: &[(&str, Vec<String>)],
    ) -> String {
        let config = Self::sandbox_config(namespace, name, cgroup_parent, labels);
        let mut client = self.client.clone();
        let log_path = self.dir.join("containerd.log");
        let tail = move || {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let lines: Vec<&str> = log.lines().rev().take(15).collect();
            lines.into_iter().rev().collect::<Vec<_>>().join("\n")
        };
        let pod_id = self.rt.block_on(async {
            let pod = client
                .run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(config.clone()),
                    runtime_handler: String::new(),
                })
                .await
                .unwrap_or_else(|e| {
                    panic!("RunPodSandbox: {}\ncontainerd:\n{}", e.message(), tail())
                })
                .into_inner()
                .pod_sandbox_id;
            for (cname, command) in containers {
                let id = client
                    .create_container(CreateContainerRequest {
                        pod_sandbox_id: pod.clone(),
                        config: Some(ContainerConfig {
                            metadata: Some(ContainerMetadata {
                                name: cname.to_string(),
                                attempt: 0,
                            }),
                            image: Some(ImageSpec {
                                image: APP.into(),
                                ..Default::default()
                            }),
                            command: command.clone(),
                            ..Default::default()
                        }),
                        sandbox_config: Some(config.clone()),
                    })
                    .await
                    .unwrap_or_else(|e| {
                        panic!("CreateContainer: {}\ncontainerd:\n{}", e.message(), tail())
                    })
                    .into_inner()
                    .container_id;
                client
                    .start_container(StartContainerRequest { container_id: id })
                    .await
                    .unwrap_or_else(|e| {
                        panic!("StartContainer: {}\ncontainerd:\n{}", e.message(), tail())
                    });
            }
            pod
        });
        self.pods.push(pod_id.clone());
        pod_id
    }

    pub fn remove_pods(&mut self) {
        let mut client = self.client.clone();
        for pod in std::mem::take(&mut self.pods) {
            self.rt.block_on(async {
                let _ = client
                    .stop_pod_sandbox(StopPodSandboxRequest {
                        pod_sandbox_id: pod.clone(),
                    })
                    .await;
                let _ = client
                    .remove_pod_sandbox(RemovePodSandboxRequest {
                        pod_sandbox_id: pod.clone(),
                    })
                    .await;
            });
        }
    }

    /// Every container the runtime has, any state, as CRI lists them.
    fn list_containers(&self) -> Vec<k8s_cri::v1::Container> {
        let mut client = self.client.clone();
        self.rt.block_on(async {
            client
                .list_containers(ListContainersRequest { filter: None })
                .await
                .expect("ListContainers")
                .into_inner()
                .containers
        })
    }

    /// Every container the runtime has (any state): (name, state, labels' `recap.window`).
    pub fn containers(&self) -> Vec<(String, i32, Option<String>)> {
        let mut all: Vec<_> = self
            .list_containers()
            .into_iter()
            .map(|c| {
                (
                    c.metadata.map(|m| m.name).unwrap_or_default(),
                    c.state,
                    c.labels.get("recap.window").cloned(),
                )
            })
            .collect();
        all.sort();
        all
    }

    /// Runs `cmd` in the running container named `container` through CRI's `ExecSync` (what
    /// `crictl exec -s` and the kubelet's exec probes call); its exit code.
    pub fn exec_sync(&self, container: &str, cmd: &[&str]) -> i32 {
        let id = self
            .list_containers()
            .into_iter()
            .find(|c| c.metadata.as_ref().is_some_and(|m| m.name == container))
            .unwrap_or_else(|| panic!("no container {container}"))
            .id;
        let mut client = self.client.clone();
        self.rt.block_on(async {
            client
                .exec_sync(ExecSyncRequest {
                    container_id: id,
                    cmd: cmd.iter().map(|a| a.to_string()).collect(),
                    timeout: 10,
                })
                .await
                .expect("ExecSync")
                .into_inner()
                .exit_code
        })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    pub fn socket_path(&self) -> &Path {
        &self.socket
    }
}

impl Drop for CriRuntime {
    fn drop(&mut self) {
        self.remove_pods();
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Whatever containerd left mounted under its root goes before the directory does.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "grep -o ' {}/[^ ]*' /proc/self/mounts | sort -r | xargs -r -n1 umount -l",
                self.dir.display()
            ))
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
