//! The reader half: the connection's first thread, and the only one that reads
//! its socket.
//!
//! It reads the HTTP request, upgrades (or answers plain HTTP), opens the
//! connection (a writer thread starts when its queue needs one, see
//! `writer.rs`), then reads messages (`assembly.rs`, which inflates compressed
//! ones with `inflate.rs`) and runs the handler's callbacks. Pongs and the
//! close reply go to the writer's queue ([`ConnShared::push_control`]): the
//! reader writes no frame to the socket after the 101, and the replies go out
//! after every frame already queued, through the one ordering point every
//! writer uses (`outbound.rs`), which sends nothing after a close. Under TLS
//! the reader does write after the 101: the records its reads caused
//! (alerts, key updates, session tickets), under the same write lock
//! (`tls_session.rs`).

use std::io::{self, Read};
use std::net::Shutdown;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::assembly::{Assembly, Fault, Inbound};
use super::frame_meter::{FrameLimit, FrameMeter};
use super::handshake;
use super::outbound::WriterHome;
use super::{ConnShared, SockReader};
use crate::hub::Cmd;
use crate::server::{ServerHandle, ON_CONNECTION_THREAD};
use crate::stats::Stats;
use crate::types::{HttpResponse, Message, Upgrade};

/// The reader's view of the socket: reads come from it, counted by the frame
/// meter.
struct ReaderIo<'a> {
    /// The socket's read side (decrypted, with TLS).
    sock: SockReader<'a>,
    meter: FrameMeter,
    /// A limit the bytes read with the request already crossed.
    crossed: Option<FrameLimit>,
}

impl Read for ReaderIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(limit) = self.crossed {
            return Err(io::Error::other(limit));
        }
        let n = self.sock.read(buf)?;
        self.meter.feed(&buf[..n]).map_err(io::Error::other)?;
        Ok(n)
    }
}

/// How the read loop ended.
enum End {
    /// The peer sent a close frame (its reply is queued).
    Peer(u16, String),
    /// We must close with this code (bad input, a handler panic).
    Fail(u16, &'static str),
    /// The TCP connection broke, or went silent for the idle timeout.
    Abnormal,
    /// Its `close_at` time came (a session's end): close with this code.
    Deadline(u16, String),
}

/// The whole life of one accepted TCP connection; `preread`: the bytes a
/// host already read from an adopted socket (empty otherwise).
pub(crate) fn run(server: ServerHandle, conn: Arc<ConnShared>, preread: Vec<u8>) {
    ON_CONNECTION_THREAD.with(|c| c.set(true));
    let engine = server.engine();
    // One deadline for the whole handshake, counted from the accept: the TLS
    // handshake (when on), then the HTTP request, however slowly it trickles.
    let deadline = conn.accepted + engine.config.handshake_timeout;
    let mut sock = SockReader::with_prefix(&conn, preread);
    let upgraded = match &engine.tls {
        // Here, not on the acceptor: a client that stalls or sends garbage
        // costs only this thread, until the deadline.
        Some(tls) => match tls_handshake(&conn, tls, &mut sock, deadline) {
            Ok(()) => upgrade(&server, &conn, sock, deadline),
            Err(e) => {
                log::debug!("conn {} ({}): TLS handshake failed: {e}", conn.id, conn.remote);
                Stats::add(&engine.stats.tls_handshake_failures, 1);
                None
            }
        },
        None => upgrade(&server, &conn, sock, deadline),
    };
    engine.handshake_finished(&conn);
    match upgraded {
        Some(Opened::WebSocket(ws, request)) => serve(&server, &conn, ws, &request),
        Some(Opened::Stream(sock, request)) => serve_stream(&server, &conn, sock, &request),
        None => {}
    }
    conn.kill();
    engine.connection_finished(conn.id);
}

/// An open WebSocket's inbound side: the socket and the message assembly.
struct Ws<'a> {
    io: ReaderIo<'a>,
    assembly: Assembly,
}

impl Ws<'_> {
    /// Between frames with nothing read ahead anywhere (the assembly, the
    /// TLS session, an adopted socket's prefix) and no limit already
    /// crossed: the socket's readability says whether the peer is quiet.
    fn is_empty(&self) -> bool {
        self.assembly.is_empty() && self.io.crossed.is_none() && !self.io.sock.holds_input()
    }
}

/// How long a connection must stay silent, at a frame boundary with nothing
/// buffered, before its reader gives back the stack pages the handshake,
/// `on_connect` and the first callbacks left (`sys::pthread::
/// release_unused_stack`). The release's `madvise` flushes the TLB of every
/// core running one of the process's threads, and in a burst of handshakes
/// the other cores are all running the acceptor or other readers, so each
/// flush waits for them; after a second the burst that brought the
/// connection has usually ended, and an idle core is not interrupted. Long
/// enough that a client's opening exchange (a join a round trip after
/// `connected`, even over a slow link) comes first; short enough that the
/// extra page (4 KiB) a new connection keeps meanwhile never adds up to
/// much. A poll that sees bytes ends at once, so a talking client is not
/// slowed.
const QUIET_BEFORE_RELEASE: Duration = Duration::from_secs(1);

/// Frame boundaries at which a reader that has not released yet waits for
/// a quiet moment. A protocol client's opening exchange (joins, a presence
/// read) takes a few frames and then goes quiet; a connection still talking
/// at the last of these releases there all the same (once, as the
/// handshake path used to: a client that opens with a few more round trips
/// and then idles for hours would otherwise keep its handshake's pages for
/// ever), and from then on reads without a `poll` before each frame (echo
/// pays nothing more).
const QUIET_TRIES: u32 = 8;

/// A reader's one release of its unused stack pages, at its connection's
/// first quiet moment (or its last try for one). The read loops only wait
/// for that moment ([`StackRelease::time_to_release`]) and then return to
/// `serve` (or `serve_stream`), which releases from its own shallow frame
/// and enters the loop again: released from inside the loop, the page
/// holding the loop's frames would be kept, and with it whatever the
/// handshake left on it.
struct StackRelease {
    tries_left: u32,
    /// How long the quiet wait that ended the loop lasted (it counts toward
    /// the idle timeout once the loop is entered again).
    waited: Duration,
}

impl StackRelease {
    fn new() -> Self {
        StackRelease { tries_left: QUIET_TRIES, waited: Duration::ZERO }
    }

    /// Not released, and still trying.
    fn pending(&self) -> bool {
        self.tries_left > 0
    }

    /// At a frame boundary with nothing buffered: waits for bytes at most
    /// [`QUIET_BEFORE_RELEASE`] (less when `limit`, the time the read may
    /// wait anyway, is shorter), without reading; true when none came, or
    /// on the last try (then `waited` stays zero: bytes are there). A
    /// poll, not a read timeout: nothing is read, so no frame is ever cut by
    /// it.
    fn time_to_release(&mut self, conn: &ConnShared, stats: &Stats, limit: Duration) -> bool {
        self.tries_left -= 1;
        Stats::add(&stats.reader_quiet_waits, 1);
        let wait = QUIET_BEFORE_RELEASE.min(limit);
        if crate::sys::sock::wait_readable(&conn.stream, wait) {
            return self.tries_left == 0;
        }
        self.waited = wait;
        true
    }

    /// Gives back the pages below the caller's frame; called by `serve` and
    /// `serve_stream`, above the read loops.
    fn release(&mut self, stats: &Stats) {
        self.tries_left = 0;
        crate::sys::pthread::release_unused_stack();
        Stats::add(&stats.reader_stack_releases, 1);
    }
}

/// What a request became. Not boxed: it lives only between `upgrade` and
/// `serve`, and a box would cost every WebSocket an allocation.
#[allow(clippy::large_enum_variant)]
enum Opened<'a> {
    WebSocket(Ws<'a>, handshake::Request),
    /// An event stream (`HttpResponse::event_stream`), its head sent.
    Stream(SockReader<'a>, handshake::Request),
}

/// Starts the connection's TLS session and completes its handshake before `deadline`.
#[inline(never)]
fn tls_handshake<'a>(
    conn: &'a ConnShared,
    tls: &crate::tls::Tls,
    sock: &mut SockReader<'a>,
    deadline: Instant,
) -> io::Result<()> {
    // The server's flight goes out in several writes, none to wait for an
    // ACK. (A plain connection needs no Nagle-free socket before its 101:
    // `push` sets it after, and a refusal goes in one write before the FIN.)
    let _ = conn.stream.set_nodelay(true);
    conn.start_tls(tls.current()).map_err(io::Error::other)?;
    *sock = SockReader::new(conn);
    sock.tls_handshake(deadline)
}

/// Reads the request and either answers it over HTTP (returning `None`) or
/// completes the upgrade.
// Not inlined (nor `serve`, `read_loop`): each runs after the previous one
// returned, so as separate frames their locals never share the stack, which
// keeps an idle connection's reader on fewer touched stack pages.
#[inline(never)]
fn upgrade<'a>(
    server: &ServerHandle,
    conn: &'a ConnShared,
    mut sock: SockReader<'a>,
    deadline: Instant,
) -> Option<Opened<'a>> {
    let engine = server.engine();
    // Every raw read of the request waits at most until the deadline.
    sock.deadline = Some(deadline);
    let reject = |response: &HttpResponse, head_only: bool| {
        // Address and status only: never the query (it may carry a token).
        log::warn!("conn {} ({}): request refused with {}", conn.id, conn.addr(), response.status);
        engine.stats.count_reject(response.status);
        handshake::respond_and_close(conn, response, head_only);
    };
    let mut request = match handshake::read_request(&mut sock, conn.remote, deadline) {
        Ok(r) => r,
        Err(e) => {
            if let Some(status) = e.status() {
                reject(&HttpResponse::plain(status), false);
            }
            return None;
        }
    };
    if conn.is_tls() {
        request.info.tls_client_subject = conn.tls_client_subject();
    }
    let head_only = request.method == "HEAD";
    if let Err((refusal, client)) = engine.take_forwarded_client(conn, &request.info) {
        engine.stats.count_reject(refusal.status());
        // The forwarded client's address: the bound is its, not the proxy's.
        log::warn!(
            "conn {} ({client}, via {}): over {}; refused with {}",
            conn.id,
            conn.remote,
            refusal.label(),
            refusal.status()
        );
        let response =
            HttpResponse::plain(refusal.status()).with_header("Retry-After", refusal.retry_after());
        handshake::respond_and_close(conn, &response, head_only);
        return None;
    }
    request.info.remote_addr = conn.addr();
    if let Some(response) = engine.admin_split(conn.on_admin(), &request.info) {
        match handshake::wants_upgrade(&request.info) {
            true => reject(&response, head_only),
            false => handshake::respond_and_close(conn, &response, head_only),
        }
        return None;
    }
    if !handshake::wants_upgrade(&request.info) {
        let reserved = match read_body(server, &mut sock, &mut request, deadline) {
            Ok(reserved) => reserved,
            Err(Refused::Ours(response)) => {
                reject(&response, head_only);
                return None;
            }
            Err(Refused::Handler(response)) => {
                handshake::respond_and_close(conn, &response, head_only);
                return None;
            }
            Err(Refused::Gone) => return None,
        };
        let response = guarded(|| engine.handler.on_http(server, &request.info))
            .unwrap_or_else(|| HttpResponse::plain(500));
        engine.release_body(&mut request.info.body, reserved);
        if response.stream && !head_only {
            return open_stream(server, conn, sock, request, &response);
        }
        handshake::respond_and_close(conn, &response, head_only);
        return None;
    }
    if request.info.path != engine.config.path {
        reject(&HttpResponse::not_found(), head_only);
        return None;
    }
    let key = match handshake::check_upgrade(&request.method, &request.info) {
        Ok(key) => key,
        Err(response) => {
            reject(&response, head_only);
            return None;
        }
    };
    let subprotocol = accept_upgrade(server, conn, &request.info, |response| reject(response, false))?;
    let deflate = match engine.config.compression {
        true => super::deflate::negotiate(request.info.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()))),
        false => None,
    };
    let extensions = deflate.map(|agreed| agreed.response());
    let response = handshake::switching_protocols(&key, subprotocol.as_deref(), extensions.as_deref());
    // Held back until the first message or the end of on_connect (see `serve`).
    let sent = if conn.is_tls() {
        conn.write_unframed(&response, false, Instant::now() + engine.config.handshake_timeout)
    } else {
        crate::sys::sock::send_all_more(&conn.stream, &response)
    };
    if sent.is_err() {
        engine.release_connection_slot();
        guarded(|| engine.handler.on_upgrade_failed(server, conn.id));
        return None;
    }
    if let Some(agreed) = deflate {
        conn.set_deflate(agreed.max_payload, engine.config.compression_min_bytes);
    }
    let leftover = std::mem::take(&mut request.leftover);
    let mut meter = FrameMeter::new(engine.config.frame_rate_limit, engine.config.max_fragments);
    let crossed = meter.feed(&leftover).err();
    sock.deadline = None;
    sock.idle = Some(engine.config.idle_timeout);
    let io = ReaderIo { sock, meter, crossed };
    let assembly = Assembly::new(
        leftover,
        engine.config.read_buffer_size,
        engine.config.max_message_size,
        deflate.is_some(),
    );
    let ws = Ws { io, assembly };
    Some(Opened::WebSocket(ws, request))
}

/// Why a request's body was not read.
enum Refused {
    /// A bound of ours: answered, counted and logged as a refusal.
    Ours(HttpResponse),
    /// The handler's answer to the head (`Handler::on_body`).
    Handler(HttpResponse),
    /// The peer went (or stalled past the deadline) while sending it.
    Gone,
}

/// Reads a plain request's body, if it declares one the handler takes
/// (judged on the head, before a byte of it is read) and the body budget has
/// room for it. Returns the bytes reserved in that budget (give them back
/// with `Engine::release_body`).
fn read_body(
    server: &ServerHandle,
    sock: &mut SockReader<'_>,
    request: &mut handshake::Request,
    deadline: Instant,
) -> Result<usize, Refused> {
    let engine = server.engine();
    let refuse =
        |e: handshake::ReadError| e.status().map_or(Refused::Gone, |s| Refused::Ours(HttpResponse::plain(s)));
    let length = handshake::body_length(&request.info).map_err(refuse)?;
    if length == 0 {
        return Ok(0);
    }
    let limit = guarded(|| engine.handler.on_body(server, &request.info))
        .unwrap_or_else(|| Err(HttpResponse::plain(500)))
        .map_err(Refused::Handler)?;
    // Over the whole budget it could never be read: 413, not a 503 whose
    // Retry-After would be retried for ever.
    if length > limit.min(engine.config.max_message_size).min(engine.config.request_body_budget) {
        return Err(Refused::Ours(HttpResponse::plain(413)));
    }
    if !engine.reserve_body(length) {
        return Err(Refused::Ours(HttpResponse::plain(503).with_header("Retry-After", "1")));
    }
    if let Err(e) = handshake::read_body(sock, request, length, deadline) {
        engine.release_body(&mut request.info.body, length);
        return Err(refuse(e));
    }
    Ok(length)
}

/// What a WebSocket upgrade and an event stream both pass before their
/// response head: not draining, a connection slot, the handler's
/// `on_upgrade`. `Some(subprotocol)` holds the slot; `None` gave it back and
/// answered the request with `reject`.
fn accept_upgrade(
    server: &ServerHandle,
    conn: &ConnShared,
    request: &crate::types::RequestInfo,
    reject: impl Fn(&HttpResponse),
) -> Option<Option<String>> {
    let engine = server.engine();
    if engine.is_draining() {
        reject(&HttpResponse::plain(503).with_header("Retry-After", "5"));
        return None;
    }
    if !engine.reserve_connection_slot() {
        reject(&HttpResponse::plain(503).with_header("Retry-After", "1"));
        return None;
    }
    match guarded(|| engine.handler.on_upgrade(server, conn.id, request)) {
        Some(Upgrade::Accept { subprotocol }) => Some(subprotocol),
        Some(Upgrade::Reject(refusal)) => {
            engine.release_connection_slot();
            reject(&refusal);
            None
        }
        // It panicked: what it reserved before (the protocol's per-user
        // slot, the application's attachments) goes as for a 101 not sent.
        None => {
            engine.release_connection_slot();
            guarded(|| engine.handler.on_upgrade_failed(server, conn.id));
            reject(&HttpResponse::plain(500));
            None
        }
    }
}

/// The handler answered with an event stream: the same checks as an
/// upgrade (drain, a connection slot, `on_upgrade`), then the response head.
#[inline(never)]
fn open_stream<'a>(
    server: &ServerHandle,
    conn: &'a ConnShared,
    mut sock: SockReader<'a>,
    request: handshake::Request,
    response: &HttpResponse,
) -> Option<Opened<'a>> {
    let engine = server.engine();
    let reject = |response: &HttpResponse| {
        engine.stats.count_reject(response.status);
        handshake::respond_and_close(conn, response, false);
    };
    accept_upgrade(server, conn, &request.info, reject)?;
    let head = handshake::stream_head(response);
    let sent = if conn.is_tls() {
        conn.write_unframed(&head, false, Instant::now() + engine.config.handshake_timeout)
    } else {
        crate::sys::sock::send_all_more(&conn.stream, &head)
    };
    if sent.is_err() {
        engine.release_connection_slot();
        guarded(|| engine.handler.on_upgrade_failed(server, conn.id));
        return None;
    }
    conn.set_event_stream();
    sock.deadline = None;
    Some(Opened::Stream(sock, request))
}

/// Runs an open connection until it ends, then cleans up after it.
#[inline(never)]
fn serve(server: &ServerHandle, conn: &Arc<ConnShared>, mut ws: Ws<'_>, request: &handshake::Request) {
    let engine = server.engine();
    let config = &engine.config;
    start(server, conn, request);
    let _ = conn.stream.set_read_timeout(Some(config.idle_timeout));

    let connected = guarded(|| engine.handler.on_connect(server, conn.id, &request.info));
    // The 101 went out with MSG_MORE, to share a packet with the first
    // message; if on_connect sent none, it goes now.
    crate::sys::sock::push(&conn.stream);
    let end = match connected {
        None => End::Fail(1011, "internal error"),
        Some(()) => {
            let mut release = StackRelease::new();
            loop {
                match read_loop(server, conn, &mut ws, &mut release) {
                    Some(end) => break end,
                    None => release.release(&engine.stats),
                }
            }
        }
    };

    // The code on_close reports: a close the server queued first wins over the
    // peer's, which wins over none (1006).
    let (code, reason) = match end {
        End::Peer(code, reason) => {
            // The reply is queued: what is still queued before it gets the
            // close timeout to go, not the idle timeout.
            conn.peer_closed(config.close_timeout);
            match conn.server_close_code() {
                Some(ours) => (ours, String::new()),
                None => (code, reason),
            }
        }
        End::Fail(code, reason) => {
            // A close queued earlier (a 1013, say) is the one the peer gets.
            let sent = conn.server_close_code().map_or((code, reason.to_owned()), |c| (c, String::new()));
            engine.close_in_order(conn, code, reason);
            drain_until_closed(conn, config.close_timeout);
            sent
        }
        End::Deadline(code, reason) => {
            engine.close_in_order(conn, code, &reason);
            drain_until_closed(conn, config.close_timeout);
            (code, reason)
        }
        End::Abnormal => {
            // Unless the read ended because no writer thread could start:
            // then this thread writes what is queued (`end_writer`) first.
            if !conn.writer_cannot_start() {
                conn.kill();
            }
            (conn.server_close_code().unwrap_or(1006), String::new())
        }
    };
    finish(server, conn, code, &reason);
}

/// Opens the connection: registered, counted, and from now on a writer
/// thread starts whenever its queue needs one.
fn start(server: &ServerHandle, conn: &Arc<ConnShared>, request: &handshake::Request) {
    let engine = server.engine();
    conn.open_writer(WriterHome { start: engine.start_writer.clone(), conn: Arc::downgrade(conn) });
    *conn.request_path.lock() = (request.info.path.clone(), request.info.query.clone());
    Stats::add(&engine.stats.connections_total, 1);
    conn.set_open(true);
    engine.register_with_hub(conn.clone());
    if engine.is_draining() {
        engine.close_in_order(conn, 1001, "server shutting down");
    }
}

/// The end of an open connection: out of the registry, `on_close`, and the
/// writer, if one runs, done with what was queued before and gone.
fn finish(server: &ServerHandle, conn: &ConnShared, code: u16, reason: &str) {
    let engine = server.engine();
    conn.set_open(false);
    engine.release_connection_slot();
    engine.send_to_hub(Cmd::Unregister(conn.id));
    guarded(|| engine.handler.on_close(server, conn.id, code, reason));
    conn.end_writer();
}

/// Runs an event stream until the client goes, its `close_at` time comes or
/// the server ends it (its writer then shuts the socket, which ends the read
/// here). What the client sends meanwhile is read and dropped.
#[inline(never)]
fn serve_stream(
    server: &ServerHandle,
    conn: &Arc<ConnShared>,
    mut sock: SockReader<'_>,
    request: &handshake::Request,
) {
    let engine = server.engine();
    start(server, conn, request);
    let connected = guarded(|| engine.handler.on_connect(server, conn.id, &request.info));
    crate::sys::sock::push(&conn.stream);
    let (code, reason) = if connected.is_none() {
        engine.close_in_order(conn, 1011, "internal error");
        (1011, "internal error".to_owned())
    } else {
        let mut release = StackRelease::new();
        loop {
            match wait_for_end(conn, &mut sock, &engine.stats, &mut release) {
                Some(end) => break end,
                None => release.release(&engine.stats),
            }
        }
    };
    if code != 1006 {
        // Ours: the writer ends the stream after what is queued.
        engine.close_in_order(conn, code, &reason);
        drain_until_closed(conn, engine.config.close_timeout);
    }
    let code = conn.server_close_code().unwrap_or(code);
    finish(server, conn, code, &reason);
}

/// Reads (and drops) until the stream ends: 1006 when the client went or the
/// server closed it, or its `close_at` code when that time came; `None`
/// when the stack's release is due (the stream was quiet long enough, or
/// this was the last try, see [`StackRelease`]): call again after it.
#[inline(never)]
fn wait_for_end(
    conn: &ConnShared,
    sock: &mut SockReader<'_>,
    stats: &Stats,
    release: &mut StackRelease,
) -> Option<(u16, String)> {
    let mut sink = [0u8; 512];
    loop {
        let at = if conn.has_close_at.load(std::sync::atomic::Ordering::Acquire) {
            conn.close_at.lock().clone()
        } else {
            None
        };
        let timeout = match &at {
            Some((at, code, reason)) => {
                let left = at.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Some((*code, reason.clone()));
                }
                Some(left)
            }
            // Set only by on_connect, before this loop: without one, the
            // read waits for the end alone.
            None => None,
        };
        if release.pending()
            && !sock.holds_input()
            && release.time_to_release(conn, stats, timeout.unwrap_or(Duration::MAX))
        {
            return None;
        }
        let _ = conn.stream.set_read_timeout(timeout);
        match sock.read(&mut sink) {
            Ok(0) => return Some((1006, String::new())),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return Some((1006, String::new())),
        }
    }
}

/// Reads messages and hands them to the handler until the connection ends;
/// `None` when the stack's release is due (the connection was quiet long
/// enough, or this was the last try, see [`StackRelease`]): call again
/// after it.
#[inline(never)]
fn read_loop(
    server: &ServerHandle,
    conn: &ConnShared,
    ws: &mut Ws<'_>,
    release: &mut StackRelease,
) -> Option<End> {
    let engine = server.engine();
    let idle = engine.config.idle_timeout;
    // Entered again after the release: the read timeout the loop left may
    // be one a session's end (since cancelled) shortened; it is set anew.
    let mut deadline_armed = !release.pending();
    // The quiet wait that ended the loop counts toward the idle timeout:
    // the rest of it goes by in a poll too, which bounds the wait for the
    // next frame's first byte only (a shorter read timeout would bound
    // every gap inside that frame as well). When the session's end comes
    // sooner, the read below waits for that.
    let quiet = std::mem::take(&mut release.waited);
    if !quiet.is_zero() {
        let rest = idle.saturating_sub(quiet);
        if close_at_left(conn).is_none_or(|left| left >= rest)
            && !crate::sys::sock::wait_readable(&conn.stream, rest)
        {
            log::debug!("conn {}: idle timeout", conn.id);
            return Some(End::Abnormal);
        }
    }
    loop {
        // Between frames, with nothing buffered: the stack's release waits
        // for a quiet moment here (see above for the idle timeout).
        if release.pending() && ws.is_empty() {
            let limit = close_at_left(conn).map_or(idle, |left| left.min(idle));
            if release.time_to_release(conn, &engine.stats, limit) {
                return None;
            }
        }
        if conn.has_close_at.load(std::sync::atomic::Ordering::Acquire) || deadline_armed {
            // One read timeout serves both: the idle timeout, or less when
            // the session's end comes sooner.
            let at = conn.close_at.lock().clone();
            let mut timeout = idle;
            if let Some((at, code, reason)) = at {
                let left = at.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Some(End::Deadline(code, reason));
                }
                timeout = timeout.min(left);
            }
            deadline_armed = timeout < idle;
            let _ = conn.stream.set_read_timeout(Some(timeout));
        }
        let message = match ws.assembly.next(&mut ws.io) {
            Ok(Inbound::Text(text)) => Message::Text(text),
            Ok(Inbound::Binary(bytes)) => Message::Binary(bytes),
            Ok(Inbound::Close(frame)) => {
                // The reply echoes the peer's code and reason.
                return Some(match frame {
                    Some((code, reason)) => {
                        conn.push_control(crate::frame::encode_close(code, &reason));
                        End::Peer(code, reason)
                    }
                    None => {
                        conn.push_control(crate::frame::encode(crate::frame::OP_CLOSE, b""));
                        End::Peer(1005, String::new())
                    }
                });
            }
            Ok(Inbound::Ping(payload)) => {
                conn.push_control(crate::frame::encode(crate::frame::OP_PONG, &payload));
                continue;
            }
            Ok(Inbound::Pong) => continue,
            Err(e) => {
                if let Some((at, code, reason)) = conn.close_at.lock().clone() {
                    if at <= Instant::now() {
                        return Some(End::Deadline(code, reason));
                    }
                }
                return Some(classify(conn, &engine.stats, e));
            }
        };
        Stats::add(&engine.stats.messages_in, 1);
        Stats::add(&engine.stats.bytes_in, message.as_bytes().len() as u64);
        if guarded(|| engine.handler.on_message(server, conn.id, message)).is_none() {
            return Some(End::Fail(1011, "internal error"));
        }
    }
}

/// How long until the connection's `close_at` time, when it has one.
fn close_at_left(conn: &ConnShared) -> Option<Duration> {
    if !conn.has_close_at.load(std::sync::atomic::Ordering::Acquire) {
        return None;
    }
    conn.close_at.lock().as_ref().map(|(at, _, _)| at.saturating_duration_since(Instant::now()))
}

/// Maps a refusal of the peer's input, or a read error, to how the connection ends.
fn classify(conn: &ConnShared, stats: &Stats, e: Fault) -> End {
    match e {
        Fault::Io(io) => {
            if let Some(&limit) = io.get_ref().and_then(|e| e.downcast_ref::<FrameLimit>()) {
                let counter = match limit {
                    FrameLimit::Rate => &stats.dropped_frame_rate,
                    FrameLimit::Fragments => &stats.dropped_fragments,
                };
                Stats::add(counter, 1);
                log::warn!("conn {} ({}): {limit}; closing it", conn.id, conn.addr());
                let (code, reason) = limit.close();
                return End::Fail(code, reason);
            }
            if matches!(io.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) {
                log::debug!("conn {}: idle timeout", conn.id);
            }
            End::Abnormal
        }
        Fault::Protocol(why) => {
            log::debug!("conn {}: protocol error: {why}", conn.id);
            let (code, reason) = e.close();
            End::Fail(code, reason)
        }
        refused => {
            let (code, reason) = refused.close();
            End::Fail(code, reason)
        }
    }
}

/// After a close we started: read (and drop) whatever the peer still sends
/// until it closes its side, the writer gives up, or `limit` passes. Not
/// inlined: its 4 KiB buffer would otherwise sit in `serve`'s frame, above
/// every callback, for the connection's whole life.
#[inline(never)]
fn drain_until_closed(conn: &ConnShared, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut sink = [0u8; 4096];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if left.is_zero() || conn.stream.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match (&conn.stream).read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let _ = conn.stream.shutdown(Shutdown::Read);
}

/// Runs a handler callback; a panic is logged and reported as `None`.
fn guarded<T>(f: impl FnOnce() -> T) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => Some(v),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            log::error!("handler callback panicked: {what}");
            None
        }
    }
}
