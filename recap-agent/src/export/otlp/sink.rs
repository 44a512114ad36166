//! A window's OTLP sink: the sends run in a task of their own, one after another, fed through
//! a short queue, so that a slow or absent collector never holds up the window; the final
//! flush has a deadline, and what was not delivered comes back as one warning.

use std::time::{Duration, Instant};

use tokio::{sync::mpsc, task::JoinHandle};

use super::{transport::Message, Encoder, Exporter, OtlpConfig};
use crate::report::WindowSummary;

/// Periodic sends waiting at most (a collector slower than the interval drops the oldest
/// news, never the final values).
const QUEUE: usize = 2;
/// Attempts of each final send.
const FINAL_ATTEMPTS: usize = 2;

struct Job {
    message: Message,
    attempts: usize,
}

pub struct Sink {
    encoder: Encoder,
    interval: Duration,
    timeout: Duration,
    endpoint: String,
    next: Instant,
    jobs: mpsc::Sender<Job>,
    task: JoinHandle<Exporter>,
    /// Periodic sends dropped because the queue was full.
    dropped: usize,
}

impl Sink {
    /// Reads the TLS files the configuration names; starts the sending task (needs a tokio
    /// runtime).
    pub fn start(config: OtlpConfig) -> anyhow::Result<Sink> {
        let encoder = Encoder::new(config.resource.clone());
        let (interval, timeout, endpoint) =
            // As shown in warnings: never its credentials.
            (config.interval, config.timeout, crate::text::url::without_userinfo(&config.endpoint));
        let mut exporter = Exporter::new(config)?;
        let (jobs, mut queue) = mpsc::channel::<Job>(QUEUE);
        let task = tokio::spawn(async move {
            while let Some(job) = queue.recv().await {
                exporter.export(job.message, job.attempts).await;
            }
            exporter
        });
        Ok(Sink {
            encoder,
            interval,
            timeout,
            endpoint,
            next: Instant::now(),
            jobs,
            task,
            dropped: 0,
        })
    }

    /// Whether a periodic export is due.
    pub fn due(&self) -> bool {
        Instant::now() >= self.next
    }

    /// The window's start (or any event) as a log record, sent in the background.
    pub fn log(&mut self, s: &WindowSummary, event: &str) {
        let message = Message::Logs(self.encoder.log_request(s, event));
        self.queue(message);
    }

    /// The window's metrics so far, sent in the background; the next are due an interval on.
    pub fn metrics(&mut self, s: &WindowSummary) {
        let message = Message::Metrics(self.encoder.metrics_request(s));
        self.queue(message);
        self.next = Instant::now() + self.interval;
    }

    fn queue(&mut self, message: Message) {
        if self
            .jobs
            .try_send(Job {
                message,
                attempts: 1,
            })
            .is_err()
        {
            self.dropped += 1;
        }
    }

    /// The final metrics and the window's end record, then what was not delivered, if
    /// anything, as a warning. Bounded: the queue's sends and the final ones each within the
    /// send timeout, with a second attempt for the final ones.
    pub fn finish(self, s: &WindowSummary) -> impl std::future::Future<Output = Option<String>> {
        let finals = [
            Message::Metrics(self.encoder.metrics_request(s)),
            Message::Logs(self.encoder.log_request(s, "end")),
        ];
        let sends = (QUEUE + finals.len() * FINAL_ATTEMPTS) as u32;
        let deadline = self.timeout * sends + Duration::from_secs(1);
        let Sink {
            jobs,
            mut task,
            dropped,
            endpoint,
            ..
        } = self;
        async move {
            for message in finals {
                let job = Job {
                    message,
                    attempts: FINAL_ATTEMPTS,
                };
                if jobs.send(job).await.is_err() {
                    break;
                }
            }
            drop(jobs);
            let exporter = match tokio::time::timeout(deadline, &mut task).await {
                Ok(Ok(exporter)) => exporter,
                Ok(Err(e)) => return Some(format!("OTLP: the sending task ended: {e}")),
                Err(_) => {
                    task.abort();
                    return Some(format!(
                        "OTLP: the final flush to {endpoint} did not finish within {}; the collector may miss the last values",
                        humantime::format_duration(deadline)
                    ));
                }
            };
            let mut warning = exporter.undelivered();
            if dropped > 0 {
                let more = format!(
                    "OTLP: {dropped} periodic export(s) to {endpoint} were skipped (the collector was slower than the interval); the final values were sent"
                );
                warning = Some(match warning {
                    Some(w) => format!("{w}; {more}"),
                    None => more,
                });
            }
            warning
        }
    }
}
