//! Runs `ffi-examples/echo_server` (built without sanitizers) under valgrind
//! memcheck with `--leak-check=full --error-exitcode=1`, drives it with real
//! clients, stops it with SIGINT and requires a clean report: no memory error,
//! nothing definitely or possibly lost beyond the one documented suppression
//! in `tests/valgrind.supp`. Needs valgrind installed (CI: `apt-get install
//! valgrind`); set WSHUB_SKIP_VALGRIND=1 to skip it on a machine without it.

mod c_common;
use c_common as common;

use std::process::Command;
use std::time::Duration;

use common::*;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::Message;

#[test]
fn echo_server_under_valgrind_has_no_errors_and_no_leaks() {
    if std::env::var("WSHUB_SKIP_VALGRIND").as_deref() == Ok("1") {
        eprintln!("skipped: WSHUB_SKIP_VALGRIND=1");
        return;
    }
    let found = Command::new("valgrind").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "valgrind is not installed (apt-get install valgrind), or set WSHUB_SKIP_VALGRIND=1"
    );
    let bin = make("ffi-examples", "plain", "").join("echo_server");
    let mut cmd = Command::new("valgrind");
    cmd.args(["--error-exitcode=1", "--leak-check=full", "--errors-for-leak-kinds=definite,possible"])
        .arg(format!("--suppressions={}", repo().join("tests/valgrind.supp").display()))
        .arg(bin)
        .arg("0");
    let program = Program::start(cmd, Duration::from_secs(120));

    let mut clients: Vec<Client> = (0..3).map(|_| connect(program.port, "/ws")).collect();
    for (i, ws) in clients.iter_mut().enumerate() {
        ws.send(Message::text(format!("text {i}"))).unwrap();
        assert_eq!(next_message(ws), Message::text(format!("text {i}")));
        let big = vec![i as u8; 70_000]; // larger than the 4 KiB initial read buffer
        ws.send(Message::binary(big.clone())).unwrap();
        assert_eq!(next_message(ws), Message::binary(big));
    }
    // One client leaves on its own; the other two are open at SIGINT.
    let mut leaving = clients.pop().unwrap();
    leaving.close(Some(CloseFrame { code: CloseCode::Normal, reason: "bye".into() })).unwrap();
    assert_eq!(expect_close(&mut leaving), 1000);

    program.sigint();
    for ws in &mut clients {
        assert_eq!(expect_close(ws), 1001);
    }
    let (status, stderr) = program.wait(Duration::from_secs(120));
    let summary: Vec<&str> = stderr
        .lines()
        .filter(|l| {
            l.contains("ERROR SUMMARY")
                || l.contains("lost:")
                || l.contains("in use at exit")
                || l.contains("heap blocks were freed")
        })
        .collect();
    eprintln!("valgrind summary:\n{}", summary.join("\n"));
    assert!(stderr.contains("ERROR SUMMARY: 0 errors"), "valgrind found errors:\n{stderr}");
    assert!(status.success(), "echo_server under valgrind exited with {status:?}:\n{stderr}");
}
