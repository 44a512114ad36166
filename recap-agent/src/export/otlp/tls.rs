//! TLS to the collector: the files OTel's variables name, read once when the exporter is made
//! (regular files only, size-capped, never a FIFO that would block), and the client settings
//! built from them for each transport: rustls for HTTP/protobuf, tonic's for gRPC (whose
//! channel takes PEM rather than a rustls configuration).

use std::{io::Read, os::unix::fs::OpenOptionsExt, path::Path, sync::Arc};

use anyhow::{anyhow, bail, Context};
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

use super::config::TlsFiles;

/// A PEM file larger than this is not a certificate chain or a key.
const MAX_PEM_BYTES: u64 = 1 << 20;

/// The PEM texts of an `https://` endpoint.
#[derive(Clone)]
pub struct TlsMaterial {
    ca: Option<Vec<u8>>,
    client: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsMaterial {
    pub fn load(files: &TlsFiles) -> anyhow::Result<Self> {
        let ca = files
            .ca
            .as_deref()
            .map(|p| read_pem(p, "OTEL_EXPORTER_OTLP_CERTIFICATE"))
            .transpose()?;
        let client = match &files.client {
            Some((cert, key)) => Some((
                read_pem(cert, "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE")?,
                read_pem(key, "OTEL_EXPORTER_OTLP_CLIENT_KEY")?,
            )),
            None => None,
        };
        let material = TlsMaterial { ca, client };
        // Parsed now, so that a file of the wrong kind is an error at arm, not a failed send.
        material.rustls_config()?;
        Ok(material)
    }

    /// For HTTP/protobuf (and the check at load): the CA given, else the system's roots. No
    /// ALPN: hyper-rustls sets it from the HTTP versions it is built for.
    pub fn rustls_config(&self) -> anyhow::Result<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca {
            Some(pem) => {
                let certs = certificates(pem, "OTEL_EXPORTER_OTLP_CERTIFICATE")?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    bail!("OTEL_EXPORTER_OTLP_CERTIFICATE holds no usable CA certificate");
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    bail!("no system CA certificates found (/etc/ssl/certs): give the collector's CA in OTEL_EXPORTER_OTLP_CERTIFICATE");
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_root_certificates(roots);
        let config = match &self.client {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    certificates(cert, "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE")?,
                    PrivateKeyDer::from_pem_slice(key).map_err(|e| {
                        anyhow!("OTEL_EXPORTER_OTLP_CLIENT_KEY: no private key in PEM ({e})")
                    })?,
                )
                .context("the client certificate and key do not go together")?,
            None => builder.with_no_client_auth(),
        };
        Ok(config)
    }

    /// For gRPC: the same trust and identity in tonic's terms.
    pub fn tonic_config(&self) -> tonic::transport::ClientTlsConfig {
        let mut config = tonic::transport::ClientTlsConfig::new();
        config = match &self.ca {
            Some(pem) => config.ca_certificate(tonic::transport::Certificate::from_pem(pem)),
            None => config.with_native_roots(),
        };
        if let Some((cert, key)) = &self.client {
            config = config.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        config
    }
}

fn certificates(pem: &[u8], what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{what}: not PEM certificates ({e})"))?;
    if certs.is_empty() {
        bail!("{what}: no certificate in the file");
    }
    Ok(certs)
}

/// A regular file of at most `MAX_PEM_BYTES`, opened without blocking (a FIFO given as a path
/// fails instead of waiting for a writer).
fn read_pem(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    let context = || format!("{what}={}", path.display());
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .with_context(context)?;
    let meta = file.metadata().with_context(context)?;
    if !meta.is_file() {
        bail!("{}: not a regular file", context());
    }
    let mut pem = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut pem)
        .with_context(context)?;
    if pem.len() as u64 > MAX_PEM_BYTES {
        bail!("{}: larger than 1 MiB, not a PEM file", context());
    }
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_that_are_not_pem_certificates_are_refused_at_load() {
        let dir = std::env::temp_dir().join(format!("recap-otlp-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let e = TlsMaterial::load(&TlsFiles {
            ca: Some(junk.clone()),
            client: None,
        })
        .err()
        .unwrap();
        assert!(format!("{e:#}").contains("no certificate"), "{e:#}");
        let e = TlsMaterial::load(&TlsFiles {
            ca: Some(dir.clone()),
            client: None,
        })
        .err()
        .unwrap();
        assert!(format!("{e:#}").contains("not a regular file"), "{e:#}");
        let e = TlsMaterial::load(&TlsFiles {
            ca: Some(dir.join("missing.pem")),
            client: None,
        })
        .err()
        .unwrap();
        assert!(
            format!("{e:#}").contains("OTEL_EXPORTER_OTLP_CERTIFICATE="),
            "{e:#}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
