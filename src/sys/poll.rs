//! `poll(2)` over a set of sockets, for the overflow thread, which answers
//! many sockets from one thread.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// Waits until one of `fds` is readable (or has hung up), at most `timeout`;
/// sets `ready[i]` for each that is. Returns how many are.
pub(crate) fn readable(fds: &[RawFd], timeout: Duration, ready: &mut Vec<bool>) -> io::Result<usize> {
    let mut set: Vec<libc::pollfd> =
        fds.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `set` is a valid, exclusively borrowed array of `set.len()`
    // pollfd structs for the duration of the call.
    let n = unsafe { libc::poll(set.as_mut_ptr(), set.len() as libc::nfds_t, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted { Ok(0) } else { Err(e) };
    }
    ready.clear();
    ready.extend(set.iter().map(|p| p.revents != 0));
    Ok(n as usize)
}
