//! Per-thread order of hub commands, and the hub's two lanes.
//!
//! Every command a thread sends to the hub carries that thread's counter,
//! which the hub bumps once the command has taken effect. [`nothing_pending`]
//! is what lets a thread send a frame straight to a socket (see
//! `connection/outbound.rs`) without overtaking one of its own earlier
//! commands still waiting in the hub's queue.
//!
//! The hub reads two bounded channels ([`HubTx`], [`HubRx`]): the ordered
//! lane (`Config::hub_queue`), which carries sends, broadcasts, membership
//! changes, closes and queries, and the control lane, which the hub always
//! empties first ([`Cmd::is_control`]: the stop's close and the shutdown, a
//! connection's registration and end). A control command takes the control lane only when
//! its thread has nothing pending in the hub ([`submit`]), so it can
//! overtake other threads' broadcasts but never its own thread's earlier
//! commands; with something pending it queues behind them on the ordered
//! lane, as every command did before there were two lanes. The hub looks
//! at the control lane again after taking each command off the ordered lane
//! and before carrying it out, so a control command always takes effect
//! before any command its thread sent after it.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::sync::Arc;

use crossbeam_channel::{Receiver, SendError, Sender};

use super::Cmd;

/// A command with the counter of the thread that sent it, which the hub bumps
/// once the command has taken effect. A command dropped before the hub took
/// it apart (behind a `Shutdown`, discarded with the hub's end of the
/// channel) will never take effect: dropping it bumps the counter, so its
/// thread does not wait on it for ever.
pub(crate) struct Ticketed {
    cmd: Cmd,
    done: Option<Arc<AtomicU64>>,
}

impl Ticketed {
    /// The command, and the counter to bump once it has taken effect.
    pub(super) fn into_parts(mut self) -> (Cmd, Option<Arc<AtomicU64>>) {
        let cmd = std::mem::replace(&mut self.cmd, Cmd::Shutdown);
        (cmd, self.done.take())
    }
}

impl Drop for Ticketed {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            done.fetch_add(1, Release);
        }
    }
}

/// Per thread: how many commands it has sent to a hub, and how many of them
/// a hub has carried out.
struct Tickets {
    sent: Cell<u64>,
    done: Arc<AtomicU64>,
}

thread_local! {
    static TICKETS: Tickets = Tickets { sent: Cell::new(0), done: Arc::new(AtomicU64::new(0)) };
}

/// Commands the control lane holds before their senders wait: the hub
/// empties it before each command of the ordered lane, so it stays short.
const CONTROL_LANE: usize = 1024;

/// The senders of a hub's two lanes (see the module comment).
#[derive(Clone)]
pub(crate) struct HubTx {
    control: Sender<Ticketed>,
    ordered: Sender<Ticketed>,
}

/// The hub's ends of its two lanes.
pub(crate) struct HubRx {
    pub(super) control: Receiver<Ticketed>,
    pub(super) ordered: Receiver<Ticketed>,
}

impl Drop for HubRx {
    /// The hub has returned: what still waits on the lanes will never take
    /// effect. Dropped here, each command counts as done (see [`Ticketed`]);
    /// a bounded channel would keep them until its last sender goes.
    fn drop(&mut self) {
        while self.control.try_recv().is_ok() || self.ordered.try_recv().is_ok() {}
    }
}

/// A hub's lanes: the ordered one holds `ordered_bound` commands
/// (`Config::hub_queue`), the control one [`CONTROL_LANE`].
pub(crate) fn lanes(ordered_bound: usize) -> (HubTx, HubRx) {
    let (control, control_rx) = crossbeam_channel::bounded(CONTROL_LANE);
    let (ordered, ordered_rx) = crossbeam_channel::bounded(ordered_bound);
    (HubTx { control, ordered }, HubRx { control: control_rx, ordered: ordered_rx })
}

/// Sends `cmd` to the hub, counted against the calling thread: on the
/// control lane when it is a control command and nothing of this thread's
/// is pending there, else on the ordered lane.
pub(crate) fn submit(tx: &HubTx, cmd: Cmd) -> Result<(), SendError<Cmd>> {
    let lane = if cmd.is_control() && nothing_pending() { &tx.control } else { &tx.ordered };
    TICKETS.with(|t| {
        t.sent.set(t.sent.get() + 1);
        lane.send(Ticketed { cmd, done: Some(t.done.clone()) }).map_err(|SendError(e)| {
            // Never sent: uncounted, not counted as done.
            t.sent.set(t.sent.get() - 1);
            SendError(e.into_parts().0)
        })
    })
}

/// Sends a command that cannot reorder frames (registering a connection), so
/// it does not keep the thread's next `send` from going straight out. On the
/// control lane: it takes effect before anything the thread sends after it.
pub(crate) fn submit_untracked(tx: &HubTx, cmd: Cmd) {
    let _ = tx.control.send(Ticketed { cmd, done: None });
}

/// What the calling thread has sent to the hub so far, for another thread
/// to wait on ([`Sent::wait`]): the stop a callback asks for runs on the
/// stopper thread, and must not overtake that callback's broadcasts.
pub(crate) struct Sent {
    done: Arc<AtomicU64>,
    upto: u64,
}

/// See [`Sent`].
pub(crate) fn sent_so_far() -> Sent {
    TICKETS.with(|t| Sent { done: t.done.clone(), upto: t.sent.get() })
}

impl Sent {
    /// Waits until every command counted in it has taken effect (or was
    /// dropped with the hub), or `most` has passed.
    pub(crate) fn wait(&self, most: std::time::Duration) {
        let until = std::time::Instant::now() + most;
        while self.done.load(Acquire) < self.upto && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

/// True when every command this thread sent has taken effect: then a frame it
/// sends straight to a socket cannot overtake one of its own earlier commands.
pub(crate) fn nothing_pending() -> bool {
    TICKETS.with(|t| t.done.load(Acquire) == t.sent.get())
}
