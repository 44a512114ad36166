//! A three-member etcd cluster on loopback ports for one test (Debian's `etcd-server`), with
//! or without TLS (certificates made here with openssl), members killed and restarted at will.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

pub struct EtcdCluster {
    pub dir: PathBuf,
    members: Vec<Member>,
    pub tls: bool,
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl (cargo xtask setup installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, in `dir`.
fn make_certs(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=recap-test-ca",
        ],
    );
    for (name, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth",
        ),
        ("client", "extendedKeyUsage=clientAuth"),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={name}"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
            ],
        );
    }
}

impl EtcdCluster {
    pub fn start(name: &str, tls: bool) -> Self {
        let dir = std::env::temp_dir().join(format!("recap-etcd-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        if tls {
            make_certs(&dir);
        }
        let ports = crate::free_tcp_ports(6);
        let members = (1..=3)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: ports[2 * i - 2],
                peer_port: ports[2 * i - 1],
                child: None,
            })
            .collect();
        let mut cluster = EtcdCluster { dir, members, tls };
        for i in 0..3 {
            cluster.start_member(i);
        }
        cluster.wait_healthy();
        cluster
    }

    fn scheme(&self) -> &str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }

    fn start_member(&mut self, i: usize) {
        let scheme = self.scheme().to_string();
        let initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect();
        let m = &self.members[i];
        let data = self.dir.join(&m.name);
        let fresh = !data.exists();
        let log = std::fs::File::create(self.dir.join(format!("{}.log", m.name))).unwrap();
        let mut cmd = Command::new("etcd");
        cmd.arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&data)
            .arg(format!(
                "--listen-client-urls={scheme}://127.0.0.1:{}",
                m.client_port
            ))
            .arg(format!(
                "--advertise-client-urls={scheme}://127.0.0.1:{}",
                m.client_port
            ))
            .arg(format!(
                "--listen-peer-urls=http://127.0.0.1:{}",
                m.peer_port
            ))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{}",
                m.peer_port
            ))
            .arg(format!("--initial-cluster={}", initial.join(",")))
            .arg(format!(
                "--initial-cluster-state={}",
                if fresh { "new" } else { "existing" }
            ))
            .arg("--initial-cluster-token=recap-test")
            .args(["--heartbeat-interval=50", "--election-timeout=500"]);
        if self.tls {
            let f = |n: &str| self.dir.join(n).display().to_string();
            cmd.arg(format!("--cert-file={}", f("server.pem")))
                .arg(format!("--key-file={}", f("server.key")))
                .arg(format!("--trusted-ca-file={}", f("ca.pem")))
                .arg("--client-cert-auth");
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd (cargo xtask setup installs etcd-server)");
        self.members[i].child = Some(child);
    }

    /// Every member's client URL, comma-separated.
    /// Member `i`'s client port.
    pub fn client_port(&self, i: usize) -> u16 {
        self.members[i].client_port
    }

    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}://127.0.0.1:{}", self.scheme(), m.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `--etcd ...` and, with TLS, the CA and the client certificate.
    pub fn client_args(&self) -> Vec<String> {
        let mut args = vec!["--etcd".to_string(), self.endpoints()];
        if self.tls {
            for (flag, file) in [
                ("--etcd-ca", "ca.pem"),
                ("--etcd-cert", "client.pem"),
                ("--etcd-key", "client.key"),
            ] {
                args.push(flag.to_string());
                args.push(self.dir.join(file).display().to_string());
            }
        }
        args
    }

    /// An `etcdctl` command against the cluster (its TLS files if on), as `user`
    /// (`name:password`) when given.
    fn etcdctl_command(&self, user: Option<&str>) -> Command {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoints()));
        if self.tls {
            let f = |n: &str| self.dir.join(n).display().to_string();
            cmd.arg(format!("--cacert={}", f("ca.pem")))
                .arg(format!("--cert={}", f("client.pem")))
                .arg(format!("--key={}", f("client.key")));
        }
        if let Some(user) = user {
            cmd.arg(format!("--user={user}"));
        }
        cmd
    }

    /// `etcdctl` against the cluster, as `user` (`name:password`) when given.
    pub fn etcdctl(&self, user: Option<&str>, args: &[&str]) -> (bool, String) {
        let out = self
            .etcdctl_command(user)
            .args(args)
            .output()
            .expect("etcdctl (Debian etcd-client)");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }

    /// `etcdctl ARGS` with `input` on its stdin (a value too big for a command line).
    pub fn etcdctl_stdin(&self, user: Option<&str>, args: &[&str], input: &[u8]) -> (bool, String) {
        use std::io::Write;
        let mut child = self
            .etcdctl_command(user)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("etcdctl (Debian etcd-client)");
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }

    /// The lease a key is bound to (0: none), read with etcdctl as `user`.
    pub fn lease_of(&self, user: Option<&str>, key: &str) -> i64 {
        let (ok, out) = self.etcdctl(user, &["get", key, "-w", "json"]);
        assert!(ok, "etcdctl get {key}: {out}");
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        v["kvs"][0]["lease"].as_i64().unwrap_or(0)
    }

    /// The keys under `prefix`, read with etcdctl as `user`.
    pub fn keys(&self, user: Option<&str>, prefix: &str) -> Vec<String> {
        let (ok, out) = self.etcdctl(user, &["get", "--prefix", "--keys-only", prefix]);
        assert!(ok, "etcdctl get --prefix {prefix}: {out}");
        out.lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect()
    }

    pub fn wait_healthy(&self) {
        // Three members electing a leader on a loaded 2-CPU machine: give them a minute.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (ok, out) = self.etcdctl(None, &["endpoint", "health", "--cluster"]);
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not become healthy: {out}"
            );
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until `recap fleet nodes` (run with `env`, e.g. an etcd user) lists every one of
    /// `nodes`.
    pub fn wait_registered(&self, env: &[(&str, &str)], nodes: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new(crate::recap_bin())
                .args(["fleet", "nodes"])
                .args(self.client_args())
                .envs(env.iter().copied())
                .output()
                .unwrap();
            let listed = String::from_utf8_lossy(&out.stdout).into_owned();
            if nodes.iter().all(|n| listed.lines().any(|l| l == *n)) {
                return;
            }
            assert!(Instant::now() < deadline, "nodes not registered: {listed}");
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// A key's JSON value, read with etcdctl (`user` as `name:password` when auth is on).
    pub fn value(&self, user: Option<&str>, key: &str) -> Option<serde_json::Value> {
        let (ok, out) = self.etcdctl(user, &["get", key, "--print-value-only"]);
        assert!(ok, "etcdctl get {key}: {out}");
        serde_json::from_str(out.trim()).ok()
    }

    /// Waits up to `within` for `key` to hold a JSON value; `why` says what went wrong if not.
    pub fn wait_value(
        &self,
        key: &str,
        within: Duration,
        why: impl Fn() -> String,
    ) -> serde_json::Value {
        self.wait_value_as(None, key, within, why)
    }

    /// `wait_value`, reading as `user` (`name:password`: with auth on).
    pub fn wait_value_as(
        &self,
        user: Option<&str>,
        key: &str,
        within: Duration,
        why: impl Fn() -> String,
    ) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            if let Some(v) = self.value(user, key) {
                return v;
            }
            assert!(Instant::now() < deadline, "nothing at {key}: {}", why());
            thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart_member(&mut self, i: usize) {
        self.start_member(i);
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill_member(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
