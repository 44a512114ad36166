//! A real Docker engine: started if none answers (its log where the caller says), and the
//! docker CLI run with its output taken.

use std::{
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

/// Runs the docker CLI; (success, trimmed stdout). Its errors go to our stderr.
pub fn cli(args: &[&str]) -> (bool, String) {
    cli_with_stderr(args, Stdio::inherit())
}

/// `cli` for a question whose "no" is normal (`image inspect` of an image not built yet): its
/// error message is not shown, so it does not read as a failure.
pub fn ask(args: &[&str]) -> bool {
    cli_with_stderr(args, Stdio::null()).0
}

fn cli_with_stderr(args: &[&str], stderr: Stdio) -> (bool, String) {
    match Command::new("docker").args(args).stderr(stderr).output() {
        Ok(out) => (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        ),
        Err(_) => (false, String::new()),
    }
}

pub fn engine_answers() -> bool {
    Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts `dockerd` (left running: later runs use the same engine) unless an engine answers,
/// and waits up to 30 s for it.
pub fn ensure_engine(log: &Path) -> anyhow::Result<()> {
    if engine_answers() {
        return Ok(());
    }
    eprintln!("starting dockerd (log: {})", log.display());
    let file = std::fs::File::create(log)?;
    // Left running on purpose: the engine outlives the run that started it.
    #[allow(clippy::zombie_processes)]
    Command::new("dockerd")
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .map_err(|e| anyhow::anyhow!("starting dockerd (apt-get install docker.io): {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !engine_answers() {
        if Instant::now() > deadline {
            anyhow::bail!("dockerd did not answer within 30 s; see {}", log.display());
        }
        thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}
