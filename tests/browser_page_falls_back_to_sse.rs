//! The demo page in headless Chromium where WebSocket upgrades fail (the
//! server's WebSocket path is not the page's `/ws`, as behind a proxy that
//! refuses upgrades): it falls back to reading the room over Server-Sent
//! Events, read-only, and shows a message a backend publishes through the
//! HTTP API exactly once. The screenshot goes to `target/browser-screenshots/`.

mod client_common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use client_common::Server;

const KEY: &str = "browser-sse-key";

/// The value of a `/metrics` sample line, 0 when absent.
fn metric(addr: SocketAddr, name: &str) -> u64 {
    let mut tcp = TcpStream::connect(addr).expect("connect");
    write!(tcp, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    tcp.read_to_string(&mut text).unwrap();
    let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).map(str::to_owned);
    line.and_then(|l| l.rsplit(' ').next().and_then(|v| v.parse().ok())).unwrap_or(0)
}

fn api_publish(addr: SocketAddr, body: &str) -> String {
    let mut tcp = TcpStream::connect(addr).expect("connect");
    write!(
        tcp,
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn the_demo_page_reads_a_room_over_sse_when_websocket_fails() {
    let root = env!("CARGO_MANIFEST_DIR");
    assert!(
        std::path::Path::new(&format!("{root}/tests/browser/node_modules/playwright-core")).exists(),
        "playwright-core is missing: run `bash .ci/setup`"
    );
    let shots = format!("{root}/target/browser-screenshots");
    std::fs::create_dir_all(&shots).expect("screenshot folder");
    let server = Server::start(&["--path", "/not-the-pages", "--api-key", KEY]);
    let addr = server.addr;
    let mut node = Command::new("node")
        .arg(format!("{root}/tests/browser/sse_fallback.mjs"))
        .arg(addr.to_string())
        .arg(&shots)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node");
    let mut to_node = node.stdin.take().unwrap();
    let from_node = BufReader::new(node.stdout.take().unwrap());
    let mut ok = false;
    // The script's stdout ends when it exits, which its own 60 s timer bounds.
    for line in from_node.lines() {
        let Ok(line) = line else { break };
        match line.as_str() {
            "ready" => {
                let deadline = Instant::now() + Duration::from_secs(20);
                while metric(addr, "wshub_sse_streams") < 1 {
                    assert!(Instant::now() < deadline, "the page's event stream never opened");
                    std::thread::sleep(Duration::from_millis(50));
                }
                let answer = api_publish(addr, r#"{"room":"feed","data":{"text":"order 17 shipped"}}"#);
                assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
                writeln!(to_node, "published").unwrap();
            }
            "browser ok" => {
                ok = true;
                break;
            }
            other => eprintln!("node: {other}"),
        }
    }
    drop(to_node);
    let status = client_common::exit_status_within(&mut node, Duration::from_secs(15));
    assert!(ok && status.success(), "the browser session failed ({status}); see stderr");
}
