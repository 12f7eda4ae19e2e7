//! Pull mode: `wshub_event` and the queue behind `wshub_poll_event`, for
//! applications that are not thread-safe. Connection threads queue events here
//! instead of calling into C; the application takes them on its own thread.
//!
//! An upgrade is a question: its reader thread waits (at most the configured
//! upgrade timeout) for `wshub_event_accept` / `wshub_event_reject`. Freeing an
//! unanswered upgrade event refuses it; so does stopping the server.
//!
//! The eventfd is readable exactly while the queue is not empty (and once the
//! server has stopped), so the queue fits a `poll`/`select`/`epoll` loop.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::{c_char, c_int, c_void, CString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::callbacks::{wshub_message_kind, Decision};
use super::error::wshub_result;
use super::request::wshub_request;
use super::server::wshub_server;

/// What a `wshub_event` reports.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum wshub_event_kind {
    /// Not an event (returned for a NULL event pointer).
    WSHUB_EVENT_NONE = 0,
    /// A client asks to upgrade. Answer with `wshub_event_accept` or
    /// `wshub_event_reject`; `wshub_event_request` shows the request. An
    /// accepted upgrade is normally followed by WSHUB_EVENT_CONNECT, but not
    /// if the client vanished before its 101: allocate per-connection state on
    /// the connect event, which is always followed by one close event.
    WSHUB_EVENT_UPGRADE = 1,
    /// A connection is open; `wshub_event_request` shows its request.
    WSHUB_EVENT_CONNECT = 2,
    /// A message arrived: `wshub_event_data`, `wshub_event_message_kind`.
    /// Never queued when the built-in protocol is on
    /// (`wshub_config_set_protocol`): it handles every message itself.
    WSHUB_EVENT_MESSAGE = 3,
    /// A connection is gone: `wshub_event_close_code`,
    /// `wshub_event_close_reason`, `wshub_event_conn_user_data`.
    WSHUB_EVENT_CLOSE = 4,
}

impl super::panic::FfiDefault for wshub_event_kind {
    fn null_parameter() -> Self {
        wshub_event_kind::WSHUB_EVENT_NONE
    }
    fn invalid_argument() -> Self {
        wshub_event_kind::WSHUB_EVENT_NONE
    }
    fn panicked() -> Self {
        wshub_event_kind::WSHUB_EVENT_NONE
    }
}

/// One event taken with `wshub_poll_event`. The application owns it and every
/// pointer read from it until `wshub_event_free`, on any thread.
pub struct wshub_event {
    kind: wshub_event_kind,
    conn: u64,
    request: Option<Box<wshub_request>>,
    /// The payload plus a NUL byte after it.
    data: Vec<u8>,
    message_kind: wshub_message_kind,
    code: u16,
    reason: CString,
    conn_user_data: usize,
    /// Upgrade events: where the answer goes, and whether it went.
    answers: Option<Arc<Answers>>,
    answered: bool,
}

impl wshub_event {
    fn new(kind: wshub_event_kind, conn: u64) -> Self {
        wshub_event {
            kind,
            conn,
            request: None,
            data: vec![0],
            message_kind: 0,
            code: 0,
            reason: CString::default(),
            conn_user_data: 0,
            answers: None,
            answered: false,
        }
    }

    pub(crate) fn connect(conn: u64, request: wshub_request) -> Self {
        let mut e = Self::new(wshub_event_kind::WSHUB_EVENT_CONNECT, conn);
        e.request = Some(Box::new(request));
        e
    }

    /// `data` already carries the trailing NUL.
    pub(crate) fn message(conn: u64, data: Vec<u8>, kind: wshub_message_kind) -> Self {
        let mut e = Self::new(wshub_event_kind::WSHUB_EVENT_MESSAGE, conn);
        e.data = data;
        e.message_kind = kind;
        e
    }

    pub(crate) fn close(conn: u64, code: u16, reason: CString, user_data: usize) -> Self {
        let mut e = Self::new(wshub_event_kind::WSHUB_EVENT_CLOSE, conn);
        e.code = code;
        e.reason = reason;
        e.conn_user_data = user_data;
        e
    }

    fn answer(&mut self, decision: Decision) -> wshub_result {
        match (&self.answers, self.answered) {
            (None, _) => wshub_result::WSHUB_WRONG_MODE,
            (Some(_), true) => wshub_result::WSHUB_ALREADY_ANSWERED,
            (Some(answers), false) => {
                self.answered = true;
                answers.answer(self.conn, decision)
            }
        }
    }
}

impl Drop for wshub_event {
    fn drop(&mut self) {
        if self.answers.is_some() && !self.answered {
            let _ = self.answer(Decision::Reject(503));
        }
    }
}

/// The answers to pending upgrade events, and the reader threads waiting for them.
#[derive(Default)]
pub(crate) struct Answers {
    state: Mutex<AnswersState>,
    changed: Condvar,
}

#[derive(Default)]
struct AnswersState {
    /// Upgrades whose reader thread is still waiting.
    pending: HashSet<u64>,
    decided: HashMap<u64, Decision>,
    stopping: bool,
}

impl Answers {
    fn answer(&self, conn: u64, decision: Decision) -> wshub_result {
        let mut state = self.state.lock();
        if !state.pending.remove(&conn) {
            return wshub_result::WSHUB_ALREADY_ANSWERED; // timed out, or the server stopped
        }
        state.decided.insert(conn, decision);
        self.changed.notify_all();
        wshub_result::WSHUB_OK
    }
}

#[derive(Default)]
struct QueueState {
    events: VecDeque<Box<wshub_event>>,
    /// Set when the stop begins: pushes no longer wait for room.
    stopping: bool,
    stopped: bool,
}

/// The event queue of one pull-mode server.
pub(crate) struct EventQueue {
    state: Mutex<QueueState>,
    ready: Condvar,
    /// Signalled when an event is taken (room for a waiting pusher) or the stop begins.
    not_full: Condvar,
    capacity: usize,
    eventfd: OwnedFd,
    answers: Arc<Answers>,
}

impl EventQueue {
    pub(crate) fn new(capacity: usize) -> std::io::Result<Self> {
        // SAFETY: eventfd takes no pointers; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(EventQueue {
            state: Mutex::new(QueueState::default()),
            ready: Condvar::new(),
            not_full: Condvar::new(),
            capacity,
            // SAFETY: `fd` is a fresh descriptor owned by nothing else.
            eventfd: unsafe { OwnedFd::from_raw_fd(fd) },
            answers: Arc::new(Answers::default()),
        })
    }

    fn signal_fd(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd; a full
        // counter (EAGAIN) still leaves it readable, which is all we want.
        unsafe { libc::write(self.eventfd.as_raw_fd(), (&one as *const u64).cast::<c_void>(), 8) };
    }

    fn clear_fd(&self) {
        let mut count: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64 from our own
        // non-blocking eventfd; EAGAIN (already clear) is fine.
        unsafe { libc::read(self.eventfd.as_raw_fd(), (&mut count as *mut u64).cast::<c_void>(), 8) };
    }

    /// Queues an event, waiting while the queue is full (back-pressure on this
    /// connection) unless the server is stopping.
    pub(crate) fn push(&self, event: wshub_event) {
        let mut state = self.state.lock();
        while state.events.len() >= self.capacity && !state.stopping {
            self.not_full.wait(&mut state);
        }
        if state.events.is_empty() {
            self.signal_fd();
        }
        state.events.push_back(Box::new(event));
        self.ready.notify_one();
    }

    /// Queues an upgrade event and waits for its answer; a timeout or a stop refuses it with 503.
    pub(crate) fn ask_upgrade(&self, conn: u64, request: wshub_request, timeout: Duration) -> Decision {
        {
            let mut answers = self.answers.state.lock();
            if answers.stopping {
                return Decision::Reject(503);
            }
            answers.pending.insert(conn);
        }
        let mut event = wshub_event::new(wshub_event_kind::WSHUB_EVENT_UPGRADE, conn);
        event.request = Some(Box::new(request));
        event.answers = Some(self.answers.clone());
        self.push(event);
        let deadline = Instant::now() + timeout;
        let mut answers = self.answers.state.lock();
        while !answers.decided.contains_key(&conn) && !answers.stopping {
            if self.answers.changed.wait_until(&mut answers, deadline).timed_out() {
                break;
            }
        }
        answers.pending.remove(&conn);
        answers.decided.remove(&conn).unwrap_or(Decision::Reject(503))
    }

    /// Refuses every waiting upgrade and every later one: the server is stopping.
    pub(crate) fn stopping(&self) {
        self.answers.state.lock().stopping = true;
        self.answers.changed.notify_all();
        self.state.lock().stopping = true;
        self.not_full.notify_all();
    }

    /// No event will be queued any more: pollers drain what is left, then get
    /// WSHUB_STOPPED; the eventfd turns readable so poll loops notice.
    pub(crate) fn stopped(&self) {
        let mut state = self.state.lock();
        state.stopped = true;
        self.signal_fd();
        self.ready.notify_all();
    }

    fn poll(&self, timeout_ms: i32) -> Result<Box<wshub_event>, wshub_result> {
        let deadline = (timeout_ms >= 0).then(|| Instant::now() + Duration::from_millis(timeout_ms as u64));
        let mut state = self.state.lock();
        loop {
            if let Some(event) = state.events.pop_front() {
                self.not_full.notify_one();
                if state.events.is_empty() && !state.stopped {
                    self.clear_fd();
                }
                return Ok(event);
            }
            if state.stopped {
                return Err(wshub_result::WSHUB_STOPPED);
            }
            match deadline {
                None => self.ready.wait(&mut state),
                Some(d) => {
                    if self.ready.wait_until(&mut state, d).timed_out() && state.events.is_empty() {
                        return Err(if state.stopped {
                            wshub_result::WSHUB_STOPPED
                        } else {
                            wshub_result::WSHUB_TIMEOUT
                        });
                    }
                }
            }
        }
    }
}

/// Takes the next event of a server started with `wshub_start_polling`,
/// waiting up to `timeout_ms` milliseconds (0: do not wait; negative: wait
/// until an event arrives or the server stops). On WSHUB_OK `*event_out` is an
/// event the caller owns and must give to `wshub_event_free`. WSHUB_TIMEOUT:
/// nothing arrived in time. WSHUB_STOPPED: the server is stopped and every
/// event has been taken. WSHUB_WRONG_MODE: the server uses callbacks.
/// May be called from any thread, also concurrently.
#[no_mangle]
pub extern "C" fn wshub_poll_event(
    server: *mut wshub_server,
    timeout_ms: i32,
    event_out: *mut *mut wshub_event,
) -> wshub_result {
    ffi_boundary! {
        let server = try_ref!(server);
        let event_out = try_out!(event_out);
        let Some(queue) = server.events() else {
            return wshub_result::WSHUB_WRONG_MODE;
        };
        match queue.poll(timeout_ms) {
            Ok(event) => {
                *event_out = Box::into_raw(event);
                wshub_result::WSHUB_OK
            }
            Err(code) => code,
        }
    }
}

/// The file descriptor of a pull-mode server's queue: readable (POLLIN) while
/// events are waiting, and once the server has stopped. Put it in your
/// `poll`/`select`/`epoll` set and call `wshub_poll_event(server, 0, ...)`
/// when it is readable. Owned by wshub: never read, write or close it; it
/// closes when the server is freed by `wshub_stop`.
#[no_mangle]
pub extern "C" fn wshub_event_fd(server: *mut wshub_server, fd_out: *mut c_int) -> wshub_result {
    ffi_boundary! {
        let server = try_ref!(server);
        let fd_out = try_out!(fd_out);
        match server.events() {
            Some(queue) => {
                *fd_out = queue.eventfd.as_raw_fd();
                wshub_result::WSHUB_OK
            }
            None => wshub_result::WSHUB_WRONG_MODE,
        }
    }
}

/// Frees an event and everything read from it. An upgrade event that was not
/// answered is refused (503). NULL is a no-op.
#[no_mangle]
pub extern "C" fn wshub_event_free(event: *mut wshub_event) {
    ffi_boundary! {
        if !event.is_null() {
            // SAFETY: not NULL; the C API requires an event from wshub_poll_event
            // that has not been freed; ownership returns here.
            drop(unsafe { Box::from_raw(event) });
        }
    }
}

/// What kind of event this is (WSHUB_EVENT_NONE for NULL).
#[no_mangle]
pub extern "C" fn wshub_event_get_kind(event: *const wshub_event) -> wshub_event_kind {
    ffi_boundary! { try_ref!(event).kind }
}

/// The connection the event is about (0 for NULL). For an upgrade event it is
/// the id the connection will have if accepted.
#[no_mangle]
pub extern "C" fn wshub_event_conn(event: *const wshub_event) -> u64 {
    ffi_boundary! { try_ref!(event).conn }
}

/// The request of an upgrade or connect event (NULL for other kinds). Valid
/// until the event is freed.
#[no_mangle]
pub extern "C" fn wshub_event_request(event: *mut wshub_event) -> *mut wshub_request {
    ffi_boundary! {
        match &try_ref!(event).request {
            Some(request) => (&**request as *const wshub_request).cast_mut(),
            None => std::ptr::null_mut(),
        }
    }
}

/// A message event's payload; its length goes to `*len_out` (may be NULL).
/// A NUL byte follows the payload, so text can be printed directly. For other
/// kinds: an empty string and length 0. Valid until the event is freed.
#[no_mangle]
pub extern "C" fn wshub_event_data(event: *const wshub_event, len_out: *mut usize) -> *const u8 {
    ffi_boundary! {
        let event = try_ref!(event);
        if !len_out.is_null() {
            *try_out!(len_out) = event.data.len() - 1;
        }
        event.data.as_ptr()
    }
}

/// A message event's kind: WSHUB_TEXT or WSHUB_BINARY (0 for other events).
#[no_mangle]
pub extern "C" fn wshub_event_message_kind(event: *const wshub_event) -> wshub_message_kind {
    ffi_boundary! { try_ref!(event).message_kind }
}

/// A close event's code (see on_close in wshub_callbacks); 0 for other kinds.
#[no_mangle]
pub extern "C" fn wshub_event_close_code(event: *const wshub_event) -> u16 {
    ffi_boundary! { try_ref!(event).code }
}

/// A close event's reason ("" when none or for other kinds). Valid until the
/// event is freed.
#[no_mangle]
pub extern "C" fn wshub_event_close_reason(event: *const wshub_event) -> *const c_char {
    ffi_boundary! { try_ref!(event).reason.as_ptr() }
}

/// A close event's connection user data, as last set with
/// `wshub_conn_set_user_data` (the connection is gone, so this is the moment
/// to free what it points to). NULL for other kinds.
#[no_mangle]
pub extern "C" fn wshub_event_conn_user_data(event: *const wshub_event) -> *mut c_void {
    ffi_boundary! { try_ref!(event).conn_user_data as *mut c_void }
}

/// Accepts an upgrade event: the client gets its 101, and a
/// WSHUB_EVENT_CONNECT follows. Set an identity or subprotocol on
/// `wshub_event_request(event)` first. WSHUB_ALREADY_ANSWERED when it was
/// answered before or its wait timed out (the client got a 503);
/// WSHUB_WRONG_MODE for other kinds.
#[no_mangle]
pub extern "C" fn wshub_event_accept(event: *mut wshub_event) -> wshub_result {
    ffi_boundary! {
        let event = try_out!(event);
        let (identity, subprotocol) = match &event.request {
            Some(r) => (r.identity.lock().clone(), r.subprotocol.lock().clone()),
            None => (None, None),
        };
        event.answer(Decision::Accept { identity, subprotocol })
    }
}

/// Refuses an upgrade event with an HTTP status (400-599; anything else
/// becomes 500). Same results as `wshub_event_accept`.
#[no_mangle]
pub extern "C" fn wshub_event_reject(event: *mut wshub_event, http_status: u16) -> wshub_result {
    ffi_boundary! {
        try_out!(event).answer(Decision::from_status(http_status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// True when the queue's eventfd polls readable right now.
    fn readable(queue: &EventQueue) -> bool {
        let mut pfd = libc::pollfd { fd: queue.eventfd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, timeout 0.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        n == 1 && pfd.revents & libc::POLLIN != 0
    }

    fn message(conn: u64) -> wshub_event {
        wshub_event::message(conn, b"x\0".to_vec(), 1)
    }

    #[test]
    fn eventfd_is_readable_exactly_while_events_wait_and_after_the_stop() {
        let queue = EventQueue::new(16).unwrap();
        assert!(!readable(&queue));
        queue.push(message(1));
        queue.push(message(2));
        assert!(readable(&queue));
        assert_eq!(queue.poll(0).unwrap().conn, 1);
        assert!(readable(&queue), "one event still waits");
        assert_eq!(queue.poll(0).unwrap().conn, 2);
        assert!(!readable(&queue));
        assert_eq!(queue.poll(0).err(), Some(wshub_result::WSHUB_TIMEOUT));
        queue.stopped();
        assert!(readable(&queue), "a poll loop must notice the stop");
        assert_eq!(queue.poll(-1).err(), Some(wshub_result::WSHUB_STOPPED));
    }

    #[test]
    fn a_full_queue_makes_the_pusher_wait_until_an_event_is_taken() {
        let queue = Arc::new(EventQueue::new(1).unwrap());
        queue.push(message(1));
        let q2 = queue.clone();
        let pusher = std::thread::spawn(move || q2.push(message(2)));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!pusher.is_finished(), "the second push must wait for room");
        assert_eq!(queue.poll(1000).unwrap().conn, 1);
        pusher.join().unwrap();
        assert_eq!(queue.poll(1000).unwrap().conn, 2);
    }

    #[test]
    fn the_stop_releases_a_waiting_pusher_and_refuses_waiting_upgrades() {
        let queue = Arc::new(EventQueue::new(1).unwrap());
        queue.push(message(1));
        let q2 = queue.clone();
        let pusher = std::thread::spawn(move || q2.push(message(2)));
        let q3 = queue.clone();
        let info = request_info();
        let asker =
            std::thread::spawn(move || q3.ask_upgrade(7, wshub_request::new(&info), Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(50));
        queue.stopping();
        pusher.join().unwrap();
        assert!(matches!(asker.join().unwrap(), Decision::Reject(503)));
    }

    fn request_info() -> crate::types::RequestInfo {
        crate::types::RequestInfo {
            remote_addr: "127.0.0.1:1".parse().unwrap(),
            method: "GET".into(),
            path: "/ws".into(),
            query: String::new(),
            headers: Vec::new(),
            received_at: std::time::SystemTime::now(),
            user: None,
            tls_client_subject: None,
            body: Vec::new(),
        }
    }
}
