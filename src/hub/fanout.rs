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
    index: HashMap<ConnId, usize>,
}

impl Cork {
    pub(super) fn add(&mut self, conn: &Arc<ConnShared>, frame: SharedFrame) {
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
