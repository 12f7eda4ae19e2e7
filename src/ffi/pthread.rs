//! Connection threads as raw pthreads.
//!
//! `std::thread` gives every thread a signal stack for its stack-overflow
//! handler: two extra memory mappings (stack + guard page), four in all per
//! thread. With a reader and a writer per connection that reaches
//! `vm.max_map_count` (65530 by default) near 8k connections, and past it std
//! aborts the whole process while mapping the signal stack. A raw pthread with an
//! explicit small stack and one guard page costs two mappings, so 10k
//! connections (4 mappings each) fit. What is lost: a stack overflow on these
//! threads is reported as a plain SIGSEGV instead of std's message.

use std::ffi::c_void;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A spawned, joinable pthread. Dropping it without [`RawThread::join`] detaches it.
#[derive(Debug)]
pub(crate) struct RawThread {
    id: libc::pthread_t,
    joined: bool,
}

extern "C" fn start(arg: *mut c_void) -> *mut c_void {
    // SAFETY: `arg` is the `Box<Job>` leaked by `spawn` for exactly this thread,
    // and it is reclaimed exactly once, here.
    let job: Box<Job> = unsafe { Box::from_raw(arg.cast::<Job>()) };
    // A panic must not unwind through this `extern "C"` frame (that aborts).
    if catch_unwind(AssertUnwindSafe(job)).is_err() {
        log::error!("a connection thread panicked; its connection is dropped");
    }
    std::ptr::null_mut()
}

/// Starts `f` on a new pthread with `stack_size` bytes of stack (rounded up to
/// whole pages, at least `PTHREAD_STACK_MIN`) and one guard page.
pub(crate) fn spawn<F>(name: &str, stack_size: usize, f: F) -> io::Result<RawThread>
where
    F: FnOnce() + Send + 'static,
{
    let named = {
        // Linux limits thread names to 15 bytes.
        let short: String = name.chars().take(15).collect();
        std::ffi::CString::new(short).ok()
    };
    let job: Box<Job> = Box::new(Box::new(move || {
        if let Some(name) = named {
            // SAFETY: `name` is a valid NUL-terminated string of at most 15 bytes,
            // and pthread_self() is this thread.
            unsafe { libc::pthread_setname_np(libc::pthread_self(), name.as_ptr()) };
        }
        f()
    }));
    let page = 4096;
    let stack = stack_size.max(libc::PTHREAD_STACK_MIN).div_ceil(page) * page;
    // SAFETY: attr is initialised by pthread_attr_init before any other use and
    // destroyed once; `arg` is a leaked Box handed to `start`, or reclaimed here
    // when pthread_create fails (then no thread owns it).
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        let rc = libc::pthread_attr_init(&mut attr);
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        let mut rc = libc::pthread_attr_setstacksize(&mut attr, stack);
        if rc == 0 {
            rc = libc::pthread_attr_setguardsize(&mut attr, page);
        }
        let arg = Box::into_raw(job).cast::<c_void>();
        let mut id: libc::pthread_t = std::mem::zeroed();
        if rc == 0 {
            rc = libc::pthread_create(&mut id, &attr, start, arg);
        }
        libc::pthread_attr_destroy(&mut attr);
        if rc != 0 {
            drop(Box::from_raw(arg.cast::<Job>()));
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(RawThread { id, joined: false })
    }
}

impl RawThread {
    /// Waits for the thread to finish.
    pub(crate) fn join(mut self) {
        self.joined = true;
        // SAFETY: `id` is a joinable thread created by `spawn` that has not been
        // joined or detached (both consume `self`).
        unsafe { libc::pthread_join(self.id, std::ptr::null_mut()) };
    }
}

impl Drop for RawThread {
    fn drop(&mut self) {
        if !self.joined {
            // SAFETY: as in `join`; detaching lets the thread free itself on exit.
            unsafe { libc::pthread_detach(self.id) };
        }
    }
}

/// Wakes a thread blocked in `accept()` on this listening socket: on Linux,
/// `shutdown(SHUT_RD)` makes a blocked accept return `EINVAL`.
pub(crate) fn shutdown_listener(listener: &std::net::TcpListener) {
    use std::os::fd::AsRawFd;
    // SAFETY: the fd is owned by `listener`, which outlives this call.
    unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RD) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn runs_joins_and_survives_a_panic() {
        let n = Arc::new(AtomicUsize::new(0));
        let n2 = n.clone();
        spawn("t-ok", 64 * 1024, move || {
            n2.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap()
        .join();
        assert_eq!(n.load(Ordering::SeqCst), 1);
        spawn("t-panic", 64 * 1024, || panic!("boom")).unwrap().join();
    }
}
