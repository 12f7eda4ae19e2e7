//! wshub's threads and the process's signals: every thread wshub starts
//! blocks every signal but the ones a fault raises on the faulting thread
//! itself (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGSYS, SIGABRT), so a
//! signal sent to the process (SIGINT, SIGTERM, SIGCHLD, a host's own) is
//! delivered to one of the host's threads, where its handlers expect it.
//!
//! A thread inherits the signal mask of the thread that creates it, so the
//! mask is set around each creation ([`spawn`]) and the creating thread's own
//! mask restored after; a connection thread (`pthread.rs`) gets it from its
//! attributes instead when glibc can ([`set_start_mask`]).

use std::io;
use std::thread::{Builder, JoinHandle};

/// The calling thread's signal mask as it was; restored on drop.
pub(crate) struct Blocked(libc::sigset_t);

/// Every signal but the fault signals: the mask of every thread wshub starts.
fn threads_mask() -> libc::sigset_t {
    // SAFETY: the set is initialised by sigfillset before sigdelset changes it.
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
        all
    }
}

/// Sets the mask a thread created with `attr` starts with
/// (`pthread_attr_setsigmask_np`, glibc 2.32+): no `sigprocmask` calls on
/// the creating thread around `pthread_create` then. False when this libc
/// has no such call (then [`block_all`] around the creation does it).
pub(crate) fn set_start_mask(attr: &mut libc::pthread_attr_t) -> bool {
    type SetSigmask = unsafe extern "C" fn(*mut libc::pthread_attr_t, *const libc::sigset_t) -> libc::c_int;
    static SET: std::sync::OnceLock<Option<SetSigmask>> = std::sync::OnceLock::new();
    let set = SET.get_or_init(|| {
        // SAFETY: dlsym with a NUL-terminated name; a non-null result is
        // glibc's `int pthread_attr_setsigmask_np(pthread_attr_t *, const sigset_t *)`.
        let sym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"pthread_attr_setsigmask_np".as_ptr()) };
        // SAFETY: as above: the symbol has exactly this signature.
        (!sym.is_null()).then(|| unsafe { std::mem::transmute::<*mut std::ffi::c_void, SetSigmask>(sym) })
    });
    let mask = threads_mask();
    // SAFETY: `attr` is an initialised attribute object; the call copies the set.
    set.is_some_and(|set| unsafe { set(attr, &mask) } == 0)
}

/// Blocks every signal but the fault signals on the calling thread until the
/// returned value is dropped.
pub(crate) fn block_all() -> Blocked {
    let all = threads_mask();
    // SAFETY: `old` is initialised by sigemptyset before use; pthread_sigmask
    // only reads `all` and writes `old`, both on this stack.
    unsafe {
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
