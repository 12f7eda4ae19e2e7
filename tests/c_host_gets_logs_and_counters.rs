//! What a C host sees of wshub, under ASan + UBSan: its log lines (on stderr
//! by default, in the header's format; through `wshub_set_log_callback` at
//! the level set; nothing when off; never a token), and its counters
//! (`wshub_stats`, `wshub_metrics_text`) agreeing with `GET /metrics`.

mod c_common;
use c_common as common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Runs one program of tests/c under the sanitizers; returns (stdout, stderr).
fn run_c_test(name: &str) -> (String, String) {
    let build = make("tests/c", "c-api", SANITIZE);
    let mut cmd = Command::new(build.join(name));
    cmd.env("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        .env("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1");
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(90)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // SAFETY: kill(2) on the PID of the child this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("{name} did not finish within 90 s");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_clean_exit(name, out.status, &stderr);
    (stdout, stderr)
}

#[test]
fn a_refused_handshake_is_logged_to_stderr_then_to_the_callback_and_not_when_off() {
    let (stdout, stderr) = run_c_test("log_callback");
    assert!(stdout.contains("log_callback: ok"), "{stdout}\n{stderr}");
    // Phase 1, before any callback: the default sink, one line per record.
    let line = stderr
        .lines()
        .find(|l| l.contains("request refused with 404"))
        .unwrap_or_else(|| panic!("no refusal on stderr:\n{stderr}"));
    // 2026-12-01T00:41:07.123Z wshub WARN wshub::connection::reader: conn 1 (127.0.0.1:5555): ...
    let (time, rest) = line.split_once(' ').unwrap();
    assert!(time.len() == 24 && time.ends_with('Z') && time.as_bytes()[10] == b'T', "{line}");
    assert!(rest.starts_with("wshub WARN wshub::connection::reader: conn "), "{line}");
    assert_eq!(stderr.matches("refused with 404").count(), 1, "only phase 1 goes to stderr:\n{stderr}");
    assert!(!stderr.contains("SECRET"), "a token was logged:\n{stderr}");
    // INFO lines (start, stop) stay below the default level.
    assert!(!stderr.contains(" INFO "), "{stderr}");
}

#[test]
fn stats_and_metrics_text_agree_with_the_metrics_endpoint() {
    let (stdout, stderr) = run_c_test("stats_and_metrics");
    assert!(stdout.contains("stats_and_metrics: ok"), "{stdout}\n{stderr}");
}

/// A log callback that calls `wshub_set_log_callback` gets WSHUB_WRONG_MODE
/// (it used to hang), and a wshub call that logs from inside the callback
/// while another thread waits to swap it returns (it used to deadlock).
#[test]
fn the_log_callback_may_reenter_without_hanging() {
    let (stdout, stderr) = run_c_test("log_callback_reentry");
    assert!(stdout.contains("log callback reentry ok"), "{stdout}\n{stderr}");
}
