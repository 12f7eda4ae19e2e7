//! client.js (the bundled browser client) in Node against WebSocket servers
//! written to misbehave (`tests/client_js_broken_server.mjs`): one that never
//! sends `connected`, one that never answers the rejoin, one that goes silent
//! after the join, one that never answers the close handshake (nor the rejoin
//! the client is closed during), one that
//! accepts and closes with 1011 every time, one that sends frames named after
//! the client's own events, one whose join ack comes with a message, one that
//! removes the client from a room (`room:left`), one that answers a rejoin
//! with an error coded `closed`, one that answers the idle ping with an error
//! and then goes silent, one that rate-limits a rejoin; a `getToken` that
//! never answers or answers with a newline; handlers that close the client
//! as it changes state; `timeoutMs: Infinity`; a room left while its rejoin
//! is in flight; a publish over `maxMessageBytes`; `retryNow()` from a
//! `reconnecting` handler; a request whose payload JSON cannot encode. Each
//! scenario is `tests/client_js_broken_servers.mjs SCENARIO`, bounded by its
//! own timer. Needs `node` 20 or later on PATH.

mod client_common;

use std::process::{Command, Stdio};
use std::time::Duration;

fn run(scenario: &str) {
    // Node 22+ has WebSocket built in; Node 20-21 need the flag.
    let probe = Command::new("node").args(["-e", "process.stdout.write(typeof WebSocket)"]).output();
    let flags: &[&str] = match probe {
        Ok(out) if out.stdout == b"function" => &[],
        Ok(_) => &["--experimental-websocket"],
        Err(e) => panic!("node (20 or later) is needed for this test: {e}"),
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/client_js_broken_servers.mjs");
    let mut child = Command::new("node")
        .args(flags)
        .arg(script)
        .arg(scenario)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn node");
    let status = client_common::exit_status_within(&mut child, Duration::from_secs(60));
    let out = child.wait_with_output().expect("node output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.success() && stdout.contains(&format!("ok {scenario}")),
        "scenario {scenario} failed ({status}):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_connected_that_never_comes_is_given_up_and_retried() {
    run("no_connected");
}

#[test]
fn a_rejoin_that_is_never_answered_is_given_up_and_retried() {
    run("rejoin_unanswered");
}

#[test]
fn a_server_silent_after_the_join_is_left_when_a_ping_goes_unanswered() {
    run("silent_after_join");
}

#[test]
fn close_ends_at_once_when_the_server_never_answers_it() {
    run("close_unanswered");
}

#[test]
fn a_server_that_accepts_then_closes_1011_gets_the_backoff_schedule() {
    run("flapping_1011");
}

#[test]
fn frames_named_after_client_events_fire_no_handlers() {
    run("hostile_types");
}

#[test]
fn messages_that_come_with_the_join_ack_are_not_delivered_twice() {
    run("ack_with_message");
}

#[test]
fn a_room_the_server_removed_the_client_from_is_not_rejoined() {
    run("room_left");
}

#[test]
fn a_get_token_that_never_answers_is_given_up_and_retried() {
    run("get_token_hangs");
}

#[test]
fn handlers_that_close_the_client_leave_it_closed_with_no_timer_running() {
    run("close_from_handlers");
}

#[test]
fn a_rejoin_refused_with_the_code_closed_does_not_hang_the_client() {
    run("rejoin_error_named_like_a_drop");
}

#[test]
fn a_ping_answered_with_an_error_keeps_the_liveness_check_going() {
    run("ping_answered_with_error");
}

#[test]
fn a_token_with_a_trailing_newline_is_an_attempt_that_failed_not_the_end() {
    run("get_token_with_a_newline");
}

#[test]
fn a_rejoin_refused_as_rate_limited_is_asked_again_and_the_room_kept() {
    run("rejoin_rate_limited");
}

#[test]
fn a_timeout_of_infinity_waits_instead_of_giving_every_attempt_up_at_once() {
    run("timeout_infinity");
}

#[test]
fn a_room_left_while_its_rejoin_was_in_flight_stays_left() {
    run("leave_while_rejoining");
}

#[test]
fn a_publish_over_max_message_bytes_is_refused_instead_of_closing_every_connection() {
    run("publish_too_large");
}

#[test]
fn retry_now_from_a_reconnecting_handler_tries_at_once() {
    run("retry_now_from_handler");
}

#[test]
fn a_request_whose_payload_is_not_json_fails_alone() {
    run("request_payload_not_json");
}
