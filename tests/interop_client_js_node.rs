//! The bundled browser client (`/client.js`), fetched from the real binary and
//! driven by Node's built-in WebSocket: proves the client the demo page uses
//! speaks the protocol (connect, join, presence, publish, binary, typing,
//! errors, recovery); and what an application developer uses (`state`,
//! `once`/`off`, WshubError rejections, getToken for refresh and reconnect)
//! against a server with auth on. Needs `node` 20 or later on PATH.

mod child_common;
mod protocol_common;
use protocol_common as common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::Wshub;

/// Runs `node SCRIPT ARGS` and asserts it prints `expect` and exits 0.
fn run_node(script: &str, args: &[&str], expect: &str) {
    // Node 22+ has WebSocket built in; Node 20-21 need the flag.
    let probe = Command::new("node").args(["-e", "process.stdout.write(typeof WebSocket)"]).output();
    let flags: &[&str] = match probe {
        Ok(out) if out.stdout == b"function" => &[],
        Ok(_) => &["--experimental-websocket"],
        Err(e) => panic!("node (20 or later) is needed for this test: {e}"),
    };
    let script = format!("{}/tests/{script}", env!("CARGO_MANIFEST_DIR"));
    let child = Command::new("node")
        .args(flags)
        .arg(script)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn node");
    let out = child_common::output_within(child, Duration::from_secs(60), "the node session");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(expect),
        "node session failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_bundled_client_js_runs_a_session_in_node() {
    let server = Wshub::start(&[]);
    run_node("client_js_session.mjs", &[&server.addr.to_string()], "client.js ok");
}

#[test]
fn client_js_gives_applications_states_once_off_errors_and_fresh_tokens() {
    const SECRET: &str = "client-js-app-api-secret";
    let server = Wshub::start(&["--jwt-secret", SECRET]);
    run_node("client_js_app_api.mjs", &[&server.addr.to_string(), SECRET], "client.js app api ok");
}
