//! Prometheus text exposition of a window, and the loopback HTTP endpoint serving it.

use std::{
    fmt::Write,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use anyhow::Context;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    task::JoinHandle,
};

use super::catalog::{self, Kind, Value, WINDOW};
use crate::report::WindowSummary;

/// `9464` or `:9464` mean loopback; a full address binds where it says.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let with_host = if s.starts_with(':') {
        format!("127.0.0.1{s}")
    } else if s.parse::<u16>().is_ok() {
        format!("127.0.0.1:{s}")
    } else {
        s.to_string()
    };
    with_host
        .parse()
        .map_err(|_| format!("cannot read `{s}` as an address; use e.g. 127.0.0.1:9464 or :9464"))
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The exposition text of a window's summary.
pub fn render(s: &WindowSummary) -> String {
    let mut common = vec![(WINDOW.prom, s.meta.window_id.clone())];
    if let Some(c) = &s.meta.target.container {
        common.push(("container_name", c.name.clone()));
    }
    let samples = catalog::samples(s);
    let mut out = String::new();
    for def in catalog::ALL {
        let of_def: Vec<_> = samples
            .iter()
            .filter(|x| std::ptr::eq(x.def, def))
            .collect();
        if of_def.is_empty() {
            continue;
        }
        let kind = match def.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        // Text format 0.0.4: HELP and TYPE name the series as written, `_total` included.
        let _ = writeln!(out, "# HELP {} {}", def.prom, def.help);
        let _ = writeln!(out, "# TYPE {} {kind}", def.prom);
        for sample in of_def {
            let mut labels: Vec<(&str, String)> = common.clone();
            labels.extend(sample.attrs.iter().map(|(a, v)| (a.prom, v.clone())));
            if std::ptr::eq(def, &catalog::WINDOW_INFO) {
                labels.extend(
                    catalog::target_attrs(s)
                        .into_iter()
                        .map(|(_, prom, v)| (prom, v)),
                );
            }
            let label_text = |extra: Option<(&str, String)>| {
                let all: Vec<String> = labels
                    .iter()
                    .cloned()
                    .chain(extra)
                    .map(|(k, v)| format!("{k}=\"{}\"", escape(&v)))
                    .collect();
                format!("{{{}}}", all.join(","))
            };
            match &sample.value {
                Value::Count(n) => {
                    let _ = writeln!(out, "{}{} {n}", def.prom, label_text(None));
                }
                Value::Seconds(v) => {
                    let _ = writeln!(out, "{}{} {v}", def.prom, label_text(None));
                }
                Value::Histogram {
                    bounds_s,
                    counts,
                    count,
                    sum_s,
                } => {
                    let mut cumulative = 0;
                    for (bound, n) in bounds_s.iter().zip(counts) {
                        cumulative += n;
                        let _ = writeln!(
                            out,
                            "{}_bucket{} {cumulative}",
                            def.prom,
                            label_text(Some(("le", format!("{bound:e}"))))
                        );
                    }
                    let _ = writeln!(
                        out,
                        "{}_bucket{} {count}",
                        def.prom,
                        label_text(Some(("le", "+Inf".into())))
                    );
                    let _ = writeln!(out, "{}_sum{} {sum_s}", def.prom, label_text(None));
                    let _ = writeln!(out, "{}_count{} {count}", def.prom, label_text(None));
                }
            }
        }
    }
    out
}

/// Serves the latest exposition text at `/metrics`.
pub struct Endpoint {
    pub addr: SocketAddr,
    text: Arc<Mutex<String>>,
    task: JoinHandle<()>,
}

impl Endpoint {
    pub async fn bind(addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the Prometheus endpoint to {addr} (is the port in use? pick another with --prometheus)"))?;
        let addr = listener.local_addr()?;
        let text = Arc::new(Mutex::new(String::new()));
        let shared = text.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let mut request = vec![0u8; 4096];
                    let n = conn.read(&mut request).await.unwrap_or(0);
                    let first = String::from_utf8_lossy(&request[..n]);
                    let response = if first.starts_with("GET /metrics ")
                        || first.starts_with("GET /metrics?")
                    {
                        let body = shared.lock().map(|t| t.clone()).unwrap_or_default();
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                    } else {
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_string()
                    };
                    let _ = conn.write_all(response.as_bytes()).await;
                    let _ = conn.shutdown().await;
                });
            }
        });
        Ok(Endpoint { addr, text, task })
    }

    pub fn publish(&self, summary: &WindowSummary) {
        if let Ok(mut t) = self.text.lock() {
            *t = render(summary);
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_default_to_loopback() {
        assert_eq!(parse_addr("9464").unwrap().to_string(), "127.0.0.1:9464");
        assert_eq!(parse_addr(":9464").unwrap().to_string(), "127.0.0.1:9464");
        assert_eq!(
            parse_addr("0.0.0.0:9000").unwrap().to_string(),
            "0.0.0.0:9000"
        );
        assert!(parse_addr("nowhere").is_err());
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
