//! The demo page's liveness rules in headless Chromium (`tests/browser/silent_server.mjs`):
//! a server that goes silent (a TCP proxy in front of the real `wshub` that
//! swallows what the server sends) is left within two heartbeats and the page
//! reconnects once it speaks again; `visibilitychange` checks the connection
//! at once; `online` retries at once instead of waiting out the backoff.
//! Screenshots go to `target/browser-screenshots/`.

mod client_common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use client_common::{Proxy, Server};

#[test]
fn the_page_leaves_a_silent_server_and_retries_when_online() {
    let root = env!("CARGO_MANIFEST_DIR");
    assert!(
        std::path::Path::new(&format!("{root}/tests/browser/node_modules/playwright-core")).exists(),
        "playwright-core is missing: run `bash .ci/setup`"
    );
    let shots = format!("{root}/target/browser-screenshots");
    std::fs::create_dir_all(&shots).expect("screenshot folder");
    let server_a = Server::start(&["--heartbeat-ms", "1000"]);
    let server_b = Server::start(&["--heartbeat-ms", "60000"]);
    let proxy_a = Proxy::start(server_a.addr);
    let proxy_b = Proxy::start(server_b.addr);
    // Refuses every connection: where the page's attempts fail in part 3.
    let proxy_c = Proxy::start(server_b.addr);
    proxy_c.set_refuse(true);
    let mut node = Command::new("node")
        .arg(format!("{root}/tests/browser/silent_server.mjs"))
        .arg(proxy_a.addr.to_string())
        .arg(proxy_b.addr.to_string())
        .arg(proxy_c.addr.to_string())
        .arg(&shots)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node");
    let mut to_node = node.stdin.take().unwrap();
    let from_node = BufReader::new(node.stdout.take().unwrap());
    let mut ok = false;
    // The script's stdout ends when it exits, which its own 110 s timer bounds.
    for line in from_node.lines() {
        let Ok(line) = line else { break };
        match line.as_str() {
            "swallow a" => proxy_a.set_swallow_down(true),
            "unswallow a" => proxy_a.set_swallow_down(false),
            "swallow b" => proxy_b.set_swallow_down(true),
            "unswallow b" => proxy_b.set_swallow_down(false),
            "browser ok" => {
                ok = true;
                break;
            }
            other => {
                eprintln!("node: {other}");
                continue;
            }
        }
        writeln!(to_node, "done").unwrap();
    }
    drop(to_node);
    let status = client_common::exit_status_within(&mut node, Duration::from_secs(15));
    assert!(ok && status.success(), "the browser session failed ({status}); see stderr");
}
