//! `recap window --selector KEY=VALUE,...`: one window per running Docker container and per
//! ready pod of the CRI runtime (`--cri-endpoint`) whose labels match, each exact and isolated
//! (a slot of its own), reported together: every window's summary and the totals. Through the agent when one answers (each window checked by its
//! policy), in this process otherwise (one program set for all of them).

use std::{path::Path, time::Instant};

use anyhow::Context;
use futures_util::future::join_all;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::{
    signals::StopSignals,
    window::{Output, WindowArgs},
    windows::{agent_error, start_request},
};
use crate::{
    agent::{
        api::WindowRef,
        client::{self, ConnectError},
    },
    families::Family,
    fleet::{
        merge,
        selector::{matching_containers, matching_pods, Matched},
        Selector,
    },
    report::{render_table, WindowSummary},
    window::{new_window_id, SharedEngine, Window, WindowSpec},
};

/// What one selected container's window came to.
struct Outcome {
    container: Matched,
    result: Result<WindowSummary, String>,
}

pub async fn run(
    mut args: WindowArgs,
    selector: Selector,
    local: bool,
    socket: &Path,
) -> anyhow::Result<()> {
    if args.cgroup.is_some() || args.pid.is_some() || args.container.is_some() || args.pod.is_some()
    {
        super::usage!("--selector picks the containers itself: give it without --cgroup, --pid, --container or --pod");
    }
    // The options checked once, with a stand-in target.
    args.container = Some("selected".into());
    let endpoint = args.cri_endpoint.clone();
    let (spec, output, top) = args.into_spec()?;
    let matched = matching(&selector, &endpoint).await?;
    eprintln!(
        "recap: --selector {selector}: {} target(s): {}",
        matched.len(),
        matched
            .iter()
            .map(Matched::describe)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let through_agent = if local || spec.export.prometheus.is_some() {
        None
    } else {
        match client::connect(socket).await {
            Ok(c) => Some(c),
            Err(ConnectError::NoAgent(_)) => None,
            Err(e) => {
                log::warn!("{e}; running the windows in this process");
                None
            }
        }
    };
    let outcomes = match through_agent {
        Some(c) => through_the_agent(c, &matched, &spec).await?,
        None => in_process(&spec, &matched).await?,
    };
    print(&selector, &outcomes, output, top)
}

/// The Docker containers and the pods the selector matches: from every runtime that answers.
/// None answering, or nothing matched, is an error that says where it looked.
async fn matching(selector: &Selector, endpoint: &Path) -> anyhow::Result<Vec<Matched>> {
    let mut matched = Vec::new();
    let mut looked = Vec::new();
    match crate::docker::connect().await {
        Ok(docker) => {
            matched.extend(matching_containers(&docker, selector).await?);
            looked.push("Docker's containers".to_string());
        }
        Err(e) => log::debug!("--selector: no Docker engine: {e}"),
    }
    // A node without a CRI runtime has no socket there: nothing to ask.
    if endpoint.exists() {
        match matching_pods(endpoint, selector).await {
            Ok(pods) => {
                matched.extend(pods);
                looked.push(format!("the pods at {}", endpoint.display()));
            }
            // A containerd without its CRI plugin (Docker's own) has no pods to give.
            Err(e) if !looked.is_empty() => log::warn!("--selector: no pods: {e}"),
            Err(e) => return Err(e.into()),
        }
    }
    if looked.is_empty() {
        anyhow::bail!(
            "--selector found no runtime to ask: no Docker engine answers and no CRI socket is at {} (start Docker, or give --cri-endpoint)",
            endpoint.display()
        );
    }
    if matched.is_empty() {
        anyhow::bail!(
            "nothing running matches --selector {selector} (looked at {}; `docker ps --filter label=KEY=VALUE` and `crictl pods --label KEY=VALUE` list them)",
            looked.join(" and ")
        );
    }
    Ok(matched)
}

async fn through_the_agent(
    client: client::Client,
    matched: &[Matched],
    spec: &WindowSpec,
) -> anyhow::Result<Vec<Outcome>> {
    let mut started = Vec::new();
    for m in matched {
        let mut c = client.clone();
        let mut one = spec.clone();
        one.target = m.target();
        let answer = c.start_window(start_request(&one)).await;
        match answer {
            Ok(r) => {
                let r = r.into_inner();
                for line in &r.armed {
                    eprintln!("{line}");
                }
                started.push((m.clone(), Ok(r.window_id)));
            }
            Err(s) => started.push((
                m.clone(),
                Err(format!(
                    "{:#}",
                    agent_error("the agent did not open the window", s)
                )),
            )),
        }
    }
    let mut signals = StopSignals::install(false)?;
    let waits = join_all(started.iter().map(|(_, id)| {
        let mut c = client.clone();
        let id = id.clone();
        async move {
            let id = id?;
            c.wait_window(WindowRef { window_id: id })
                .await
                .map(|r| r.into_inner())
                .map_err(|s| format!("{:#}", agent_error("waiting for the window", s)))
        }
    }));
    tokio::pin!(waits);
    let mut cancelled = false;
    let records = loop {
        tokio::select! {
            records = &mut waits => break records,
            _ = signals.next(), if !cancelled => {
                cancelled = true;
                for (_, id) in &started {
                    if let Ok(id) = id {
                        let _ = client.clone().cancel_window(WindowRef { window_id: id.clone() }).await;
                    }
                }
            }
        }
    };
    Ok(started
        .into_iter()
        .zip(records)
        .map(|((container, _), record)| Outcome {
            container,
            result: record.and_then(|r| {
                if r.summary_json.is_empty() {
                    Err(format!(
                        "window {} {}: {}",
                        r.window_id,
                        crate::agent::wire::status_name(r.status),
                        r.error
                    ))
                } else {
                    WindowSummary::from_json(&r.summary_json).map_err(|e| format!("{e:#}"))
                }
            }),
        })
        .collect())
}

async fn in_process(
    spec: &crate::window::WindowSpec,
    matched: &[Matched],
) -> anyhow::Result<Vec<Outcome>> {
    let mut signals = StopSignals::install(true)?;
    let engine = SharedEngine::on_demand(matched.len());
    let mut armed = Vec::new();
    let mut outcomes = Vec::new();
    for m in matched {
        let mut s = spec.clone();
        s.target = m.target();
        let id = new_window_id();
        let started = Instant::now();
        match Window::arm(&s, id.clone(), engine.clone(), Vec::new(), started, &|_| {
            Ok(())
        })
        .await
        {
            Ok(w) => {
                eprintln!(
                    "recap: window {id} armed on {} in {} ms",
                    m.describe(),
                    started.elapsed().as_millis()
                );
                armed.push((m.clone(), w));
            }
            Err(e) => outcomes.push(Outcome {
                container: m.clone(),
                result: Err(format!("{e:#}")),
            }),
        }
    }
    let stop = CancellationToken::new();
    let statuses = {
        let runs = join_all(armed.iter_mut().map(|(_, w)| w.run_until(stop.cancelled())));
        tokio::pin!(runs);
        loop {
            tokio::select! {
                statuses = &mut runs => break statuses,
                _ = signals.next() => stop.cancel(),
            }
        }
    };
    for ((container, window), status) in armed.into_iter().zip(statuses) {
        let summary = window
            .close(status, std::future::pending())
            .await
            .map_err(|e| format!("{e:#}"));
        outcomes.push(Outcome {
            container,
            result: summary,
        });
    }
    Ok(outcomes)
}

fn print(
    selector: &Selector,
    outcomes: &[Outcome],
    output: Output,
    top: usize,
) -> anyhow::Result<()> {
    let summaries: Vec<Value> = outcomes
        .iter()
        .filter_map(|o| o.result.as_ref().ok())
        .map(|s| serde_json::to_value(s).unwrap_or_default())
        .collect();
    let families: Vec<&str> = Family::ALL.iter().map(|f| f.name()).collect();
    let totals = merge::totals(summaries.iter(), &families);
    let text = match output {
        Output::Json => {
            let windows: Vec<Value> = outcomes
                .iter()
                .map(|o| {
                    let kind = if o.container.pod_of.is_some() {
                        "pod"
                    } else {
                        "container"
                    };
                    match &o.result {
                        Ok(s) => json!({kind: o.container.name, "summary": s}),
                        Err(e) => json!({kind: o.container.name, "error": e}),
                    }
                })
                .collect();
            serde_json::to_string_pretty(&json!({
                "schema": "recap.selected/v1",
                "selector": selector.to_string(),
                "windows": windows,
                "totals": totals,
            }))? + "\n"
        }
        Output::Table => {
            let mut o = String::new();
            for outcome in outcomes {
                match &outcome.result {
                    Ok(s) => o.push_str(&render_table(s, top)),
                    Err(e) => o.push_str(&format!("{}: {e}\n", outcome.container.describe())),
                }
                o.push('\n');
            }
            o.push_str(&format!(
                "totals over {} window(s) on --selector {selector}\n{}",
                summaries.len(),
                serde_json::to_string_pretty(&totals)?
            ));
            o.push('\n');
            o
        }
    };
    use std::io::Write;
    std::io::stdout()
        .write_all(text.as_bytes())
        .context("writing the summary")?;
    if outcomes.iter().any(|o| o.result.is_err()) {
        std::process::exit(1);
    }
    Ok(())
}
