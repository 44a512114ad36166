//! OTLP as one of the window's observers: the start record once armed, the metrics each
//! export interval (read even when the window is idle), the final values and the end record
//! as it closes, all through the export's sink (its own task and flush deadline).

use crate::{
    export::otlp::{OtlpConfig, Sink},
    report::WindowSummary,
};

use super::{Flush, WindowObserver};

pub struct OtlpObserver {
    /// Taken by the final flush.
    sink: Option<Sink>,
}

impl OtlpObserver {
    /// Reads the TLS files the configuration names (needs a tokio runtime).
    pub fn start(config: OtlpConfig) -> anyhow::Result<Self> {
        Ok(OtlpObserver {
            sink: Some(Sink::start(config)?),
        })
    }
}

impl WindowObserver for OtlpObserver {
    fn opened(&mut self, open: &WindowSummary) {
        if let Some(sink) = &mut self.sink {
            sink.log(open, "start");
        }
    }

    fn wants_snapshots(&self) -> bool {
        self.due()
    }

    fn due(&self) -> bool {
        self.sink.as_ref().is_some_and(Sink::due)
    }

    fn snapshot(&mut self, summary: &WindowSummary) {
        if let Some(sink) = &mut self.sink {
            if sink.due() {
                sink.metrics(summary);
            }
        }
    }

    fn flush(&mut self, summary: &WindowSummary) -> Option<Flush> {
        let sink = self.sink.take()?;
        Some(Flush {
            done: Box::pin(sink.finish(summary)),
            cut_short: "OTLP: the final flush was cut short (interrupted); the collector may miss the last values".into(),
        })
    }
}
