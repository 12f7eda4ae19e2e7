//! The demo page (`GET /`) with the bundled `client.js` in two headless
//! Chromium pages (Debian's `chromium`, driven by `playwright-core` from
//! `tests/browser/`, both installed by `.ci/setup`): they chat, the real
//! `wshub` is stopped and started again on the same port, a message sent while
//! it was down is delivered exactly once after both pages reconnect and
//! rejoin. Screenshots of each state go to `target/browser-screenshots/`.

mod client_common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use client_common::Server;

#[test]
fn two_pages_chat_through_a_server_restart() {
    let root = env!("CARGO_MANIFEST_DIR");
    assert!(
        std::path::Path::new(&format!("{root}/tests/browser/node_modules/playwright-core")).exists(),
        "playwright-core is missing: run `bash .ci/setup`"
    );
    let shots = format!("{root}/target/browser-screenshots");
    std::fs::create_dir_all(&shots).expect("screenshot folder");
    let mut server = Some(Server::start(&[]));
    let addr = server.as_ref().unwrap().addr;
    let mut node = Command::new("node")
        .arg(format!("{root}/tests/browser/chat_survives_restart.mjs"))
        .arg(addr.to_string())
        .arg(&shots)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node");
    let mut to_node = node.stdin.take().unwrap();
    let from_node = BufReader::new(node.stdout.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut ok = false;
    // The script's stdout ends when it exits, which its own 100 s timer bounds.
    for line in from_node.lines() {
        let Ok(line) = line else { break };
        assert!(Instant::now() < deadline, "the browser session took too long");
        match line.as_str() {
            "stop-server" => {
                server.take().expect("running").stop();
                writeln!(to_node, "stopped").unwrap();
            }
            "start-server" => {
                // Down for a moment longer, so the pages show their countdown.
                std::thread::sleep(Duration::from_millis(500));
                server = Some(Server::start_at(addr, &[]).expect("restart on the same port"));
                writeln!(to_node, "started").unwrap();
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
