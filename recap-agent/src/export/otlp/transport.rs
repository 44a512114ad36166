//! How messages reach the collector: one gRPC channel or one HTTP client for the exporter's
//! life, so periodic sends reuse the connection instead of opening one each time; TLS and
//! gzip as the configuration says.

use std::io::Write;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use opentelemetry_proto::tonic::collector::{
    logs::v1::{logs_service_client::LogsServiceClient, ExportLogsServiceRequest},
    metrics::v1::{metrics_service_client::MetricsServiceClient, ExportMetricsServiceRequest},
};
use prost::Message as _;
use tonic::codec::CompressionEncoding;

use super::{
    config::{Compression, OtlpConfig, Protocol},
    tls::TlsMaterial,
};

#[derive(Clone)]
pub enum Transport {
    Grpc(Box<GrpcTransport>),
    Http(Box<HttpTransport>),
}

#[derive(Clone)]
pub struct GrpcTransport {
    channel: tonic::transport::Channel,
    headers: tonic::metadata::MetadataMap,
    gzip: bool,
}

#[derive(Clone)]
pub struct HttpTransport {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    headers: HeaderMap,
    gzip: bool,
}

impl Transport {
    /// Reads the TLS files (an error names the variable and the file). Needs a tokio runtime.
    pub fn new(cfg: &OtlpConfig) -> anyhow::Result<Self> {
        let tls = cfg
            .is_tls()
            .then(|| TlsMaterial::load(&cfg.tls))
            .transpose()
            .context("OTLP over TLS")?;
        let gzip = cfg.compression == Compression::Gzip;
        Ok(match cfg.protocol {
            Protocol::Grpc => {
                let mut endpoint = tonic::transport::Endpoint::from_shared(cfg.endpoint.clone())
                    .with_context(|| {
                        format!(
                            "OTLP endpoint `{}`",
                            crate::text::url::without_userinfo(&cfg.endpoint)
                        )
                    })?
                    .connect_timeout(cfg.timeout)
                    .timeout(cfg.timeout);
                if let Some(tls) = &tls {
                    endpoint = endpoint
                        .tls_config(tls.tonic_config())
                        .context("OTLP over TLS")?;
                }
                // Lazy: connecting (and reconnecting after a collector restart) happens on send.
                Transport::Grpc(Box::new(GrpcTransport {
                    channel: endpoint.connect_lazy(),
                    headers: metadata(&cfg.headers)?,
                    gzip,
                }))
            }
            Protocol::HttpProtobuf => {
                let tls_config = match &tls {
                    Some(tls) => tls.rustls_config()?,
                    // Never used for http:// (no roots read for nothing).
                    None => rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                        rustls::crypto::ring::default_provider(),
                    ))
                    .with_safe_default_protocol_versions()
                    .context("TLS protocol versions")?
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
                };
                let mut http = HttpConnector::new();
                http.enforce_http(false);
                http.set_connect_timeout(Some(cfg.timeout));
                let connector = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(tls_config)
                    .https_or_http()
                    .enable_http1()
                    .wrap_connector(http);
                Transport::Http(Box::new(HttpTransport {
                    client: Client::builder(TokioExecutor::new()).build(connector),
                    headers: header_map(&cfg.headers)?,
                    gzip,
                }))
            }
        })
    }

    pub async fn send(&self, cfg: &OtlpConfig, message: Message) -> anyhow::Result<()> {
        match self {
            Transport::Grpc(grpc) => grpc.send(message).await,
            Transport::Http(http) => {
                let path = match &message {
                    Message::Metrics(_) => "/v1/metrics",
                    Message::Logs(_) => "/v1/logs",
                };
                http.post(cfg, path, message.encode()).await
            }
        }
    }
}

/// What is sent: a window's metrics or one of its log records.
#[derive(Clone)]
pub enum Message {
    Metrics(ExportMetricsServiceRequest),
    Logs(ExportLogsServiceRequest),
}

impl Message {
    pub fn what(&self) -> &'static str {
        match self {
            Message::Metrics(_) => "metrics",
            Message::Logs(_) => "logs",
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            Message::Metrics(m) => m.encode_to_vec(),
            Message::Logs(l) => l.encode_to_vec(),
        }
    }
}

/// `text` followed by the error's causes: the reason a connection failed (refused, a TLS
/// handshake's "invalid peer certificate: UnknownIssuer") is deep in the chain of tonic's and
/// hyper's errors, and it is what the user needs to see.
/// `text` and the causes under `error` that say something new (tonic and hyper repeat their
/// cause in their own message: a TLS error would read three times).
fn with_causes(mut text: String, error: &dyn std::error::Error) -> String {
    let mut source = error.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(&format!(": {said}"));
        }
        source = cause.source();
    }
    text
}

fn header_map(headers: &[(String, String)]) -> anyhow::Result<HeaderMap> {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).with_context(|| format!("OTLP header `{k}`"))?,
            HeaderValue::from_str(v).with_context(|| format!("OTLP header `{k}`"))?,
        );
    }
    Ok(map)
}

fn metadata(headers: &[(String, String)]) -> anyhow::Result<tonic::metadata::MetadataMap> {
    let mut map = tonic::metadata::MetadataMap::new();
    for (k, v) in headers {
        let key = tonic::metadata::MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
            .map_err(|_| anyhow!("bad OTLP header name `{k}`"))?;
        map.insert(
            key,
            v.parse()
                .map_err(|_| anyhow!("bad OTLP header value for `{k}`"))?,
        );
    }
    Ok(map)
}

impl GrpcTransport {
    async fn send(&self, message: Message) -> anyhow::Result<()> {
        let result = match message {
            Message::Metrics(m) => {
                let mut client = MetricsServiceClient::new(self.channel.clone());
                if self.gzip {
                    client = client.send_compressed(CompressionEncoding::Gzip);
                }
                client.export(self.request(m)).await.map(drop)
            }
            Message::Logs(l) => {
                let mut client = LogsServiceClient::new(self.channel.clone());
                if self.gzip {
                    client = client.send_compressed(CompressionEncoding::Gzip);
                }
                client.export(self.request(l)).await.map(drop)
            }
        };
        result.map_err(|status| {
            anyhow!(with_causes(
                format!("gRPC export: {}", status.message()),
                &status
            ))
        })
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        *request.metadata_mut() = self.headers.clone();
        request
    }
}

impl HttpTransport {
    /// POST of a protobuf body to `<endpoint><path>`, gzipped if configured.
    async fn post(&self, cfg: &OtlpConfig, path: &str, body: Vec<u8>) -> anyhow::Result<()> {
        let uri = format!("{}{path}", cfg.endpoint);
        let mut request = hyper::Request::post(&uri)
            .header(hyper::header::CONTENT_TYPE, "application/x-protobuf");
        let body = if self.gzip {
            request = request.header(hyper::header::CONTENT_ENCODING, "gzip");
            gzip(&body)?
        } else {
            body
        };
        let mut request = request
            .body(Full::new(Bytes::from(body)))
            .with_context(|| {
                format!(
                    "OTLP endpoint `{}`",
                    crate::text::url::without_userinfo(&uri)
                )
            })?;
        request.headers_mut().extend(self.headers.clone());
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| anyhow!(with_causes(format!("sending to {uri}: {e}"), &e)))?;
        let status = response.status();
        // Read the answer to its end so the connection can be reused.
        let _ = response.into_body().collect().await;
        if !status.is_success() {
            bail!("HTTP export to {uri} answered {status}");
        }
        Ok(())
    }
}

fn gzip(body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(body).context("gzip")?;
    encoder.finish().context("gzip")
}
