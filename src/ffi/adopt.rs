//! `wshub_adopt`: a host hands wshub a connection it accepted itself (the
//! Rust side: `ServerHandle::adopt`).

use std::ffi::c_int;
use std::mem::ManuallyDrop;
use std::net::TcpStream;
use std::os::fd::{FromRawFd, IntoRawFd};

use super::error::wshub_result;
use super::server::wshub_server;

/// Hands wshub a connected TCP socket the application accepted itself, e.g.
/// on the port of its own HTTP server once it saw a request for the
/// WebSocket path. `already_read`/`len`: what the application already read
/// from the socket (the start of the HTTP request, or all of it; NULL with
/// `len` 0 if nothing), at most 8192 bytes, the largest request head wshub
/// accepts. wshub finishes the handshake on its own threads and answers
/// the request itself (101, or a refusal), with every check a connection
/// accepted by wshub gets: the per-address caps and connect rate, the
/// handshake deadline (counted from this call), the path, Origin and token
/// checks of the protocol, `on_upgrade`. Returns at once.
///
/// On WSHUB_OK wshub owns `fd` itself (no copy is made): it closes it when
/// the connection ends, and the application must neither read, write nor
/// close it again. Until the connection ends the number stays this socket,
/// so the application may still remove it from its poll sets
/// (`EPOLL_CTL_DEL`) right after the call; when something else could end
/// the connection first (the client, a stop), remove it before calling. A
/// registration left in an epoll set goes away when wshub closes it. On
/// any error `fd` is still the application's, open, with its flags
/// (O_NONBLOCK) as they were. Errors: WSHUB_INVALID_ARGUMENT (`fd` is not a
/// connected TCP socket, more than 8192 bytes already read, or bytes
/// already read on a TLS server), WSHUB_STOPPED (the server is stopping).
/// Works with or without a listener of the server's own (see
/// `wshub_config_set_bind` with ""). Any thread, also inside callbacks.
#[no_mangle]
pub extern "C" fn wshub_adopt(
    server: *mut wshub_server,
    fd: c_int,
    already_read: *const u8,
    len: usize,
) -> wshub_result {
    ffi_boundary! {
        let server = try_ref!(server);
        let bytes = try_bytes!(already_read, len);
        if fd < 0 {
            return wshub_result::WSHUB_INVALID_ARGUMENT;
        }
        // SAFETY: the caller passes an open fd it owns; wrapped in
        // ManuallyDrop, it is not closed here unless wshub takes it.
        let theirs = ManuallyDrop::new(unsafe { TcpStream::from_raw_fd(fd) });
        // A TCP socket with a peer, or not ours to take.
        if theirs.peer_addr().is_err() || !is_stream_socket(&theirs) {
            return wshub_result::WSHUB_INVALID_ARGUMENT;
        }
        let handle = match server.handle() {
            Ok(h) => h,
            Err(code) => return code,
        };
        // The descriptor itself goes to wshub; every refusal hands it back
        // untouched, and it is released to the caller again.
        match handle.try_adopt(ManuallyDrop::into_inner(theirs), bytes) {
            Ok(()) => wshub_result::WSHUB_OK,
            Err((e, stream)) => {
                let _ = stream.into_raw_fd(); // the caller's again, not closed
                match e {
                    crate::Error::Stopped => wshub_result::WSHUB_STOPPED,
                    crate::Error::InvalidConfig(why) => {
                        log::warn!("wshub_adopt: {why}");
                        super::error::failed_because(why);
                        wshub_result::WSHUB_INVALID_ARGUMENT
                    }
                    e => e.into(),
                }
            }
        }
    }
}

/// True when `s` is a `SOCK_STREAM` socket (a Unix stream socket also has a
/// peer address, but no TCP peer to speak HTTP over TCP with: refused).
fn is_stream_socket(s: &TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut domain: c_int = 0;
    let mut size = std::mem::size_of::<c_int>() as libc::socklen_t;
    // SAFETY: getsockopt on an fd that `s` holds open, with a c_int-sized
    // output buffer and its size.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_DOMAIN,
            std::ptr::addr_of_mut!(domain).cast(),
            &mut size,
        )
    };
    let mut kind: c_int = 0;
    let mut ksize = std::mem::size_of::<c_int>() as libc::socklen_t;
    // SAFETY: as above.
    let rc2 = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            std::ptr::addr_of_mut!(kind).cast(),
            &mut ksize,
        )
    };
    rc == 0 && rc2 == 0 && kind == libc::SOCK_STREAM && (domain == libc::AF_INET || domain == libc::AF_INET6)
}
