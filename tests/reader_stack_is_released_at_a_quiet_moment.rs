//! A reader gives back the stack pages its handshake left at its
//! connection's first quiet moment, not on the handshake path: a client
//! that talks from its first byte pays no release; a frame whose halves
//! arrive on either side of the quiet interval is assembled intact (plain
//! and TLS); a client that keeps talking stops costing a `poll` per
//! message after a few, and releases at the last of them all the same; a
//! session's end (`close_at`) due within the quiet interval is not put off
//! by it, and one cancelled before the release leaves no short read
//! timeout behind; a frame begun after the quiet wait gets the whole idle
//! timeout between its bytes; a TLS close_notify that came with the last
//! frame ends the connection at once, not after a quiet wait the socket
//! cannot end. Counted by `wshub_reader_stack_releases_total` and
//! `wshub_reader_quiet_waits_total` (`ServerHandle::stats`). (That an idle
//! reader then keeps no page below its wait is
//! `idle_readers_keep_no_stack_pages_below_their_wait.rs`.)

mod common;
mod tls_common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::{connect, next_data, wait_until, Recorder};
use tls_common::{client_config, wss_connect, Pki};
use tungstenite::Message as WsMessage;
use wshub::{Config, PemSource, Server, ServerHandle};

fn echo_server(config: Config) -> (ServerHandle, common::Events) {
    let (handler, events) = Recorder::new();
    let handler = handler.on_message(|server, conn, message| {
        let _ = server.send(conn, message.clone());
    });
    (Server::start(config.bind("127.0.0.1:0".parse().unwrap()), handler).unwrap(), events)
}

/// A masked client text frame.
fn client_frame(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut f = vec![0x81, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Waits until a reader of another server, opened now, has had its quiet
/// interval and released: from then on at least that interval has passed
/// since this call began (the same constant serves every server).
fn a_quiet_interval_passes() {
    let (clock, _events) = echo_server(Config::default());
    let ws = connect(clock.local_addr(), "/ws");
    wait_until("the clock server's reader to release its stack", || clock.stats().reader_stack_releases == 1);
    drop(ws);
    clock.stop();
}

#[test]
fn a_client_talking_from_its_first_byte_costs_no_release_on_its_handshake() {
    let (server, events) = echo_server(Config::default());
    let addr = server.local_addr();
    // The request, twenty messages and a close in one write: at every frame
    // boundary the next frame is already there, so the reader is never quiet.
    let mut bytes = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes();
    for i in 0..20 {
        bytes.extend(client_frame(format!("m{i}").as_bytes()));
    }
    bytes.extend([0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]); // close 1000, mask 0
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(common::WAIT)).unwrap();
    tcp.write_all(&bytes).unwrap();
    let id = events.connected();
    assert_eq!(events.closed(id), 1000);
    let mut rest = Vec::new();
    let _ = tcp.read_to_end(&mut rest);
    let stats = server.stats();
    assert_eq!(stats.messages_in, 20);
    assert_eq!(stats.reader_stack_releases, 0, "a release on the path of a connection that was never quiet");
    server.stop();
}

#[test]
fn a_frame_split_across_the_quiet_interval_arrives_intact() {
    let (server, events) = echo_server(Config::default());
    let ws = connect(server.local_addr(), "/ws");
    events.connected();
    let mut tcp = ws.into_inner();
    let frame = client_frame(b"one frame, two halves");
    // The first half while the reader waits for its quiet moment.
    tcp.write_all(&frame[..9]).unwrap();
    a_quiet_interval_passes();
    tcp.write_all(&frame[9..]).unwrap();
    let mut ws = tungstenite::WebSocket::from_raw_socket(tcp, tungstenite::protocol::Role::Client, None);
    assert_eq!(next_data(&mut ws), WsMessage::text("one frame, two halves"));
    // Then quiet: the reader releases once.
    wait_until("the split frame's reader to release", || server.stats().reader_stack_releases == 1);
    ws.send(WsMessage::text("after")).unwrap();
    assert_eq!(next_data(&mut ws), WsMessage::text("after"));
    common::close_client(ws);
    server.stop();
}

#[test]
fn a_frame_split_across_the_quiet_interval_arrives_intact_over_tls() {
    let pki = Pki::make();
    let (server, events) = echo_server(tls_config(&pki));
    let mut ws = wss_connect(server.local_addr(), client_config(&pki.path("ca.pem"), None), "/ws");
    events.connected();
    let frame = client_frame(b"one frame, two records");
    // Each half its own TLS record, the second after the quiet interval.
    ws.get_mut().write_all(&frame[..9]).unwrap();
    ws.get_mut().flush().unwrap();
    a_quiet_interval_passes();
    ws.get_mut().write_all(&frame[9..]).unwrap();
    ws.get_mut().flush().unwrap();
    assert_eq!(next_data_tls(&mut ws), WsMessage::text("one frame, two records"));
    wait_until("the TLS reader to release", || server.stats().reader_stack_releases == 1);
    ws.send(WsMessage::text("after")).unwrap();
    assert_eq!(next_data_tls(&mut ws), WsMessage::text("after"));
    let _ = ws.close(None);
    while ws.read().is_ok() {}
    server.stop();
}

fn next_data_tls(ws: &mut tungstenite::WebSocket<tls_common::TlsStream>) -> WsMessage {
    loop {
        match ws.read().expect("read a message") {
            WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
            m => return m,
        }
    }
}

#[test]
fn a_client_that_keeps_talking_stops_costing_a_poll_per_message() {
    let (server, events) = echo_server(Config::default());
    let mut ws = connect(server.local_addr(), "/ws");
    events.connected();
    let round_trips = |ws: &mut common::Client, n: usize| {
        for i in 0..n {
            ws.send(WsMessage::text(format!("m{i}"))).unwrap();
            assert_eq!(next_data(ws), WsMessage::text(format!("m{i}")));
        }
    };
    round_trips(&mut ws, 20);
    let after_20 = server.stats().reader_quiet_waits;
    assert!((1..=20).contains(&after_20), "{after_20} quiet waits in 20 round trips");
    round_trips(&mut ws, 200);
    assert_eq!(server.stats().reader_quiet_waits, after_20, "quiet waits past the bound");
    common::close_client(ws);
    server.stop();
}

#[test]
fn a_session_end_due_within_the_quiet_interval_is_not_put_off_by_it() {
    let (handler, events) = Recorder::new();
    let handler = handler.on_connect(|server, conn, _| {
        let when = std::time::SystemTime::now() + std::time::Duration::from_millis(100);
        server.close_at(conn, Some(when), 4001, "session over").unwrap();
    });
    let config = Config::default().bind("127.0.0.1:0".parse().unwrap());
    let server = Server::start(config, handler).unwrap();
    // The clock's connection first: its reader releases a quiet interval
    // after it opened, before this one's interval ends (had the session's
    // end waited for it), and well after the session's end (due 100 ms
    // after this one opened).
    let (clock, _clock_events) = echo_server(Config::default());
    let clock_ws = connect(clock.local_addr(), "/ws");
    let mut ws = connect(server.local_addr(), "/ws");
    let id = events.connected();
    assert_eq!(common::read_until_close(&mut ws), Some(4001));
    assert_eq!(clock.stats().reader_stack_releases, 0, "the session's end waited for the quiet interval");
    assert_eq!(events.closed(id), 4001);
    drop(clock_ws);
    clock.stop();
    server.stop();
}

#[test]
fn a_client_busy_through_every_try_still_releases_once_then_costs_no_poll() {
    let (server, events) = echo_server(Config::default());
    let mut ws = connect(server.local_addr(), "/ws");
    events.connected();
    // Round trips: at each frame boundary the reader's poll finds the next
    // message within a round trip, never a quiet second, until the tries
    // are spent; then the client goes quiet for good.
    for i in 0..12 {
        ws.send(WsMessage::text(format!("m{i}"))).unwrap();
        assert_eq!(next_data(&mut ws), WsMessage::text(format!("m{i}")));
    }
    let waits = server.stats().reader_quiet_waits;
    assert!(waits <= 8, "{waits} quiet waits");
    // The handshake's pages go all the same (once), or this connection
    // keeps them for as long as it stays idle.
    wait_until("the busy reader to release its stack", || server.stats().reader_stack_releases == 1);
    for i in 0..20 {
        ws.send(WsMessage::text(format!("n{i}"))).unwrap();
        assert_eq!(next_data(&mut ws), WsMessage::text(format!("n{i}")));
    }
    let stats = server.stats();
    assert_eq!((stats.reader_quiet_waits, stats.reader_stack_releases), (waits, 1));
    common::close_client(ws);
    server.stop();
}

#[test]
fn a_frame_begun_after_the_quiet_wait_gets_the_whole_idle_timeout_between_its_bytes() {
    let idle = std::time::Duration::from_secs(3);
    let (server, events) = echo_server(Config::default().idle_timeout(idle));
    let ws = connect(server.local_addr(), "/ws");
    events.connected();
    wait_until("the reader to release after its quiet second", || server.stats().reader_stack_releases == 1);
    let mut tcp = ws.into_inner();
    let frame = client_frame(b"slow");
    tcp.write_all(&frame[..1]).unwrap();
    // Silent for less than the idle timeout, but longer than what is left
    // of it after the quiet second: that second bounds the wait for the
    // frame's first byte, not the gaps inside it.
    std::thread::sleep(idle - std::time::Duration::from_millis(500));
    tcp.write_all(&frame[1..]).unwrap();
    let mut ws = tungstenite::WebSocket::from_raw_socket(tcp, tungstenite::protocol::Role::Client, None);
    assert_eq!(next_data(&mut ws), WsMessage::text("slow"));
    common::close_client(ws);
    server.stop();
}

#[test]
fn a_session_end_cancelled_before_the_release_leaves_no_short_read_timeout_behind() {
    let (handler, events) = Recorder::new();
    let handler = handler
        .on_connect(|server, conn, _| {
            let when = std::time::SystemTime::now() + std::time::Duration::from_secs(2);
            server.close_at(conn, Some(when), 4001, "session over").unwrap();
        })
        .on_message(|server, conn, message| {
            if message.as_bytes() == b"extend" {
                server.close_at(conn, None, 4001, "").unwrap();
            }
            let _ = server.send(conn, message.clone());
        });
    let config = Config::default().bind("127.0.0.1:0".parse().unwrap());
    let server = Server::start(config, handler).unwrap();
    let mut ws = connect(server.local_addr(), "/ws");
    events.connected();
    // Round trips through every try (each read armed with what is left of
    // the session), the session's end cancelled by the last but one: the
    // release comes at the last try, with no quiet wait.
    for i in 0..8 {
        let text = if i == 6 { "extend".to_owned() } else { format!("m{i}") };
        ws.send(WsMessage::text(text.clone())).unwrap();
        assert_eq!(next_data(&mut ws), WsMessage::text(text));
    }
    assert_eq!(server.stats().reader_stack_releases, 1);
    // Past the cancelled end: only the idle timeout (45 s) bounds the wait.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    ws.send(WsMessage::text("still here")).unwrap();
    assert_eq!(next_data(&mut ws), WsMessage::text("still here"));
    common::close_client(ws);
    server.stop();
}

#[test]
fn a_tls_close_notify_behind_the_last_frame_ends_the_connection_without_a_quiet_wait() {
    let pki = Pki::make();
    let (server, events) = echo_server(tls_config(&pki));
    let mut ws = wss_connect(server.local_addr(), client_config(&pki.path("ca.pem"), None), "/ws");
    let id = events.connected();
    // A frame and the TLS close_notify in one TCP write: the reader's one
    // read of the socket hands both to the session, so the socket shows
    // nothing more, and the peer (waiting for our close_notify) sends
    // nothing more either.
    let tls = ws.get_mut();
    tls.conn.writer().write_all(&client_frame(b"last words")).unwrap();
    tls.conn.send_close_notify();
    let mut wire = Vec::new();
    while tls.conn.wants_write() {
        tls.conn.write_tls(&mut wire).unwrap();
    }
    let sent = std::time::Instant::now();
    tls.sock.write_all(&wire).unwrap();
    assert_eq!(events.closed(id), 1006);
    let took = sent.elapsed();
    let waits = server.stats().reader_quiet_waits;
    // One wait before the frame came (cut short by it); none after it.
    assert_eq!(waits, 1, "a quiet wait after the close_notify (it ended the connection {took:?} later)");
    server.stop();
}

/// The server's certificate and key from `pki`: a TLS echo server's config.
fn tls_config(pki: &Pki) -> Config {
    Config::default()
        .tls_cert(Some(PemSource::Pem(std::fs::read(pki.path("server.pem")).unwrap())))
        .tls_key(Some(PemSource::Pem(std::fs::read(pki.path("server.key")).unwrap())))
}
