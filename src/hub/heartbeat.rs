//! The heartbeat: the hub sends every open connection a ping (a `: ping`
//! comment to an event stream) once per `heartbeat_interval`, counted from
//! its registration. No connection thread waits for it, so an idle
//! connection needs no writer thread: the ping goes straight to its socket
//! through the ordering point (`ConnShared::send_heartbeat` in
//! `connection/outbound.rs`), or is queued behind what waits there. The
//! idle timeout stays the reader's (a read that waits that long ends it).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use crate::types::ConnId;

/// When each registered connection's next heartbeat is due.
pub(super) struct Heartbeat {
    interval: Duration,
    /// Earliest first; an entry whose connection has gone is dropped when it
    /// comes up.
    due: BinaryHeap<Reverse<(Instant, ConnId)>>,
}

impl Heartbeat {
    pub(super) fn new(interval: Duration) -> Self {
        Heartbeat { interval, due: BinaryHeap::new() }
    }

    /// A connection registered at `now`: its first heartbeat is one interval on.
    pub(super) fn add(&mut self, id: ConnId, now: Instant) {
        self.due.push(Reverse((now + self.interval, id)));
    }

    /// When the next heartbeat is due, if any connection is waiting for one.
    pub(super) fn next(&self) -> Option<Instant> {
        self.due.peek().map(|Reverse((at, _))| *at)
    }

    /// Calls `beat` for every connection whose heartbeat is due at `now`;
    /// one for which it returns true (still registered) is due again one
    /// interval after `now`.
    pub(super) fn run_due(&mut self, now: Instant, mut beat: impl FnMut(ConnId) -> bool) {
        while let Some(Reverse((at, id))) = self.due.peek().copied() {
            if at > now {
                break;
            }
            self.due.pop();
            if beat(id) {
                self.due.push(Reverse((now + self.interval, id)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_connection_is_due_once_per_interval_until_it_goes() {
        let start = Instant::now();
        let mut hb = Heartbeat::new(Duration::from_secs(1));
        hb.add(1, start);
        hb.add(2, start + Duration::from_millis(500));
        assert_eq!(hb.next(), Some(start + Duration::from_secs(1)));
        let mut beats = Vec::new();
        hb.run_due(start + Duration::from_millis(999), |id| {
            beats.push(id);
            true
        });
        assert!(beats.is_empty());
        hb.run_due(start + Duration::from_millis(1600), |id| {
            beats.push(id);
            id != 2 // 2 has gone
        });
        assert_eq!(beats, [1, 2]);
        assert_eq!(hb.next(), Some(start + Duration::from_millis(2600)));
        hb.run_due(start + Duration::from_secs(10), |id| {
            beats.push(id);
            false
        });
        assert_eq!(beats, [1, 2, 1]);
        assert_eq!(hb.next(), None);
    }
}
