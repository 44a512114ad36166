//! Installs what RECap needs on a Debian machine of this kind, skipping what is there.

use std::process::Command;

use anyhow::Context;

use crate::run::{output, require_root, status};

/// The nightly that builds the eBPF crate; keep in sync with recap-agent/build.rs.
pub const EBPF_TOOLCHAIN: &str = "nightly-2026-05-20";
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM: &str = "22";

/// Debian packages, and why.
const PACKAGES: &[(&str, &str)] = &[
    (
        "llvm-22-dev",
        "bpf-linker links eBPF objects with LLVM 22, the LLVM of the pinned nightly",
    ),
    ("libpolly-22-dev", "bpf-linker"),
    ("libzstd-dev", "bpf-linker"),
    ("zlib1g-dev", "bpf-linker"),
    ("bpftool", "tests check that nothing of ours stays loaded"),
    ("bpftrace", "the benchmark compares against bpftrace"),
    (
        "util-linux",
        "setpriv: tests run recap unprivileged; nsenter: clients inside a container's network",
    ),
    (
        "docker.io",
        "a real Docker engine: container targets and capsules",
    ),
    ("containerd", "the Docker engine's runtime"),
    ("runc", "the Docker engine's runtime"),
    ("tini", "docker-init"),
    (
        "iptables",
        "dockerd needs it to start; the tcp_health test drops packets with it",
    ),
    (
        "iproute2",
        "the tcp_health test: network namespaces (ip), socket states (ss), kernel counters (nstat)",
    ),
    (
        "tcpdump",
        "the tcpdump capsule is built from the host's binary",
    ),
    (
        "strace",
        "the strace capsule is built from the host's binary",
    ),
    (
        "busybox-static",
        "the capsule image's shell tools and the test app image",
    ),
    ("tshark", "tests read the capsule's pcap"),
    (
        "gdb",
        "the gdb capsule's image is built from the host's gdb and the Python it embeds",
    ),
    (
        "libc6-dev",
        "the gdb capsule's test builds a static C program",
    ),
    (
        "python3",
        "the agent's flood tests run a Debian Python (/usr/bin/python3) as another user",
    ),
    (
        "prometheus",
        "tests scrape recap with a real Prometheus and check the exposition with promtool",
    ),
    ("dnsmasq-base", "the dns test's DNS server"),
    (
        "protobuf-compiler",
        "the etcd client's build compiles etcd's API (protoc)",
    ),
    (
        "libprotobuf-dev",
        "protoc's well-known types (google/protobuf/*.proto)",
    ),
    ("etcd-server", "fleet tests run a three-member etcd cluster"),
    (
        "etcd-client",
        "fleet tests set up etcd users and roles (etcdctl)",
    ),
    (
        "openssl",
        "fleet tests make the etcd cluster's TLS certificates",
    ),
    (
        "nginx-light",
        "the http benchmark's server; the https tests' TLS server",
    ),
    ("curl", "the https tests' client (OpenSSL through libcurl)"),
    (
        "nodejs",
        "the https tests' Node.js server and client (its own OpenSSL)",
    ),
    ("wrk", "the http benchmark's load"),
    (
        "python3-grpcio",
        "the grpc tests' server and client (gRPC core, OpenSSL as a shared library)",
    ),
    (
        "python3-grpc-tools",
        "the agent test's Python client of the API (stubs generated from the proto)",
    ),
    (
        "golang-go",
        "the https tests build a Go server and client (crypto/tls, HTTP/2)",
    ),
    (
        "nghttp2-client",
        "the h2c test's client (nghttp) and the HTTP/2 benchmark's load (h2load)",
    ),
    (
        "apache2-bin",
        "the h2c tests' server: Apache httpd upgrades HTTP/1.1 to HTTP/2 (Upgrade: h2c)",
    ),
];

pub fn run() -> anyhow::Result<()> {
    require_root("setup")?;
    apt_packages()?;
    python_packages()?;
    ebpf_toolchain()?;
    bpf_linker()?;
    eprintln!("xtask: setup complete");
    Ok(())
}

/// PyPI packages, and why (pinned: the test's verdicts must not move under it).
const PYTHON_PACKAGES: &[(&str, &str, &str)] = &[(
    "kubernetes-validate==1.37.0",
    "kubernetes_validate",
    "the deploy test checks the Kubernetes manifests offline against the API schema",
)];

fn python_packages() -> anyhow::Result<()> {
    for (package, module, _why) in PYTHON_PACKAGES {
        let version = package.split("==").nth(1).unwrap_or_default();
        let have = output(Command::new("python3").args(["-m", module, "--version"]))
            .is_some_and(|v| v.contains(version));
        if !have {
            eprintln!("xtask: installing {package} (PyPI)");
            status(Command::new("python3").args([
                "-m",
                "pip",
                "install",
                "-q",
                "--root-user-action=ignore",
                package,
            ]))?;
        }
    }
    Ok(())
}

fn installed(package: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_some_and(|s| s.contains("install ok installed"))
}

fn apt_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| !installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
    status(Command::new("apt-get").args(["update", "-qq"]))?;
    // Packages with a service (nginx, prometheus) must not start it: tests start their own.
    let policy = std::path::Path::new("/usr/sbin/policy-rc.d");
    let own_policy = !policy.exists();
    if own_policy {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(policy, "#!/bin/sh\nexit 101\n")?;
        std::fs::set_permissions(policy, std::fs::Permissions::from_mode(0o755))?;
    }
    let installed = status(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    );
    if own_policy {
        let _ = std::fs::remove_file(policy);
    }
    installed
}

fn ebpf_toolchain() -> anyhow::Result<()> {
    let has_toolchain = output(Command::new("rustup").args(["toolchain", "list"]))
        .is_some_and(|s| s.lines().any(|l| l.starts_with(EBPF_TOOLCHAIN)));
    // rust-src builds core for the BPF target; clippy is the eBPF crate's lint gate.
    let has_components = has_toolchain
        && output(Command::new("rustup").args([
            "component",
            "list",
            "--installed",
            "--toolchain",
            EBPF_TOOLCHAIN,
        ]))
        .is_some_and(|s| {
            ["rust-src", "clippy"]
                .iter()
                .all(|c| s.lines().any(|l| l.starts_with(c)))
        });
    if has_components {
        return Ok(());
    }
    eprintln!("xtask: installing Rust {EBPF_TOOLCHAIN} with rust-src and clippy (builds and lints the eBPF programs)");
    status(Command::new("rustup").args([
        "toolchain",
        "install",
        EBPF_TOOLCHAIN,
        "--profile",
        "minimal",
        "--component",
        "rust-src",
        "--component",
        "clippy",
    ]))
}

fn bpf_linker() -> anyhow::Result<()> {
    let current = output(Command::new("bpf-linker").arg("--version"));
    if current.is_some_and(|v| v.contains(BPF_LINKER_VERSION)) {
        return Ok(());
    }
    eprintln!(
        "xtask: installing bpf-linker {BPF_LINKER_VERSION} against LLVM {LLVM} (about a minute)"
    );
    let llvm = format!("/usr/lib/llvm-{LLVM}");
    let path = format!("{llvm}/bin:{}", std::env::var("PATH").unwrap_or_default());
    status(
        Command::new("cargo")
            .args([
                "install",
                "--locked",
                "--force",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            ])
            .args([
                "--no-default-features",
                "--features",
                &format!("llvm-{LLVM}"),
            ])
            // Without this PATH, llvm-sys finds Debian's default LLVM 14 and fails to link.
            .env("PATH", path)
            .env(format!("LLVM_SYS_{LLVM}1_PREFIX"), &llvm),
    )
    .context("installing bpf-linker")
}
