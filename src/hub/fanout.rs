//! Handing frames to members: [`Cork`] gathers what one round of the hub
//! has for each member, [`deliver_all`] hands a member its frames (straight
//! to its socket in one `writev`, or to its queue), and the fan-out
//! [`Helper`] thread takes half of the members of a large round.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use crate::connection::outbound::QueueLimits;
use crate::connection::{ConnShared, PushError};
use crate::frame::SharedFrame;
use crate::stats::Stats;
use crate::types::ConnId;

/// A round for more members than this is split with the helper.
pub(super) const SPLIT_AT: usize = 128;

/// What one round of the hub has for each member, members in the order they
/// first got a frame, each member's frames in command order.
#[derive(Default)]
pub(super) struct Cork {
    members: Vec<(Arc<ConnShared>, Vec<SharedFrame>)>,
    /// Where each member is in `members`, from the round's second command on.
    index: HashMap<ConnId, usize>,
    /// Commands gathered this round, counting the one being gathered.
    commands: usize,
}

impl Cork {
    /// Starts gathering the next command's frames. One command names each
    /// member once (a room's members are a set), so the first command of a
    /// round, often the only one, adds its members without looking them up;
    /// from the second on a member may already have frames, and the index is
    /// built.
    pub(super) fn next_command(&mut self) {
        self.commands += 1;
        if self.commands == 2 {
            self.index.extend(self.members.iter().enumerate().map(|(i, (c, _))| (c.id, i)));
        }
    }

    pub(super) fn add(&mut self, conn: &Arc<ConnShared>, frame: SharedFrame) {
        if self.commands <= 1 {
            self.members.push((conn.clone(), vec![frame]));
            return;
        }
        match self.index.entry(conn.id) {
            Entry::Occupied(at) => self.members[*at.get()].1.push(frame),
            Entry::Vacant(at) => {
                at.insert(self.members.len());
                self.members.push((conn.clone(), vec![frame]));
            }
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The round's members and their frames; the cork is empty after.
    pub(super) fn take(&mut self) -> Vec<(Arc<ConnShared>, Vec<SharedFrame>)> {
        self.index.clear();
        self.commands = 0;
        std::mem::take(&mut self.members)
    }
}

/// Half of a large round's members, for the fan-out helper thread.
pub(super) struct Half {
    pub members: Vec<(Arc<ConnShared>, Vec<SharedFrame>)>,
}

/// The fan-out helper: a second thread that sends to half of a large round's
/// members while the hub sends to the other half, so on two cores a round
/// reaches its last member in about half the time. The hub waits for it
/// before its next command, so every member still gets frames in command
/// order; the helper never blocks on a member (non-blocking sends, queue pushes).
pub(super) struct Helper {
    pub jobs: Sender<Half>,
    pub done: Receiver<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Helper {
    pub(super) fn start(limits: QueueLimits, stats: Arc<Stats>) -> std::io::Result<Helper> {
        let (jobs, job_rx) = crossbeam_channel::bounded::<Half>(1);
        let (done_tx, done) = crossbeam_channel::bounded(1);
        let builder = std::thread::Builder::new().name("wshub-fanout".into());
        let thread = crate::sys::signals::spawn(builder, move || {
            for half in job_rx {
                for (conn, frames) in half.members {
                    deliver_all(&conn, frames, limits, &stats);
                }
                if done_tx.send(()).is_err() {
                    break;
                }
            }
        })?;
        Ok(Helper { jobs, done, thread: Some(thread) })
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        // Closing the job channel ends the helper's loop.
        let (closed, _) = crossbeam_channel::bounded(0);
        self.jobs = closed;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Hands one member the frames a round has for it: as many as its socket
/// takes straight away in one `writev` when that keeps order (nothing queued),
/// the rest to its writer's queue behind them.
pub(super) fn deliver_all(conn: &ConnShared, frames: Vec<SharedFrame>, limits: QueueLimits, stats: &Stats) {
    let sent = conn.try_send_direct_many(&frames, stats);
    for frame in frames.into_iter().skip(sent) {
        if !queue(conn, frame, limits, stats) {
            break;
        }
    }
}

/// Puts `frame` on a member's queue; a full queue makes it a slow consumer
/// (closed with 1013, false), and nobody waits for it.
fn queue(conn: &ConnShared, frame: SharedFrame, limits: QueueLimits, stats: &Stats) -> bool {
    let (what, counter) = match conn.push_frame(frame, limits, stats) {
        Ok(()) => return true,
        Err(PushError::Full) => (format!("{} frames", limits.frames), &stats.dropped_slow_consumer),
        Err(PushError::OverBytes) => (format!("{} bytes", limits.bytes), &stats.dropped_outbound_bytes),
    };
    log::warn!("conn {} ({}): outbound queue full at {what}; closing it with 1013", conn.id, conn.addr());
    Stats::add(counter, 1);
    conn.close_slow_consumer();
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::test_support::loopback_conn;

    #[test]
    fn a_cork_keeps_one_entry_per_member_and_its_frames_in_command_order() {
        let conns: Vec<_> = (1..=3).map(|id| loopback_conn(id).0).collect();
        let frame = |b: u8| crate::frame::shared(crate::frame::encode(crate::frame::OP_TEXT, &[b]));
        let mut cork = Cork::default();
        // A send to member 2 first, then two broadcasts to all three.
        cork.next_command();
        cork.add(&conns[1], frame(0));
        for b in 1..=2 {
            cork.next_command();
            conns.iter().for_each(|c| cork.add(c, frame(b)));
        }
        let round = cork.take();
        let got: Vec<(ConnId, Vec<u8>)> =
            round.iter().map(|(c, frames)| (c.id, frames.iter().map(|f| f[2]).collect())).collect();
        assert_eq!(got, [(2, vec![0, 1, 2]), (1, vec![1, 2]), (3, vec![1, 2])]);
        // Empty again; the next round starts without an index.
        assert!(cork.is_empty());
        cork.next_command();
        cork.add(&conns[0], frame(9));
        assert_eq!(cork.take().len(), 1);
    }
}
