//! Root, which loading eBPF programs, making cgroups and installing packages need.

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// For a command (the demo, a benchmark): an error that says how to run it, unless root.
pub fn require_root(what: &str) -> anyhow::Result<()> {
    if !is_root() {
        anyhow::bail!("{what} needs root: it loads eBPF programs, creates cgroups and installs packages (run it with sudo)");
    }
    Ok(())
}

/// For a privileged test: `false` (skip, said on stderr) unless root. Under `CI` a test that
/// cannot run fails instead: a privileged test must not pass by not running.
pub fn root_or_skip() -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but this test does not run as root: it needs root to load eBPF programs and create cgroups"
    );
    eprintln!("skipping: needs root to load eBPF programs and create cgroups");
    false
}
