//! OTLP export of a window, over gRPC or HTTP/protobuf, plain or TLS, optionally gzipped: the
//! configuration (`config`, flags and OTel's variables), the messages (`encode`), TLS to the
//! collector (`tls`) and the transports (`transport`).
//!
//! A collector that is down never fails or stalls the window: every send has a short timeout,
//! the final flush is tried twice, and what was not delivered is reported.

mod config;
mod encode;
mod tls;
mod transport;

use std::time::Duration;

pub use config::{
    check, config, parse_pairs, Compression, OtlpConfig, Protocol, TlsFiles, DEFAULT_INTERVAL,
    DEFAULT_TIMEOUT,
};
pub use encode::Encoder;
use transport::{Message, Transport};

use crate::report::WindowSummary;

pub struct Exporter {
    config: OtlpConfig,
    encoder: Encoder,
    transport: Transport,
    failures: Vec<String>,
    sent: usize,
}

impl Exporter {
    /// Reads the TLS files the configuration names. Needs a tokio runtime (the gRPC channel's
    /// worker is spawned on it).
    pub fn new(config: OtlpConfig) -> anyhow::Result<Self> {
        Ok(Exporter {
            transport: Transport::new(&config)?,
            encoder: Encoder::new(config.resource.clone()),
            config,
            failures: Vec::new(),
            sent: 0,
        })
    }

    pub fn config(&self) -> &OtlpConfig {
        &self.config
    }

    /// One send of the window's metrics; failures are recorded, never raised.
    pub async fn export_metrics(&mut self, s: &WindowSummary, attempts: usize) {
        let message = Message::Metrics(self.encoder.metrics_request(s));
        self.export(message, attempts).await;
    }

    /// A window start or end record; failures are recorded, never raised.
    pub async fn export_log(&mut self, s: &WindowSummary, event: &str, attempts: usize) {
        let message = Message::Logs(self.encoder.log_request(s, event));
        self.export(message, attempts).await;
    }

    /// A metrics send in the background, for the periodic exports; `absorb` its result.
    pub fn spawn_metrics(&self, s: &WindowSummary) -> tokio::task::JoinHandle<Option<String>> {
        self.spawn(Message::Metrics(self.encoder.metrics_request(s)))
    }

    /// A log record sent in the background (the window's start: arming must not wait on a
    /// collector); `absorb` its result.
    pub fn spawn_log(
        &self,
        s: &WindowSummary,
        event: &str,
    ) -> tokio::task::JoinHandle<Option<String>> {
        self.spawn(Message::Logs(self.encoder.log_request(s, event)))
    }

    pub fn absorb(&mut self, failure: Option<String>) {
        match failure {
            None => self.sent += 1,
            Some(f) => self.failures.push(f),
        }
    }

    fn spawn(&self, message: Message) -> tokio::task::JoinHandle<Option<String>> {
        let (transport, config) = (self.transport.clone(), self.config.clone());
        tokio::spawn(async move { attempt(&transport, &config, &message).await.err() })
    }

    async fn export(&mut self, message: Message, attempts: usize) {
        let mut last = None;
        for n in 0..attempts.max(1) {
            if n > 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            match attempt(&self.transport, &self.config, &message).await {
                Ok(()) => {
                    self.sent += 1;
                    return;
                }
                Err(e) => last = Some(e),
            }
        }
        let reason = last.unwrap_or_default();
        log::debug!("OTLP export to {} failed: {reason}", self.config.endpoint);
        self.failures.push(reason);
    }

    /// What was not delivered, as one warning, if anything.
    pub fn undelivered(&self) -> Option<String> {
        let last = self.failures.last()?;
        Some(format!(
            "OTLP: {} of {} exports to {} were not delivered (last: {last}); the numbers above are complete, the collector's are not",
            self.failures.len(),
            self.failures.len() + self.sent,
            self.config.endpoint
        ))
    }
}

/// One send within the configured timeout; the failure says what was sent and why it failed.
async fn attempt(
    transport: &Transport,
    config: &OtlpConfig,
    message: &Message,
) -> Result<(), String> {
    let what = message.what();
    match tokio::time::timeout(config.timeout, transport.send(config, message.clone())).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("{what}: {e:#}")),
        Err(_) => Err(format!(
            "{what}: no answer within {}",
            humantime::format_duration(config.timeout)
        )),
    }
}
