//! The C ABI's lifetimes under stress, each program in `tests/c/` built and
//! run under ASan + UBSan (LeakSanitizer included): peers that reset before
//! their 101 leave no per-connection state behind; `wshub_stop` from a
//! callback works when no thread can be created, and from two callbacks at
//! once; it only begins the stop, so `wshub_start` returns a live handle
//! when a callback stopped the server before it returned, and a stop from a
//! callback followed by main's stop is clean (under valgrind too);
//! `wshub_stop` does not return while a callback is still to run; a
//! forked child gets `WSHUB_FORKED` from every call; `wshub_publish` works
//! from inside a callback and from any thread.

mod c_common;
use c_common as common;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Runs one program of tests/c under the sanitizers, as an unprivileged user
/// when `unprivileged` (RLIMIT_NPROC binds nobody else); returns its stdout.
fn run_c_test(name: &str, unprivileged: bool) -> String {
    let build = make("tests/c", "c-api", SANITIZE);
    let mut cmd = Command::new(build.join(name));
    cmd.env("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        .env("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1");
    // SAFETY: geteuid has no preconditions.
    if unprivileged && unsafe { libc::geteuid() } == 0 {
        cmd.uid(65534).gid(65534); // nobody
    }
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
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_clean_exit(name, out.status, &stderr);
    stdout
}

#[test]
fn peers_that_reset_before_their_101_leave_no_connection_state() {
    let stdout = run_c_test("reset_after_upgrade", false);
    assert!(stdout.contains("reset peers leave nothing ok"), "{stdout}");
}

#[test]
fn stop_from_a_callback_happens_when_no_thread_can_be_created() {
    let stdout = run_c_test("stop_without_threads", true);
    assert!(stdout.contains("stop without threads ok"), "{stdout}");
}

#[test]
fn publish_works_from_inside_a_callback_and_from_any_thread() {
    let stdout = run_c_test("publish_from_callback", false);
    assert!(stdout.contains("publish from callback ok"), "{stdout}");
}

#[test]
fn stop_returns_only_after_every_callback_has_run() {
    let stdout = run_c_test("stop_waits_for_callbacks", false);
    assert!(stdout.contains("stop waits for callbacks ok"), "{stdout}");
}

#[test]
fn start_returns_a_live_handle_when_a_callback_stopped_the_server_during_start() {
    let stdout = run_c_test("stop_from_a_callback_during_start", false);
    assert!(stdout.contains("stop from a callback during start ok"), "{stdout}");
}

/// The common pattern: a quit message calls `wshub_stop`, main calls it at
/// exit. ASan does not see Rust code reading freed memory; valgrind does.
#[test]
fn stop_from_a_callback_then_from_main_is_clean_under_asan_and_valgrind() {
    let stdout = run_c_test("stop_from_callback_then_main", false);
    assert!(stdout.contains("stop from callback then main ok"), "{stdout}");
    valgrind_clean("stop_from_callback_then_main", "stop from callback then main ok");
}

/// Runs the program of tests/c built without sanitizers under memcheck
/// (skipped with WSHUB_SKIP_VALGRIND set).
fn valgrind_clean(name: &str, ok_line: &str) {
    if std::env::var_os("WSHUB_SKIP_VALGRIND").is_some() {
        return;
    }
    let bin = make("tests/c", "c-api-plain", "").join(name);
    let out = Command::new("valgrind")
        .args(["--error-exitcode=1", "--leak-check=no", "-q"])
        .arg(bin)
        .output()
        .expect("valgrind is not installed (apt-get install valgrind), or set WSHUB_SKIP_VALGRIND=1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name} under valgrind: {:?}\n{stderr}", out.status);
    assert!(String::from_utf8_lossy(&out.stdout).contains(ok_line), "{stderr}");
}

/// ASan sees only the C side; a reference taken twice shows in Rust code
/// (an Arc's count written after it was freed), which only valgrind sees:
/// the same program, built without sanitizers, runs under memcheck too.
#[test]
fn two_callbacks_may_call_stop_at_once() {
    let stdout = run_c_test("two_callbacks_stop_at_once", false);
    assert!(stdout.contains("two stops at once ok"), "{stdout}");
    valgrind_clean("two_callbacks_stop_at_once", "two stops at once ok");
}

#[test]
fn a_forked_child_gets_wshub_forked_from_every_call() {
    let stdout = run_c_test("fork_child_gets_errors", false);
    assert!(stdout.contains("fork child gets errors ok"), "{stdout}");
}

#[test]
fn a_callbacks_struct_from_an_older_header_works_with_the_rest_taken_as_null() {
    let stdout = run_c_test("older_header_callbacks", false);
    assert!(stdout.contains("older header callbacks ok"), "{stdout}");
}

#[test]
fn an_adopted_descriptor_can_leave_the_hosts_epoll_set_and_a_refused_one_is_untouched() {
    let stdout = run_c_test("adopt_keeps_the_descriptor_usable", false);
    assert!(stdout.contains("adopt keeps the descriptor usable ok"), "{stdout}");
}

/// wshub's threads block the process's signals: a SIGINT sent while main
/// blocks it waits for main, even with 100 connections (200 threads) open.
#[test]
fn a_hosts_sigint_handler_runs_on_its_main_thread_with_100_connections_open() {
    use std::io::Write;
    let build = make("tests/c", "c-api", SANITIZE);
    let mut host =
        Program::start(Command::new(build.join("sigint_runs_on_the_hosts_thread")), Duration::from_secs(120));
    host.sigint();
    // Give a thread that does not block SIGINT time to take it.
    std::thread::sleep(Duration::from_millis(300));
    let mut stdin = host.stdin.take().expect("stdin");
    stdin.write_all(b"sent\n").expect("write to the host");
    drop(stdin);
    host.expect_line("sigint on the host's thread ok", Duration::from_secs(60));
    let (status, stderr) = host.wait(Duration::from_secs(60));
    assert_clean_exit("sigint_runs_on_the_hosts_thread", status, &stderr);
}
