//! Where capsules write: `<artifacts>/<window-id>/`, made private. A pcap or an strace log holds
//! bearer tokens and passwords, so the window's directory is 0700 and each file 0600, owned by
//! the user who asked for the window (the `sudo` caller when recap runs through sudo).

use std::{
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
};

use anyhow::Context;

/// Creates `<base>/<window_id>` (0700). A relative base is taken from the current directory,
/// so the engine's bind mount gets the absolute path it needs.
pub fn window_dir(base: &Path, window_id: &str) -> anyhow::Result<PathBuf> {
    let base = std::path::absolute(base)
        .with_context(|| format!("resolving the artifact directory {}", base.display()))?;
    let dir = base.join(window_id);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating the artifact directory {}", dir.display()))?;
    // An existing directory keeps its mode under `create`; the window's own is always fresh,
    // but be explicit.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} private", dir.display()))?;
    Ok(dir)
}

/// The user who asked for a `recap window` run: `SUDO_UID`/`SUDO_GID` when it runs through
/// sudo. (The agent knows its callers from the socket instead.)
pub fn sudo_requester() -> Option<(u32, u32)> {
    let uid = std::env::var("SUDO_UID").ok()?.parse().ok()?;
    let gid = std::env::var("SUDO_GID").ok()?.parse().ok()?;
    Some((uid, gid))
}

/// Makes a finished artifact 0600 and hands it and its window directory to `owner`, if the
/// window ran on someone's behalf (otherwise they stay root's).
pub fn seal(artifact: &Path, owner: Option<(u32, u32)>) -> std::io::Result<()> {
    if !artifact.exists() {
        return Ok(());
    }
    std::fs::set_permissions(artifact, std::fs::Permissions::from_mode(0o600))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(artifact, Some(uid), Some(gid))?;
        if let Some(dir) = artifact.parent() {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_directories_are_private_and_absolute() {
        let base = std::env::temp_dir().join(format!("recap-artifacts-{}", std::process::id()));
        let dir = window_dir(&base, "abc").unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert!(dir.is_absolute());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
