//! The few socket calls std does not offer: sends that never raise SIGPIPE, a
//! non-blocking send on a blocking socket, reads and sends that survive a
//! stopped process, and a deeper listen backlog.
//!
//! A blocking socket call with a timeout (SO_RCVTIMEO, SO_SNDTIMEO) fails
//! with EINTR when the process is stopped (SIGSTOP, a debugger, Ctrl-Z) and
//! continued, even without a handler (signal(7)); every read and send here
//! retries it, so a paused server keeps its connections.
//!
//! Every byte wshub writes to a peer goes through here with `MSG_NOSIGNAL`. A
//! Rust binary ignores SIGPIPE, but a C or C++ program linking `libwshub`
//! usually does not, and there a plain `write` to a socket the peer has reset
//! kills the whole process (tests/no_sigpipe_when_peers_reset.rs).

use std::io::{self, IoSlice, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;

/// Sends `buf` once, returning how much went. With `dont_wait` it never blocks
/// (`WouldBlock` when the socket buffer is full), whatever the socket's mode.
pub(crate) fn send(stream: &TcpStream, buf: &[u8], dont_wait: bool) -> io::Result<usize> {
    send_flags(stream, buf, if dont_wait { libc::MSG_DONTWAIT } else { 0 })
}

/// Runs `call` again while it fails with EINTR.
fn retrying<T>(mut call: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match call() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            done => return done,
        }
    }
}

/// One `read` from the socket, retried on EINTR (a timeout still ends it).
pub(crate) fn recv(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    retrying(|| (&*stream).read(buf))
}

/// One `recv` that never blocks (`WouldBlock` when nothing is waiting),
/// whatever the socket's mode; retried on EINTR.
pub(crate) fn recv_dont_wait(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    retrying(|| {
        // SAFETY: the pointer and length describe `buf`, alive and
        // exclusively borrowed for the call.
        let n =
            unsafe { libc::recv(stream.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    })
}

/// One `send` with `MSG_NOSIGNAL` and `flags`, retried on EINTR.
fn send_flags(stream: &TcpStream, buf: &[u8], flags: libc::c_int) -> io::Result<usize> {
    retrying(|| {
        // SAFETY: the pointer and length describe `buf`, alive for the call.
        let n = unsafe {
            libc::send(stream.as_raw_fd(), buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL | flags)
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    })
}

/// Writes all of `buf` with `MSG_MORE`: the kernel holds it back (even with
/// TCP_NODELAY) to go out in one segment with whatever is sent next, or when
/// [`push`] is called. Used for the 101, so that it and the first message
/// (`connected`, say) reach the client in one packet: one wakeup fewer on each
/// side per connection.
pub(crate) fn send_all_more(stream: &TcpStream, buf: &[u8]) -> io::Result<()> {
    struct More<'a>(&'a TcpStream);
    impl Write for More<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            send_flags(self.0, buf, libc::MSG_MORE)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    More(stream).write_all(buf)
}

/// Sends whatever [`send_all_more`] held back: setting TCP_NODELAY pushes
/// pending output at once (tcp(7)), and it stays set for every write after.
/// Sends nothing when nothing is held.
pub(crate) fn push(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
}

/// `writev` without SIGPIPE: one `sendmsg` of all the slices.
pub(crate) fn send_vectored(stream: &TcpStream, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    sendmsg(stream, bufs, 0)
}

/// [`send_vectored`] that never blocks (`WouldBlock` when the socket buffer is full).
pub(crate) fn send_vectored_dont_wait(stream: &TcpStream, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    sendmsg(stream, bufs, libc::MSG_DONTWAIT)
}

#[inline]
fn sendmsg(stream: &TcpStream, bufs: &[IoSlice<'_>], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: a zeroed msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is guaranteed ABI-compatible with iovec on Unix.
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len().min(libc::UIO_MAXIOV as usize) as _;
    retrying(|| {
        // SAFETY: msg points at `bufs`, alive and unmodified for the call.
        let n = unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL | flags) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    })
}

/// A `Write` over a shared socket that never raises SIGPIPE (HTTP responses
/// and the 101, written before the connection has a writer thread).
pub(crate) struct NoSigPipe<'a>(pub &'a TcpStream);

impl Write for NoSigPipe<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        send(self.0, buf, false)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        send_vectored(self.0, bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Connections the kernel may hold completed but not yet accepted. std listens
/// with 128, which a burst of a few hundred concurrent connects overflows
/// (the client's SYN is dropped and retried a second later); the kernel caps
/// this at `net.core.somaxconn`.
pub(crate) const LISTEN_BACKLOG: i32 = 4096;

/// Re-issues `listen` with [`LISTEN_BACKLOG`]; Linux updates the backlog of a
/// socket that is already listening.
pub(crate) fn deepen_backlog(listener: &TcpListener) -> io::Result<()> {
    // SAFETY: listen on a valid, owned, listening socket.
    if unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Wakes a thread blocked in `accept()` on this listening socket: on Linux,
/// `shutdown(SHUT_RD)` makes a blocked accept return `EINVAL`.
pub(crate) fn shutdown_listener(listener: &TcpListener) {
    // SAFETY: the fd is owned by `listener`, which outlives this call.
    unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RD) };
}

/// Waits until `stream` can take more bytes, its peer is gone, or `timeout`
/// passes (TLS writes are non-blocking so that the write lock can be let go
/// while the socket is full: see `connection/outbound.rs`).
pub(crate) fn wait_writable(stream: &TcpStream, timeout: std::time::Duration) {
    let mut fds = libc::pollfd { fd: stream.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: one valid pollfd, alive for the call; the fd is owned by `stream`.
    unsafe { libc::poll(&mut fds, 1, ms) };
}

/// Waits until `stream` has bytes to read (or its peer is gone, or it
/// failed), at most `timeout`, without reading: `false` only when `timeout`
/// passed with nothing (a signal counts as something, so the caller goes on
/// to its read). The reader's wait for a quiet moment (`connection/reader.rs`)
/// and the TLS handshake's wait for the client's next bytes.
pub(crate) fn wait_readable(stream: &TcpStream, timeout: std::time::Duration) -> bool {
    let mut fds = libc::pollfd { fd: stream.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: one valid pollfd, alive for the call; the fd is owned by `stream`.
    unsafe { libc::poll(&mut fds, 1, ms) != 0 }
}
