//! Accepting connections on the agent's sockets (the API's Unix socket, `/metrics`) so that no
//! local user can lock the agent up: connections are capped per peer (a uid on the Unix socket,
//! an address on TCP) and in total, root keeps a share of its own that others' connections never
//! take, a connection must send within seconds of being accepted and then keep sending (gRPC
//! clients answer the server's keep-alive pings, so a live one always does), and an accept that
//! fails for want of descriptors backs off instead of spinning. Requests are rate-limited per
//! caller (`Rate`).

use std::{
    collections::HashMap,
    future::Future,
    net::IpAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Sleep,
};

/// Who a connection comes from, for its cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    Uid(u32),
    Ip(IpAddr),
    /// A Unix peer whose credentials could not be read: capped like one stranger.
    Unknown,
}

impl Peer {
    fn is_root(self) -> bool {
        self == Peer::Uid(0)
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Open connections one peer (other than root) may have.
    pub per_peer: usize,
    /// Open connections of all peers but root together.
    pub total: usize,
    /// Root's own connections, never taken by others.
    pub root: usize,
    /// A new connection's first bytes must come within this.
    pub first_bytes: Duration,
    /// After that, a connection that sends nothing for this long is closed.
    pub idle: Duration,
}

impl Limits {
    /// The API's socket. Clients answer the keep-alive pings (`API_KEEPALIVE`), so `idle` is
    /// several ping intervals.
    pub const API: Limits = Limits {
        per_peer: 16,
        total: 256,
        root: 64,
        first_bytes: Duration::from_secs(5),
        idle: Duration::from_secs(75),
    };
    /// `/metrics`: scrapers reconnect when their keep-alive connection was closed.
    pub const METRICS: Limits = Limits {
        per_peer: 8,
        total: 64,
        root: 0,
        first_bytes: Duration::from_secs(5),
        idle: Duration::from_secs(30),
    };
}

/// How often the API pings each connection, and how long an answer may take.
pub const API_KEEPALIVE: (Duration, Duration) = (Duration::from_secs(20), Duration::from_secs(10));

#[derive(Default)]
struct Counts {
    by_peer: HashMap<Peer, usize>,
    others: usize,
    root: usize,
    refused: u64,
    last_report: Option<Instant>,
}

/// The connections open now, and who may open one more.
#[derive(Clone)]
pub struct Gate {
    name: &'static str,
    limits: Limits,
    counts: Arc<Mutex<Counts>>,
}

impl Gate {
    pub fn new(name: &'static str, limits: Limits) -> Self {
        Gate {
            name,
            limits,
            counts: Arc::default(),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A permit for one more connection from `peer`, or None (the caller closes it).
    pub fn admit(&self, peer: Peer) -> Option<Permit> {
        let mut c = self.counts();
        let mine = c.by_peer.get(&peer).copied().unwrap_or(0);
        let ok = if peer.is_root() {
            c.root < self.limits.root
        } else {
            mine < self.limits.per_peer && c.others < self.limits.total
        };
        if !ok {
            c.refused += 1;
            // One line per 10 s at most, however many are refused: a flood must not fill the
            // journal either.
            let now = Instant::now();
            if c.last_report
                .is_none_or(|t| now - t >= Duration::from_secs(10))
            {
                log::warn!(
                    "{}: refused connections from {peer:?} ({mine} open; limits {} per peer, {} in all, {} refused so far)",
                    self.name,
                    self.limits.per_peer,
                    self.limits.total,
                    c.refused
                );
                c.last_report = Some(now);
            }
            return None;
        }
        *c.by_peer.entry(peer).or_default() += 1;
        if peer.is_root() {
            c.root += 1;
        } else {
            c.others += 1;
        }
        Some(Permit {
            gate: self.clone(),
            peer,
        })
    }

    /// Connections open now (root's and others').
    pub fn open(&self) -> usize {
        let c = self.counts();
        c.root + c.others
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }
}

/// One admitted connection's place; given back when dropped.
pub struct Permit {
    gate: Gate,
    peer: Peer,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut c = self.gate.counts();
        if let Some(n) = c.by_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                c.by_peer.remove(&self.peer);
            }
        }
        if self.peer.is_root() {
            c.root -= 1;
        } else {
            c.others -= 1;
        }
    }
}

/// A connection that is closed (its reads fail) when it goes quiet: no bytes within
/// `first_bytes` of being accepted, or none for `idle` after that.
pub struct Guarded<S> {
    pub io: S,
    /// Who is on the other end (API connections; None on TCP).
    peer: Option<ApiPeer>,
    _permit: Permit,
    quiet: Pin<Box<Sleep>>,
    idle: Duration,
}

impl<S> Guarded<S> {
    pub fn new(io: S, permit: Permit) -> Self {
        let limits = permit.gate.limits;
        Guarded {
            io,
            peer: None,
            _permit: permit,
            quiet: Box::pin(tokio::time::sleep(limits.first_bytes)),
            idle: limits.idle,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                let next = tokio::time::Instant::now() + self.idle;
                self.quiet.as_mut().reset(next);
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match self.quiet.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the peer sent nothing for too long",
                ))),
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Who is on the other end of an API connection, read once when it was accepted: the
/// credentials (`SO_PEERCRED`) and supplementary groups (`SO_PEERGROUPS`) the kernel recorded
/// for the socket at connect, which no later exec or PID reuse changes.
#[derive(Clone, Debug)]
pub struct ApiPeer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
    pub groups: Vec<u32>,
}

impl ApiPeer {
    fn of(stream: &tokio::net::UnixStream) -> Option<ApiPeer> {
        use std::os::fd::AsRawFd;
        let cred = stream.peer_cred().ok()?;
        let mut groups = vec![0 as libc::gid_t; 256];
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: a valid socket, and `groups` has `len` bytes for the kernel to fill.
        let r = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        // More than 256 groups (ERANGE) or no answer: only the primary group counts.
        let n = if r == 0 {
            len as usize / std::mem::size_of::<libc::gid_t>()
        } else {
            0
        };
        groups.truncate(n);
        Some(ApiPeer {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
            groups,
        })
    }
}

impl tonic::transport::server::Connected for Guarded<tokio::net::UnixStream> {
    /// The handlers find the peer in the request's extensions; a connection whose credentials
    /// could not be read has none, and its requests are refused.
    type ConnectInfo = Option<ApiPeer>;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.peer.clone()
    }
}

/// What an accept error means: out of descriptors or memory (wait, then go on: the peers'
/// connections will close), or something about one connection (go on at once).
pub async fn after_accept_error(name: &str, e: &std::io::Error, last_report: &mut Option<Instant>) {
    let exhausted = matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    );
    let now = Instant::now();
    if last_report.is_none_or(|t| now - t >= Duration::from_secs(10)) {
        log::warn!("{name}: accepting a connection: {e}");
        *last_report = Some(now);
    }
    if exhausted {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The API socket's connections, admitted by `gate`, as a stream for tonic.
pub fn unix_incoming(
    listener: tokio::net::UnixListener,
    gate: Gate,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<Guarded<tokio::net::UnixStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let mut last_report = None;
        loop {
            let stream = tokio::select! {
                _ = tx.closed() => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        after_accept_error("the API socket", &e, &mut last_report).await;
                        continue;
                    }
                },
            };
            let api_peer = ApiPeer::of(&stream);
            let peer = api_peer
                .as_ref()
                .map(|p| Peer::Uid(p.uid))
                .unwrap_or(Peer::Unknown);
            // Refused: closed at once, so a flood holds none of the agent's descriptors.
            let Some(permit) = gate.admit(peer) else {
                continue;
            };
            let mut conn = Guarded::new(stream, permit);
            conn.peer = api_peer;
            if tx.send(Ok(conn)).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Requests per caller: a bucket of `burst` that refills at `per_second`.
pub struct Rate {
    burst: f64,
    per_second: f64,
    buckets: Mutex<HashMap<u32, (f64, Instant)>>,
}

impl Rate {
    pub fn new(burst: u32, per_second: u32) -> Self {
        Rate {
            burst: burst as f64,
            per_second: per_second as f64,
            buckets: Mutex::default(),
        }
    }

    /// Whether `uid` may make one more request now (root always may).
    pub fn allow(&self, uid: u32) -> bool {
        if uid == 0 {
            return true;
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        // Forget callers whose buckets are full again, so the map stays small.
        if buckets.len() > 4096 {
            let (burst, per_second) = (self.burst, self.per_second);
            buckets.retain(|_, (level, at)| {
                *level + now.duration_since(*at).as_secs_f64() * per_second < burst
            });
        }
        let (level, at) = buckets.entry(uid).or_insert((self.burst, now));
        *level = (*level + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *level >= 1.0 {
            *level -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_capped_and_root_keeps_its_share() {
        let gate = Gate::new(
            "test",
            Limits {
                per_peer: 2,
                total: 3,
                root: 1,
                ..Limits::API
            },
        );
        let a1 = gate.admit(Peer::Uid(1000)).unwrap();
        let _a2 = gate.admit(Peer::Uid(1000)).unwrap();
        assert!(gate.admit(Peer::Uid(1000)).is_none(), "per peer");
        let _b1 = gate.admit(Peer::Uid(1001)).unwrap();
        assert!(gate.admit(Peer::Uid(1002)).is_none(), "in total");
        let root = gate.admit(Peer::Uid(0)).expect("root's own share");
        assert!(gate.admit(Peer::Uid(0)).is_none());
        drop(a1);
        assert!(gate.admit(Peer::Uid(1002)).is_some(), "a place given back");
        drop(root);
        assert!(gate.admit(Peer::Uid(0)).is_some());
    }

    #[test]
    fn rates_are_per_caller_and_refill() {
        let rate = Rate::new(3, 1000);
        assert!((0..3).all(|_| rate.allow(1000)));
        assert!((0..1000).all(|_| rate.allow(0)), "root is not limited");
        assert!(rate.allow(1001), "another caller has its own bucket");
        std::thread::sleep(Duration::from_millis(5));
        assert!(rate.allow(1000), "refilled");
        let slow = Rate::new(2, 1);
        assert!(slow.allow(7) && slow.allow(7));
        assert!(!slow.allow(7));
    }

    #[tokio::test]
    async fn a_quiet_connection_is_closed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let gate = Gate::new(
            "test",
            Limits {
                first_bytes: Duration::from_millis(200),
                idle: Duration::from_millis(300),
                ..Limits::API
            },
        );
        let (a, mut b) = tokio::net::UnixStream::pair().unwrap();
        let mut guarded = Guarded::new(a, gate.admit(Peer::Uid(5)).unwrap());
        b.write_all(b"x").await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(guarded.read(&mut buf).await.unwrap(), 1);
        let started = Instant::now();
        let e = guarded.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(250));
        assert_eq!(gate.open(), 1);
        drop(guarded);
        assert_eq!(gate.open(), 0, "the permit goes with the connection");
    }
}
