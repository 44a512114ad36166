//! User space's end of `HTTP2_FRAMES`: a thread drains the kernel's HTTP/2 events in batches
//! (the buffer is 1 MiB: a second's worth of a busy server would not fit), hands each to its
//! connection (`families::http2::streams`) and keeps one `Tally` per window slot. The engine drains what
//! is left before it reads a window, so a window's last requests are in its numbers.

use std::{
    collections::{BTreeMap, HashMap},
    os::fd::{AsFd, AsRawFd, OwnedFd},
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use recap_common::{H2Event, TlsKey};

use super::RawCounts;
use crate::families::http2::{streams::Conn, tally::Tally};

/// HTTP/2 connections followed at once; past this the least recently active is dropped (its
/// streams stay counted as started, never answered).
const MAX_CONNS: usize = 4096;

pub struct Http2Frames {
    ring: RingBuf<MapData>,
    conns: HashMap<(u32, u64), Conn>,
    tallies: BTreeMap<u32, Tally>,
}

pub type SharedFrames = Arc<Mutex<Http2Frames>>;

impl Http2Frames {
    pub fn new(ring: RingBuf<MapData>) -> SharedFrames {
        let frames = Arc::new(Mutex::new(Http2Frames {
            ring,
            conns: HashMap::new(),
            tallies: BTreeMap::new(),
        }));
        drain_in_background(&frames);
        frames
    }

    /// Handles every event the kernel has written so far.
    pub fn drain(&mut self) {
        let mut events = Vec::new();
        while let Some(item) = self.ring.next() {
            if item.len() >= std::mem::size_of::<H2Event>() {
                // SAFETY: `H2Event` is plain data written whole by the kernel; read unaligned.
                events.push(unsafe { std::ptr::read_unaligned(item.as_ptr() as *const H2Event) });
            }
        }
        for e in &events {
            self.on_event(e);
        }
    }

    fn on_event(&mut self, e: &H2Event) {
        let tally = self
            .tallies
            .entry(e.slot)
            .or_insert_with(|| Tally::new(e.epoch));
        if e.epoch < tally.epoch {
            return; // a closed window's
        }
        if e.epoch > tally.epoch {
            *tally = Tally::new(e.epoch);
        }
        let TlsKey { owner, id, .. } = e.conn;
        let key = (owner, id);
        let stale = self.conns.get(&key).is_some_and(|c| c.epoch != e.epoch);
        if stale {
            self.conns.remove(&key);
        }
        if !self.conns.contains_key(&key) && self.conns.len() >= MAX_CONNS {
            if let Some(oldest) = self
                .conns
                .iter()
                .min_by_key(|(_, c)| c.last_ns)
                .map(|(k, _)| *k)
            {
                self.conns.remove(&oldest);
            }
        }
        let conn = self.conns.entry(key).or_insert_with(|| Conn::new(e));
        if conn.on_event(e, tally) {
            self.conns.remove(&key);
        }
    }

    /// The window `epoch` of `slot` tells `n` gRPC paths apart (set as it arms, before its
    /// first event).
    pub fn set_paths_limit(&mut self, slot: u32, epoch: u64, n: usize) {
        let tally = self
            .tallies
            .entry(slot)
            .or_insert_with(|| Tally::new(epoch));
        if tally.epoch != epoch {
            *tally = Tally::new(epoch);
        }
        tally.paths_limit = n;
    }

    /// Adds the window's HTTP/2 results to its counts (`epoch`: the window's, in its slot).
    pub fn merge_into(&mut self, slot: u32, epoch: u64, counts: &mut RawCounts) {
        self.drain();
        if let Some(t) = self.tallies.get(&slot).filter(|t| t.epoch == epoch) {
            t.merge_into(counts);
        }
    }

    fn fd(&self) -> Option<OwnedFd> {
        self.ring.as_fd().try_clone_to_owned().ok()
    }
}

/// Drains the ring buffer when the kernel wakes it (once 64 KiB wait: `WAKE_AT_BYTES` in the
/// kernel's `http2.rs`) or every second, until the engine drops it. The engine drains it
/// before every read of a window as well, so counts never wait for this thread: its timeout
/// only bounds how long a quiet trickle of frames waits (it was 200 ms: five wake-ups a
/// second, a sixth of what 128 idle windows cost the agent).
fn drain_in_background(frames: &SharedFrames) {
    let Some(fd) = frames.lock().ok().and_then(|f| f.fd()) else {
        return;
    };
    let weak: Weak<Mutex<Http2Frames>> = Arc::downgrade(frames);
    let spawned = std::thread::Builder::new()
        .name("recap-http2".into())
        .spawn(move || loop {
            let mut poll = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, for the duration of the call.
            unsafe { libc::poll(&mut poll, 1, Duration::from_secs(1).as_millis() as i32) };
            let Some(frames) = weak.upgrade() else {
                return;
            };
            let Ok(mut frames) = frames.lock() else {
                return;
            };
            frames.drain();
        });
    if let Err(e) = spawned {
        log::warn!(
            "no thread for HTTP/2 frames ({e}): they are read once a second, and some may be lost"
        );
    }
}
