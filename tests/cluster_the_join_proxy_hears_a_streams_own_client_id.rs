//! With `--redis`, the join proxy asked about an event stream hears the
//! clientId the stream then gets in its `connected` event (the node's own
//! form, `<node>-<conn>`), as it hears a WebSocket member's, so a backend can
//! tell the two apart and match them with later calls (`/api/disconnect`).

mod api_common;
mod cluster_common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;

use api_common::Sse;
use cluster_common::*;
use serde_json::Value;

/// A backend that answers `200 {}` to each join call (one per connection)
/// and sends on each call's body.
fn backend() -> (String, mpsc::Receiver<Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/join", listener.local_addr().expect("addr"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(8) {
            let Ok(stream) = stream else { return };
            let _ = stream.set_read_timeout(Some(WAIT));
            let mut writer = stream.try_clone().expect("clone");
            let mut reader = BufReader::new(stream);
            let mut len = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                if line.trim_end().is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        len = value.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut body = vec![0; len];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            let _ = tx.send(serde_json::from_slice(&body).unwrap_or(Value::Null));
            let _ = writer.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
        }
    });
    (url, rx)
}

#[test]
fn a_streams_join_call_carries_the_client_id_it_is_given() {
    let redis = Redis::start();
    let (url, calls) = backend();
    let server = node(&redis, &["--proxy-join", &url]);
    let mut stream = Sse::open(server.addr, "room=r", &[]);
    assert_eq!(stream.status, 200, "{}", stream.head);
    let connected = stream.expect("connected");
    let call = calls.recv_timeout(WAIT).expect("the backend was asked");
    assert_eq!(call["clientId"], connected.data["clientId"], "{call} / {:?}", connected.data);
}
