//! Giving freed heap memory back to the system.
//!
//! glibc's malloc keeps memory a program freed in its arenas, so after a burst
//! of large frames (a slow consumer's queue, a room's history) the process
//! keeps its peak RSS. `malloc_trim` returns every free page of every arena.
//! It walks the whole heap, so it runs only after a lot was freed, on a
//! short-lived thread, at most one pending at a time.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

/// Freed bytes (as told by [`note_freed`]) that make a trim worth its cost.
const WORTH_TRIMMING: usize = 32 << 20;
/// How long a scheduled trim waits, so that what is being freed (a closed
/// connection's queue, dropped by its writer after the reader's on_close) is
/// freed before it runs, and so that trims come at most this often.
const DELAY: Duration = Duration::from_millis(500);

static FREED: AtomicUsize = AtomicUsize::new(0);
static SCHEDULED: AtomicBool = AtomicBool::new(false);
static TRIMS: AtomicUsize = AtomicUsize::new(0);

/// Returns the free memory of every malloc arena to the system now.
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and releases malloc's own free lists,
    // under each arena's lock; it touches no memory the program owns.
    unsafe {
        libc::malloc_trim(0);
    }
    TRIMS.fetch_add(1, Relaxed);
}

/// Counts `bytes` freed (or about to be); once enough has been, schedules a
/// [`release_free_memory`] shortly after. Cheap enough to call on every free
/// worth mentioning.
pub(crate) fn note_freed(bytes: usize) {
    if bytes == 0 || FREED.fetch_add(bytes, Relaxed) + bytes < WORTH_TRIMMING {
        return;
    }
    soon();
}

/// Schedules a [`release_free_memory`] shortly after (at most one pending).
pub(crate) fn soon() {
    if SCHEDULED.swap(true, Relaxed) {
        return;
    }
    let spawned = std::thread::Builder::new().name("wshub-trim".into()).stack_size(64 * 1024).spawn(|| {
        std::thread::sleep(DELAY);
        FREED.store(0, Relaxed);
        SCHEDULED.store(false, Relaxed);
        release_free_memory();
    });
    if spawned.is_err() {
        SCHEDULED.store(false, Relaxed);
    }
}

/// How many trims have run (for `/metrics`).
pub(crate) fn trims() -> usize {
    TRIMS.load(Relaxed)
}
