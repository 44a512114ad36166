//! OTLP export of a window, over gRPC or HTTP/protobuf, plain or TLS, optionally gzipped: the
//! configuration (`config`, flags and OTel's variables), the messages (`encode`), TLS to the
//! collector (`tls`), the transports (`transport`), and a window's sink (`sink`: the sends in
//! a task of their own, the final flush with a deadline).
//!
//! A collector that is down never fails or stalls the window: every send has a short timeout,
//! the final flush is tried twice, and what was not delivered is reported.

mod config;
mod encode;
mod sink;
mod tls;
mod transport;

use std::time::Duration;

pub use config::{
    check, config, parse_pairs, Compression, OtlpConfig, Protocol, TlsFiles, DEFAULT_INTERVAL,
    DEFAULT_TIMEOUT,
};
pub use encode::Encoder;
pub use sink::Sink;
use transport::{Message, Transport};

/// Sends, and remembers what was delivered and what was not.
struct Exporter {
    config: OtlpConfig,
    transport: Transport,
    failures: Vec<String>,
    sent: usize,
}

impl Exporter {
    /// Reads the TLS files the configuration names. Needs a tokio runtime (the gRPC channel's
    /// worker is spawned on it).
    fn new(config: OtlpConfig) -> anyhow::Result<Self> {
        Ok(Exporter {
            transport: Transport::new(&config)?,
            config,
            failures: Vec::new(),
            sent: 0,
        })
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
        log::debug!(
            "OTLP export to {} failed: {reason}",
            crate::text::url::without_userinfo(&self.config.endpoint)
        );
        self.failures.push(reason);
    }

    /// What was not delivered, as one warning, if anything.
    fn undelivered(&self) -> Option<String> {
        let last = self.failures.last()?;
        Some(format!(
            "OTLP: {} of {} exports to {} were not delivered (last: {last}); the numbers above are complete, the collector's are not",
            self.failures.len(),
            self.failures.len() + self.sent,
            crate::text::url::without_userinfo(&self.config.endpoint)
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
