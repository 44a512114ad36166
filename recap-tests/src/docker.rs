//! A real Docker engine for the tests: started if none answers, an app image made from the
//! host's static busybox (no registry is reachable), and app containers without a network whose
//! loopback the test reaches by entering their network namespace (never a bridge address).

use std::{
    path::Path,
    process::{Command, Stdio},
    sync::Once,
};

use recap_harness::docker::cli as docker;

pub const APP_IMAGE: &str = "recap-test-httpd:1";

/// Starts `dockerd` unless an engine answers; builds the app image once.
pub fn ensure_engine() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        recap_harness::docker::ensure_engine(Path::new("/tmp/recap-test-dockerd.log"))
            .unwrap_or_else(|e| panic!("{e:#}"));
        if !recap_harness::docker::ask(&["image", "inspect", APP_IMAGE]) {
            build_app_image();
        }
    });
}

/// busybox httpd serving one page, from the host's statically linked busybox.
fn build_app_image() {
    let dir = std::env::temp_dir().join(format!("recap-app-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::copy("/bin/busybox", dir.join("bin/busybox"))
        .expect("/bin/busybox (apt-get install busybox-static)");
    std::fs::write(dir.join("www/index.html"), "hello from the target\n").unwrap();
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C {} -c . | docker import - {APP_IMAGE} >/dev/null",
            dir.display()
        ))
        .status()
        .unwrap();
    assert!(status.success(), "docker import of the app image failed");
    let _ = std::fs::remove_dir_all(dir);
}

/// A running app container, removed on drop.
pub struct AppContainer {
    pub name: String,
    pub id: String,
}

impl AppContainer {
    pub fn run(name: &str) -> Self {
        Self::run_labelled(name, &[])
    }

    /// With Docker labels (`KEY=VALUE`).
    pub fn run_labelled(name: &str, labels: &[&str]) -> Self {
        Self::run_with(name, labels, &[])
    }

    /// With Docker labels and more `docker run` options (e.g. `--memory 48m`).
    pub fn run_with(name: &str, labels: &[&str], options: &[&str]) -> Self {
        let httpd = ["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"];
        Self::run_image(name, labels, options, APP_IMAGE, &httpd)
    }

    /// A container of `image` running `command`.
    pub fn run_image(
        name: &str,
        labels: &[&str],
        options: &[&str],
        image: &str,
        command: &[&str],
    ) -> Self {
        ensure_engine();
        let name = format!("{name}-{}", std::process::id());
        // A leftover of an earlier run, if any (quietly: usually there is none).
        let _ = Command::new("docker")
            .args(["rm", "-f", &name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let mut args = vec!["run", "-d", "--name", &name, "--network", "none"];
        for label in labels {
            args.extend(["--label", label]);
        }
        args.extend(options);
        args.push(image);
        args.extend(command);
        let (ok, id) = docker(&args);
        assert!(ok, "docker run {name} failed");
        AppContainer { name, id }
    }

    /// The container's init process as the host sees it.
    pub fn pid(&self) -> u32 {
        docker(&["inspect", "-f", "{{.State.Pid}}", &self.id])
            .1
            .parse()
            .unwrap()
    }

    /// One GET of the container's own loopback, from inside its network namespace.
    fn get_command(&self, pid: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args([
            "-t",
            pid,
            "-n",
            "/bin/busybox",
            "wget",
            "-q",
            "-O",
            "/dev/null",
            "http://127.0.0.1/",
        ]);
        cmd
    }

    /// `n` HTTP GETs, one after the other.
    pub fn http_gets(&self, n: usize) {
        let pid = self.pid().to_string();
        for _ in 0..n {
            let ok = self.get_command(&pid).status().unwrap().success();
            assert!(ok, "GET to {} failed", self.name);
        }
    }

    /// N GETs at once (a burst: all started before any is waited for).
    pub fn http_burst(&self, n: usize) {
        let pid = self.pid().to_string();
        let children: Vec<_> = (0..n)
            .map(|_| self.get_command(&pid).spawn().unwrap())
            .collect();
        for mut child in children {
            assert!(child.wait().unwrap().success(), "a GET of the burst failed");
        }
    }

    pub fn kill(&self) {
        assert!(docker(&["kill", &self.id]).0);
    }

    pub fn exists(&self) -> bool {
        docker(&["inspect", "-f", "{{.Id}}", &self.id]).0
    }
}

impl Drop for AppContainer {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.id]);
    }
}

/// Whether a container (by id) is running.
pub fn container_running(id: &str) -> bool {
    docker(&["inspect", "-f", "{{.State.Running}}", id]).1 == "true"
}

/// Capsule containers on this machine (any window).
pub fn capsule_containers() -> Vec<String> {
    let (_, out) = docker(&["ps", "-aq", "--filter", "label=recap.window"]);
    out.lines().map(str::to_owned).collect()
}

/// HTTP GET requests in a pcap, read by tshark.
pub fn http_gets_in_pcap(pcap: &Path) -> usize {
    http_gets_in_pcap_on(pcap, 80)
}

/// HTTP GET requests to or from TCP `port` in a pcap (tshark decodes it as HTTP).
pub fn http_gets_in_pcap_on(pcap: &Path, port: u16) -> usize {
    let out = Command::new("tshark")
        .args([
            "-r",
            pcap.to_str().unwrap(),
            "-d",
            &format!("tcp.port=={port},http"),
            "-Y",
            "http.request.method == \"GET\"",
        ])
        .output()
        .expect("tshark (apt-get install tshark)");
    assert!(
        out.status.success(),
        "tshark could not read {}: {}",
        pcap.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}
