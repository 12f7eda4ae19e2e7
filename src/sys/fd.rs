//! Taking over a listening socket another process passed us by number (the
//! `LISTEN_FDS` protocol of systemd; `systemd.rs` reads the environment).

use std::io;
use std::net::TcpListener;
use std::os::fd::{FromRawFd, RawFd};

/// `fd` as a `TcpListener` when it is an open, listening TCP socket (IPv4 or
/// IPv6); an error saying what it is not, otherwise. The caller must own
/// `fd` (nothing else in the process may use or close it afterwards): the
/// `LISTEN_FDS` protocol hands fds 3.. to the process this way.
pub(crate) fn take_tcp_listener(fd: RawFd) -> io::Result<TcpListener> {
    let opt = |level, name| -> io::Result<libc::c_int> {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `value`, a c_int
        // alive for the call; on a bad fd it fails with EBADF/ENOTSOCK.
        let rc = unsafe { libc::getsockopt(fd, level, name, std::ptr::addr_of_mut!(value).cast(), &mut len) };
        if rc == 0 {
            Ok(value)
        } else {
            Err(io::Error::last_os_error())
        }
    };
    let domain = opt(libc::SOL_SOCKET, libc::SO_DOMAIN)?;
    let kind = opt(libc::SOL_SOCKET, libc::SO_TYPE)?;
    let listening = opt(libc::SOL_SOCKET, libc::SO_ACCEPTCONN)?;
    if !(domain == libc::AF_INET || domain == libc::AF_INET6) || kind != libc::SOCK_STREAM || listening == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("fd {fd} is not a listening TCP socket (ListenStream= with an IP address and port)"),
        ));
    }
    // Not inherited by programs this process may start.
    // SAFETY: fcntl on an fd checked open above; FD_CLOEXEC only.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    // SAFETY: an open listening TCP socket that the caller owns and hands over.
    Ok(unsafe { TcpListener::from_raw_fd(fd) })
}
