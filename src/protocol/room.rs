//! One room's protocol state: its sequence counter, epoch, bounded history and
//! presence list; and the table of rooms.
//!
//! The engine's hub owns who receives a broadcast; this owns what the protocol
//! promises on top: `seq` order, recovery and presence. Whoever assigns a seq
//! must broadcast while holding the room's lock (see `handler.rs`), so seq
//! order is delivery order.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::Value;

use crate::types::{ConnId, Message};

/// One published message as kept for recovery: the exact frame members got.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub seq: u64,
    pub at: Instant,
    pub message: Message,
}

/// What a `since` asks for, given the history.
#[derive(Debug)]
pub(crate) struct Recovery {
    /// Messages after `since` still in history, in order.
    pub replay: Vec<Message>,
    /// False when history no longer reaches back to `since + 1`, or `since`
    /// belongs to another epoch.
    pub recovered: bool,
}

/// The protocol state of one room.
#[derive(Debug)]
pub(crate) struct RoomState {
    /// The seq of the last published message (0 before the first).
    pub seq: u64,
    /// Names this incarnation of the room's history.
    pub epoch: String,
    history: VecDeque<Entry>,
    /// Members in join order: clientId and meta by connection.
    pub members: BTreeMap<ConnId, Value>,
    /// Set when the table dropped this room; its holder must look it up again.
    dead: bool,
}

impl RoomState {
    fn new(epoch: String) -> Self {
        RoomState { seq: 0, epoch, history: VecDeque::new(), members: BTreeMap::new(), dead: false }
    }

    /// Drops what is past `limit` messages or older than `ttl`.
    pub fn prune(&mut self, limit: usize, ttl: Duration, now: Instant) {
        while self.history.len() > limit {
            self.history.pop_front();
        }
        while self.history.front().is_some_and(|e| now.saturating_duration_since(e.at) > ttl) {
            self.history.pop_front();
        }
    }

    /// Assigns the next seq and records `message` (built by `make` from that seq).
    pub fn publish(
        &mut self,
        limit: usize,
        ttl: Duration,
        now: Instant,
        make: impl FnOnce(u64) -> Message,
    ) -> (u64, Message) {
        self.seq += 1;
        let message = make(self.seq);
        if limit > 0 {
            self.history.push_back(Entry { seq: self.seq, at: now, message: message.clone() });
        }
        self.prune(limit, ttl, now);
        (self.seq, message)
    }

    /// What a client that last saw `since` (in `epoch`, when it says) missed,
    /// at most the newest `max_replay` messages (more would overflow its
    /// outbound queue and get it closed as a slow consumer).
    pub fn recover(&self, since: u64, epoch: Option<&str>, max_replay: usize) -> Recovery {
        if epoch.is_some_and(|e| e != self.epoch) || since > self.seq {
            return Recovery { replay: Vec::new(), recovered: false };
        }
        let oldest = self.history.front().map_or(self.seq + 1, |e| e.seq);
        let missed = self.history.iter().filter(|e| e.seq > since).count();
        let skip = missed.saturating_sub(max_replay);
        let replay =
            self.history.iter().filter(|e| e.seq > since).skip(skip).map(|e| e.message.clone()).collect();
        Recovery { replay, recovered: oldest <= since + 1 && skip == 0 }
    }

    fn is_idle(&self) -> bool {
        self.members.is_empty() && self.history.is_empty()
    }
}

/// Every room with members or history.
#[derive(Debug)]
pub(crate) struct RoomTable {
    rooms: Mutex<HashMap<String, Arc<Mutex<RoomState>>>>,
    last_sweep: Mutex<Instant>,
    epochs: RandomState,
    epoch_counter: AtomicU64,
}

impl RoomTable {
    pub fn new() -> Self {
        RoomTable {
            rooms: Mutex::new(HashMap::new()),
            last_sweep: Mutex::new(Instant::now()),
            epochs: RandomState::new(),
            epoch_counter: AtomicU64::new(0),
        }
    }

    /// A fresh epoch: random per process (RandomState's keys), unique per room incarnation.
    fn new_epoch(&self) -> String {
        let mut h = self.epochs.build_hasher();
        h.write_u64(self.epoch_counter.fetch_add(1, Relaxed));
        format!("{:016x}", h.finish())
    }

    /// Runs `f` on `room`'s state under its lock, creating the room when `create`.
    /// Returns `None` when the room does not exist and `create` is false.
    pub fn with_room<T>(&self, room: &str, create: bool, f: impl FnOnce(&mut RoomState) -> T) -> Option<T> {
        let mut f = Some(f);
        // A room found dead was dropped between the lookup and the lock: look again.
        for _ in 0..8 {
            let state = {
                let mut rooms = self.rooms.lock();
                match rooms.get(room) {
                    Some(s) => s.clone(),
                    None if create => {
                        let s = Arc::new(Mutex::new(RoomState::new(self.new_epoch())));
                        rooms.insert(room.to_owned(), s.clone());
                        s
                    }
                    None => return None,
                }
            };
            let mut guard = state.lock();
            if !guard.dead {
                return f.take().map(|f| f(&mut guard));
            }
        }
        None
    }

    /// Drops rooms with no members whose history has expired (at most once a
    /// second, so callers may call it often).
    pub fn sweep(&self, limit: usize, ttl: Duration) {
        let now = Instant::now();
        {
            let mut last = self.last_sweep.lock();
            if now.saturating_duration_since(*last) < Duration::from_secs(1) {
                return;
            }
            *last = now;
        }
        self.rooms.lock().retain(|_, state| match state.try_lock() {
            Some(mut s) => {
                s.prune(limit, ttl, now);
                if s.is_idle() {
                    s.dead = true;
                    false
                } else {
                    true
                }
            }
            None => true,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(seq: u64) -> Message {
        Message::Text(seq.to_string())
    }

    #[test]
    fn recovery_replays_exactly_what_was_missed() {
        let mut r = RoomState::new("e".into());
        let now = Instant::now();
        for _ in 0..5 {
            r.publish(3, Duration::from_secs(60), now, text);
        }
        let all = r.recover(2, None, 100);
        assert!(all.recovered);
        assert_eq!(all.replay, vec![text(3), text(4), text(5)]);
        let gap = r.recover(1, None, 100);
        assert!(!gap.recovered);
        assert_eq!(gap.replay.len(), 3);
        assert!(r.recover(5, None, 100).recovered && r.recover(5, None, 100).replay.is_empty());
        assert!(!r.recover(6, None, 100).recovered);
        assert!(!r.recover(4, Some("other"), 100).recovered);
        assert!(r.recover(4, Some("e"), 100).recovered);
        let capped = r.recover(2, None, 2);
        assert!(!capped.recovered);
        assert_eq!(capped.replay, vec![text(4), text(5)]);
    }

    #[test]
    fn history_expires_by_age() {
        let mut r = RoomState::new("e".into());
        let t0 = Instant::now();
        r.publish(10, Duration::from_secs(1), t0, text);
        r.prune(10, Duration::from_secs(1), t0 + Duration::from_secs(2));
        assert!(!r.recover(0, None, 100).recovered);
        assert!(r.is_idle());
    }

    #[test]
    fn epochs_differ_per_incarnation() {
        let t = RoomTable::new();
        assert_ne!(t.new_epoch(), t.new_epoch());
    }
}
