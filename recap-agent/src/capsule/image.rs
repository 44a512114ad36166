//! The capsule image, made from this host's own tcpdump, strace and busybox plus the shared
//! libraries they load, and imported into the engine (no registry is needed, or reachable):
//! into Docker through its API, into containerd's CRI store with containerd's `ctr` (CRI
//! itself can only pull).

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

/// RECap's capsule images: one per set of tools, each made only when a window needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Image {
    /// tcpdump, strace and busybox (16 MiB).
    Base,
    /// gdb with the Python library it embeds, and busybox (~130 MiB): only for `gdb` capsules.
    Gdb,
}

impl Image {
    pub const ALL: [Image; 2] = [Image::Base, Image::Gdb];

    pub fn repo(self) -> &'static str {
        match self {
            Image::Base => REPO,
            Image::Gdb => "recap-capsule-gdb",
        }
    }

    pub fn reference(self) -> String {
        format!("{}:{TAG}", self.repo())
    }

    /// The same image as a CRI runtime names it (a name without a registry is Docker Hub's).
    pub fn cri_reference(self) -> String {
        format!("docker.io/library/{}", self.reference())
    }

    /// The host's programs the image is made of.
    fn tools(self) -> &'static [&'static str] {
        match self {
            Image::Base => &["tcpdump", "strace", "busybox"],
            Image::Gdb => &["gdb", "busybox"],
        }
    }

    /// Directories of the host copied whole (without tests and caches): what gdb loads at
    /// start (its own scripts, and the library of the Python it links: `libs`).
    fn trees(self, libs: &BTreeSet<PathBuf>) -> Vec<PathBuf> {
        match self {
            Image::Base => Vec::new(),
            Image::Gdb => {
                let mut trees = vec![PathBuf::from("/usr/share/gdb")];
                trees.extend(libs.iter().find_map(|l| python_library(l)));
                trees
            }
        }
    }

    /// Whether `image` (as an engine or CRI runtime lists it) is one of RECap's.
    pub fn is_ours(image: &str) -> bool {
        let image = image.strip_prefix("docker.io/library/").unwrap_or(image);
        Image::ALL
            .iter()
            .any(|i| image.starts_with(&format!("{}:", i.repo())))
    }
}

/// `/usr/lib/python3.11` for `.../libpython3.11.so.1.0`: the library of an embedded Python.
fn python_library(lib: &Path) -> Option<PathBuf> {
    let name = lib.file_name()?.to_str()?;
    let version = name.strip_prefix("libpython")?.split(".so").next()?;
    Some(PathBuf::from(format!("/usr/lib/python{version}")))
}

/// Parts of a Python library gdb never loads.
const TREE_SKIPPED: &[&str] = &[
    "__pycache__",
    "test",
    "tests",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "pydoc_data",
    "site-packages",
    "dist-packages",
];

pub fn reference() -> String {
    Image::Base.reference()
}

/// containerd's namespace for what its CRI plugin (the kubelet's runtime) manages.
const CRI_NAMESPACE: &str = "k8s.io";

pub async fn exists(docker: &Docker, image: Image) -> anyhow::Result<bool> {
    match docker.inspect_image(&image.reference()).await {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(e).context("looking for the capsule image"),
    }
}

/// Builds and imports the image unless it is there. Returns whether it built one.
pub async fn ensure(docker: &Docker, image: Image) -> anyhow::Result<bool> {
    if exists(docker, image).await? {
        return Ok(false);
    }
    build(docker, image).await?;
    Ok(true)
}

pub async fn build(docker: &Docker, image: Image) -> anyhow::Result<()> {
    let rootfs = tokio::task::spawn_blocking(move || rootfs_tar(image)).await??;
    let options = CreateImageOptionsBuilder::new()
        .from_src("-")
        .repo(image.repo())
        .tag(TAG)
        .build();
    let mut progress =
        docker.create_image(Some(options), Some(bollard::body_full(rootfs.into())), None);
    while let Some(step) = progress.next().await {
        step.with_context(|| format!("importing {}", image.reference()))?;
    }
    Ok(())
}

/// The host's busybox, if it is a static one (it runs in a caller's image, whatever that holds).
pub fn static_busybox() -> anyhow::Result<PathBuf> {
    let path = which("busybox").context(
        "a capsule of your image needs this host's static busybox (apt-get install busybox-static)",
    )?;
    if !shared_libraries(&path)?.is_empty() {
        bail!(
            "{} is not a static busybox: a capsule of your image needs one (apt-get install busybox-static)",
            path.display()
        );
    }
    Ok(path)
}

/// Whether the engine has `reference` (a caller's image: RECap never pulls one).
pub async fn present(docker: &Docker, reference: &str) -> anyhow::Result<()> {
    match docker.inspect_image(reference).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => bail!(
            "the capsule image {reference} is not in the local engine: build or load it first (docker build -t {reference} .); RECap never pulls"
        ),
        Err(e) => Err(e).context("looking for the capsule image"),
    }
}

/// Whether the CRI runtime at `endpoint` has `reference`.
pub async fn present_cri(endpoint: &Path, reference: &str) -> anyhow::Result<()> {
    if cri_has(endpoint, reference).await? {
        return Ok(());
    }
    bail!("the capsule image {reference} is not in the node's runtime: import it first (ctr -n k8s.io images import, or nerdctl -n k8s.io load); RECap never pulls")
}

async fn cri_has(endpoint: &Path, reference: &str) -> anyhow::Result<bool> {
    use k8s_cri::v1::{image_service_client::ImageServiceClient, ImageSpec, ImageStatusRequest};
    let channel = crate::unix_grpc::unix_channel(endpoint, "cri.image")
        .await
        .with_context(|| format!("connecting to the CRI runtime at {}", endpoint.display()))?;
    let status = ImageServiceClient::new(channel)
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: reference.to_string(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .map_err(|e| anyhow::anyhow!("looking for the capsule image through CRI: {}", e.message()))?
        .into_inner();
    Ok(status.image.is_some())
}

/// Imports the image into the CRI runtime at `endpoint` unless it has it. Returns whether it
/// imported it.
pub async fn ensure_cri(endpoint: &Path, image: Image) -> anyhow::Result<bool> {
    if cri_has(endpoint, &image.cri_reference()).await? {
        return Ok(false);
    }
    let archive = tokio::task::spawn_blocking(move || docker_archive(image)).await??;
    let endpoint = endpoint.to_path_buf();
    tokio::task::spawn_blocking(move || import_with_ctr(&endpoint, image, &archive)).await??;
    Ok(true)
}

/// `ctr images import -` with the archive on its standard input.
fn import_with_ctr(endpoint: &Path, image: Image, archive: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let ctr = which("ctr").context(
        "putting the capsule image into containerd needs containerd's `ctr` (apt-get install containerd)",
    )?;
    let mut child = Command::new(ctr)
        .arg("--address")
        .arg(endpoint)
        .args(["--namespace", CRI_NAMESPACE, "images", "import", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running ctr")?;
    let written = child.stdin.take().map(|mut stdin| stdin.write_all(archive));
    let out = child.wait_with_output().context("running ctr")?;
    if !out.status.success() {
        bail!(
            "ctr images import {}: {}",
            image.cri_reference(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    if let Some(Err(e)) = written {
        bail!("writing the image to ctr: {e}");
    }
    Ok(())
}

/// The image as `docker save` writes one (what `ctr images import` reads): the root
/// filesystem as one layer, a config naming its digest, and a manifest with the image's name.
fn docker_archive(image: Image) -> anyhow::Result<Vec<u8>> {
    use sha2::{Digest, Sha256};
    let hex = |data: &[u8]| format!("{:x}", Sha256::digest(data));
    let layer = rootfs_tar(image)?;
    let architecture = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": architecture,
        "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", hex(&layer))]},
        "history": [{"created_by": "recap: this host's tcpdump, strace and busybox"}],
    }))?;
    let config_name = format!("{}.json", hex(&config));
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": config_name,
        "RepoTags": [image.reference()],
        "Layers": ["layer.tar"],
    }]))?;
    let mut tar = tar::Builder::new(Vec::new());
    for (name, data) in [
        ("manifest.json", &manifest),
        (config_name.as_str(), &config),
        ("layer.tar", &layer),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        tar.append_data(&mut header, name, data.as_slice())?;
    }
    Ok(tar.into_inner()?)
}

/// A tar of the image's root filesystem.
fn rootfs_tar(image: Image) -> anyhow::Result<Vec<u8>> {
    let mut files: BTreeSet<PathBuf> = BTreeSet::new();
    for tool in image.tools() {
        let path = which(tool).with_context(|| {
            format!("the capsule image {} is made from this host's `{tool}`, which is not installed (apt-get install tcpdump strace busybox-static gdb)", image.reference())
        })?;
        files.insert(path.clone());
        files.extend(shared_libraries(&path)?);
    }
    for tree in image.trees(&files.clone()) {
        let tree = tree.as_path();
        if !tree.is_dir() {
            bail!(
                "the capsule image {} needs this host's {} (apt-get install gdb)",
                image.reference(),
                tree.display()
            );
        }
        files_under(tree, &mut files)?;
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

/// The regular files under `dir` (links followed to files, not to directories), but the
/// subdirectories gdb never loads.
fn files_under(dir: &Path, files: &mut BTreeSet<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            if !TREE_SKIPPED.contains(&entry.file_name().to_str().unwrap_or_default()) {
                files_under(&path, files)?;
            }
        } else if path.is_file() {
            files.insert(path);
        }
    }
    Ok(())
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
    fn an_embedded_pythons_library_is_found_from_its_shared_object() {
        assert_eq!(
            python_library(Path::new("/lib/x86_64-linux-gnu/libpython3.11.so.1.0")),
            Some(PathBuf::from("/usr/lib/python3.11"))
        );
        assert_eq!(python_library(Path::new("/lib/libc.so.6")), None);
    }

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
