//! The bundled browser client (`/client.js`) in Node: on `room:left` (an
//! `auth:refresh` whose claim no longer allows a joined room) it emits the
//! event and forgets the room, so a reconnection does not rejoin it. Needs
//! `node` 20 or later on PATH.

mod child_common;
mod protocol_common;

use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use protocol_common::Wshub;

const SECRET: &str = "client-js-left-secret";

fn token(rooms: &[&str]) -> String {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 300;
    let claims = serde_json::json!({"sub": "js", "exp": exp, "rooms": rooms});
    encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

#[test]
fn client_js_forgets_a_room_the_server_removed_it_from() {
    // Node 22+ has WebSocket built in; Node 20-21 need the flag.
    let probe = Command::new("node").args(["-e", "process.stdout.write(typeof WebSocket)"]).output();
    let flags: &[&str] = match probe {
        Ok(out) if out.stdout == b"function" => &[],
        Ok(_) => &["--experimental-websocket"],
        Err(e) => panic!("node (20 or later) is needed for this test: {e}"),
    };
    let server = Wshub::start(&["--jwt-secret", SECRET]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/client_js_room_left.mjs");
    let child = Command::new("node")
        .args(flags)
        .arg(script)
        .arg(server.addr.to_string())
        .arg(token(&["a", "b"]))
        .arg(token(&["a"]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn node");
    let out = child_common::output_within(child, Duration::from_secs(60), "the node session");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("client.js room:left ok"),
        "node session failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
