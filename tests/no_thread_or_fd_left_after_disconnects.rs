//! After 500 connections that end in every way a connection can end, the
//! process has exactly the threads and file descriptors it had before: no
//! reader, writer, socket or room entry is left behind.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{connect, fd_count, thread_count, wait_until, Recorder, WAIT};
use socket2::Socket;
use tungstenite::Message as WsMessage;
use wshub::{Config, Server};

const CYCLES: usize = 500;
const WORKERS: usize = 4;

fn reset(stream: TcpStream) {
    let socket = Socket::from(stream);
    socket.set_linger(Some(Duration::ZERO)).unwrap();
    drop(socket); // RST instead of FIN
}

/// One connection that ends in the way `kind` selects.
fn cycle(addr: SocketAddr, kind: usize) {
    match kind {
        // Clean close handshake started by the client.
        0 => {
            let mut ws = connect(addr, "/ws?room=r");
            ws.send(WsMessage::text("hi")).unwrap();
            ws.close(None).unwrap();
            while ws.read().is_ok() {}
        }
        // Close started by the server, from inside on_message.
        1 => {
            let mut ws = connect(addr, "/ws?room=r");
            ws.send(WsMessage::text("close me")).unwrap();
            assert_eq!(common::read_until_close(&mut ws), Some(4001));
            while ws.read().is_ok() {}
        }
        // TCP reset after the upgrade, no close frame.
        2 => {
            let ws = connect(addr, "/ws?room=r");
            reset(ws.into_inner());
        }
        // FIN without a close frame.
        3 => drop(connect(addr, "/ws?room=r")),
        // Reset in the middle of a frame (header promises 100 bytes, 3 arrive).
        4 => {
            let ws = connect(addr, "/ws?room=r");
            let mut stream = ws.into_inner();
            stream.write_all(&[0x81, 0x80 | 100, 1, 2, 3, 4, b'a', b'b', b'c']).unwrap();
            reset(stream);
        }
        // Handshake abandoned half-way.
        5 => {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpg").unwrap();
        }
        // Plain HTTP request answered with 404.
        _ => {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream.set_read_timeout(Some(WAIT)).unwrap();
            stream.write_all(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).unwrap();
            assert!(response.starts_with("HTTP/1.1 404"), "{response}");
        }
    }
}

#[test]
fn threads_fds_and_rooms_return_to_baseline() {
    let (handler, _events) = Recorder::new();
    // Every WebSocket joins the room of its query, so a leaked membership would show.
    let handler = handler
        .on_connect(|server, conn, request| {
            let room = request.query_param("room").unwrap_or_default();
            server.join(conn, &room).unwrap();
        })
        .on_message(|server, conn, _| {
            let _ = server.close(conn, 4001, "asked to");
        });
    let config = Config::default()
        .bind("127.0.0.1:0".parse().unwrap())
        .handshake_timeout(Duration::from_secs(2))
        .close_timeout(Duration::from_secs(2));
    let server = Server::start(config, handler).unwrap();
    let addr = server.local_addr();

    let threads_before = thread_count();
    let fds_before = fd_count();
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            std::thread::spawn(move || {
                for i in 0..CYCLES / WORKERS {
                    cycle(addr, (w + i * WORKERS) % 7);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a cycle failed");
    }
    wait_until("connection threads to exit", || server.connections().is_empty());
    wait_until("threads back to baseline", || thread_count() == threads_before);
    wait_until("fds back to baseline", || fd_count() == fds_before);
    assert_eq!(server.room_count().unwrap(), 0);
    let stats = server.stats();
    assert_eq!(stats.connections, 0);
    assert!(stats.connections_total >= (CYCLES * 5 / 7) as u64, "{stats:?}");
    server.stop();
}
