//! Where and how OTLP is sent: the command line's flags first, then the standard OTel
//! variables (`OTEL_EXPORTER_OTLP_*`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_METRIC_EXPORT_INTERVAL`).
//! Everything is checked here, before a window arms: a mistake is the caller's to fix.

use std::{path::PathBuf, time::Duration};

use hyper::header::{HeaderName, HeaderValue};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "grpc" => Ok(Protocol::Grpc),
            "http/protobuf" => Ok(Protocol::HttpProtobuf),
            other => Err(format!(
                "unknown OTLP protocol `{other}`; use grpc or http/protobuf"
            )),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
}

/// The files of an `https://` endpoint (OTel's variables name files, not contents). They are
/// read when the exporter is made, so that a caller of the agent can be refused before any
/// file it named is opened (`names_files`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// `OTEL_EXPORTER_OTLP_CERTIFICATE`: the CA the collector's certificate must chain to;
    /// none: the system's roots.
    pub ca: Option<PathBuf>,
    /// `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE` and `..._CLIENT_KEY`: RECap's own identity, for
    /// collectors that require client certificates (both or neither).
    pub client: Option<(PathBuf, PathBuf)>,
}

impl TlsFiles {
    pub fn names_files(&self) -> bool {
        self.ca.is_some() || self.client.is_some()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct OtlpConfig {
    /// `http://host:port` or `https://host:port`.
    pub endpoint: String,
    pub protocol: Protocol,
    pub headers: Vec<(String, String)>,
    pub resource: Vec<(String, String)>,
    pub interval: Duration,
    pub tls: TlsFiles,
    pub compression: Compression,
    /// How long one send may take (`OTEL_EXPORTER_OTLP_TIMEOUT`, ms).
    pub timeout: Duration,
}

impl OtlpConfig {
    pub fn is_tls(&self) -> bool {
        self.endpoint.starts_with("https://")
    }
}

/// RECap's default send timeout, shorter than OTel's 10 s: a window's final flush is tried
/// twice, and a collector that does not answer must not hold up the end of a window for long.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(1500);
/// OTel's default export interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// The longest `OTEL_EXPORTER_OTLP_TIMEOUT` taken.
const MAX_TIMEOUT: Duration = Duration::from_secs(30);
/// The export interval's bounds (`OTEL_METRIC_EXPORT_INTERVAL`): a window is exported at least
/// at its end, so an interval over an hour means nothing more.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
const MAX_INTERVAL: Duration = Duration::from_secs(3600);

/// Flags first, then the standard variables. None if no endpoint is configured anywhere.
pub fn config(
    endpoint: Option<String>,
    protocol: Option<Protocol>,
    headers: &[(String, String)],
    resource: &[(String, String)],
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<OtlpConfig>, String> {
    let Some(endpoint) = endpoint.or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT")) else {
        return Ok(None);
    };
    let protocol = match protocol {
        Some(p) => p,
        None => env("OTEL_EXPORTER_OTLP_PROTOCOL")
            .map(|p| p.parse())
            .transpose()?
            .unwrap_or(Protocol::Grpc),
    };
    let mut all_headers = env("OTEL_EXPORTER_OTLP_HEADERS")
        .map(|h| parse_pairs(&h))
        .transpose()?
        .unwrap_or_default();
    all_headers.extend(headers.iter().cloned());
    let mut all_resource = env("OTEL_RESOURCE_ATTRIBUTES")
        .map(|r| parse_pairs(&r))
        .transpose()?
        .unwrap_or_default();
    all_resource.extend(resource.iter().cloned());
    let interval = match env("OTEL_METRIC_EXPORT_INTERVAL") {
        Some(ms) => Duration::from_millis(
            ms.trim()
                .parse()
                .map_err(|_| format!("OTEL_METRIC_EXPORT_INTERVAL=`{ms}` is not milliseconds"))?,
        ),
        None => DEFAULT_INTERVAL,
    };
    let tls = tls_files(&env)?;
    let compression = match env("OTEL_EXPORTER_OTLP_COMPRESSION")
        .as_deref()
        .map(str::trim)
    {
        None | Some("") | Some("none") => Compression::None,
        Some("gzip") => Compression::Gzip,
        Some(other) => {
            return Err(format!(
                "OTEL_EXPORTER_OTLP_COMPRESSION=`{other}`: use gzip or none"
            ))
        }
    };
    let timeout = match env("OTEL_EXPORTER_OTLP_TIMEOUT") {
        None => DEFAULT_TIMEOUT,
        Some(ms) => match ms.trim().parse::<u64>() {
            Ok(ms) if ms > 0 && Duration::from_millis(ms) <= MAX_TIMEOUT => {
                Duration::from_millis(ms)
            }
            _ => {
                return Err(format!(
                    "OTEL_EXPORTER_OTLP_TIMEOUT=`{ms}`: give milliseconds from 1 to {}",
                    MAX_TIMEOUT.as_millis()
                ))
            }
        },
    };
    let config = OtlpConfig {
        endpoint: endpoint.trim_end_matches('/').to_string(),
        protocol,
        headers: all_headers,
        resource: all_resource,
        interval,
        tls,
        compression,
        timeout,
    };
    check(&config)?;
    Ok(Some(config))
}

/// What any configuration must hold, however it was made (flags and variables here, the
/// fields of an API request in the agent).
pub fn check(c: &OtlpConfig) -> Result<(), String> {
    // As shown in messages: never its credentials.
    let endpoint = &crate::text::url::without_userinfo(&c.endpoint);
    if !c.is_tls() && !c.endpoint.starts_with("http://") {
        return Err(format!(
            "OTLP endpoint `{endpoint}`: give http://HOST:PORT or https://HOST:PORT"
        ));
    }
    // A key in a query string would be kept and shown like the rest of the URL: OTLP's
    // credentials go in headers (OTEL_EXPORTER_OTLP_HEADERS, --otlp-header), which are redacted.
    if c.endpoint.contains(['?', '#']) {
        return Err(format!(
            "OTLP endpoint `{endpoint}`: no query or fragment (OTLP takes credentials as headers: --otlp-header KEY=VALUE)"
        ));
    }
    for (k, v) in &c.headers {
        validate_header(k, v)?;
    }
    if c.tls.names_files() && !c.is_tls() {
        return Err(format!(
            "OTEL_EXPORTER_OTLP_CERTIFICATE/CLIENT_* are set but the OTLP endpoint `{endpoint}` is http://: use https:// for TLS"
        ));
    }
    if c.timeout.is_zero() || c.timeout > MAX_TIMEOUT {
        return Err(format!(
            "the OTLP timeout must be from 1 ms to {} ms",
            MAX_TIMEOUT.as_millis()
        ));
    }
    if c.interval < MIN_INTERVAL || c.interval > MAX_INTERVAL {
        return Err(format!(
            "the OTLP export interval must be from {} ms to {} s",
            MIN_INTERVAL.as_millis(),
            MAX_INTERVAL.as_secs()
        ));
    }
    Ok(())
}

fn tls_files(env: &impl Fn(&str) -> Option<String>) -> Result<TlsFiles, String> {
    let path = |k: &str| env(k).filter(|v| !v.trim().is_empty()).map(PathBuf::from);
    let client = match (
        path("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"),
        path("OTEL_EXPORTER_OTLP_CLIENT_KEY"),
    ) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => {
            return Err(
                "set both OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY (a client certificate needs its key)"
                    .into(),
            )
        }
    };
    Ok(TlsFiles {
        ca: path("OTEL_EXPORTER_OTLP_CERTIFICATE"),
        client,
    })
}

/// `k=v,k2=v2` as in the OTEL_* variables (values may be percent-encoded).
pub fn parse_pairs(s: &str) -> Result<Vec<(String, String)>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| format!("`{p}` is not key=value"))?;
            Ok((k.trim().to_string(), percent_decode(v.trim())))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Header names and values as HTTP allows them (no CR/LF, no separators in names): a value
/// that could smuggle another header line is refused when the configuration is read.
fn validate_header(k: &str, v: &str) -> Result<(), String> {
    HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
        format!(
            "OTLP header name `{}` is not a valid HTTP header name",
            k.escape_debug()
        )
    })?;
    // The value is never repeated: it may be a secret (in any spelling, escaped or not).
    HeaderValue::from_str(v).map_err(|_| {
        format!(
            "OTLP header `{}` has a value with characters HTTP does not allow in a header (control characters such as CR/LF)",
            k.escape_debug()
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_from_flags_and_standard_variables() {
        let env = |k: &str| match k {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://collector:4318/".to_string()),
            "OTEL_EXPORTER_OTLP_PROTOCOL" => Some("http/protobuf".to_string()),
            "OTEL_EXPORTER_OTLP_HEADERS" => Some("api-key=abc%20def,x=1".to_string()),
            "OTEL_RESOURCE_ATTRIBUTES" => Some("deployment.environment=prod".to_string()),
            "OTEL_METRIC_EXPORT_INTERVAL" => Some("2500".to_string()),
            _ => None,
        };
        let c = config(None, None, &[], &[], env).unwrap().unwrap();
        assert_eq!(c.endpoint, "http://collector:4318");
        assert_eq!(c.protocol, Protocol::HttpProtobuf);
        assert_eq!(c.headers[0], ("api-key".to_string(), "abc def".to_string()));
        assert_eq!(c.resource[0].0, "deployment.environment");
        assert_eq!(c.interval, Duration::from_millis(2500));
        assert_eq!(
            (c.compression, c.timeout, c.tls.names_files()),
            (Compression::None, DEFAULT_TIMEOUT, false)
        );
        // Flags win over the variables.
        let c = config(
            Some("http://127.0.0.1:4317".into()),
            Some(Protocol::Grpc),
            &[],
            &[],
            env,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (c.endpoint.as_str(), c.protocol),
            ("http://127.0.0.1:4317", Protocol::Grpc)
        );
        assert_eq!(
            config(None, None, &[], &[], |_| None).unwrap(),
            None,
            "no endpoint, no export"
        );
        assert!(config(Some("ftp://x".into()), None, &[], &[], |_| None).is_err());
        assert!(parse_pairs("novalue").is_err());
        // A header value that would smuggle another header line is refused, from a flag or
        // from the variable (percent-decoded first).
        let injected = [("x".to_string(), "1\r\nX-Injected: yes".to_string())];
        let e = config(
            Some("http://127.0.0.1:4318".into()),
            None,
            &injected,
            &[],
            |_| None,
        )
        .unwrap_err();
        assert!(e.contains("control characters"), "{e}");
        let env = |k: &str| {
            (k == "OTEL_EXPORTER_OTLP_HEADERS").then(|| "x=1%0d%0aX-Injected: yes".to_string())
        };
        assert!(config(Some("http://127.0.0.1:4318".into()), None, &[], &[], env).is_err());
        let bad_name = [("bad name".to_string(), "v".to_string())];
        assert!(config(Some("http://h:1".into()), None, &bad_name, &[], |_| None).is_err());
    }

    #[test]
    fn tls_compression_and_timeout_from_the_standard_variables() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(name, _)| *name == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let c = config(
            Some("https://collector:4317".into()),
            None,
            &[],
            &[],
            vars(&[
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/otel/ca.pem"),
                ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/etc/otel/me.pem"),
                ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/etc/otel/me.key"),
                ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "5000"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert!(c.is_tls());
        assert_eq!(c.tls.ca.as_deref(), Some("/etc/otel/ca.pem".as_ref()));
        assert_eq!(
            c.tls.client,
            Some(("/etc/otel/me.pem".into(), "/etc/otel/me.key".into()))
        );
        assert_eq!(c.compression, Compression::Gzip);
        assert_eq!(c.timeout, Duration::from_secs(5));
        // https with the system's roots: no files.
        let c = config(Some("https://c:4317".into()), None, &[], &[], |_| None)
            .unwrap()
            .unwrap();
        assert!(c.is_tls() && !c.tls.names_files());
        let refused = |pairs: &'static [(&'static str, &'static str)], endpoint: &str| {
            config(Some(endpoint.into()), None, &[], &[], vars(pairs)).unwrap_err()
        };
        let e = refused(
            &[("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/a.pem")],
            "https://c:1",
        );
        assert!(e.contains("both"), "{e}");
        let e = refused(
            &[("OTEL_EXPORTER_OTLP_CERTIFICATE", "/ca.pem")],
            "http://c:1",
        );
        assert!(e.contains("https://"), "{e}");
        let e = refused(&[("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")], "http://c:1");
        assert!(e.contains("gzip"), "{e}");
        for bad in ["0", "abc", "60000"] {
            let e = config(Some("http://c:1".into()), None, &[], &[], |k: &str| {
                (k == "OTEL_EXPORTER_OTLP_TIMEOUT").then(|| bad.to_string())
            })
            .unwrap_err();
            assert!(e.contains("milliseconds"), "{bad}: {e}");
        }
    }
}
