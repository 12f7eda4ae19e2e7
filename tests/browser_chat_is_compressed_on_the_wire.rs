//! The demo page in headless Chromium against `wshub --compression on`
//! (`tests/browser/compressed_chat.mjs`): both pages' connections negotiate
//! permessage-deflate, and a 10 KB chat message typed on one reaches the
//! other intact, compressed on the wire: the server's compression counters
//! on `/metrics` show it went out at under a third of its size.

mod client_common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use client_common::Server;

fn metric(addr: SocketAddr, name: &str) -> u64 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_10_kb_chat_message_crosses_compressed_between_two_pages() {
    let root = env!("CARGO_MANIFEST_DIR");
    assert!(
        std::path::Path::new(&format!("{root}/tests/browser/node_modules/playwright-core")).exists(),
        "playwright-core is missing: run `bash .ci/setup`"
    );
    let shots = format!("{root}/target/browser-screenshots");
    std::fs::create_dir_all(&shots).expect("screenshot folder");
    let server = Server::start(&["--compression", "on"]);
    let mut node = Command::new("node")
        .arg(format!("{root}/tests/browser/compressed_chat.mjs"))
        .arg(server.addr.to_string())
        .arg(&shots)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node");
    let from_node = BufReader::new(node.stdout.take().unwrap());
    let mut ok = false;
    // The script's stdout ends when it exits, which its own 90 s timer bounds.
    for line in from_node.lines() {
        let Ok(line) = line else { break };
        if line == "browser ok" {
            ok = true;
        } else {
            eprintln!("node: {line}");
        }
    }
    let status = client_common::exit_status_within(&mut node, Duration::from_secs(15));
    assert!(ok && status.success(), "the browser session failed ({status}); see stderr");

    let frames = metric(server.addr, "wshub_compressed_frames_total");
    let packed = metric(server.addr, "wshub_compressed_bytes_total");
    let plain = metric(server.addr, "wshub_compressed_plain_bytes_total");
    assert!(frames >= 1, "no frame went out compressed");
    assert!(plain >= 10240, "the 10 KB message is among the compressed frames ({plain} bytes)");
    assert!(packed * 3 < plain, "{packed} bytes on the wire for {plain} uncompressed");
    server.stop();
}
