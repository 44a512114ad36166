//! `recap window start|list|show|cancel|wait|watch`: windows held by the agent, and plain
//! `recap window` when it goes through the agent.

use std::{
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Serialize;
use tokio_stream::StreamExt;

use super::{
    signals::StopSignals,
    window::{print_out, print_summary, Output, WindowArgs},
};
use crate::{
    agent::{
        api::{
            watch_event, DescribeOptionsRequest, ListWindowsRequest, Options, StartWindowRequest,
            WindowRecord, WindowRef, WindowStatus,
        },
        client::{self, Client},
        wire,
    },
    report::WindowSummary,
    text::terminal::safe,
    text::time::rfc3339_utc,
    text::units::{format_duration, parse_duration},
    window::{live::LiveView, WindowSpec},
};

#[derive(Debug, Subcommand)]
pub enum WindowAction {
    /// Open a window through the agent; prints its id as soon as its probes count.
    Start(Box<StartArgs>),
    /// The agent's windows, newest first.
    List(ListArgs),
    /// One window: its summary once it has ended, its state while open.
    Show(IdArgs),
    /// End a window early (status `interrupted`) and print its summary.
    Cancel(IdArgs),
    /// Wait for a window to end and print its summary.
    Wait(IdArgs),
    /// Follow a window's live view until it ends, then print its summary.
    Watch(IdArgs),
    /// What you may open through the agent: the families, the capsule tools, and the limits of
    /// the policy that applies to you.
    Options(OptionsArgs),
}

#[derive(Debug, Args)]
pub struct OptionsArgs {
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    #[command(flatten)]
    pub args: WindowArgs,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    /// The window's id (as `start` and `list` show it).
    pub id: String,
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// How many syscalls and program names the table shows.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only windows whose target contains this (a cgroup path, a PID, a container name).
    #[arg(long)]
    pub target: Option<String>,
    /// Only windows with this status: open, completed, interrupted, target_exited, failed, lost.
    #[arg(long, value_parser = parse_status)]
    pub status: Option<WindowStatus>,
    /// Only windows started within this long (e.g. 1h).
    #[arg(long, value_parser = parse_duration)]
    pub since: Option<Duration>,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// A window record as `--output json` prints it.
#[derive(Serialize)]
struct RecordOut {
    window_id: String,
    requester_uid: u32,
    target: String,
    /// The request as `recap window` options (secrets redacted).
    command_line: Vec<String>,
    started_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    ended_at: Option<String>,
    status: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    error: String,
    artifacts: Vec<String>,
    /// On whose behalf, when not the caller's own (a fleet part: request id and etcd user).
    #[serde(skip_serializing_if = "String::is_empty")]
    origin: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    summary: Option<serde_json::Value>,
}

fn time(unix_s: i64) -> String {
    rfc3339_utc(UNIX_EPOCH + Duration::from_secs(unix_s.max(0) as u64))
}

impl From<&WindowRecord> for RecordOut {
    fn from(r: &WindowRecord) -> Self {
        RecordOut {
            window_id: r.window_id.clone(),
            requester_uid: r.requester_uid,
            target: r.target.clone(),
            command_line: r.command_line.clone(),
            started_at: time(r.started_unix_s),
            ended_at: (r.ended_unix_s > 0).then(|| time(r.ended_unix_s)),
            status: wire::status_name(r.status),
            error: r.error.clone(),
            artifacts: r.artifacts.clone(),
            origin: r.origin.clone(),
            summary: serde_json::from_str(&r.summary_json).ok(),
        }
    }
}

/// The agent's refusal or error, as the user should read it.
pub(crate) fn agent_error(what: &str, status: tonic::Status) -> anyhow::Error {
    let message = status.message();
    let message = if message.is_empty() {
        status.code().description()
    } else {
        message
    };
    anyhow::anyhow!("{what}: {message}")
}

async fn connect(socket: &Path) -> anyhow::Result<Client> {
    client::connect(socket).await.map_err(|e| match e {
        client::ConnectError::NoAgent(path) => anyhow::anyhow!(
            "no agent listens on {}; start one with `recap agent`, or run `recap window` without an action for a window in this process",
            path.display()
        ),
        other => anyhow::Error::new(other),
    })
}

pub async fn run(action: WindowAction, socket: &Path) -> anyhow::Result<()> {
    let mut client = connect(socket).await?;
    match action {
        WindowAction::Start(start) => {
            // Checked here as well, so a mistake is reported as the in-process window would.
            let (spec, output, _) = start.args.into_spec()?;
            let response = client
                .start_window(start_request(&spec))
                .await
                .map_err(|s| agent_error("the agent did not open the window", s))?
                .into_inner();
            for line in &response.armed {
                eprintln!("{line}");
            }
            match output {
                Output::Table => print_out(&format!("{}\n", response.window_id)),
                Output::Json => print_out(&format!(
                    "{}\n",
                    serde_json::json!({ "window_id": response.window_id })
                )),
            }
        }
        WindowAction::List(list) => {
            let since = list
                .since
                .and_then(|d| SystemTime::now().checked_sub(d))
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs() as i64);
            let windows = client
                .list_windows(ListWindowsRequest {
                    target: list.target.unwrap_or_default(),
                    status: list.status.unwrap_or(WindowStatus::Unspecified) as i32,
                    since_unix_s: since,
                    limit: list.limit,
                })
                .await
                .map_err(|s| agent_error("listing windows", s))?
                .into_inner()
                .windows;
            match list.output {
                Output::Json => {
                    let out: Vec<RecordOut> = windows.iter().map(RecordOut::from).collect();
                    print_out(&(serde_json::to_string_pretty(&out)? + "\n"))
                }
                Output::Table => {
                    let mut text = format!(
                        "{:<12}  {:<13}  {:<20}  {:>6}  {}\n",
                        "WINDOW", "STATUS", "STARTED", "UID", "TARGET"
                    );
                    for w in &windows {
                        text.push_str(&format!(
                            "{:<12}  {:<13}  {:<20}  {:>6}  {}\n",
                            w.window_id,
                            wire::status_name(w.status),
                            time(w.started_unix_s),
                            w.requester_uid,
                            safe(&w.target)
                        ));
                    }
                    print_out(&text)
                }
            }
        }
        WindowAction::Show(id) => {
            let record = client.get_window(reference(&id)).await;
            print_record(&answer(record, "looking up the window")?, id.output, id.top)
        }
        WindowAction::Cancel(id) => {
            let record = client.cancel_window(reference(&id)).await;
            print_record(&answer(record, "cancelling the window")?, id.output, id.top)
        }
        WindowAction::Wait(id) => {
            let record = client.wait_window(reference(&id)).await;
            print_record(
                &answer(record, "waiting for the window")?,
                id.output,
                id.top,
            )
        }
        WindowAction::Watch(id) => {
            let record = follow(&mut client, &id.id, id.output, false).await?;
            print_record(&record, id.output, id.top)
        }
        WindowAction::Options(o) => {
            let options = answer(
                client.describe_options(DescribeOptionsRequest {}).await,
                "asking the agent what may be opened",
            )?;
            print_options(&options, o.output)
        }
    }
}

fn reference(id: &IdArgs) -> WindowRef {
    WindowRef {
        window_id: id.id.clone(),
    }
}

fn answer<T>(result: Result<tonic::Response<T>, tonic::Status>, what: &str) -> anyhow::Result<T> {
    result
        .map(tonic::Response::into_inner)
        .map_err(|s| agent_error(what, s))
}

/// Plain `recap window` through the agent: open it, follow it live, cancel it on Ctrl-C or
/// SIGTERM, print its summary.
pub async fn run_through_agent(
    mut client: Client,
    spec: &WindowSpec,
    output: Output,
    top: usize,
) -> anyhow::Result<()> {
    let response = client
        .start_window(start_request(spec))
        .await
        .map_err(|s| agent_error("the agent did not open the window", s))?
        .into_inner();
    for line in &response.armed {
        eprintln!("{line}");
    }
    let record = follow(&mut client, &response.window_id, output, true).await?;
    print_record(&record, output, top)
}

/// Shows a window's live view until it ends; returns its final record. With `cancel_on_signal`
/// a Ctrl-C or SIGTERM ends the window (through the agent); otherwise it only stops watching.
async fn follow(
    client: &mut Client,
    window_id: &str,
    output: Output,
    cancel_on_signal: bool,
) -> anyhow::Result<WindowRecord> {
    let mut signals = StopSignals::install(false)?;
    let reference = WindowRef {
        window_id: window_id.to_string(),
    };
    let mut events = client
        .watch_window(reference.clone())
        .await
        .map_err(|s| agent_error("watching the window", s))?
        .into_inner();
    let mut view = LiveView::new(output == Output::Table, Duration::ZERO);
    let mut canceller = client.clone();
    let mut cancelled = false;
    let lost = || {
        anyhow::anyhow!(
            "lost contact with the agent; window {window_id} may still be open: `recap window show {window_id}`"
        )
    };
    loop {
        tokio::select! {
            event = events.next() => {
                let event = event.ok_or_else(lost)?.map_err(|s| agent_error("watching the window", s))?;
                match event.event {
                    Some(watch_event::Event::Live(live)) => view.show(&live.lines),
                    Some(watch_event::Event::Ended(record)) => {
                        view.finish();
                        return Ok(record);
                    }
                    None => {}
                }
            }
            _ = signals.next(), if !cancelled => {
                if !cancel_on_signal {
                    view.finish();
                    anyhow::bail!("stopped watching; window {window_id} stays open");
                }
                cancelled = true;
                canceller.cancel_window(reference.clone()).await.map_err(|s| agent_error("cancelling the window", s))?;
            }
        }
    }
}

/// `recap window options`: what the agent describes, for people or as JSON.
fn print_options(o: &Options, output: Output) -> anyhow::Result<()> {
    let p = o.policy.clone().unwrap_or_default();
    let max_duration = p
        .max_duration
        .as_ref()
        .and_then(wire::duration_from_wire)
        .map(format_duration);
    let families: Vec<String> = p.families.iter().map(|f| wire::family_name(*f)).collect();
    let tools: Vec<String> = p
        .capsule_tools
        .iter()
        .map(|t| wire::tool_name(*t))
        .collect();
    if output == Output::Json {
        let json = serde_json::json!({
            "families": o.families.iter().map(|f| serde_json::json!({
                "name": f.name, "on_by_default": f.on_by_default,
            })).collect::<Vec<_>>(),
            "capsule_tools": o.capsule_tools.iter().map(|t| serde_json::json!({
                "name": t.name, "args": t.args, "artifact": t.artifact,
            })).collect::<Vec<_>>(),
            "policy": {
                "root": p.root,
                "rule": p.rule,
                "families": families,
                "capsule_tools": tools,
                "images": p.images,
                "max_duration": max_duration,
                "max_windows": p.max_windows,
                "otlp": p.otlp,
                "artifact_quota_bytes": p.artifact_quota_bytes,
                "read_all": p.read_all,
                "max_windows_total": p.max_windows_total,
            },
        });
        return print_out(&(serde_json::to_string_pretty(&json)? + "\n"));
    }
    let mut text = String::from("families (--probes):\n");
    for f in &o.families {
        let on = if f.on_by_default {
            "on by default"
        } else {
            "opt-in"
        };
        text.push_str(&format!("  {:<12} {on}\n", f.name));
    }
    text.push_str("capsule tools (--capsule TOOL[=ARGS]):\n");
    for t in &o.capsule_tools {
        text.push_str(&format!("  {:<9} {} -> {}\n", t.name, t.args, t.artifact));
    }
    let who = if p.root {
        "root: anything within the agent's limits".to_string()
    } else if p.rule.is_empty() {
        "no rule of the agent's policy names you: you may not open windows".to_string()
    } else {
        format!("rule `{}`", safe(&p.rule))
    };
    text.push_str(&format!("you: {who}\n"));
    if !p.root && !p.rule.is_empty() {
        text.push_str(&format!(
            "  families {}\n  capsules {}\n  images {}\n  max duration {}, {} windows at once, OTLP {}, artifact quota {} bytes, sees others' windows: {}\n",
            families.join(","),
            if tools.is_empty() { "none".into() } else { tools.join(",") },
            if p.images.is_empty() { "none".into() } else { p.images.iter().map(|i| safe(i)).collect::<Vec<_>>().join(",") },
            max_duration.unwrap_or_default(),
            p.max_windows,
            if p.otlp { "yes" } else { "no" },
            p.artifact_quota_bytes,
            if p.read_all { "yes" } else { "no" },
        ));
    }
    text.push_str(&format!(
        "the agent holds at most {} windows\n",
        p.max_windows_total
    ));
    print_out(&text)
}

fn print_record(record: &WindowRecord, output: Output, top: usize) -> anyhow::Result<()> {
    if !record.summary_json.is_empty() {
        let summary = WindowSummary::from_json(&record.summary_json)
            .context("reading the window's summary from the agent")?;
        return print_summary(&summary, output, top);
    }
    match output {
        Output::Json => {
            print_out(&(serde_json::to_string_pretty(&RecordOut::from(record))? + "\n"))
        }
        Output::Table => {
            let mut text = format!(
                "RECap window {} on {}\n  status {}   started {}   requested by uid {}\n",
                record.window_id,
                safe(&record.target),
                wire::status_name(record.status),
                time(record.started_unix_s),
                record.requester_uid
            );
            if !record.origin.is_empty() {
                text.push_str(&format!("  on behalf of: {}\n", safe(&record.origin)));
            }
            if !record.error.is_empty() {
                text.push_str(&format!("  error: {}\n", safe(&record.error)));
            }
            print_out(&text)
        }
    }?;
    if matches!(record.status(), WindowStatus::Failed | WindowStatus::Lost) {
        anyhow::bail!(
            "window {} {}",
            record.window_id,
            wire::status_name(record.status)
        );
    }
    Ok(())
}

pub(crate) fn start_request(spec: &WindowSpec) -> StartWindowRequest {
    StartWindowRequest {
        spec: Some(wire::to_wire(spec)),
    }
}

/// `--status NAME`, as the history names statuses.
fn parse_status(name: &str) -> Result<WindowStatus, String> {
    match wire::status_to_wire(name.trim()) {
        WindowStatus::Unspecified => Err(format!(
            "unknown status `{name}`; use open, completed, interrupted, target_exited, failed or lost"
        )),
        status => Ok(status),
    }
}
