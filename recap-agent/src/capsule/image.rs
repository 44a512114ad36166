//! The capsule image, made from this host's own tcpdump, strace and busybox plus the shared
//! libraries they load, and imported into the engine (no registry is needed, or reachable).

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context};
use bollard::{query_parameters::CreateImageOptionsBuilder, Docker};
use futures_util::StreamExt;

use crate::docker::is_not_found;

pub const REPO: &str = "recap-capsule";
/// Tagged with RECap's version: a new RECap builds its own capsule image.
pub const TAG: &str = env!("CARGO_PKG_VERSION");

pub fn reference() -> String {
    format!("{REPO}:{TAG}")
}

const TOOLS: [&str; 3] = ["tcpdump", "strace", "busybox"];

pub async fn exists(docker: &Docker) -> anyhow::Result<bool> {
    match docker.inspect_image(&reference()).await {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(e).context("looking for the capsule image"),
    }
}

/// Builds and imports the image unless it is there. Returns whether it built one.
pub async fn ensure(docker: &Docker) -> anyhow::Result<bool> {
    if exists(docker).await? {
        return Ok(false);
    }
    build(docker).await?;
    Ok(true)
}

pub async fn build(docker: &Docker) -> anyhow::Result<()> {
    let rootfs = tokio::task::spawn_blocking(rootfs_tar).await??;
    let options = CreateImageOptionsBuilder::new()
        .from_src("-")
        .repo(REPO)
        .tag(TAG)
        .build();
    let mut progress =
        docker.create_image(Some(options), Some(bollard::body_full(rootfs.into())), None);
    while let Some(step) = progress.next().await {
        step.with_context(|| format!("importing {}", reference()))?;
    }
    Ok(())
}

/// A tar of the image's root filesystem.
fn rootfs_tar() -> anyhow::Result<Vec<u8>> {
    let mut files: BTreeSet<PathBuf> = BTreeSet::new();
    for tool in TOOLS {
        let path = which(tool).with_context(|| {
            format!("the capsule image is made from this host's `{tool}`, which is not installed (apt-get install tcpdump strace busybox-static)")
        })?;
        files.insert(path.clone());
        files.extend(shared_libraries(&path)?);
    }
    let mut tar = tar::Builder::new(Vec::new());
    tar.follow_symlinks(true);
    for dir in ["tmp", "out", "proc", "sys", "dev", "etc", "root"] {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(if dir == "tmp" { 0o1777 } else { 0o755 });
        header.set_size(0);
        tar.append_data(&mut header, format!("{dir}/"), std::io::empty())?;
    }
    for file in &files {
        let rel = file.strip_prefix("/").unwrap_or(file);
        tar.append_path_with_name(file, rel)
            .with_context(|| format!("adding {}", file.display()))?;
    }
    let etc: [(&str, &str); 3] = [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\ntcpdump:x:101:101::/nonexistent:/bin/false\n",
        ),
        ("etc/group", "root:x:0:\ntcpdump:x:101:\n"),
        (
            "etc/nsswitch.conf",
            "passwd: files\ngroup: files\nhosts: files\n",
        ),
    ];
    for (path, text) in etc {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(text.len() as u64);
        tar.append_data(&mut header, path, text.as_bytes())?;
    }
    Ok(tar.into_inner()?)
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// The absolute paths `ldd` reports for a binary (none for a static one).
fn shared_libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    // A static binary: ldd says so on stderr and fails.
    if !out.status.success()
        && !String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable")
    {
        bail!("ldd {} failed", binary.display());
    }
    Ok(parse_ldd(&text))
}

pub fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ldd_output() {
        let text = "\tlinux-vdso.so.1 (0x00007ffc)\n\tlibpcap.so.0.8 => /lib/x86_64-linux-gnu/libpcap.so.0.8 (0x7f)\n\t/lib64/ld-linux-x86-64.so.2 (0x7f)\n";
        assert_eq!(
            parse_ldd(text),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libpcap.so.0.8"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
        assert!(parse_ldd("\tnot a dynamic executable\n").is_empty());
    }
}
