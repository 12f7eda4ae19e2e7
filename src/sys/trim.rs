//! Giving freed heap memory back to the system.
//!
//! glibc's malloc keeps memory a program freed in its arenas, so after a burst
//! of large frames (a slow consumer's queue, a room's history) the process
//! keeps its peak RSS. `malloc_trim` returns every free page of every arena.
//! It walks the whole heap, so it runs only after a lot was freed, on a
//! short-lived thread, at most one at a time and at most once per [`DELAY`].

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

/// Freed bytes (as told by [`note_freed`]) that make a trim worth its cost.
const WORTH_TRIMMING: usize = 32 << 20;
/// How long a requested trim waits, so that what is being freed (a closed
/// connection's queue, dropped by its writer after the reader's on_close) is
/// freed before it runs; trims also come at most this often.
const DELAY: Duration = Duration::from_millis(500);

static FREED: AtomicUsize = AtomicUsize::new(0);
/// Bumped by every request; the trim thread loops until none came while it slept.
static REQUESTS: AtomicU64 = AtomicU64::new(0);
static RUNNING: AtomicBool = AtomicBool::new(false);
static TRIMS: AtomicUsize = AtomicUsize::new(0);

/// Returns the free memory of every malloc arena to the system now.
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and releases malloc's own free lists,
    // under each arena's lock; it touches no memory the program owns.
    unsafe {
        libc::malloc_trim(0);
    }
    TRIMS.fetch_add(1, SeqCst);
}

/// Counts `bytes` freed (or about to be); once enough has been, asks for a
/// trim (see [`soon`]). Cheap enough to call on every free worth mentioning.
pub(crate) fn note_freed(bytes: usize) {
    if bytes == 0 || FREED.fetch_add(bytes, SeqCst) + bytes < WORTH_TRIMMING {
        return;
    }
    FREED.store(0, SeqCst);
    soon();
}

/// Asks for a [`release_free_memory`] at least [`DELAY`] from now and at
/// most twice that: the one trim thread, started if none runs, sleeps
/// `DELAY` and trims, again while requests keep coming.
pub(crate) fn soon() {
    REQUESTS.fetch_add(1, SeqCst);
    if RUNNING.swap(true, SeqCst) {
        return; // the running thread sees the new request after its sleep
    }
    let spawned = super::signals::spawn(
        std::thread::Builder::new().name("wshub-trim".into()).stack_size(64 * 1024),
        || loop {
            let seen = REQUESTS.load(SeqCst);
            std::thread::sleep(DELAY);
            release_free_memory(); // every request up to `seen` has waited DELAY
            if REQUESTS.load(SeqCst) != seen {
                continue; // newer requests have not waited long enough yet
            }
            RUNNING.store(false, SeqCst);
            // A request between the check and the store found RUNNING set and
            // left its trim to us: take it back unless a new thread already did.
            if REQUESTS.load(SeqCst) == seen || RUNNING.swap(true, SeqCst) {
                return;
            }
        },
    );
    if spawned.is_err() {
        RUNNING.store(false, SeqCst);
    }
}

/// How many trims have run (for `/metrics`).
pub(crate) fn trims() -> usize {
    TRIMS.load(SeqCst)
}
