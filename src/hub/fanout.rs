//! Handing one frame to many members: [`deliver`] (straight to a socket or to
//! the member's queue) and the fan-out [`Helper`] thread that takes half of a
//! large room.

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use crate::connection::outbound::QueueLimits;
use crate::connection::{ConnShared, PushError};
use crate::frame::SharedFrame;
use crate::stats::Stats;

/// A direct broadcast to more members than this is split with the helper.
pub(super) const SPLIT_AT: usize = 128;

/// Half of a direct broadcast, for the fan-out helper thread.
pub(super) struct Half {
    pub frame: SharedFrame,
    pub members: Vec<Arc<ConnShared>>,
}

/// The fan-out helper: a second thread that sends to half of a large room
/// while the hub sends to the other half, so on two cores a broadcast reaches
/// its last member in about half the time. The hub waits for it before its
/// next command, so every member still gets frames in command order; the
/// helper never blocks on a member (non-blocking sends, queue pushes).
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
                for conn in &half.members {
                    deliver(conn, half.frame.clone(), true, limits, &stats);
                }
                drop(half);
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

/// Hands `frame` to one member: straight to its socket when `direct` and that
/// keeps order, else to its writer's queue; a full queue makes it a slow
/// consumer (closed with 1013), and nobody waits for it.
pub(super) fn deliver(
    conn: &ConnShared,
    frame: SharedFrame,
    direct: bool,
    limits: QueueLimits,
    stats: &Stats,
) {
    if direct && conn.try_send_direct(&frame, stats) {
        return;
    }
    let (what, counter) = match conn.push_frame(frame, limits, stats) {
        Ok(()) => return,
        Err(PushError::Full) => (format!("{} frames", limits.frames), &stats.dropped_slow_consumer),
        Err(PushError::OverBytes) => (format!("{} bytes", limits.bytes), &stats.dropped_outbound_bytes),
    };
    log::warn!("conn {} ({}): outbound queue full at {what}; closing it with 1013", conn.id, conn.addr());
    Stats::add(counter, 1);
    conn.close_slow_consumer();
}
