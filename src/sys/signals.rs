//! wshub's threads and the process's signals: every thread wshub starts
//! blocks every signal but the ones a fault raises on the faulting thread
//! itself (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGSYS, SIGABRT), so a
//! signal sent to the process (SIGINT, SIGTERM, SIGCHLD, a host's own) is
//! delivered to one of the host's threads, where its handlers expect it.
//!
//! A thread inherits the signal mask of the thread that creates it, so the
//! mask is set around each creation ([`spawn`], and `pthread.rs` for the
//! connection threads) and the creating thread's own mask restored after.

use std::io;
use std::thread::{Builder, JoinHandle};

/// The calling thread's signal mask as it was; restored on drop.
pub(crate) struct Blocked(libc::sigset_t);

/// Blocks every signal but the fault signals on the calling thread until the
/// returned value is dropped.
pub(crate) fn block_all() -> Blocked {
    // SAFETY: both sets are initialised by sigfillset/sigemptyset before use;
    // pthread_sigmask only reads `all` and writes `old`, both on this stack.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        for fault in [
            libc::SIGSEGV,
            libc::SIGBUS,
            libc::SIGILL,
            libc::SIGFPE,
            libc::SIGTRAP,
            libc::SIGSYS,
            libc::SIGABRT,
        ] {
            libc::sigdelset(&mut all, fault);
        }
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut old);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        Blocked(old)
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        // SAFETY: restores a mask pthread_sigmask wrote in `block_all`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
    }
}

/// `builder.spawn(f)`, the new thread blocking signals as the module says.
pub(crate) fn spawn<F, T>(builder: Builder, f: F) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let _blocked = block_all();
    builder.spawn(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signals the thread `f` runs on blocks.
    fn blocked_on_a_spawned_thread() -> libc::sigset_t {
        spawn(Builder::new(), || {
            // SAFETY: reads the calling thread's mask into a zeroed set.
            unsafe {
                let mut mask: libc::sigset_t = std::mem::zeroed();
                libc::pthread_sigmask(libc::SIG_SETMASK, std::ptr::null(), &mut mask);
                mask
            }
        })
        .unwrap()
        .join()
        .unwrap()
    }

    #[test]
    fn a_spawned_thread_blocks_sigint_but_not_faults_and_the_caller_is_unchanged() {
        let mask = blocked_on_a_spawned_thread();
        // SAFETY: sigismember reads an initialised set.
        let (int, segv) =
            unsafe { (libc::sigismember(&mask, libc::SIGINT), libc::sigismember(&mask, libc::SIGSEGV)) };
        assert_eq!((int, segv), (1, 0));
        // SAFETY: as above, for this thread's own mask.
        let here = unsafe {
            let mut mask: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_SETMASK, std::ptr::null(), &mut mask);
            libc::sigismember(&mask, libc::SIGINT)
        };
        assert_eq!(here, 0, "the calling thread's mask was restored");
    }
}
