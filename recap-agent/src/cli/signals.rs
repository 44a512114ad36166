//! The signals that end a window run from the command line: SIGINT and SIGTERM, and SIGHUP
//! where the window runs in this process (a closed terminal must not leave it running).

use anyhow::Context;
use tokio::signal::unix::{signal, Signal, SignalKind};

pub struct StopSignals {
    int: Signal,
    term: Signal,
    hup: Option<Signal>,
}

impl StopSignals {
    /// Installs the handlers (from then on these signals no longer kill the process).
    pub fn install(hangup: bool) -> anyhow::Result<Self> {
        Ok(StopSignals {
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            hup: if hangup {
                Some(signal(SignalKind::hangup()).context("installing the SIGHUP handler")?)
            } else {
                None
            },
        })
    }

    /// The next of these signals (one that came before is not lost).
    pub async fn next(&mut self) {
        let hup = async {
            match &mut self.hup {
                Some(hup) => {
                    hup.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
            _ = hup => {}
        }
    }
}
