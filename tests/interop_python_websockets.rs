//! Interop with Python `websockets` (a client nobody here wrote): runs
//! `tests/interop_python_websockets.py` against the real binary.
//!
//! Needs `python3` with `websockets` installed (`pip install websockets`);
//! the test fails with that instruction when it is missing.

mod child_common;
mod protocol_common;
use protocol_common as common;

use std::process::{Command, Stdio};
use std::time::Duration;

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
    let child = Command::new("python3")
        .arg(script)
        .arg(server.addr.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    let out = child_common::output_within(child, Duration::from_secs(90), "the Python session");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("interop ok"),
        "python session failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
