//! `tests/c/bad_arguments.c` calls every exported function with NULL, with a
//! stopped server and with unknown and closed connection ids, under ASan +
//! UBSan: every call must return its documented error, nothing may crash or
//! leak. A second test keeps that C file honest: every function the header
//! declares must appear in it.

mod c_common;
use c_common as common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// Runs one program of tests/c under the sanitizers; returns its stdout.
fn run_c_test(name: &str) -> String {
    run_c_test_with_stderr(name).0
}

/// [`run_c_test`], with its stderr.
fn run_c_test_with_stderr(name: &str) -> (String, String) {
    let build = make("tests/c", "c-api", SANITIZE);
    let mut cmd = Command::new(build.join(name));
    cmd.env("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        .env("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1");
    let child =
        cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // SAFETY: kill(2) on the PID of the child this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("{name} did not finish within 60 s");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_clean_exit(name, out.status, &format!("{stderr}\nstdout:\n{stdout}"));
    (stdout, stderr)
}

#[test]
fn every_function_refuses_null_stopped_and_unknown_arguments_without_crashing() {
    let stdout = run_c_test("bad_arguments");
    assert!(stdout.contains("all checks passed"), "{stdout}");
}

#[test]
fn the_c_test_calls_every_function_the_header_declares() {
    let header = std::fs::read_to_string(repo().join("include/wshub.h")).unwrap();
    let test = std::fs::read_to_string(repo().join("tests/c/bad_arguments.c")).unwrap();
    let declared: Vec<&str> = header
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.starts_with("typedef") && !l.starts_with('#'))
        .filter_map(|l| l.split_once('(').map(|(head, _)| head))
        .filter_map(|head| head.rsplit([' ', '*']).next())
        .filter(|name| name.starts_with("wshub_"))
        .collect();
    assert!(declared.len() > 50, "found only {declared:?}");
    let missing: Vec<_> = declared.iter().filter(|f| !test.contains(&format!("{f}("))).collect();
    assert!(missing.is_empty(), "not exercised by tests/c/bad_arguments.c: {missing:?}");
}

#[test]
fn last_error_says_why_a_start_failed_on_the_calling_thread() {
    let stdout = run_c_test("last_error_says_why");
    assert!(stdout.contains("last error says why ok"), "{stdout}");
}

/// Sizes that used to abort the host (exit 134) or panic onto stderr: each
/// over its bound is refused at start, and with logging off nothing at all
/// reaches stderr.
#[test]
fn sizes_over_their_bounds_are_refused_at_start_and_nothing_reaches_stderr() {
    let (stdout, stderr) = run_c_test_with_stderr("sizes_over_their_bounds");
    assert!(stdout.contains("sizes over their bounds ok"), "{stdout}");
    assert!(stderr.is_empty(), "stderr with logging off:\n{stderr}");
}
