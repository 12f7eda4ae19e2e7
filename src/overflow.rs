//! The overflow thread: sockets the acceptor could not give a reader thread
//! (over a handshake bound, a per-address cap or the connect rate; see
//! `ip_table`) still get an answer, from this one thread, which waits on all
//! of them at once with `poll(2)`:
//!
//! - an upgrade gets the refusal's status (503 with `Retry-After`, or 429);
//! - a plain request gets the handler's answer (`/healthz`, `/metrics` stay
//!   reachable while every handshake slot is taken), unless the address is
//!   over its connect rate (429);
//! - a socket that sends no complete head within `min(handshake_timeout, 2 s)`
//!   gets 408; past `overflow_sockets` held, the oldest socket of the address
//!   holding the most (as `ip_table` counts addresses) is dropped unanswered,
//!   so a flood from one address costs that address its own sockets.
//!
//! When the port speaks TLS, so does this thread: each socket gets its own
//! rustls session (sans-IO, so it fits the poll loop), every answer is
//! encrypted, and nothing is ever written in cleartext into a TLS socket (a
//! socket whose TLS handshake has not completed by its deadline is closed
//! without an answer). At most [`TLS_STEPS_PER_TICK`] sockets have their TLS
//! records processed per tick, so a burst of ClientHellos cannot stall the
//! thread; the rest wait for the next tick.
//!
//! It never blocks on a socket (they are non-blocking) and holds each for a
//! bounded time, so no peer can hold it.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use rustls::ServerConnection;

use crate::connection::handshake::{self, ReadError};
use crate::connection::tls_session::flush_tls;
use crate::engine::Overflowing;
use crate::ip_table::{self, Refusal};
use crate::server::ServerHandle;
use crate::types::HttpResponse;

/// Longest an overflowing socket is held to read its request.
const MAX_HOLD: Duration = Duration::from_secs(2);
/// How long an answered socket is drained before it is closed (closing with
/// unread input would reset the connection and could destroy the answer).
const DRAIN: Duration = Duration::from_millis(500);
/// Longest one poll sleeps while sockets are held (new sockets wait this long).
const TICK: Duration = Duration::from_millis(10);
/// How long it sleeps instead while sockets keep coming: the channel from the
/// acceptor holds only `overflow_sockets`, and one that is full drops the
/// newest socket whatever its address, so under a flood it is drained often
/// enough for the eviction here (per address) to be the one that chooses.
const BUSY_TICK: Duration = Duration::from_millis(1);
/// Sockets whose TLS records are processed (handshake crypto included) per tick.
const TLS_STEPS_PER_TICK: usize = 16;

struct Held {
    socket: Overflowing,
    /// The socket's TLS session, when the port speaks TLS.
    tls: Option<Box<ServerConnection>>,
    /// The request so far (plaintext).
    buf: Vec<u8>,
    deadline: Instant,
    /// Answered: only draining until EOF or the deadline.
    answered: bool,
}

/// Runs until the acceptor lets go of the channel or the server drains.
pub(crate) fn run(server: ServerHandle, rx: Receiver<Overflowing>) {
    let engine = server.engine();
    let hold = engine.config.handshake_timeout.min(MAX_HOLD);
    let capacity = engine.config.overflow_sockets;
    let mut held: VecDeque<Held> = VecDeque::new();
    let mut fds = Vec::new();
    let mut ready = Vec::new();
    loop {
        let wait = if held.is_empty() { Duration::from_millis(200) } else { Duration::ZERO };
        let mut came = false;
        match rx.recv_timeout(wait) {
            Ok(socket) => {
                came = true;
                take(&mut held, socket, hold, capacity, &server)
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        while let Ok(socket) = rx.try_recv() {
            came = true;
            take(&mut held, socket, hold, capacity, &server);
        }
        if engine.is_draining() {
            break;
        }
        if held.is_empty() {
            continue;
        }
        fds.clear();
        fds.extend(held.iter().map(|h| h.socket.stream.as_raw_fd()));
        if crate::sys::poll::readable(&fds, if came { BUSY_TICK } else { TICK }, &mut ready).is_err() {
            std::thread::sleep(TICK);
            continue;
        }
        let now = Instant::now();
        let mut tls_steps = TLS_STEPS_PER_TICK;
        let mut i = 0;
        while i < held.len() {
            let ready_now = ready.get(i).copied().unwrap_or(false);
            let keep = if ready_now && (held[i].tls.is_none() || tls_steps > 0) {
                if held[i].tls.is_some() {
                    tls_steps -= 1;
                }
                serve(&mut held[i], &server)
            } else if now >= held[i].deadline {
                let in_tls_handshake = held[i].tls.as_ref().is_some_and(|t| t.is_handshaking());
                if !held[i].answered && !in_tls_handshake {
                    engine.stats.count_reject(408);
                    answer(&mut held[i], &HttpResponse::plain(408), false, &server);
                }
                false
            } else {
                true
            };
            if keep {
                i += 1;
            } else {
                held.remove(i);
                ready.remove(i);
            }
        }
    }
    log::debug!("overflow thread stopped");
}

fn take(
    held: &mut VecDeque<Held>,
    mut socket: Overflowing,
    hold: Duration,
    capacity: usize,
    server: &ServerHandle,
) {
    if socket.stream.set_nonblocking(true).is_err() {
        return;
    }
    let tls = match &server.engine().tls {
        Some(tls) => match ServerConnection::new(tls.current()) {
            Ok(session) => Some(Box::new(session)),
            Err(_) => return,
        },
        None => None,
    };
    if held.len() >= capacity {
        if let Some(at) = oldest_of_biggest(held) {
            held.remove(at);
        }
        server.engine().stats.count_reject(0);
    }
    let buf = std::mem::take(&mut socket.preread);
    let mut h = Held { socket, tls, buf, deadline: Instant::now() + hold, answered: false };
    // An adopted socket's request may be complete already: no byte may come.
    if !h.buf.is_empty() {
        on_bytes(&mut h, server);
    }
    held.push_back(h);
}

/// Where in `held` the oldest socket of the address holding the most is (of
/// addresses holding as many, the one whose oldest socket is oldest).
fn oldest_of_biggest(held: &VecDeque<Held>) -> Option<usize> {
    let mut by_address: HashMap<IpAddr, (usize, usize)> = HashMap::new();
    for (at, h) in held.iter().enumerate() {
        by_address.entry(ip_table::key(h.socket.remote.ip())).or_insert((0, at)).0 += 1;
    }
    by_address
        .into_values()
        .max_by_key(|&(count, oldest)| (count, std::cmp::Reverse(oldest)))
        .map(|(_, at)| at)
}

/// Reads what a ready socket has; answers it once its head is complete.
/// False when it is done with.
fn serve(h: &mut Held, server: &ServerHandle) -> bool {
    let mut chunk = [0u8; 2048];
    loop {
        match (&h.socket.stream).read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) if h.answered => {
                let _ = n; // draining
            }
            Ok(n) => match h.tls.as_deref_mut() {
                None => {
                    h.buf.extend_from_slice(&chunk[..n]);
                    on_bytes(h, server);
                }
                Some(tls) => {
                    if !decrypt(tls, &h.socket.stream, &chunk[..n], &mut h.buf) {
                        return false;
                    }
                    if !h.buf.is_empty() {
                        on_bytes(h, server);
                    }
                    // One step per tick: the rest waits (the socket stays readable).
                    return true;
                }
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// Feeds `ciphertext` to the session, sends what it answers (handshake
/// records, alerts) without waiting, and appends the plaintext to `plain`.
/// False when the peer spoke bad TLS (its alert is sent if the socket takes it).
fn decrypt(
    tls: &mut ServerConnection,
    stream: &TcpStream,
    mut ciphertext: &[u8],
    plain: &mut Vec<u8>,
) -> bool {
    while !ciphertext.is_empty() {
        match tls.read_tls(&mut ciphertext) {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
        let processed = tls.process_new_packets();
        let _ = flush_tls(stream, tls);
        if processed.is_err() {
            return false;
        }
    }
    let mut out = [0u8; 2048];
    loop {
        match tls.reader().read(&mut out) {
            Ok(0) => return true,
            Ok(n) => plain.extend_from_slice(&out[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
        if plain.len() > handshake::MAX_REQUEST_HEAD {
            return true;
        }
    }
}

/// Answers `h` once its buffer holds a complete head (or a bad one).
fn on_bytes(h: &mut Held, server: &ServerHandle) {
    match handshake::parse_request(&h.buf, h.socket.remote) {
        Ok(Some(request)) => {
            let head_only = request.method == "HEAD";
            let response = respond_to(&request, &h.socket, server);
            answer(h, &response, head_only, server);
        }
        Ok(None) if h.buf.len() <= handshake::MAX_REQUEST_HEAD => {}
        Ok(None) | Err(ReadError::TooLarge) => {
            server.engine().stats.count_reject(431);
            answer(h, &HttpResponse::plain(431), false, server)
        }
        Err(_) => {
            server.engine().stats.count_reject(400);
            answer(h, &HttpResponse::plain(400), false, server)
        }
    }
}

/// The answer to a complete request from an overflowing socket.
fn respond_to(request: &handshake::Request, socket: &Overflowing, server: &ServerHandle) -> HttpResponse {
    let engine = server.engine();
    let refusal = socket.refusal;
    if let Some(response) = engine.admin_split(socket.admin, &request.info) {
        return response;
    }
    let refuse = || {
        let status = refusal.status();
        engine.stats.count_reject(status);
        HttpResponse::plain(status).with_header("Retry-After", refusal.retry_after())
    };
    // Nothing that would hold a connection (an upgrade, an event stream) or
    // needs a body read (this thread reads heads only) is served from here.
    let has_body = !matches!(handshake::body_length(&request.info), Ok(0));
    if handshake::wants_upgrade(&request.info) || refusal == Refusal::ConnectRate || has_body {
        return refuse();
    }
    let response = catch_unwind(AssertUnwindSafe(|| engine.handler.on_http(server, &request.info)))
        .unwrap_or_else(|_| HttpResponse::plain(500));
    if response.stream {
        return refuse();
    }
    response
}

/// Sends `response` without waiting (a response too big for the socket
/// buffer is cut), shuts the write side and starts draining.
fn answer(h: &mut Held, response: &HttpResponse, head_only: bool, _server: &ServerHandle) {
    if h.answered {
        return;
    }
    h.answered = true;
    let bytes = handshake::render(response, head_only);
    match h.tls.as_deref_mut() {
        None => {
            let _ = crate::sys::sock::NoSigPipe(&h.socket.stream).write(&bytes);
        }
        Some(tls) => {
            if tls.writer().write_all(&bytes).is_ok() {
                tls.send_close_notify();
                let _ = flush_tls(&h.socket.stream, tls);
            }
        }
    }
    let _ = h.socket.stream.shutdown(Shutdown::Write);
    h.deadline = Instant::now() + DRAIN;
}
