//! The API's handlers: each identifies its caller by the socket's peer credentials, then hands
//! the request to the agent's windows. Errors carry a message that says what to do.

use std::{pin::Pin, sync::Arc};

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::limits::{ApiPeer, Rate};

use super::{
    api::{
        agent_server, watch_event, DescribeOptionsRequest, ListWindowsRequest, ListWindowsResponse,
        LiveView, Options, StartWindowRequest, StartWindowResponse, WatchEvent, WindowRecord,
        WindowRef,
    },
    history::Filter,
    policy::Caller,
    windows::{Agent, StartError},
};

pub struct Service {
    agent: Arc<Agent>,
    /// Requests per caller other than root: a burst of 60, then 20 a second.
    rate: Rate,
}

impl Service {
    pub fn new(agent: Arc<Agent>) -> Self {
        Service {
            agent,
            rate: Rate::new(60, 20),
        }
    }

    /// The caller, if it is within its request rate.
    fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let caller = caller(request)?;
        if !self.rate.allow(caller.uid) {
            return Err(Status::resource_exhausted(format!(
                "uid {} sends requests too fast (at most 20 a second); slow down",
                caller.uid
            )));
        }
        Ok(caller)
    }
}

fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    let peer = request
        .extensions()
        .get::<Option<ApiPeer>>()
        .and_then(Option::as_ref)
        .ok_or_else(|| {
            Status::unauthenticated("the caller's credentials are unknown (not a Unix socket peer)")
        })?;
    Ok(Caller {
        uid: peer.uid,
        gid: peer.gid,
        pid: peer.pid,
        origin: None,
        groups: Some(peer.groups.clone()),
    })
}

fn status(e: StartError) -> Status {
    match e {
        StartError::Invalid(m) => Status::invalid_argument(m),
        StartError::Refused(m) => Status::permission_denied(m),
        StartError::Failed(m) => Status::failed_precondition(m),
    }
}

/// A window id as the agent makes them (12 hex digits): anything else is not looked up.
fn window_id(r: &WindowRef) -> Result<&str, Status> {
    let id = r.window_id.as_str();
    if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Status::invalid_argument(format!(
            "`{}` is not a window id (12 hex digits, as `recap window list` shows)",
            id.escape_debug()
        )));
    }
    Ok(id)
}

impl Service {
    /// A window's record, if the caller may see it: its own, or any for root and callers whose
    /// rule has `read_all`. Another's window is "not found", as if it did not exist.
    fn record(&self, caller: &Caller, id: &str) -> Result<WindowRecord, Status> {
        self.agent
            .get(id)
            .filter(|r| r.requester_uid == caller.uid || self.agent.may_read_all(caller))
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no window {id} of yours; `recap window list` shows the windows you may see"
                ))
            })
    }

    /// The final record, once the window has ended.
    async fn ended(&self, caller: &Caller, id: &str) -> Result<WindowRecord, Status> {
        if let Some(mut live) = self.agent.watch(id) {
            while live.borrow_and_update().ended.is_none() {
                if live.changed().await.is_err() {
                    break;
                }
            }
        }
        self.record(caller, id)
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl agent_server::Agent for Service {
    async fn start_window(
        &self,
        request: Request<StartWindowRequest>,
    ) -> Result<Response<StartWindowResponse>, Status> {
        let caller = self.caller(&request)?;
        let spec = request
            .into_inner()
            .spec
            .ok_or_else(|| Status::invalid_argument("give the window's spec"))?;
        let (window_id, armed) = self.agent.start(caller, spec).await.map_err(status)?;
        Ok(Response::new(StartWindowResponse { window_id, armed }))
    }

    async fn list_windows(
        &self,
        request: Request<ListWindowsRequest>,
    ) -> Result<Response<ListWindowsResponse>, Status> {
        let caller = self.caller(&request)?;
        let r = request.into_inner();
        if r.target.len() > 4096 {
            return Err(Status::invalid_argument("filter too long"));
        }
        let status = match super::api::WindowStatus::try_from(r.status) {
            Ok(super::api::WindowStatus::Unspecified) => String::new(),
            Ok(_) => super::wire::status_name(r.status),
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown window status (enum value {})",
                    r.status
                )))
            }
        };
        let windows = self
            .agent
            .history()
            .list(&Filter {
                requester: (!self.agent.may_read_all(&caller)).then_some(caller.uid),
                target: r.target,
                status,
                since_unix_s: r.since_unix_s,
                limit: r.limit,
            })
            .map_err(|e| Status::internal(format!("{e:#}")))?;
        Ok(Response::new(ListWindowsResponse { windows }))
    }

    async fn get_window(
        &self,
        request: Request<WindowRef>,
    ) -> Result<Response<WindowRecord>, Status> {
        let caller = self.caller(&request)?;
        Ok(Response::new(
            self.record(&caller, window_id(request.get_ref())?)?,
        ))
    }

    async fn cancel_window(
        &self,
        request: Request<WindowRef>,
    ) -> Result<Response<WindowRecord>, Status> {
        let caller = self.caller(&request)?;
        let id = window_id(request.get_ref())?.to_string();
        self.agent.cancel(&caller, &id).map_err(status)?;
        Ok(Response::new(self.ended(&caller, &id).await?))
    }

    async fn wait_window(
        &self,
        request: Request<WindowRef>,
    ) -> Result<Response<WindowRecord>, Status> {
        let caller = self.caller(&request)?;
        let id = window_id(request.get_ref())?.to_string();
        self.record(&caller, &id)?;
        Ok(Response::new(self.ended(&caller, &id).await?))
    }

    async fn describe_options(
        &self,
        request: Request<DescribeOptionsRequest>,
    ) -> Result<Response<Options>, Status> {
        let caller = self.caller(&request)?;
        Ok(Response::new(super::describe::options(
            self.agent.policy(),
            &caller,
        )))
    }

    type WatchWindowStream = WatchStream;

    async fn watch_window(
        &self,
        request: Request<WindowRef>,
    ) -> Result<Response<Self::WatchWindowStream>, Status> {
        let caller = self.caller(&request)?;
        let id = window_id(request.get_ref())?.to_string();
        let record = self.record(&caller, &id)?;
        let Some(mut live) = self.agent.watch(&id) else {
            // Already ended: the final record is all there is to see.
            let ended = WatchEvent {
                event: Some(watch_event::Event::Ended(record)),
            };
            return Ok(Response::new(Box::pin(tokio_stream::once(Ok(ended)))));
        };
        let stream = async_stream(move |tx| async move {
            loop {
                let now = live.borrow_and_update().clone();
                let event = match now.ended {
                    Some(record) => watch_event::Event::Ended(record),
                    None => watch_event::Event::Live(LiveView {
                        lines: now.lines,
                        elapsed: Some(super::wire::duration_to_wire(now.elapsed)),
                        samples: now.samples,
                    }),
                };
                let last = matches!(event, watch_event::Event::Ended(_));
                if tx
                    .send(Ok(WatchEvent { event: Some(event) }))
                    .await
                    .is_err()
                    || last
                {
                    return;
                }
                if live.changed().await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(stream))
    }
}

/// A stream fed by a task through a small channel (the task ends when the watcher goes).
fn async_stream<F, Fut>(f: F) -> WatchStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<WatchEvent, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
