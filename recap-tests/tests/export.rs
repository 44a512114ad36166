//! Export with real parts: Debian's Prometheus scraping `recap`, every dashboard query run
//! through its HTTP API; an OTLP gRPC receiver (the collector's services from
//! opentelemetry-proto) and an HTTP/protobuf one; and a collector that is down.

use std::{
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use recap_tests::{otlp::*, scripted::TestCa, *};
use serde_json::Value;

const PLAN: WorkloadPlan = WorkloadPlan {
    connects: 5,
    refused: 2,
    kept_open: 1,
    bytes_per_connect: 1000,
    datagrams: 3,
    datagram_size: 100,
    execs: 3,
    getppid: 5_000,
    spin_ms: 100,
};

/// Runs one window on a fresh workload with `extra` arguments; returns the summary and the
/// moment the window's final values were being served (for Prometheus queries).
fn window_on_workload(extra: &[&str], before_end: impl FnOnce()) -> (Value, f64) {
    let cg = TestCgroup::new("export");
    let sink = TcpSink::start();
    let (_udp, udp_port) = udp_sink();
    let mut workload = Workload::start(&cg, &PLAN, &sink, closed_port(), udp_port);
    let dir = cg.dir.to_str().unwrap().to_owned();
    let mut args = vec![
        "window", "--cgroup", &dir, "-d", "60s", "--probes", "all", "-o", "json",
    ];
    args.extend(extra);
    let mut run = RecapRun::start(&args);
    run.wait_armed();
    workload.go();
    workload.wait_done();
    let app = AppTraffic::run(&cg);
    before_end();
    run.signal(libc::SIGINT);
    let (code, out, err) = run.finish();
    let finished = now_s();
    assert_eq!(code, 0, "{err}");
    workload.stop();
    drop(app);
    (summary(&out), finished)
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A throwaway Prometheus scraping `target` every second.
struct Prometheus {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Self {
        let dir = std::env::temp_dir().join(format!("recap-prom-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n  - job_name: recap\n    static_configs:\n      - targets: ['{target}']\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let port = free_port().port();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("log")).unwrap())
            .spawn()
            .expect("prometheus (apt-get install prometheus)");
        let prom = Prometheus { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while prom.get("/-/ready").map(|(code, _)| code) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "prometheus did not become ready; see {}",
                prom.dir.join("log").display()
            );
            thread::sleep(Duration::from_millis(200));
        }
        // Static targets are applied after discovery's start-up delay (~5 s): wait for the first
        // scrape attempt (`up` exists, 0 while nothing listens yet) so the window is scraped.
        while prom.query("up{job=\"recap\"}", now_s()).is_empty() {
            assert!(
                Instant::now() < deadline,
                "prometheus never tried to scrape {target}"
            );
            thread::sleep(Duration::from_millis(200));
        }
        prom
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(SocketAddr::from(([127, 0, 0, 1], self.port)), path)
    }

    /// An instant query at `time`; the result vector.
    fn query(&self, expr: &str, time: f64) -> Vec<Value> {
        let path = format!("/api/v1/query?query={}&time={time:.3}", urlencode(expr));
        let (code, body) = self.get(&path).expect("prometheus answers");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(code, 200, "{expr}: {body}");
        assert_eq!(v["status"], "success", "{expr}: {body}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    fn scalar(&self, expr: &str, time: f64) -> f64 {
        let r = self.query(expr, time);
        assert_eq!(r.len(), 1, "{expr}: {r:?}");
        r[0]["value"][1].as_str().unwrap().parse().unwrap()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Every PromQL expression of every dashboard panel.
fn dashboard_queries() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards");
    let mut out = Vec::new();
    for file in ["recap-overview.json", "recap-window.json"] {
        let d: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(file)).unwrap()).unwrap();
        for panel in d["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                out.push((
                    format!("{file}: {}", panel["title"]),
                    target["expr"].as_str().unwrap().to_string(),
                ));
            }
        }
    }
    assert!(out.len() >= 15, "dashboards have {} queries", out.len());
    out
}

#[test]
fn prometheus_scrapes_the_window_and_every_dashboard_query_returns_data() {
    if !require_root() {
        return;
    }
    let recap_addr = free_port();
    let prom = Prometheus::start(recap_addr);
    let addr = recap_addr.to_string();
    let mut scraped = String::new();
    let (s, finished) = window_on_workload(
        &["--prometheus", &addr, "--prometheus-linger", "4s"],
        || {
            thread::sleep(Duration::from_secs(3)); // several scrapes while the window is open
            scraped = http_get(recap_addr, "/metrics").unwrap().1;
        },
    );
    // promtool agrees with the exposition.
    let promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .output_with_stdin(&scraped);
    let complaints = String::from_utf8_lossy(&promtool.stdout).to_string()
        + &String::from_utf8_lossy(&promtool.stderr);
    assert!(
        promtool.status.success() && complaints.trim().is_empty(),
        "promtool check metrics: {complaints}"
    );

    // Inside the linger: the final values, not yet stale.
    let at = finished - 1.5;
    let id = s["window_id"].as_str().unwrap();
    for (panel, expr) in dashboard_queries() {
        let expr = expr.replace("$window", id);
        assert!(
            !prom.query(&expr, at).is_empty(),
            "{panel}: `{expr}` returned no data"
        );
    }
    let w = format!("{{window_id=\"{id}\"}}");
    let q = |metric: &str| prom.scalar(&format!("sum({metric}{w})"), at);
    assert_eq!(
        q("recap_tcp_connect_attempts_total") as u64,
        u(&s, "/tcp/connect_attempts")
    );
    assert_eq!(
        q("recap_tcp_connects_failed_total") as u64,
        PLAN.refused as u64
    );
    assert_eq!(
        q("recap_tcp_open_connections") as u64,
        u(&s, "/tcp/open_at_end")
    );
    let getppid = prom.scalar(
        &format!("recap_syscalls_total{{window_id=\"{id}\",syscall=\"getppid\"}}"),
        at,
    );
    assert_eq!(getppid as u64, PLAN.getppid as u64);
    let payload = prom.scalar(
        &format!("recap_net_payload_bytes_total{{window_id=\"{id}\",direction=\"transmit\",transport=\"tcp\"}}"),
        at,
    );
    assert_eq!(payload as u64, u(&s, "/net/tx/payload_bytes/tcp"));
    assert_eq!(
        q("recap_process_execs_total") as u64,
        PLAN.execs as u64 + AppTraffic::EXECS
    );
    let cpu = q("recap_cpu_time_seconds_total");
    assert!(
        (cpu - u(&s, "/cpu/on_cpu_ns") as f64 / 1e9).abs() < 1e-9,
        "cpu {cpu}"
    );
    assert_eq!(
        q("recap_runqueue_latency_seconds_count") as u64,
        u(&s, "/cpu/runq_latency/count")
    );
    assert_app_metrics(&prom, id, at, &s);
    assert_no_residue();
}

/// The request and lookup series equal the summary, which `AppTraffic` makes exact: every
/// request of the client's mix counted once as served and once as made, every lookup answered.
fn assert_app_metrics(prom: &Prometheus, id: &str, at: f64, s: &Value) {
    let sum = |metric: &str, labels: &str| {
        prom.scalar(&format!("sum({metric}{{window_id=\"{id}\"{labels}}})"), at) as u64
    };
    let served = sum("http_server_request_duration_seconds_count", "");
    assert_eq!(served, u(s, "/http/server/completed"));
    assert_eq!(served, AppTraffic::REQUESTS, "the client's mix, served");
    assert_eq!(
        sum("http_client_request_duration_seconds_count", ""),
        AppTraffic::REQUESTS
    );
    assert_eq!(
        sum(
            "http_server_request_duration_seconds_count",
            ",http_request_method=\"POST\",http_response_status_code=\"503\""
        ),
        2
    );
    assert_eq!(sum("recap_http_requests_in_flight", ",side=\"client\""), 1);
    assert_eq!(sum("recap_dns_answers_total", ",rcode=\"NXDOMAIN\""), 2);
    assert_eq!(sum("dns_lookup_duration_seconds_count", ""), 5);
}

/// A collector that never answers: a second Ctrl-C while the final flush waits cuts it short,
/// and the summary says so (no waiting out every timeout).
#[test]
fn a_second_ctrl_c_cuts_the_final_flush_short() {
    if !require_root() {
        return;
    }
    // Connections are accepted by the kernel (backlog) and never answered.
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", black_hole.local_addr().unwrap());
    let cg = TestCgroup::new("flush");
    let dir = cg.dir.to_str().unwrap().to_owned();
    let mut run = RecapRun::start(&[
        "window",
        "--local",
        "--cgroup",
        &dir,
        "-d",
        "60s",
        "--probes",
        "tcp",
        "--otlp-endpoint",
        &endpoint,
        "--otlp-protocol",
        "http/protobuf",
        "-o",
        "json",
    ]);
    run.wait_armed();
    run.signal(libc::SIGINT);
    thread::sleep(Duration::from_millis(300)); // closing: the final flush is waiting
    let (s, _) = run.interrupt();
    assert_eq!(s["status"], "interrupted");
    assert!(
        s["warnings"].to_string().contains("cut short"),
        "{:#}",
        s["warnings"]
    );
    drop(black_hole);
    assert_no_residue();
}

/// The agent serves every open window and its own metrics continuously: a real Prometheus
/// scraping it answers every dashboard query, with the window's exact numbers, and sees what
/// the probes cost in the kernel.
#[test]
fn prometheus_scraping_the_agent_answers_every_dashboard_query() {
    if !require_root() {
        return;
    }
    let mut agent = recap_tests::agent::AgentProcess::start("export", None, &[]);
    let prom = Prometheus::start(agent.metrics);
    let cg = TestCgroup::new("export-agent");
    let sink = TcpSink::start();
    let (_udp, udp_port) = udp_sink();
    let mut workload = Workload::start(&cg, &PLAN, &sink, closed_port(), udp_port);
    let id = agent.start_window(&[
        "--cgroup",
        cg.dir.to_str().unwrap(),
        "-d",
        "60s",
        "--probes",
        "all",
    ]);
    workload.go();
    workload.wait_done();
    let app = AppTraffic::run(&cg);
    thread::sleep(Duration::from_secs(3)); // several scrapes while the window is open
    let (code, out, err) = agent.recap(&["window", "cancel", &id, "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    drop(app);
    let s = summary(&out);
    thread::sleep(Duration::from_secs(2)); // the final values scraped (series linger 15 s)
    let at = now_s();
    for (panel, expr) in dashboard_queries() {
        let expr = expr.replace("$window", &id);
        assert!(
            !prom.query(&expr, at).is_empty(),
            "{panel}: `{expr}` returned no data from the agent"
        );
    }
    let getppid = prom.scalar(
        &format!("recap_syscalls_total{{window_id=\"{id}\",syscall=\"getppid\"}}"),
        at,
    );
    assert_eq!(getppid as u64, PLAN.getppid as u64);
    assert_eq!(
        prom.scalar(
            &format!("sum(recap_tcp_connect_attempts_total{{window_id=\"{id}\"}})"),
            at
        ) as u64,
        u(&s, "/tcp/connect_attempts")
    );
    assert_app_metrics(&prom, &id, at, &s);
    assert!(prom.scalar("recap_agent_windows_opened_total", at) >= 1.0);
    assert!(
        prom.scalar("recap_probe_runs_total{program=\"recap_sys_exit\"}", at) > 0.0,
        "the probes' kernel run counts are exported"
    );
    workload.stop();
    agent.stop_with(libc::SIGTERM);
    assert_no_residue();
}

trait OutputWithStdin {
    fn output_with_stdin(&mut self, input: &str) -> std::process::Output;
}

impl OutputWithStdin for Command {
    fn output_with_stdin(&mut self, input: &str) -> std::process::Output {
        let mut child = self
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }
}

/// Everything was delivered, and equals the summary; nothing is left loaded.
fn assert_otlp_equals_summary(received: &Received, s: &Value) {
    assert!(
        s["warnings"].as_array().unwrap().is_empty(),
        "{:#}",
        s["warnings"]
    );
    let id = s["window_id"].as_str().unwrap();
    let w = ("recap.window.id", id);
    let m = |name: &str| last_metric(received, name);
    assert_eq!(
        number(&m("recap.tcp.connect.attempts"), &[w]) as u64,
        u(s, "/tcp/connect_attempts")
    );
    assert_eq!(
        number(&m("recap.tcp.connect.failed"), &[w]) as u64,
        PLAN.refused as u64
    );
    assert_eq!(
        number(&m("recap.tcp.open"), &[w]) as u64,
        u(s, "/tcp/open_at_end")
    );
    assert_eq!(
        number(
            &m("recap.syscall.calls"),
            &[w, ("recap.syscall.name", "getppid")]
        ) as u64,
        PLAN.getppid as u64
    );
    let payload = number(
        &m("recap.net.payload"),
        &[
            w,
            ("network.io.direction", "transmit"),
            ("network.transport", "tcp"),
        ],
    );
    assert_eq!(payload as u64, u(s, "/net/tx/payload_bytes/tcp"));
    assert_eq!(
        number(
            &m("recap.process.exec.programs"),
            &[w, ("process.executable.name", "true")]
        ) as u64,
        PLAN.execs as u64
    );
    let cpu = number(&m("recap.cpu.time"), &[w]);
    assert!((cpu - u(s, "/cpu/on_cpu_ns") as f64 / 1e9).abs() < 1e-9);
    let hist = m("recap.cpu.runqueue.latency");
    let Some(opentelemetry_proto::tonic::metrics::v1::metric::Data::Histogram(h)) = hist.data
    else {
        panic!("runqueue latency is not a histogram");
    };
    let point = &h.data_points[0];
    assert_eq!(point.count, u(s, "/cpu/runq_latency/count"));
    assert_eq!(point.bucket_counts.iter().sum::<u64>(), point.count);
    assert_eq!(point.explicit_bounds.len(), 31, "the kernel's log2 buckets");
    assert_eq!(
        point.sum,
        Some(u(s, "/cpu/runq_latency/sum_ns") as f64 / 1e9)
    );
    assert_eq!(
        resource_attr(received, "service.name").as_deref(),
        Some("recap")
    );
    assert_eq!(
        resource_attr(received, "deployment.environment").as_deref(),
        Some("test"),
        "OTEL_RESOURCE_ATTRIBUTES"
    );
    assert!(
        has_log_event(received, "recap.window.start")
            && has_log_event(received, "recap.window.end")
    );
}

#[test]
fn otlp_grpc_receiver_gets_metrics_and_logs_equal_to_the_summary() {
    if !require_root() {
        return;
    }
    let (addr, received) = grpc_receiver();
    std::env::set_var("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test");
    let endpoint = format!("http://{addr}");
    let (s, _) = window_on_workload(
        &["--otlp-endpoint", &endpoint, "--otlp-protocol", "grpc"],
        || {},
    );
    assert_otlp_equals_summary(&received.lock().unwrap(), &s);
}

#[test]
fn otlp_http_protobuf_receiver_gets_the_same() {
    if !require_root() {
        return;
    }
    let (addr, received) = http_receiver();
    std::env::set_var("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test");
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"));
    std::env::set_var("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf");
    let (s, _) = window_on_workload(&[], || {});
    std::env::remove_var("OTEL_EXPORTER_OTLP_ENDPOINT");
    std::env::remove_var("OTEL_EXPORTER_OTLP_PROTOCOL");
    assert_otlp_equals_summary(&received.lock().unwrap(), &s);
}

#[test]
fn collector_down_the_window_still_completes_with_a_warning() {
    if !require_root() {
        return;
    }
    let nobody = free_port(); // nothing listens here
    let started = Instant::now();
    let (code, out, err) = recap(&[
        "window",
        "--pid",
        "1",
        "-d",
        "1s",
        "--otlp-endpoint",
        &format!("http://{nobody}"),
        "-o",
        "json",
    ]);
    let took = started.elapsed();
    assert_eq!(code, 0, "{err}");
    let s = summary(&out);
    assert_eq!(s["status"], "completed");
    let warnings = s["warnings"].to_string();
    assert!(warnings.contains("not delivered"), "{warnings}");
    assert!(err.contains("warning: OTLP"), "{err}");
    assert!(took < Duration::from_secs(8), "exit delayed: {took:?}");
    assert_no_residue();
}

/// Runs `f` with the OTel variables `vars` set, then removes them (the tests of this binary run
/// one at a time).
fn with_otel_env<T>(vars: &[(&str, String)], f: impl FnOnce() -> T) -> T {
    for (k, v) in vars {
        std::env::set_var(k, v);
    }
    let out = f();
    for (k, _) in vars {
        std::env::remove_var(k);
    }
    out
}

/// The collector's CA and a client certificate of it, as OTel's variables name them, gzip on.
fn tls_env(ca: &TestCa, client: &(PathBuf, PathBuf)) -> Vec<(&'static str, String)> {
    let text = |p: &Path| p.to_str().unwrap().to_string();
    vec![
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", text(&ca.cert())),
        ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", text(&client.0)),
        ("OTEL_EXPORTER_OTLP_CLIENT_KEY", text(&client.1)),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip".into()),
    ]
}

fn assert_all_gzip(received: &Received) {
    assert!(!received.encodings.is_empty());
    assert!(
        received.encodings.iter().all(|e| e == "gzip"),
        "{:?}",
        received.encodings
    );
}

#[test]
fn otlp_grpc_over_tls_with_a_client_certificate_and_gzip_arrives_exactly() {
    if !require_root() {
        return;
    }
    let ca = TestCa::new("otlp-grpc");
    let (addr, received) = grpc_tls_receiver(&ca);
    std::env::set_var("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test");
    let vars = tls_env(&ca, &ca.client());
    let endpoint = format!("https://127.0.0.1:{}", addr.port());
    let (s, _) = with_otel_env(&vars, || {
        window_on_workload(
            &["--otlp-endpoint", &endpoint, "--otlp-protocol", "grpc"],
            || {},
        )
    });
    let received = received.lock().unwrap();
    assert_otlp_equals_summary(&received, &s);
    assert_all_gzip(&received);
    assert_eq!(
        s["warnings"].to_string().matches("OTLP").count(),
        0,
        "{}",
        s["warnings"]
    );
}

#[test]
fn otlp_http_protobuf_over_tls_with_a_client_certificate_and_gzip_arrives_exactly() {
    if !require_root() {
        return;
    }
    let ca = TestCa::new("otlp-http");
    let (addr, received) = http_tls_receiver(&ca);
    std::env::set_var("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test");
    let mut vars = tls_env(&ca, &ca.client());
    // By name: the certificate is for localhost as well as 127.0.0.1.
    vars.push((
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        format!("https://localhost:{}", addr.port()),
    ));
    vars.push(("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".into()));
    let (s, _) = with_otel_env(&vars, || window_on_workload(&[], || {}));
    let received = received.lock().unwrap();
    assert_otlp_equals_summary(&received, &s);
    assert_all_gzip(&received);
}

#[test]
fn a_collector_certificate_of_another_ca_is_a_warning_naming_it_not_a_failed_window() {
    if !require_root() {
        return;
    }
    let ca = TestCa::new("otlp-theirs");
    let other = TestCa::new("otlp-other");
    for protocol in ["grpc", "http/protobuf"] {
        let (addr, received) = match protocol {
            "grpc" => grpc_tls_receiver(&ca),
            _ => http_tls_receiver(&ca),
        };
        // Trusting `other`, which did not sign the receiver's certificate.
        let vars = tls_env(&other, &other.client());
        let (code, out, err) = with_otel_env(&vars, || {
            recap(&[
                "window",
                "--pid",
                "1",
                "-d",
                "1s",
                "--otlp-endpoint",
                &format!("https://127.0.0.1:{}", addr.port()),
                "--otlp-protocol",
                protocol,
                "-o",
                "json",
            ])
        });
        assert_eq!(code, 0, "{protocol}: {err}");
        let s = summary(&out);
        assert_eq!(s["status"], "completed", "{protocol}");
        let warnings = s["warnings"].to_string();
        assert!(warnings.contains("not delivered"), "{protocol}: {warnings}");
        assert!(
            warnings.contains("UnknownIssuer") || warnings.contains("unknown issuer"),
            "{protocol}: the warning names the certificate error: {warnings}"
        );
        let received = received.lock().unwrap();
        assert_eq!(
            received.metrics.len() + received.logs.len(),
            0,
            "{protocol}"
        );
    }
    assert_no_residue();
}
