//! Certificates for TLS servers the tests and benchmarks start.

use std::{
    path::Path,
    process::{Command, Stdio},
};

/// A self-signed certificate and its key for `CN=localhost`, as `dir/cert.pem` and
/// `dir/key.pem` (RSA 2048, two days).
pub fn self_signed(dir: &Path) -> anyhow::Result<()> {
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stderr(Stdio::null())
        .status()
        .map_err(|e| anyhow::anyhow!("running openssl (cargo xtask setup installs it): {e}"))?;
    anyhow::ensure!(made.success(), "openssl could not make a certificate");
    Ok(())
}
