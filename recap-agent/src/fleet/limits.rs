//! Per-user limits on a node's fleet parts. Every fleet part runs as one policy caller (the
//! fleet uid), so the policy alone cannot keep one etcd user from taking every window that
//! caller may hold; these limits, kept per requesting etcd user, do: windows open at once and
//! requests taken per minute. The fleet uid's policy applies on top.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

#[derive(Clone, Copy, Debug)]
pub struct UserLimits {
    /// Fleet windows one etcd user may hold open on this node.
    pub max_windows: usize,
    /// Fleet requests of one etcd user this node takes per minute (the ones it refuses for
    /// this limit do not count: a flood keeps being refused, the account stays bounded).
    pub requests_per_minute: usize,
}

impl Default for UserLimits {
    fn default() -> Self {
        UserLimits {
            max_windows: 4,
            requests_per_minute: 30,
        }
    }
}

const MINUTE: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Ledger {
    open: HashMap<String, usize>,
    recent: HashMap<String, VecDeque<Instant>>,
}

/// The node's account of what each user holds; cheap to clone (shared).
#[derive(Clone)]
pub struct UserLedger {
    limits: UserLimits,
    ledger: Arc<Mutex<Ledger>>,
}

/// Windows reserved for a user: given back when dropped.
pub struct Reservation {
    user: String,
    windows: usize,
    ledger: Arc<Mutex<Ledger>>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut l = self.ledger.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = l.open.get_mut(&self.user) {
            *n = n.saturating_sub(self.windows);
            if *n == 0 {
                l.open.remove(&self.user);
            }
        }
    }
}

impl UserLedger {
    pub fn new(limits: UserLimits) -> Self {
        UserLedger {
            limits,
            ledger: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a request of `user` seen `now`; refuses it when the user made its limit of
    /// requests in the minute before.
    pub fn admit_request(&self, user: &str, now: Instant) -> Result<(), String> {
        let mut l = self.lock();
        // Users who made no request for a minute are forgotten (the map stays as small as
        // the set of active users).
        l.recent.retain(|_, times| {
            times
                .back()
                .is_some_and(|t| now.duration_since(*t) < MINUTE)
        });
        let times = l.recent.entry(user.to_string()).or_default();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= MINUTE)
        {
            times.pop_front();
        }
        let made = times.len();
        // Bounded: a flood does not grow the list past the limit.
        if made >= self.limits.requests_per_minute {
            return Err(format!(
                "etcd user {user} made {made} fleet requests to this node in the last minute, its limit (--fleet-user-requests-per-minute {}); try again later",
                self.limits.requests_per_minute
            ));
        }
        times.push_back(now);
        Ok(())
    }

    /// Reserves `windows` windows for `user`, or says why not (the whole part is refused: a
    /// part runs all its windows or none).
    pub fn reserve(&self, user: &str, windows: usize) -> Result<Reservation, String> {
        let mut l = self.lock();
        let open = l.open.get(user).copied().unwrap_or(0);
        if open + windows > self.limits.max_windows {
            return Err(format!(
                "etcd user {user} has {open} fleet windows open on this node and this request needs {windows} more, over its limit (--fleet-user-max-windows {}); try again when one ends",
                self.limits.max_windows
            ));
        }
        *l.open.entry(user.to_string()).or_default() += windows;
        Ok(Reservation {
            user: user.to_string(),
            windows,
            ledger: self.ledger.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_counted_per_user_and_given_back() {
        let ledger = UserLedger::new(UserLimits {
            max_windows: 2,
            requests_per_minute: 100,
        });
        let a1 = ledger.reserve("alice", 1).unwrap();
        let _a2 = ledger.reserve("alice", 1).unwrap();
        let e = ledger.reserve("alice", 1).err().unwrap();
        assert!(e.contains("alice has 2 fleet windows open"), "{e}");
        // bob is not held up by alice.
        let _b = ledger.reserve("bob", 2).unwrap();
        assert!(ledger.reserve("bob", 1).is_err());
        drop(a1);
        ledger.reserve("alice", 1).unwrap();
        // A part that needs more than the limit is refused whole.
        assert!(ledger.reserve("carol", 3).is_err());
    }

    #[test]
    fn requests_are_limited_per_user_per_minute() {
        let ledger = UserLedger::new(UserLimits {
            max_windows: 4,
            requests_per_minute: 3,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            ledger.admit_request("alice", t0).unwrap();
        }
        let e = ledger.admit_request("alice", t0).unwrap_err();
        assert!(e.contains("made 3 fleet requests"), "{e}");
        ledger.admit_request("bob", t0).unwrap();
        // A flood keeps being refused without growing the account.
        for _ in 0..1000 {
            assert!(ledger.admit_request("alice", t0).is_err());
        }
        assert_eq!(ledger.lock().recent["alice"].len(), 3);
        // A minute later it is allowed again.
        ledger
            .admit_request("alice", t0 + Duration::from_secs(61))
            .unwrap();
    }
}
