//! `wshub_server`: a running server as C holds it, the callbacks C plugs in,
//! and the functions that act on connections and rooms.
//!
//! Memory: C's pointer is one strong reference of an `Arc<wshub_server>`; the
//! engine's handler holds another, so the pointer handed to callbacks stays
//! valid while any callback can run. `wshub_stop` stops the engine, drops the
//! engine handle (breaking the cycle), waits for the handler to be dropped with
//! the engine's last thread, then drops C's reference; whoever lets go last
//! frees it.

use std::cell::Cell;
use crate::conn_map::ConnMap;
use std::ffi::{c_char, c_void, CString};
use std::sync::atomic::{AtomicU16, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::config::wshub_config;
use super::error::wshub_result;
use super::event::{wshub_event, EventQueue};
use super::request::{c_string, wshub_request};
use crate::handler::Handler;
use crate::types::{ConnId, HttpResponse, Message, RequestInfo, Upgrade};
use crate::protocol::ProtocolHandler;
use crate::server::{Server, ServerHandle, ON_CONNECTION_THREAD};

/// A message kind: `WSHUB_TEXT` (UTF-8) or `WSHUB_BINARY`.
pub type wshub_message_kind = u32;
/// A text message: the bytes must be UTF-8.
pub const WSHUB_TEXT: wshub_message_kind = 1;
/// A binary message.
pub const WSHUB_BINARY: wshub_message_kind = 2;

/// on_upgrade: a client asks to open a WebSocket on the configured path; no
/// 101 has been sent yet. `conn` is the id the connection will have. Read the
/// request with the wshub_request_* functions (remote address, path, query,
/// headers); optionally attach an identity (`wshub_request_set_identity`) or
/// pick a subprotocol. Return 0 (or 101) to accept, or an HTTP status
/// 400-599 to refuse with it (any other value refuses with 500). `request` is
/// valid only during the call. Runs on the connection's reader thread.
pub type wshub_on_upgrade = Option<
    extern "C" fn(
        user_data: *mut c_void,
        server: *mut wshub_server,
        conn: u64,
        request: *mut wshub_request,
    ) -> u16,
>;

/// on_connect: the connection is open (the 101 was sent). `request` is the
/// upgrade request, valid only during the call. Messages sent from here reach
/// the client before any reply to its messages. Runs on the connection's
/// reader thread.
pub type wshub_on_connect = Option<
    extern "C" fn(
        user_data: *mut c_void,
        server: *mut wshub_server,
        conn: u64,
        request: *const wshub_request,
    ),
>;

/// on_message: a complete message arrived: `length` bytes at `data` (a NUL
/// byte follows them, so text can be printed directly), `kind` WSHUB_TEXT
/// (valid UTF-8) or WSHUB_BINARY. `data` is valid only during the call; copy
/// what you keep. The connection's next message is not read until this
/// returns. Runs on the connection's reader thread. Never called when the
/// built-in protocol is on (`wshub_config_set_protocol`): it handles every
/// message itself.
pub type wshub_on_message = Option<
    extern "C" fn(
        user_data: *mut c_void,
        server: *mut wshub_server,
        conn: u64,
        data: *const u8,
        length: usize,
        kind: wshub_message_kind,
    ),
>;

/// on_close: the connection is gone and out of every room; sends to it fail
/// with WSHUB_NO_SUCH_CONNECTION. `code` is the peer's close code when it sent
/// one, the server's when it closed first, 1006 when the TCP connection ended
/// without a close frame; `reason` (never NULL) is valid only during the call.
/// Its user data (`wshub_conn_user_data`) is still readable here and is
/// forgotten when this returns: free what it points to here. Runs on the
/// connection's reader thread; it is the connection's last callback.
pub type wshub_on_close = Option<
    extern "C" fn(
        user_data: *mut c_void,
        server: *mut wshub_server,
        conn: u64,
        code: u16,
        reason: *const c_char,
    ),
>;

/// The callbacks of a server started with `wshub_start`. Any may be NULL
/// (on_upgrade NULL accepts every upgrade).
///
/// Threads: every callback runs on the reader thread of its connection (one
/// thread per connection, never the thread that called wshub_start), so
/// callbacks of different connections run in parallel and must be thread-safe
/// with respect to each other; callbacks for one connection are never
/// concurrent with each other and come in the order on_upgrade, on_connect,
/// on_message..., on_close. Every on_connect is followed by exactly one
/// on_close; a refused upgrade gets no further callback, and neither does an
/// accepted one whose 101 cannot be sent (the client vanished), so allocate
/// per-connection resources in on_connect, not in on_upgrade. Every wshub
/// function may be called from inside
/// any callback, including wshub_stop. Callbacks must not throw C++
/// exceptions or longjmp out. The struct is copied by wshub_start.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct wshub_callbacks {
    /// See `wshub_on_upgrade`.
    pub on_upgrade: wshub_on_upgrade,
    /// See `wshub_on_connect`.
    pub on_connect: wshub_on_connect,
    /// See `wshub_on_message`.
    pub on_message: wshub_on_message,
    /// See `wshub_on_close`.
    pub on_close: wshub_on_close,
}

/// The application's `user_data`, handed back to every callback.
#[derive(Clone, Copy)]
struct UserData(*mut c_void);

// SAFETY: wshub never dereferences it; the header tells the application that
// it is passed to callbacks on wshub's threads.
unsafe impl Send for UserData {}
// SAFETY: as above.
unsafe impl Sync for UserData {}

/// How the application hears about connections.
enum Mode {
    Callbacks(wshub_callbacks, UserData),
    Polling(EventQueue),
}

/// The answer to an upgrade.
#[derive(Debug)]
pub(crate) enum Decision {
    Accept { identity: Option<String>, subprotocol: Option<String> },
    Reject(u16),
}

impl Decision {
    /// 0 or 101 accept; 400-599 refuse with that status; anything else refuses with 500.
    pub(crate) fn from_status(status: u16) -> Self {
        match status {
            0 | 101 => Decision::Accept { identity: None, subprotocol: None },
            400..=599 => Decision::Reject(status),
            _ => Decision::Reject(500),
        }
    }
}

/// What the C layer keeps per connection.
#[derive(Default)]
struct ConnState {
    user_data: usize,
    identity: Option<String>,
}

thread_local! {
    /// The connection whose on_close runs on this thread, with the user_data it
    /// had: `wshub_conn_user_data` answers for it from inside that callback only.
    static CLOSING: std::cell::Cell<Option<(u64, usize)>> = const { std::cell::Cell::new(None) };
}

#[derive(Default)]
struct Slot {
    handle: Option<ServerHandle>,
    /// The engine has stopped; no handle is set again.
    stopped: bool,
}

/// A running server (opaque). From `wshub_start` or `wshub_start_polling`;
/// freed by `wshub_stop`. Every function taking it is thread-safe.
pub struct wshub_server {
    slot: Mutex<Slot>,
    mode: Mode,
    conns: ConnMap<ConnState>,
    upgrade_timeout: Duration,
    local_port: AtomicU16,
    /// True once the engine dropped its handler, i.e. its last thread let go.
    handler_gone: Mutex<bool>,
    handler_gone_changed: Condvar,
}

impl wshub_server {
    /// The engine handle, or WSHUB_STOPPED.
    fn handle(&self) -> Result<ServerHandle, wshub_result> {
        self.slot.lock().handle.clone().ok_or(wshub_result::WSHUB_STOPPED)
    }

    pub(crate) fn events(&self) -> Option<&EventQueue> {
        match &self.mode {
            Mode::Polling(queue) => Some(queue),
            Mode::Callbacks(..) => None,
        }
    }

    /// Stops the engine (blocking), forgets its handle, and waits (bounded) for
    /// its last thread to drop the handler, so that everything wshub allocated
    /// for connections is freed when this returns.
    fn stop_and_release(&self) {
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
        // Reader threads are detached; each drops its engine reference right
        // after its connection is unregistered, which stop() waited for.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut gone = self.handler_gone.lock();
        while !*gone {
            if self.handler_gone_changed.wait_until(&mut gone, deadline).timed_out() {
                log::warn!("wshub_stop: the engine's last thread did not let go within 5 s");
                break;
            }
        }
        drop(gone);
        if let Some(queue) = self.events() {
            queue.stopped();
        }
    }

    fn as_ptr(self: &Arc<Self>) -> *mut wshub_server {
        Arc::as_ptr(self).cast_mut()
    }
}

/// The engine's view of the C application, composed with the built-in
/// protocol when the config turned it on.
struct FfiHandler {
    server: Arc<wshub_server>,
    /// Wire protocol v1, when on: it owns messages and HTTP routes, and sees
    /// upgrades (after the application), connects and closes (before it).
    protocol: Option<ProtocolHandler>,
}

impl FfiHandler {
    /// Callbacks can run before `wshub_start` has stored the handle; the engine
    /// passes it to every callback, so take it from there.
    fn adopt(&self, handle: &ServerHandle) {
        let mut slot = self.server.slot.lock();
        if slot.handle.is_none() && !slot.stopped {
            slot.handle = Some(handle.clone());
        }
    }
}

impl Drop for FfiHandler {
    fn drop(&mut self) {
        *self.server.handler_gone.lock() = true;
        self.server.handler_gone_changed.notify_all();
    }
}

/// Payload bytes with a NUL after them, and their kind.
fn nul_terminated(message: Message) -> (Vec<u8>, wshub_message_kind) {
    let (mut bytes, kind) = match message {
        Message::Text(s) => (s.into_bytes(), WSHUB_TEXT),
        Message::Binary(b) => (b, WSHUB_BINARY),
    };
    bytes.push(0);
    (bytes, kind)
}

impl Handler for FfiHandler {
    fn on_upgrade(&self, handle: &ServerHandle, conn: ConnId, info: &RequestInfo) -> Upgrade {
        self.adopt(handle);
        let server = &self.server;
        server.conns.insert(conn, ConnState::default());
        let request = wshub_request::new(info);
        let decision = match &server.mode {
            Mode::Callbacks(callbacks, user_data) => match callbacks.on_upgrade {
                None => Decision::from_status(0),
                Some(f) => {
                    let status =
                        f(user_data.0, server.as_ptr(), conn, (&request as *const wshub_request).cast_mut());
                    match Decision::from_status(status) {
                        Decision::Accept { .. } => Decision::Accept {
                            identity: request.identity.lock().clone(),
                            subprotocol: request.subprotocol.lock().clone(),
                        },
                        reject => reject,
                    }
                }
            },
            Mode::Polling(queue) => queue.ask_upgrade(conn, request, server.upgrade_timeout),
        };
        let upgrade = match decision {
            Decision::Accept { identity, subprotocol } => {
                server.conns.with_mut(conn, |state| {
                    if let Some(state) = state {
                        state.identity = identity;
                    }
                });
                // The application (auth) decided first; the protocol may still
                // refuse (draining), and its subprotocol choice stands unless
                // the application chose one.
                match (&self.protocol, subprotocol) {
                    (Some(protocol), ours) => match protocol.on_upgrade(handle, conn, info) {
                        Upgrade::Accept { subprotocol: theirs } => Upgrade::Accept { subprotocol: ours.or(theirs) },
                        refusal => refusal,
                    },
                    (None, subprotocol) => Upgrade::Accept { subprotocol },
                }
            }
            Decision::Reject(status) => Upgrade::reject(status),
        };
        if matches!(upgrade, Upgrade::Reject(_)) {
            server.conns.remove(conn);
        }
        upgrade
    }

    fn on_http(&self, handle: &ServerHandle, request: &RequestInfo) -> HttpResponse {
        match &self.protocol {
            Some(protocol) => protocol.on_http(handle, request),
            None => HttpResponse::not_found(),
        }
    }

    fn on_connect(&self, handle: &ServerHandle, conn: ConnId, info: &RequestInfo) {
        self.adopt(handle);
        if let Some(protocol) = &self.protocol {
            // First, so that `connected` is the client's first frame.
            protocol.on_connect(handle, conn, info);
        }
        let server = &self.server;
        let request = wshub_request::new(info);
        match &server.mode {
            Mode::Callbacks(callbacks, user_data) => {
                if let Some(f) = callbacks.on_connect {
                    f(user_data.0, server.as_ptr(), conn, &request);
                }
            }
            Mode::Polling(queue) => queue.push(wshub_event::connect(conn, request)),
        }
    }

    fn on_message(&self, handle: &ServerHandle, conn: ConnId, message: Message) {
        self.adopt(handle);
        if let Some(protocol) = &self.protocol {
            // Protocol traffic is the protocol's alone (documented in the header).
            protocol.on_message(handle, conn, message);
            return;
        }
        let server = &self.server;
        let (data, kind) = nul_terminated(message);
        match &server.mode {
            Mode::Callbacks(callbacks, user_data) => {
                if let Some(f) = callbacks.on_message {
                    f(user_data.0, server.as_ptr(), conn, data.as_ptr(), data.len() - 1, kind);
                }
            }
            Mode::Polling(queue) => queue.push(wshub_event::message(conn, data, kind)),
        }
    }

    fn on_close(&self, handle: &ServerHandle, conn: ConnId, code: u16, reason: &str) {
        self.adopt(handle);
        if let Some(protocol) = &self.protocol {
            protocol.on_close(handle, conn, code, reason);
        }
        let server = &self.server;
        let reason = c_string(reason);
        match &server.mode {
            Mode::Callbacks(callbacks, user_data) => {
                // Out of the map before the callback, so that anyone who learns
                // of the close from inside it sees the connection gone; only the
                // callback itself still reads the pointer, to free what it holds.
                let state = server.conns.remove(conn);
                let closing = state.map_or(0, |s| s.user_data);
                CLOSING.with(|c| c.set(Some((conn, closing))));
                if let Some(f) = callbacks.on_close {
                    f(user_data.0, server.as_ptr(), conn, code, reason.as_ptr());
                }
                CLOSING.with(|c| c.set(None));
            }
            Mode::Polling(queue) => {
                let user_data = server.conns.remove(conn).map_or(0, |s| s.user_data);
                queue.push(wshub_event::close(conn, code, reason, user_data));
            }
        }
    }
}

fn start(config: &wshub_config, mode: Mode) -> Result<*mut wshub_server, wshub_result> {
    let server = Arc::new(wshub_server {
        slot: Mutex::new(Slot::default()),
        mode,
        conns: ConnMap::default(),
        upgrade_timeout: config.upgrade_timeout,
        local_port: AtomicU16::new(0),
        handler_gone: Mutex::new(false),
        handler_gone_changed: Condvar::new(),
    });
    let protocol = config.protocol_enabled.then(|| ProtocolHandler::new(config.protocol.clone()));
    let handler = FfiHandler { server: server.clone(), protocol };
    let handle = Server::start(config.config.clone(), handler).map_err(wshub_result::from)?;
    server.local_port.store(handle.local_addr().port(), Relaxed);
    {
        let mut slot = server.slot.lock();
        if slot.handle.is_none() {
            slot.handle = Some(handle);
        }
    }
    Ok(Arc::into_raw(server).cast_mut())
}

/// Starts a server that calls `callbacks` (copied) with `user_data` as their
/// first argument. `config` is copied (free it when you like). On WSHUB_OK
/// `*server_out` is the running server; stop and free it with `wshub_stop`.
/// Errors: WSHUB_NULL_PARAMETER, WSHUB_INVALID_CONFIG, WSHUB_IO (e.g. the port
/// is taken).
#[no_mangle]
pub extern "C" fn wshub_start(
    config: *const wshub_config,
    callbacks: *const wshub_callbacks,
    user_data: *mut c_void,
    server_out: *mut *mut wshub_server,
) -> wshub_result {
    ffi_boundary! {
        let config = try_ref!(config);
        let callbacks = *try_ref!(callbacks);
        let server_out = try_out!(server_out);
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
        if config.event_queue_capacity == 0 {
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

/// Stops the server gracefully and frees it: no new connections; each open
/// connection gets what is already queued for it, then a 1001 close (and its
/// on_close / close event); connections not finished after the shutdown
/// timeout are cut; every wshub thread is finished when this returns, and no
/// callback runs after it. Pull mode: events not yet taken are freed (waiting
/// upgrades are refused with 503). The pointer is invalid afterwards: no other
/// application thread may be using it (e.g. blocked in `wshub_poll_event`)
/// when this is called; use `wshub_shutdown` first to wake such threads. NULL
/// is a no-op.
///
/// From inside a callback it cannot wait for its own thread: it starts the
/// stop and returns at once; the server is freed when the stop completes, and
/// the `server` pointer stays valid until that callback returns (other
/// callbacks, e.g. on_close during the drain, still receive a valid pointer).
#[no_mangle]
pub extern "C" fn wshub_stop(server: *mut wshub_server) {
    ffi_boundary! {
        if server.is_null() {
            return;
        }
        // SAFETY: not NULL; the C API requires a pointer from wshub_start or
        // wshub_start_polling not yet passed to wshub_stop, which owns one
        // strong reference; it is taken back here exactly once.
        let server = unsafe { Arc::from_raw(server.cast_const()) };
        if ON_CONNECTION_THREAD.with(Cell::get) {
            let spawned = std::thread::Builder::new()
                .name("wshub-ffi-stop".into())
                .spawn(move || server.stop_and_release());
            if spawned.is_err() {
                log::error!("wshub_stop: cannot spawn the stopping thread");
            }
            return;
        }
        server.stop_and_release();
    }
}

/// Like `wshub_stop` but keeps the handle: afterwards every function on it
/// returns WSHUB_STOPPED, and in pull mode the events queued during the
/// shutdown (closes) can still be taken until WSHUB_STOPPED. Free it with
/// `wshub_stop`. Must not be called from inside a callback (returns
/// WSHUB_WRONG_MODE there).
#[no_mangle]
pub extern "C" fn wshub_shutdown(server: *mut wshub_server) -> wshub_result {
    ffi_boundary! {
        let server = try_ref!(server);
        if ON_CONNECTION_THREAD.with(Cell::get) {
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
            Err(_) => wshub_result::WSHUB_INVALID_CONFIG,
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
/// (0 excludes no one; ids are never 0). The payload is copied once and shared.
/// A room without members is not an error.
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
    use std::net::TcpStream;

    use tungstenite::client::IntoClientRequest;

    use super::super::config::{
        wshub_config_free, wshub_config_new, wshub_config_set_bind, wshub_config_set_protocol,
    };
    use super::super::event::{
        wshub_event_accept, wshub_event_free, wshub_event_get_kind, wshub_event_kind,
        wshub_poll_event,
    };
    use super::*;

    /// The next event's kind (the event is answered or freed here).
    fn next_kind(server: *mut wshub_server) -> wshub_event_kind {
        let mut event: *mut wshub_event = std::ptr::null_mut();
        assert_eq!(
            wshub_poll_event(server, 10_000, &mut event),
            wshub_result::WSHUB_OK
        );
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
        assert_eq!(
            wshub_config_set_bind(config, bind.as_ptr()),
            wshub_result::WSHUB_OK
        );
        assert_eq!(
            wshub_config_set_protocol(config, true),
            wshub_result::WSHUB_OK
        );
        let mut server: *mut wshub_server = std::ptr::null_mut();
        assert_eq!(
            wshub_start_polling(config, &mut server),
            wshub_result::WSHUB_OK
        );
        wshub_config_free(config);
        let port = wshub_local_port(server);

        let client = std::thread::spawn(move || {
            let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut request = format!("ws://127.0.0.1:{port}/ws")
                .into_client_request()
                .unwrap();
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", "wshub.v1.json".parse().unwrap());
            let (mut ws, response) = tungstenite::client::client(request, stream).unwrap();
            let chosen = response.headers().get("Sec-WebSocket-Protocol").cloned();
            let first = ws.read().unwrap().into_text().unwrap().to_string();
            ws.send(r#"{"type":"room:join","id":"j","payload":{"room":"r"}}"#.into())
                .unwrap();
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
        assert_eq!(
            chosen.as_ref().and_then(|v| v.to_str().ok()),
            Some("wshub.v1.json")
        );
        assert!(first.contains(r#""type":"connected""#), "{first}");
        assert!(
            reply.contains(r#""type":"ack""#) && reply.contains(r#""id":"j""#),
            "{reply}"
        );
        wshub_stop(server);
    }
}
