//! Per-thread order of hub commands: every command a thread sends to the hub
//! carries that thread's counter, which the hub bumps once the command has
//! taken effect. [`nothing_pending`] is what lets a thread send a frame straight
//! to a socket (see `connection/outbound.rs`) without overtaking one of its own
//! earlier commands still waiting in the hub's queue.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::sync::Arc;

use crossbeam_channel::{SendError, Sender};

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

/// Sends `cmd` to the hub, counted against the calling thread.
pub(crate) fn submit(tx: &Sender<Ticketed>, cmd: Cmd) -> Result<(), SendError<Cmd>> {
    TICKETS.with(|t| {
        t.sent.set(t.sent.get() + 1);
        tx.send(Ticketed { cmd, done: Some(t.done.clone()) }).map_err(|SendError(e)| {
            // Never sent: uncounted, not counted as done.
            t.sent.set(t.sent.get() - 1);
            SendError(e.into_parts().0)
        })
    })
}

/// Sends a command that cannot reorder frames (registering a connection), so
/// it does not keep the thread's next `send` from going straight out.
pub(crate) fn submit_untracked(tx: &Sender<Ticketed>, cmd: Cmd) {
    let _ = tx.send(Ticketed { cmd, done: None });
}

/// True when every command this thread sent has taken effect: then a frame it
/// sends straight to a socket cannot overtake one of its own earlier commands.
pub(crate) fn nothing_pending() -> bool {
    TICKETS.with(|t| t.done.load(Acquire) == t.sent.get())
}
