//! Child processes in tests: wait for one to exit, bounded in time; past the
//! bound it is killed (SIGKILL, by its PID through `Child`) and reaped, so no
//! test leaves a process behind or waits forever. A test uses it as
//! `mod child_common;`, or as `client_common::child_common` /
//! `c_common::child_common` when it has one of those (which include it with
//! `#[path = "../child_common/mod.rs"] pub mod child_common;`).
#![allow(dead_code)]

use std::process::{Child, ExitStatus, Output};
use std::time::{Duration, Instant};

/// Waits at most `limit` for `child` to exit: `Ok(status)` when it did,
/// else it is killed and reaped and `Err(status)` is how it ended.
pub fn wait_or_kill(child: &mut Child, limit: Duration) -> Result<ExitStatus, ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            return Err(child.wait().expect("wait for the killed child"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `child` (spawned with piped stdout and stderr) to its end: its
/// output when it exits within `limit`; otherwise it is killed and the test
/// fails, naming `what`.
pub fn output_within(mut child: Child, limit: Duration, what: &str) -> Output {
    if wait_or_kill(&mut child, limit).is_err() {
        panic!("{what} did not finish within {limit:?}");
    }
    child.wait_with_output().expect("the child's output")
}

/// Takes out of `cmd`'s environment what cargo sets for a running test
/// (`OUT_DIR`, `CARGO_PKG_*`, `CARGO_MANIFEST_*`, `CARGO_CFG_*`, ...), for a
/// test that runs cargo (directly or through a script). Build scripts watch
/// some of these (ring's reads `CARGO_PKG_NAME` and `OUT_DIR` through
/// `rerun-if-env-changed`): a cargo started with the test's values reruns
/// them, rebuilding ring and every crate above it up to wshub, and the next
/// cargo started from a shell rebuilds them all again.
pub fn without_cargo_test_env(cmd: &mut std::process::Command) -> &mut std::process::Command {
    const SET_FOR_TESTS: &[&str] = &[
        "CARGO_PKG_",
        "CARGO_MANIFEST_",
        "CARGO_CFG_",
        "CARGO_CRATE_",
        "CARGO_BIN_",
        "CARGO_PRIMARY_PACKAGE",
    ];
    for (name, _) in std::env::vars_os() {
        let Some(text) = name.to_str() else { continue };
        if text == "OUT_DIR"
            || text == "CARGO_TARGET_TMPDIR"
            || SET_FOR_TESTS.iter().any(|p| text.starts_with(p))
        {
            cmd.env_remove(&name);
        }
    }
    cmd
}

/// The `wshub` binary, started by a test on port 0; killed and reaped by its
/// PID when dropped.
pub struct Binary(pub Child);

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the `wshub` binary on 127.0.0.1:0, on glibc's thread stacks when
/// `fallback` (`WSHUB_KERNEL_FALLBACK=1`), else on its own, and reads the
/// address it prints.
pub fn start_binary(fallback: bool) -> (Binary, std::net::SocketAddr) {
    use std::io::BufRead;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wshub"));
    cmd.args(["--bind", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    match fallback {
        true => cmd.env("WSHUB_KERNEL_FALLBACK", "1"),
        false => cmd.env_remove("WSHUB_KERNEL_FALLBACK"),
    };
    let mut child = cmd.spawn().expect("start wshub");
    let stdout = child.stdout.take().unwrap();
    let bin = Binary(child);
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = line.trim().rsplit(' ').next().unwrap().parse().unwrap_or_else(|_| panic!("{line:?}"));
    (bin, addr)
}
