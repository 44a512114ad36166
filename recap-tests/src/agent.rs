//! A `recap agent` process for one test: its own socket, state directory and policy, so it
//! never meets a real agent or another test's.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::{otlp::free_port, recap_bin};

pub struct AgentProcess {
    child: Option<Child>,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub metrics: std::net::SocketAddr,
    extra: Vec<String>,
}

impl AgentProcess {
    /// Starts an agent with `policy` (TOML; none: root only) and extra arguments.
    pub fn start(name: &str, policy: Option<&str>, extra: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("recap-agent-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Callers other than root must reach the socket.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        if let Some(policy) = policy {
            std::fs::write(dir.join("policy.toml"), policy).unwrap();
        }
        let mut agent = AgentProcess {
            child: None,
            socket: dir.join("recap.sock"),
            metrics: free_port(),
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        agent.spawn();
        agent
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("agent.log"))
            .unwrap();
        let child = Command::new(recap_bin())
            .arg("agent")
            .arg("--socket")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .arg("--artifacts")
            .arg(self.dir.join("artifacts"))
            .arg("--policy")
            .arg(self.dir.join("policy.toml"))
            .arg("--prometheus")
            .arg(self.metrics.to_string())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting recap agent");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("the agent exited ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not listen: {}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// `recap ARGS --socket <this agent's>`, optionally as another user (`setpriv`).
    pub fn recap_as(&self, ids: Option<(u32, u32)>, args: &[&str]) -> (i32, String, String) {
        let mut cmd = match ids {
            Some((uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.args([
                    &format!("--reuid={uid}"),
                    &format!("--regid={gid}"),
                    "--clear-groups",
                    "--",
                ])
                .arg(recap_bin());
                c
            }
            None => Command::new(recap_bin()),
        };
        let out = cmd
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .output()
            .expect("running recap (setpriv is in util-linux)");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn recap(&self, args: &[&str]) -> (i32, String, String) {
        self.recap_as(None, args)
    }

    /// `recap window start ...`: the new window's id.
    pub fn start_window(&self, args: &[&str]) -> String {
        let mut all = vec!["window", "start"];
        all.extend(args);
        let (code, out, err) = self.recap(&all);
        assert_eq!(
            code,
            0,
            "window start {args:?}: {err}\nagent: {}",
            self.log()
        );
        out.trim().to_string()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends `signal`, waits for the exit; returns its code and how long it took.
    pub fn stop_with(&mut self, signal: libc::c_int) -> (Option<i32>, Duration) {
        let mut child = self.child.take().expect("agent running");
        let started = Instant::now();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = child.wait().unwrap();
        (status.code(), started.elapsed())
    }

    /// Starts the agent again with the same state (after `stop_with`).
    pub fn restart(&mut self) {
        self.spawn();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
