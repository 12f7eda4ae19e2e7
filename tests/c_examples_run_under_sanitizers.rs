//! Builds each C/C++ example with the system compiler under ASan + UBSan
//! (LeakSanitizer included), runs it on a free port, drives it with a real
//! WebSocket client (tungstenite), then sends SIGINT: the behaviour must be
//! right, the exit status 0, and stderr free of any sanitizer report.

mod c_common;
use c_common as common;
mod tls_common;

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use common::*;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::Message;

const START: Duration = Duration::from_secs(30);
const EXIT: Duration = Duration::from_secs(30);

fn example(dir: &str, build: &str, name: &str) -> Program {
    let bin = make(dir, build, SANITIZE).join(name);
    let mut cmd = Command::new(bin);
    cmd.arg("0");
    Program::start(cmd, START)
}

#[test]
fn echo_server_echoes_text_and_binary_and_stops_cleanly_on_sigint() {
    let program = example("ffi-examples", "asan", "echo_server");
    let mut ws = connect(program.port, "/ws");
    ws.send(Message::text("hello, wshub")).unwrap();
    assert_eq!(next_message(&mut ws), Message::text("hello, wshub"));
    let bytes = vec![0u8, 1, 2, 254, 255];
    ws.send(Message::binary(bytes.clone())).unwrap();
    assert_eq!(next_message(&mut ws), Message::binary(bytes));
    assert_eq!(upgrade_status(program.port, "/other"), Some(404));

    program.sigint();
    assert_eq!(expect_close(&mut ws), 1001, "a stopping server says 'going away'");
    let (status, stderr) = program.wait(EXIT);
    assert_clean_exit("echo_server", status, &stderr);
}

#[test]
fn echo_server_serves_wss_with_a_certificate_file_and_stops_cleanly() {
    let pki = tls_common::Pki::make();
    let bin = make("ffi-examples", "asan", SANITIZE).join("echo_server");
    let mut cmd = Command::new(bin);
    cmd.args(["0", "0", &pki.path_str("server.pem"), &pki.path_str("server.key")]);
    let program = Program::start(cmd, START);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], program.port));
    let config = tls_common::client_config(&pki.path("ca.pem"), None);
    let mut ws = tls_common::wss_connect(addr, config.clone(), "/ws");
    ws.send(Message::text("hello over TLS")).unwrap();
    let big = vec![7u8; 300_000];
    ws.send(Message::binary(big.clone())).unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        if let m @ (Message::Text(_) | Message::Binary(_)) = ws.read().expect("an echo") {
            got.push(m);
        }
    }
    assert_eq!(got, vec![Message::text("hello over TLS"), Message::binary(big)]);
    let (status, _) = tls_common::https_get(addr, config, "/other");
    assert_eq!(status, 404);

    program.sigint();
    let code = loop {
        match ws.read() {
            Ok(Message::Close(frame)) => break frame.map(|f| u16::from(f.code)),
            Ok(_) => {}
            Err(e) => panic!("no close frame: {e}"),
        }
    };
    assert_eq!(code, Some(1001));
    let (status, stderr) = program.wait(EXIT);
    assert_clean_exit("echo_server (wss)", status, &stderr);
}

/// Runs the chat scenario against a chat server example (C or C++).
fn chat_scenario(program: Program, name: &str) {
    let port = program.port;
    let mut alice = connect(port, "/ws?room=den&name=alice");
    assert_eq!(next_text(&mut alice), "* alice joined den");
    let mut bob = connect(port, "/ws?room=den&name=bob");
    assert_eq!(next_text(&mut alice), "* bob joined den");
    assert_eq!(next_text(&mut bob), "* bob joined den");
    let mut carol = connect(port, "/ws?name=carol"); // no room: the lobby
    assert_eq!(next_text(&mut carol), "* carol joined lobby");

    bob.send(Message::text("hi den")).unwrap();
    assert_eq!(next_text(&mut alice), "bob: hi den");
    assert_eq!(next_text(&mut bob), "bob: hi den");
    carol.send(Message::text("anyone?")).unwrap();
    assert_eq!(next_text(&mut carol), "carol: anyone?");

    bob.close(Some(CloseFrame { code: CloseCode::Normal, reason: "bye".into() })).unwrap();
    assert_eq!(expect_close(&mut bob), 1000);
    assert_eq!(next_text(&mut alice), "* bob left den (1000)");
    // carol (in the lobby) saw nothing of the den: her next message is her own.
    carol.send(Message::text("still here")).unwrap();
    assert_eq!(next_text(&mut carol), "carol: still here");

    program.sigint();
    assert_eq!(expect_close(&mut alice), 1001);
    assert_eq!(expect_close(&mut carol), 1001);
    let (status, stderr) = program.wait(EXIT);
    assert_clean_exit(name, status, &stderr);
}

#[test]
fn chat_server_broadcasts_to_the_query_room_and_announces_joins_and_leaves() {
    let program = example("ffi-examples", "asan", "chat_server");
    chat_scenario(program, "chat_server");
}

#[test]
fn cpp_chat_server_behaves_like_the_c_one() {
    let program = example("ffi-examples/cpp_chat", "asan-cpp", "cpp_chat_server");
    chat_scenario(program, "cpp_chat_server");
}

#[test]
fn poll_loop_echoes_refuses_on_request_and_broadcasts_stdin_lines() {
    let mut program = example("ffi-examples", "asan", "poll_loop");
    let port = program.port;
    assert_eq!(upgrade_status(port, "/ws?deny=1"), Some(403));
    let mut ws = connect(port, "/ws");
    program.expect_line("connected from 127.0.0.1:", START);
    ws.send(Message::text("ping")).unwrap();
    assert_eq!(next_message(&mut ws), Message::text("ping"));
    ws.send(Message::binary(vec![9u8, 8, 7])).unwrap();
    assert_eq!(next_message(&mut ws), Message::binary(vec![9u8, 8, 7]));

    let stdin = program.stdin.as_mut().expect("piped stdin");
    stdin.write_all(b"hello from stdin\n").unwrap();
    stdin.flush().unwrap();
    assert_eq!(next_text(&mut ws), "hello from stdin");

    program.sigint();
    assert_eq!(expect_close(&mut ws), 1001);
    program.expect_line("closed (1001)", EXIT);
    let (status, stderr) = program.wait(EXIT);
    assert_clean_exit("poll_loop", status, &stderr);
}

/// The next protocol frame whose `type` is `kind`, skipping others (presence).
fn next_of_type(ws: &mut Client, kind: &str) -> serde_json::Value {
    loop {
        let frame: serde_json::Value = serde_json::from_str(&next_text(ws)).expect("a JSON frame");
        if frame["type"] == kind {
            return frame;
        }
    }
}

/// The status line's code of a plain `GET path`.
fn http_get_status(port: u16, path: &str) -> u16 {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("read timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok());
    status.unwrap_or_else(|| panic!("no HTTP status in {response:?}"))
}

#[test]
fn protocol_server_speaks_protocol_v1_after_the_apps_upgrade_check() {
    let mut program = example("ffi-examples", "asan", "protocol_server");
    let port = program.port;
    // The application's on_upgrade decides first.
    assert_eq!(upgrade_status(port, "/ws?deny=1"), Some(403));

    let mut alice = connect(port, "/ws");
    let connected: serde_json::Value = serde_json::from_str(&next_text(&mut alice)).expect("JSON");
    assert_eq!(connected["type"], "connected", "the protocol's frame comes first: {connected}");
    assert!(connected["payload"]["clientId"].is_string(), "{connected}");
    assert_eq!(connected["payload"]["protocol"], 1);
    program.expect_line("connect ", START); // the app's on_connect ran too

    alice.send(Message::text(r#"{"type":"room:join","id":"j1","payload":{"room":"den"}}"#)).unwrap();
    let ack = next_of_type(&mut alice, "ack");
    assert_eq!((ack["id"].clone(), ack["payload"]["room"].clone()), ("j1".into(), "den".into()));

    let mut bob = connect(port, "/ws");
    assert_eq!(next_of_type(&mut bob, "connected")["payload"]["protocol"], 1);
    bob.send(Message::text(r#"{"type":"room:join","id":"j2","payload":{"room":"den"}}"#)).unwrap();
    next_of_type(&mut bob, "ack");
    bob.send(Message::text(r#"{"type":"room:publish","payload":{"room":"den","data":"hi"}}"#)).unwrap();
    let message = next_of_type(&mut alice, "room:message");
    assert_eq!(message["payload"]["seq"], 1, "{message}");
    assert_eq!(message["payload"]["data"], "hi", "{message}");

    assert_eq!(http_get_status(port, "/healthz"), 200);

    program.sigint();
    assert_eq!(expect_close(&mut alice), 1001);
    assert_eq!(expect_close(&mut bob), 1001);
    program.expect_line("(1001)", EXIT); // the app's on_close ran
    let (status, stderr) = program.wait(EXIT);
    assert_clean_exit("protocol_server", status, &stderr);
}

/// A client of auth_server with an HS256 token for `user` (its demo secret).
fn auth_client(port: u16, user: &str) -> Result<Client, u16> {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 300;
    let claims = serde_json::json!({"sub": user, "exp": exp});
    let token =
        encode(&Header::default(), &claims, &EncodingKey::from_secret(b"auth-example-demo-secret")).unwrap();
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("read timeout");
    let url = format!("ws://127.0.0.1:{port}/ws?access_token={token}");
    match tungstenite::client::client(url, stream) {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            Err(resp.status().as_u16())
        }
        Err(e) => panic!("unexpected handshake error: {e}"),
    }
}

/// The status of `GET /sse?room={room}` on auth_server with a token for `user`.
fn auth_stream_status(port: u16, user: &str, room: &str) -> u16 {
    use jsonwebtoken::{encode, EncodingKey, Header};
    use std::io::{Read, Write};
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 300;
    let claims = serde_json::json!({"sub": user, "exp": exp});
    let token =
        encode(&Header::default(), &claims, &EncodingKey::from_secret(b"auth-example-demo-secret")).unwrap();
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("read timeout");
    let request = format!("GET /sse?room={room}&access_token={token} HTTP/1.1\r\nHost: t\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("write");
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).expect("a status line");
    String::from_utf8_lossy(&head[9..12]).parse().expect("a status")
}

#[test]
fn auth_server_join_hook_refuses_a_room_and_upgrade_hook_sees_the_user() {
    let program = example("ffi-examples", "asan", "auth_server");
    let port = program.port;
    assert_eq!(upgrade_status(port, "/ws"), Some(401), "no token");
    assert_eq!(auth_client(port, "banned").err(), Some(403), "the app's on_upgrade saw the user");

    let mut alice = auth_client(port, "alice").expect("alice opens");
    let connected = next_of_type(&mut alice, "connected");
    assert_eq!(connected["payload"]["user"], "alice", "{connected}");
    alice.send(Message::text(r#"{"type":"room:join","id":"p","payload":{"room":"private:ops"}}"#)).unwrap();
    let refused = next_of_type(&mut alice, "error");
    assert_eq!((refused["id"].clone(), refused["payload"]["code"].clone()), ("p".into(), "forbidden".into()));
    alice.send(Message::text(r#"{"type":"room:join","id":"l","payload":{"room":"lobby"}}"#)).unwrap();
    assert_eq!(next_of_type(&mut alice, "ack")["id"], "l");

    let mut admin = auth_client(port, "admin").expect("admin opens");
    admin.send(Message::text(r#"{"type":"room:join","id":"p","payload":{"room":"private:ops"}}"#)).unwrap();
    assert_eq!(next_of_type(&mut admin, "ack")["payload"]["room"], "private:ops");
    // An event stream of the room goes through the same on_join.
    assert_eq!(auth_stream_status(port, "alice", "private:payroll"), 403, "/sse asks on_join");
    assert_eq!(auth_stream_status(port, "admin", "private:payroll"), 200);
    assert_eq!(auth_stream_status(port, "alice", "lobby"), 200);

    program.sigint();
    assert_eq!(expect_close(&mut alice), 1001);
    assert_eq!(expect_close(&mut admin), 1001);
    let (status, stderr) = program.wait(EXIT);
    assert_clean_exit("auth_server", status, &stderr);
}
