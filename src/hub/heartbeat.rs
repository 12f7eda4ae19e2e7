//! The heartbeat: the hub sends every open connection a ping (a `: ping`
//! comment to an event stream) once per `heartbeat_interval`, counted from
//! its registration. No connection thread waits for it, so an idle
//! connection needs no writer thread: the ping goes straight to its socket
//! through the ordering point (`ConnShared::send_heartbeat` in
//! `connection/outbound.rs`), or is queued behind what waits there. A ping
//! that finds another thread writing to the socket right then (a reply
//! going straight out) is not queued, which would start a writer thread for
//! it: it is tried again a little later ([`DEFER_STEPS`] times per
//! interval), and queued only once it is [`MOST_LATE`] of an interval late
//! and was tried [`LEAST_TRIES`] times, so a connection that only receives
//! still gets its pings (and answers them) well within its idle timeout.
//! While a heartbeat waits in a connection's queue, the next ones are not
//! queued again. The idle timeout stays the reader's
//! (a read that waits that long ends it).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use crate::types::ConnId;

/// A deferred ping is tried again after this fraction of an interval.
const DEFER_STEPS: u32 = 16;
/// A ping due this fraction of an interval ago is queued if it must be...
const MOST_LATE: u32 = 4;
/// ...once it has been tried this many times (with a tiny interval on a busy
/// machine a quarter interval can pass between two tries).
const LEAST_TRIES: u32 = 8;

/// What became of a connection's heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Beat {
    /// Sent, queued, or a heartbeat already queued serves for it.
    Done,
    /// Not sent: another thread was writing to the socket. Tried again soon.
    Busy,
    /// The connection is no longer registered.
    Gone,
}

/// When each registered connection's next heartbeat is due.
pub(super) struct Heartbeat {
    interval: Duration,
    /// Earliest first: when to try, the connection, when its ping was first
    /// due and how often it was tried (for a deferred ping). An entry whose
    /// connection has gone is dropped when it comes up.
    due: BinaryHeap<Reverse<(Instant, ConnId, Instant, u32)>>,
}

impl Heartbeat {
    pub(super) fn new(interval: Duration) -> Self {
        Heartbeat { interval, due: BinaryHeap::new() }
    }

    /// A connection registered at `now`: its first heartbeat is one interval on.
    pub(super) fn add(&mut self, id: ConnId, now: Instant) {
        let at = now + self.interval;
        self.due.push(Reverse((at, id, at, 0)));
    }

    /// When the next heartbeat is due, if any connection is waiting for one.
    pub(super) fn next(&self) -> Option<Instant> {
        self.due.peek().map(|Reverse((at, ..))| *at)
    }

    /// Calls `beat` for every connection whose heartbeat is due at `now`,
    /// with whether its ping may still be deferred (it is less than
    /// [`MOST_LATE`] of an interval late, or was tried fewer than
    /// [`LEAST_TRIES`] times). One that is [`Beat::Done`] is due
    /// again one interval after `now`; one that is [`Beat::Busy`] is tried
    /// again [`DEFER_STEPS`] of an interval from now.
    pub(super) fn run_due(&mut self, now: Instant, mut beat: impl FnMut(ConnId, bool) -> Beat) {
        let mut deferred = Vec::new();
        while let Some(Reverse((at, id, owed, tries))) = self.due.peek().copied() {
            if at > now {
                break;
            }
            self.due.pop();
            let next = now + self.interval;
            match beat(id, tries < LEAST_TRIES || now < owed + self.interval / MOST_LATE) {
                Beat::Done => self.due.push(Reverse((next, id, next, 0))),
                Beat::Busy => {
                    deferred.push(Reverse((now + self.interval / DEFER_STEPS, id, owed, tries + 1)))
                }
                Beat::Gone => {}
            }
        }
        // After the loop: with a tiny interval a retry could be due at `now` again.
        self.due.extend(deferred);
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
        hb.run_due(start + Duration::from_millis(999), |id, _| {
            beats.push(id);
            Beat::Done
        });
        assert!(beats.is_empty());
        hb.run_due(start + Duration::from_millis(1600), |id, _| {
            beats.push(id);
            if id == 2 {
                Beat::Gone
            } else {
                Beat::Done
            }
        });
        assert_eq!(beats, [1, 2]);
        assert_eq!(hb.next(), Some(start + Duration::from_millis(2600)));
        hb.run_due(start + Duration::from_secs(10), |id, _| {
            beats.push(id);
            Beat::Gone
        });
        assert_eq!(beats, [1, 2, 1]);
        assert_eq!(hb.next(), None);
    }

    #[test]
    fn a_busy_connections_ping_is_tried_again_soon_then_queued_if_it_must_be() {
        let start = Instant::now();
        let interval = Duration::from_millis(1600);
        let mut hb = Heartbeat::new(interval);
        hb.add(1, start);
        let mut now = start + interval;
        let mut tries = Vec::new();
        loop {
            let mut this = None;
            hb.run_due(now, |_, may_defer| {
                this = Some(may_defer);
                if may_defer {
                    Beat::Busy
                } else {
                    Beat::Done
                }
            });
            tries.push(this.expect("due"));
            if this == Some(false) {
                break;
            }
            now = hb.next().unwrap();
            assert_eq!(now - start, interval + interval / 16 * tries.len() as u32);
        }
        // A quarter interval has passed after four tries, but eight are made.
        assert_eq!(tries, [true, true, true, true, true, true, true, true, false], "then queued");
        assert_eq!(hb.next(), Some(now + interval), "then due one interval on");
    }
}
