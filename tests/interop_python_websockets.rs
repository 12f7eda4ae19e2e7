//! Interop with Python `websockets` (a client nobody here wrote): runs
//! `tests/interop_python_websockets.py` against the real binary.
//!
//! Needs `python3` with `websockets` installed (`pip install websockets`);
//! the test fails with that instruction when it is missing.

mod protocol_common;
use protocol_common as common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Wshub;

#[test]
fn a_python_websockets_client_runs_a_scripted_session() {
    let probe = Command::new("python3").args(["-c", "import websockets"]).output();
    match probe {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "Python `websockets` is missing: run `python3 -m pip install websockets` (CI: .ci/run must install it). {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("python3 is needed for the interop test: {e}"),
    }
    let server = Wshub::start(&[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop_python_websockets.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(server.addr.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    let deadline = Instant::now() + Duration::from_secs(90);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the Python session did not finish in time");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("python output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("interop ok"),
        "python session failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
