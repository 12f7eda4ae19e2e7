//! `wshub_server`: a running server as C holds it (its lifecycle: start,
//! stop, shutdown), and the functions that act on connections and rooms. The
//! callbacks it calls are declared in `callbacks.rs` and called by
//! `handler.rs`.
//!
//! Memory: C's pointer is one strong reference of an `Arc<wshub_server>`,
//! given back only by the owner's `wshub_stop` (one called outside
//! callbacks); the engine's handler holds another, so the pointer handed to
//! callbacks stays valid while any callback can run. A `wshub_stop` inside a
//! callback only begins the engine's stop and never touches C's reference,
//! so a callback that runs before `wshub_start` returns cannot free what
//! `wshub_start` is about to return. The owner's `wshub_stop` stops the
//! engine (or waits for the stop already under way), drops the engine handle
//! (breaking the cycle), waits for the handler to be dropped with the
//! engine's last thread, then drops C's reference, the last one.

use crate::conn_map::ConnMap;
use std::cell::Cell;
use std::ffi::{c_char, c_void, CString};
use std::sync::atomic::{
    AtomicBool, AtomicU16,
    Ordering::{AcqRel, Relaxed},
};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::callbacks::{wshub_callbacks, wshub_message_kind, UserData, WSHUB_BINARY, WSHUB_TEXT};
use super::config::wshub_config;
use super::error::wshub_result;
use super::event::EventQueue;
use super::handler::{FfiHandler, JoinHook};
use crate::protocol::ProtocolHandler;
use crate::server::{ServerHandle, ON_CONNECTION_THREAD};
use crate::start::Server;
use crate::types::Message;

/// How the application hears about connections.
pub(super) enum Mode {
    Callbacks(wshub_callbacks, UserData),
    Polling(EventQueue),
}

/// What the C layer keeps per connection.
#[derive(Default)]
pub(super) struct ConnState {
    pub(super) user_data: usize,
    pub(super) identity: Option<String>,
}

thread_local! {
    /// The connection whose on_close runs on this thread, with the user_data it
    /// had: `wshub_conn_user_data` answers for it from inside that callback only.
    pub(super) static CLOSING: std::cell::Cell<Option<(u64, usize)>> = const { std::cell::Cell::new(None) };
}

#[derive(Default)]
pub(super) struct Slot {
    pub(super) handle: Option<ServerHandle>,
    /// The engine has stopped; no handle is set again.
    pub(super) stopped: bool,
}

/// A running server (opaque). From `wshub_start` or `wshub_start_polling`;
/// freed by `wshub_stop`. Every function taking it is thread-safe.
pub struct wshub_server {
    pub(super) slot: Mutex<Slot>,
    pub(super) mode: Mode,
    pub(super) conns: ConnMap<ConnState>,
    pub(super) upgrade_timeout: Duration,
    local_port: AtomicU16,
    /// True once the engine dropped its handler, i.e. its last thread let go.
    pub(super) handler_gone: Mutex<bool>,
    pub(super) handler_gone_changed: Condvar,
    /// Set by the owner's first `wshub_stop`: C's one reference is taken back once.
    stop_claimed: AtomicBool,
    /// The wire protocol, when the config turned it on: for the backend
    /// calls (`publish.rs`, `moderation.rs`).
    pub(super) protocol: std::sync::OnceLock<ProtocolHandler>,
}

impl wshub_server {
    /// The engine handle, or WSHUB_STOPPED.
    pub(super) fn handle(&self) -> Result<ServerHandle, wshub_result> {
        self.slot.lock().handle.clone().ok_or(wshub_result::WSHUB_STOPPED)
    }

    pub(crate) fn events(&self) -> Option<&EventQueue> {
        match &self.mode {
            Mode::Polling(queue) => Some(queue),
            Mode::Callbacks(..) => None,
        }
    }

    /// Stops the engine (blocking) and forgets its handle.
    fn stop_engine(&self) {
        if let Some(queue) = self.events() {
            queue.stopping();
        }
        let handle = self.slot.lock().handle.clone();
        if let Some(handle) = handle {
            handle.stop();
        }
        let handle = {
            let mut slot = self.slot.lock();
            slot.stopped = true;
            slot.handle.take()
        };
        drop(handle);
    }

    /// Stops the engine, then waits for its last thread to drop the handler:
    /// after that no callback runs or is still to come, and everything wshub
    /// allocated for connections is freed. The engine's own waits are
    /// bounded (a connection still in a callback when they end is cut, not
    /// joined); this one is not, because the application may free its
    /// `user_data` or unload the library as soon as the stop returns. A
    /// warning is logged every 5 s while a callback keeps it waiting.
    fn stop_and_release(&self) {
        self.stop_engine();
        // Reader threads are detached; each drops its engine reference as
        // its last act, after its last callback.
        let started = Instant::now();
        let mut gone = self.handler_gone.lock();
        while !*gone {
            if self.handler_gone_changed.wait_for(&mut gone, Duration::from_secs(5)).timed_out() {
                log::warn!(
                    "wshub_stop: still waiting after {} s for callbacks to return (a callback blocked, \
                     perhaps on a lock the stopping thread holds?)",
                    started.elapsed().as_secs()
                );
            }
        }
        drop(gone);
        if let Some(queue) = self.events() {
            queue.stopped();
        }
    }

    pub(super) fn as_ptr(self: &Arc<Self>) -> *mut wshub_server {
        Arc::as_ptr(self).cast_mut()
    }
}

fn start(config: &wshub_config, mode: Mode) -> Result<*mut wshub_server, wshub_result> {
    crate::logging::install_for_host();
    let server = Arc::new(wshub_server {
        slot: Mutex::new(Slot::default()),
        mode,
        conns: ConnMap::default(),
        upgrade_timeout: config.upgrade_timeout,
        local_port: AtomicU16::new(0),
        handler_gone: Mutex::new(false),
        handler_gone_changed: Condvar::new(),
        stop_claimed: AtomicBool::new(false),
        protocol: std::sync::OnceLock::new(),
    });
    if config.protocol_enabled {
        if let Err(why) = config.protocol.validate() {
            super::error::failed_because(format!("invalid configuration: {why}"));
            return Err(wshub_result::WSHUB_INVALID_CONFIG);
        }
    }
    let hooks = JoinHook { server: Arc::downgrade(&server) };
    let protocol = config.protocol_enabled.then(|| ProtocolHandler::with_app(config.protocol.clone(), hooks));
    if let Some(protocol) = &protocol {
        let _ = server.protocol.set(protocol.clone());
    }
    let handler = FfiHandler { server: server.clone(), protocol: protocol.clone() };
    let handle = Server::start(config.config.clone(), handler).map_err(wshub_result::from)?;
    server.local_port.store(handle.local_addr().port(), Relaxed);
    {
        // A callback may have stored it already (`FfiHandler::adopt`).
        let mut slot = server.slot.lock();
        if slot.handle.is_none() && !slot.stopped {
            slot.handle = Some(handle);
        }
    }
    Ok(Arc::into_raw(server).cast_mut())
}

/// Starts a server that calls `callbacks` (copied; initialized with
/// `WSHUB_CALLBACKS_INIT`) with `user_data` as their first argument. `config`
/// is copied (free it when you like). On WSHUB_OK `*server_out` is the
/// running server; stop and free it with `wshub_stop`. Callbacks may run
/// before this returns. Errors: WSHUB_NULL_PARAMETER, WSHUB_INVALID_ARGUMENT
/// (`callbacks->struct_size` not set), WSHUB_INVALID_CONFIG, WSHUB_IO (e.g.
/// the port is taken); `wshub_last_error` says why.
#[no_mangle]
pub extern "C" fn wshub_start(
    config: *const wshub_config,
    callbacks: *const wshub_callbacks,
    user_data: *mut c_void,
    server_out: *mut *mut wshub_server,
) -> wshub_result {
    ffi_boundary! {
        let config = try_ref!(config);
        let callbacks = try_ref!(callbacks);
        let server_out = try_out!(server_out);
        // SAFETY: not NULL; the C API requires a struct initialized with
        // WSHUB_CALLBACKS_INIT, i.e. at least `struct_size` readable bytes.
        let Some(callbacks) = (unsafe { wshub_callbacks::read(callbacks) }) else {
            super::error::failed_because(
                "callbacks->struct_size is not the size of a wshub_callbacks: initialize it with WSHUB_CALLBACKS_INIT",
            );
            return wshub_result::WSHUB_INVALID_ARGUMENT;
        };
        match start(config, Mode::Callbacks(callbacks, UserData(user_data))) {
            Ok(server) => {
                *server_out = server;
                wshub_result::WSHUB_OK
            }
            Err(code) => code,
        }
    }
}

/// Starts a server in pull mode: no callback ever runs on a wshub thread;
/// every upgrade, connect, message and close becomes a `wshub_event` that the
/// application takes with `wshub_poll_event` on its own thread(s), with
/// `wshub_event_fd` for poll/select/epoll loops. Upgrades wait for the
/// application's answer at most the configured upgrade timeout (then 503).
/// At most the configured event queue capacity wait; then connection
/// threads wait for the application (`wshub_config_set_event_queue_capacity`).
#[no_mangle]
pub extern "C" fn wshub_start_polling(
    config: *const wshub_config,
    server_out: *mut *mut wshub_server,
) -> wshub_result {
    ffi_boundary! {
        let config = try_ref!(config);
        let server_out = try_out!(server_out);
        let bounded = crate::config::bounds::check(&[(
            "event_queue_capacity",
            config.event_queue_capacity,
            crate::config::bounds::SLOTS,
        )])
        .and_then(|()| crate::config::bounds::check_durations(&[("upgrade_timeout", config.upgrade_timeout)]));
        if config.event_queue_capacity == 0 || bounded.is_err() {
            let why = bounded.err().unwrap_or_else(|| "event_queue_capacity must be greater than 0".to_owned());
            log::warn!("wshub_start_polling: {why}");
            super::error::failed_because(format!("invalid configuration: {why}"));
            return wshub_result::WSHUB_INVALID_CONFIG;
        }
        let queue = match EventQueue::new(config.event_queue_capacity) {
            Ok(q) => q,
            Err(_) => return wshub_result::WSHUB_IO,
        };
        match start(config, Mode::Polling(queue)) {
            Ok(server) => {
                *server_out = server;
                wshub_result::WSHUB_OK
            }
            Err(code) => code,
        }
    }
}

/// True inside a callback: a connection's callback on its reader thread, or
/// the host's log callback on any thread (also the host's own, inside a
/// wshub call that logs, or wshub's stopper while it logs the stop). There a
/// stop may only begin: waiting would wait for the caller itself, and the
/// owner's reference is not the callback's to take.
fn inside_a_callback() -> bool {
    ON_CONNECTION_THREAD.with(Cell::get) || crate::logging::in_sink()
}

/// Stops the server gracefully and frees it: no new connections; each open
/// connection gets what is already queued for it (and what the calling thread
/// sent before; broadcasts other threads still have waiting in the hub are
/// overtaken, then dropped), then a 1001 close (and its
/// on_close / close event); connections not finished after the shutdown
/// timeout are cut. Pull mode: events not yet taken are freed (waiting
/// upgrades are refused with 503). The pointer is invalid afterwards: no other
/// application thread may be using it (e.g. blocked in `wshub_poll_event`)
/// when this is called; use `wshub_shutdown` first to wake such threads. NULL
/// is a no-op.
///
/// What is guaranteed when it returns: every callback has returned and none
/// will run again, so the application may free its `user_data` and what its
/// connections' user data point to. It waits as long as a callback keeps
/// running (logging a warning every 5 s), so a callback must never wait for
/// the thread that calls wshub_stop (e.g. for a lock that thread holds while
/// calling it). wshub's threads have finished their work by then but may
/// still be executing their last instructions of thread exit: do not unload
/// the library (dlclose) while the process lives.
///
/// From inside a callback (the log callback included, on whichever thread
/// it runs) it only begins the stop and returns at once (a callback cannot
/// wait for its own thread): the stop runs on a thread the
/// server made when it started (so it happens even when no thread can be
/// created any more), callbacks still run during the drain (on_close) with a
/// valid `server` pointer, and functions on the handle answer WSHUB_OK or
/// WSHUB_STOPPED. It frees nothing: the handle stays valid until the owner
/// calls wshub_stop from outside callbacks, which waits for the stop and
/// frees. So "a quit message calls wshub_stop; main calls wshub_stop at
/// exit" is correct, and every server must get that owner's call.
#[no_mangle]
pub extern "C" fn wshub_stop(server: *mut wshub_server) {
    ffi_boundary! {
        if server.is_null() {
            return;
        }
        if inside_a_callback() {
            // SAFETY: not NULL; a callback's pointer is live while it runs
            // (the handler holds a reference), and so is the owner's until
            // the owner's wshub_stop returns.
            let server = unsafe { &*server };
            if let Ok(handle) = server.handle() {
                handle.begin_stop();
            }
            return;
        }
        // SAFETY: not NULL; the C API requires a pointer from wshub_start or
        // wshub_start_polling that the owner has not stopped yet.
        let claimed = unsafe { &*server }.stop_claimed.swap(true, AcqRel);
        if claimed {
            return; // another application thread's wshub_stop took C's reference
        }
        // SAFETY: as above; the pointer owns one strong reference (C's), and
        // `stop_claimed` lets exactly one call take it back.
        let server = unsafe { Arc::from_raw(server.cast_const()) };
        server.stop_and_release();
    }
}

/// Like `wshub_stop` but keeps the handle (and waits for callbacks the same
/// way): afterwards every function on it returns WSHUB_STOPPED, and in pull mode the events queued during the
/// shutdown (closes) can still be taken until WSHUB_STOPPED. Free it with
/// `wshub_stop`. Must not be called from inside a callback or the log
/// callback (returns WSHUB_WRONG_MODE there).
#[no_mangle]
pub extern "C" fn wshub_shutdown(server: *mut wshub_server) -> wshub_result {
    ffi_boundary! {
        let server = try_ref!(server);
        if inside_a_callback() {
            return wshub_result::WSHUB_WRONG_MODE;
        }
        server.stop_and_release();
        wshub_result::WSHUB_OK
    }
}

/// The TCP port the server listens on (the real one when bound to port 0);
/// 0 when `server` is NULL.
#[no_mangle]
pub extern "C" fn wshub_local_port(server: *const wshub_server) -> u16 {
    ffi_boundary! { try_ref!(server).local_port.load(Relaxed) }
}

/// Re-reads the TLS certificate, key and client CA (files again; in-memory
/// PEM as given). New connections get the new certificate; open ones stay up.
/// WSHUB_INVALID_CONFIG (logged, with why) when the new material is bad (the
/// old certificate stays in use) or TLS is not configured. Any thread.
#[no_mangle]
pub extern "C" fn wshub_reload_tls(server: *mut wshub_server) -> wshub_result {
    ffi_boundary! {
        let handle = match try_ref!(server).handle() {
            Ok(h) => h,
            Err(code) => return code,
        };
        match handle.reload_tls() {
            Ok(()) => wshub_result::WSHUB_OK,
            Err(e) => e.into(), // WSHUB_INVALID_CONFIG, with why
        }
    }
}

/// Checks a payload and turns it into a message.
fn message(data: &[u8], kind: wshub_message_kind) -> Result<Message, wshub_result> {
    match kind {
        WSHUB_TEXT => std::str::from_utf8(data)
            .map(|s| Message::Text(s.to_owned()))
            .map_err(|_| wshub_result::WSHUB_INVALID_ARGUMENT),
        WSHUB_BINARY => Ok(Message::Binary(data.to_vec())),
        _ => Err(wshub_result::WSHUB_INVALID_ARGUMENT),
    }
}

/// Queues a message to one connection (`length` bytes at `data`, copied;
/// `data` may be NULL when `length` is 0). WSHUB_TEXT requires UTF-8.
/// Returns once queued. WSHUB_NO_SUCH_CONNECTION if it is not open.
#[no_mangle]
pub extern "C" fn wshub_send(
    server: *mut wshub_server,
    conn: u64,
    data: *const u8,
    length: usize,
    kind: wshub_message_kind,
) -> wshub_result {
    ffi_boundary! {
        let server = try_ref!(server);
        let data = try_bytes!(data, length);
        to_result!((|| {
            let message = message(data, kind)?;
            server.handle()?.send(conn, message).map_err(wshub_result::from)
        })())
    }
}

/// Adds a connection to a room (created on first join). `room` is copied.
#[no_mangle]
pub extern "C" fn wshub_join(server: *mut wshub_server, conn: u64, room: *const c_char) -> wshub_result {
    ffi_boundary! {
        let server = try_ref!(server);
        let room = try_str!(room);
        to_result!(server.handle().and_then(|h| h.join(conn, room).map_err(wshub_result::from)))
    }
}

/// Removes a connection from a room (which vanishes with its last member).
#[no_mangle]
pub extern "C" fn wshub_leave(server: *mut wshub_server, conn: u64, room: *const c_char) -> wshub_result {
    ffi_boundary! {
        let server = try_ref!(server);
        let room = try_str!(room);
        to_result!(server.handle().and_then(|h| h.leave(conn, room).map_err(wshub_result::from)))
    }
}

/// Sends a message to every member of `room` except connection `except`
/// (0 excludes no one; ids are never 0). The payload is copied (into a
/// message, then into one frame every member shares), so `data` may be freed
/// on return. A room without members is not an error.
#[no_mangle]
pub extern "C" fn wshub_broadcast(
    server: *mut wshub_server,
    room: *const c_char,
    data: *const u8,
    length: usize,
    kind: wshub_message_kind,
    except: u64,
) -> wshub_result {
    ffi_boundary! {
        let server = try_ref!(server);
        let room = try_str!(room);
        let data = try_bytes!(data, length);
        to_result!((|| {
            let message = message(data, kind)?;
            let except = (except != 0).then_some(except);
            server.handle()?.broadcast(room, message, except).map_err(wshub_result::from)
        })())
    }
}

/// Writes the number of members of `room` to `*size_out` (0 when it does not
/// exist). Counts membership changes queued before this call by the same thread.
#[no_mangle]
pub extern "C" fn wshub_room_size(
    server: *mut wshub_server,
    room: *const c_char,
    size_out: *mut usize,
) -> wshub_result {
    ffi_boundary! {
        let server = try_ref!(server);
        let room = try_str!(room);
        let size_out = try_out!(size_out);
        match server.handle().and_then(|h| h.room_size(room).map_err(wshub_result::from)) {
            Ok(n) => {
                *size_out = n;
                wshub_result::WSHUB_OK
            }
            Err(code) => code,
        }
    }
}

/// Writes the number of open connections to `*count_out`.
#[no_mangle]
pub extern "C" fn wshub_connection_count(server: *mut wshub_server, count_out: *mut usize) -> wshub_result {
    ffi_boundary! {
        let server = try_ref!(server);
        let count_out = try_out!(count_out);
        match server.handle() {
            Ok(h) => {
                *count_out = h.connections().len();
                wshub_result::WSHUB_OK
            }
            Err(code) => code,
        }
    }
}

/// Closes a connection with `code` (1000-1003, 1007-1014 or 3000-4999) and
/// `reason` (at most 123 bytes of UTF-8; NULL means none) after the messages
/// already queued for it. Its on_close follows.
#[no_mangle]
pub extern "C" fn wshub_close(
    server: *mut wshub_server,
    conn: u64,
    code: u16,
    reason: *const c_char,
) -> wshub_result {
    ffi_boundary! {
        let server = try_ref!(server);
        let reason = if reason.is_null() { "" } else { try_str!(reason) };
        to_result!(server.handle().and_then(|h| h.close(conn, code, reason).map_err(wshub_result::from)))
    }
}

/// Attaches an application pointer to a connection (from on_upgrade on, until
/// its on_close / close event); wshub never dereferences it. Replaces
/// any earlier one. WSHUB_NO_SUCH_CONNECTION when the connection is unknown
/// or gone.
#[no_mangle]
pub extern "C" fn wshub_conn_set_user_data(
    server: *mut wshub_server,
    conn: u64,
    user_data: *mut c_void,
) -> wshub_result {
    ffi_boundary! {
        let server = try_ref!(server);
        if server.handle().is_err() {
            return wshub_result::WSHUB_STOPPED;
        }
        server.conns.with_mut(conn, |state| match state {
            Some(state) => {
                state.user_data = user_data as usize;
                wshub_result::WSHUB_OK
            }
            None => wshub_result::WSHUB_NO_SUCH_CONNECTION,
        })
    }
}

/// The pointer attached with `wshub_conn_set_user_data`, or NULL (none
/// attached, unknown connection, or NULL server). Once a connection closes it
/// is gone for every thread, except inside that connection's own on_close
/// callback, where it is still returned so the callback can free it.
#[no_mangle]
pub extern "C" fn wshub_conn_user_data(server: *mut wshub_server, conn: u64) -> *mut c_void {
    ffi_boundary! {
        let server = try_ref!(server);
        let closing = CLOSING.with(|c| c.get()).filter(|(id, _)| *id == conn).map(|(_, data)| data);
        let data = server.conns.with(conn, |s| s.map(|s| s.user_data));
        data.or(closing).unwrap_or(0) as *mut c_void
    }
}

/// Copies the identity attached in on_upgrade (`wshub_request_set_identity`)
/// into `buf` (`buf_len` bytes, NUL-terminated) and its length without the
/// NUL to `*len_out`. WSHUB_NOT_FOUND when none was attached;
/// WSHUB_BUFFER_TOO_SMALL (with `*len_out` set to the length needed, without
/// the NUL) when it does not fit; WSHUB_NO_SUCH_CONNECTION for an unknown id.
#[no_mangle]
pub extern "C" fn wshub_conn_identity(
    server: *mut wshub_server,
    conn: u64,
    buf: *mut c_char,
    buf_len: usize,
    len_out: *mut usize,
) -> wshub_result {
    ffi_boundary! {
        let server = try_ref!(server);
        let len_out = try_out!(len_out);
        if buf.is_null() {
            return wshub_result::WSHUB_NULL_PARAMETER;
        }
        let identity = server.conns.with(conn, |state| match state {
            None => Err(wshub_result::WSHUB_NO_SUCH_CONNECTION),
            Some(ConnState { identity: None, .. }) => Err(wshub_result::WSHUB_NOT_FOUND),
            Some(ConnState { identity: Some(id), .. }) => Ok(CString::new(id.as_bytes()).unwrap_or_default()),
        });
        let identity = match identity {
            Ok(identity) => identity,
            Err(code) => return code,
        };
        let bytes = identity.as_bytes_with_nul();
        if bytes.len() > buf_len {
            *len_out = bytes.len() - 1;
            return wshub_result::WSHUB_BUFFER_TOO_SMALL;
        }
        // SAFETY: `buf` is not NULL and the caller guarantees `buf_len` writable
        // bytes; we write bytes.len() <= buf_len of them from a separate allocation.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr().cast::<c_char>(), buf, bytes.len()) };
        *len_out = bytes.len() - 1;
        wshub_result::WSHUB_OK
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::c_int;
    use std::net::TcpStream;

    use crate::ffi::event::wshub_event;

    use tungstenite::client::IntoClientRequest;

    use super::super::config::{
        wshub_config_free, wshub_config_new, wshub_config_set_bind, wshub_config_set_protocol,
        wshub_config_set_sse,
    };
    use super::super::event::{
        wshub_event_accept, wshub_event_free, wshub_event_get_kind, wshub_event_kind, wshub_poll_event,
    };
    use super::*;

    /// The next event's kind (the event is answered or freed here).
    fn next_kind(server: *mut wshub_server) -> wshub_event_kind {
        let mut event: *mut wshub_event = std::ptr::null_mut();
        assert_eq!(wshub_poll_event(server, 10_000, &mut event), wshub_result::WSHUB_OK);
        let kind = wshub_event_get_kind(event);
        if kind == wshub_event_kind::WSHUB_EVENT_UPGRADE {
            assert_eq!(wshub_event_accept(event), wshub_result::WSHUB_OK);
        }
        wshub_event_free(event);
        kind
    }

    #[test]
    fn pull_mode_with_the_protocol_on_queues_no_message_events() {
        let config = wshub_config_new();
        let bind = CString::new("127.0.0.1:0").unwrap();
        assert_eq!(wshub_config_set_bind(config, bind.as_ptr()), wshub_result::WSHUB_OK);
        assert_eq!(wshub_config_set_protocol(config, true), wshub_result::WSHUB_OK);
        let mut server: *mut wshub_server = std::ptr::null_mut();
        assert_eq!(wshub_start_polling(config, &mut server), wshub_result::WSHUB_OK);
        wshub_config_free(config);
        let port = wshub_local_port(server);

        let client = std::thread::spawn(move || {
            let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut request = format!("ws://127.0.0.1:{port}/ws").into_client_request().unwrap();
            request.headers_mut().insert("Sec-WebSocket-Protocol", "wshub.v1.json".parse().unwrap());
            let (mut ws, response) = tungstenite::client::client(request, stream).unwrap();
            let chosen = response.headers().get("Sec-WebSocket-Protocol").cloned();
            let first = ws.read().unwrap().into_text().unwrap().to_string();
            ws.send(r#"{"type":"room:join","id":"j","payload":{"room":"r"}}"#.into()).unwrap();
            let reply = ws.read().unwrap().into_text().unwrap().to_string();
            ws.close(None).unwrap();
            while ws.read().is_ok() {}
            (chosen, first, reply)
        });

        // The application's upgrade answer comes first; the protocol then picks
        // the subprotocol; the message goes to the protocol, not to the queue.
        assert_eq!(next_kind(server), wshub_event_kind::WSHUB_EVENT_UPGRADE);
        assert_eq!(next_kind(server), wshub_event_kind::WSHUB_EVENT_CONNECT);
        assert_eq!(next_kind(server), wshub_event_kind::WSHUB_EVENT_CLOSE);
        let (chosen, first, reply) = client.join().unwrap();
        assert_eq!(chosen.as_ref().and_then(|v| v.to_str().ok()), Some("wshub.v1.json"));
        assert!(first.contains(r#""type":"connected""#), "{first}");
        assert!(reply.contains(r#""type":"ack""#) && reply.contains(r#""id":"j""#), "{reply}");
        wshub_stop(server);
    }

    /// `GET /sse?room=r` on a C host's protocol server: its status line.
    /// (With streams on, the answer waits for the application's upgrade decision.)
    fn stream_status(sse: bool) -> String {
        use std::io::{BufRead, BufReader, Write};
        let config = wshub_config_new();
        let bind = CString::new("127.0.0.1:0").unwrap();
        assert_eq!(wshub_config_set_bind(config, bind.as_ptr()), wshub_result::WSHUB_OK);
        assert_eq!(wshub_config_set_protocol(config, true), wshub_result::WSHUB_OK);
        assert_eq!(wshub_config_set_sse(config, sse), wshub_result::WSHUB_OK);
        let mut server: *mut wshub_server = std::ptr::null_mut();
        assert_eq!(wshub_start_polling(config, &mut server), wshub_result::WSHUB_OK);
        wshub_config_free(config);
        let mut stream = TcpStream::connect(("127.0.0.1", wshub_local_port(server))).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(b"GET /sse?room=r HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        drop(stream);
        wshub_stop(server);
        line
    }

    #[test]
    fn a_c_host_turns_event_streams_off() {
        let line = stream_status(false);
        assert!(line.starts_with("HTTP/1.1 404"), "{line}");
    }

    /// on_upgrade attaches the identity a C host's own session check found.
    extern "C" fn attach_admin(
        _: *mut c_void,
        _: *mut wshub_server,
        _: u64,
        request: *mut super::super::request::wshub_request,
    ) -> u16 {
        let admin = CString::new("admin").unwrap();
        assert_eq!(
            super::super::request::wshub_request_set_identity(request, admin.as_ptr()),
            wshub_result::WSHUB_OK
        );
        0
    }

    /// on_join allows the identity on_upgrade attached, and nothing else.
    extern "C" fn join_if_admin(
        _: *mut c_void,
        server: *mut wshub_server,
        conn: u64,
        _: *const c_char,
        _: *const c_char,
    ) -> c_int {
        let mut buf = [0 as c_char; 16];
        let mut len = 0;
        let admin = wshub_conn_identity(server, conn, buf.as_mut_ptr(), buf.len(), &mut len)
            == wshub_result::WSHUB_OK
            && buf[..len].iter().map(|&b| b as u8).eq(*b"admin");
        c_int::from(admin)
    }

    /// A stream's on_join comes after on_upgrade, as a `room:join`'s does:
    /// it reads the identity on_upgrade attached.
    #[test]
    fn a_streams_on_join_sees_the_identity_on_upgrade_attached() {
        use std::io::{BufRead, BufReader, Write};
        let config = wshub_config_new();
        let bind = CString::new("127.0.0.1:0").unwrap();
        assert_eq!(wshub_config_set_bind(config, bind.as_ptr()), wshub_result::WSHUB_OK);
        assert_eq!(wshub_config_set_protocol(config, true), wshub_result::WSHUB_OK);
        let callbacks = wshub_callbacks {
            struct_size: std::mem::size_of::<wshub_callbacks>(),
            on_upgrade: Some(attach_admin),
            on_connect: None,
            on_message: None,
            on_close: None,
            on_join: Some(join_if_admin),
        };
        let mut server: *mut wshub_server = std::ptr::null_mut();
        assert_eq!(
            wshub_start(config, &callbacks, std::ptr::null_mut(), &mut server),
            wshub_result::WSHUB_OK
        );
        wshub_config_free(config);
        let mut stream = TcpStream::connect(("127.0.0.1", wshub_local_port(server))).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(b"GET /sse?room=private HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        drop(stream);
        wshub_stop(server);
        assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    }
}
