//! Builds the eBPF object (`recap-ebpf`) with the pinned nightly, so one `cargo build` does all.

/// The nightly that builds `recap-ebpf`; its LLVM (22) must match bpf-linker's.
/// Keep in sync with `xtask/src/setup.rs`.
const EBPF_TOOLCHAIN: &str = "nightly-2026-05-20";

fn main() -> anyhow::Result<()> {
    agent_api()?;
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../recap-ebpf");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "recap-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(EBPF_TOOLCHAIN),
    )
}

/// The agent's gRPC API from `proto/recap/v1/agent.proto`, compiled with protox (pure Rust, so
/// no protoc is needed) and tonic.
fn agent_api() -> anyhow::Result<()> {
    let proto = concat!(env!("CARGO_MANIFEST_DIR"), "/proto/recap/v1/agent.proto");
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], [concat!(env!("CARGO_MANIFEST_DIR"), "/proto")])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
