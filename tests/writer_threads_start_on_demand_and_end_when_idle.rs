//! A connection's writer thread exists only while it has something to wait
//! for: an idle connection holds its reader thread alone, yet still gets the
//! server's heartbeat pings and is timed out when it stays silent; a writer
//! started for a backlog ends once the backlog is written and it has been
//! idle a while, and the connection goes on (direct sends, a close) without it.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{connect, wait_until, Recorder, WAIT};
use socket2::{Domain, Socket, Type};
use tungstenite::Message as WsMessage;
use wshub::{Config, Server};

/// Connection ids start at 1 in every server, so thread names are only
/// told apart when the tests of this file run one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// This process's threads named `name` (`/proc/self/task/*/comm`).
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim() == name)
        .count()
}

/// Reads raw bytes until `want` bytes have come, or fails after [`WAIT`].
fn read_exactly(stream: &mut TcpStream, want: usize) -> Vec<u8> {
    let mut got = vec![0u8; want];
    stream.read_exact(&mut got).expect("bytes from the server");
    got
}

#[test]
fn an_idle_connection_has_no_writer_thread_yet_gets_its_pings_and_its_idle_close() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let config = Config::default()
        .bind("127.0.0.1:0".parse().unwrap())
        .heartbeat_interval(Duration::from_millis(200))
        .idle_timeout(Duration::from_millis(1500));
    let (handler, events) = Recorder::new();
    let server = Server::start(config, handler).unwrap();
    let ws = connect(server.local_addr(), "/ws");
    let id = events.connected();
    let reader = format!("wshub-r{id}");
    let writer = format!("wshub-w{id}");
    // The client never writes another byte: it reads raw pings and nothing answers them.
    let mut raw = ws.into_inner();
    let opened = Instant::now();
    for ping in 0..3 {
        assert_eq!(read_exactly(&mut raw, 2), [0x89, 0x00], "ping {ping}: an empty ping frame");
        assert_eq!(threads_named(&reader), 1, "its reader is there");
        assert_eq!(threads_named(&writer), 0, "ping {ping} came without a writer thread");
    }
    // Silent for the idle timeout: the server drops it (pings may still
    // arrive before the end).
    let mut rest = Vec::new();
    let _ = raw.read_to_end(&mut rest);
    assert!(rest.chunks(2).all(|c| c == [0x89, 0x00]), "only pings before the end: {rest:?}");
    assert!(opened.elapsed() >= Duration::from_millis(1500), "ended before its idle timeout");
    assert_eq!(events.closed(id), 1006);
    wait_until("its reader to exit", || threads_named(&reader) == 0);
    assert_eq!(threads_named(&writer), 0);
    server.stop();
}

/// A client whose receive buffer is small, so that a backlog builds on the server.
fn connect_with_small_rcvbuf(addr: std::net::SocketAddr) -> common::Client {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let (ws, _) = tungstenite::client(format!("ws://{addr}/ws"), stream).unwrap();
    ws
}

#[test]
fn a_writer_started_for_a_backlog_ends_when_idle_and_the_connection_lives_on() {
    const FRAMES: usize = 200;
    const BYTES: usize = 64 * 1024;
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let config = Config::default().bind("127.0.0.1:0".parse().unwrap()).outbound_max_bytes(64 << 20);
    let (handler, events) = Recorder::new();
    let server = Server::start(config, handler).unwrap();
    let mut ws = connect_with_small_rcvbuf(server.local_addr());
    let id = events.connected();
    let writer = format!("wshub-w{id}");
    assert_eq!(threads_named(&writer), 0, "nothing to write yet: no writer");
    // 12.5 MiB for a client that is not reading: more than loopback's socket
    // buffers take, so the rest waits in the queue.
    for i in 0..FRAMES {
        let mut frame = vec![i as u8; BYTES];
        frame[..8].copy_from_slice(&(i as u64).to_be_bytes());
        server.send(id, frame).unwrap();
    }
    wait_until("a writer for the backlog", || threads_named(&writer) == 1);
    for i in 0..FRAMES {
        match common::next_data(&mut ws) {
            WsMessage::Binary(b) => {
                assert_eq!(b.len(), BYTES);
                assert_eq!(b[..8], (i as u64).to_be_bytes(), "frame {i} out of order");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // Drained, then idle for a while: the writer ends.
    wait_until("the idle writer to end", || threads_named(&writer) == 0);
    server.send(id, "after").unwrap();
    assert_eq!(common::next_data(&mut ws), WsMessage::text("after"));
    server.close(id, 4000, "bye").unwrap();
    assert_eq!(common::read_until_close(&mut ws), Some(4000));
    assert_eq!(events.closed(id), 4000);
    wait_until("every thread of it to exit", || {
        threads_named(&writer) == 0 && threads_named(&format!("wshub-r{id}")) == 0
    });
    server.stop();
}
