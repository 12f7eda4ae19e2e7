//! Shared by the tests that build and run C code: builds the static library
//! and the examples, runs a program, and drives it with tungstenite.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tungstenite::{Message, WebSocket};

#[path = "../child_common/mod.rs"]
pub mod child_common;

pub const SANITIZE: &str = "-fsanitize=address,undefined -fno-omit-frame-pointer";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `target/debug` (or `target/release`): the directory of this test's profile.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>").to_path_buf()
}

/// Builds `libwshub.a` for this test's profile (a no-op when it is fresh) and
/// returns its directory. Plain `cargo test` does not build the staticlib
/// crate type for integration tests, so the test asks cargo itself.
pub fn staticlib_dir() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let profile = profile_dir();
            let target = profile.parent().expect("target dir").to_path_buf();
            let mut cmd = Command::new(env!("CARGO"));
            cmd.args(["build", "--lib", "--target-dir"]).arg(&target).current_dir(repo());
            child_common::without_cargo_test_env(&mut cmd);
            if profile.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let status = cmd.status().expect("run cargo build --lib");
            assert!(status.success(), "cargo build --lib failed");
            assert!(profile.join("libwshub.a").exists(), "no libwshub.a in {}", profile.display());
            profile
        })
        .clone()
}

/// Runs `make` in `dir` with the library, an output directory and extra flags;
/// returns the output directory.
pub fn make(dir: &str, build_name: &str, sanitize: &str) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let lib = staticlib_dir();
    let build = profile_dir().join("ffi-tests").join(build_name);
    // Under cargo-nextest every test is its own process, and tests of several
    // binaries build the same directory at once: the mutex above no longer
    // serializes them, and one test ran a program another was still linking
    // (EACCES). A file lock does, across processes; it ends with `lock`.
    std::fs::create_dir_all(build.parent().expect("ffi-tests")).expect("create ffi-tests");
    let lock = std::fs::File::create(profile_dir().join("ffi-tests").join(format!("{build_name}.lock")))
        .expect("create the build's lock file");
    // SAFETY: flock on a descriptor this function owns, open until `lock` drops.
    let locked = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
    assert_eq!(locked, 0, "flock: {}", std::io::Error::last_os_error());
    let out = Command::new("make")
        .current_dir(repo().join(dir))
        .arg(format!("WSHUB_LIB_DIR={}", lib.display()))
        .arg(format!("BUILD={}", build.display()))
        .arg(format!("SANITIZE={sanitize}"))
        .output()
        .expect("run make (is it installed?)");
    assert!(
        out.status.success(),
        "make in {dir} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    build
}

/// A program we started; killed (by its PID) if the test fails before it exits.
pub struct Program {
    child: Child,
    pub stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    pub port: u16,
}

impl Program {
    /// Starts `cmd` with port 0 and waits (at most `limit`) for the line that
    /// says where it listens ("... listening on 127.0.0.1:PORT").
    pub fn start(mut cmd: Command, limit: Duration) -> Program {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.env("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
            .env("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1");
        let mut child = cmd.spawn().expect("start the example");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr_pipe = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (etx, stderr) = mpsc::channel();
        std::thread::spawn(move || {
            let mut all = String::new();
            let _ = stderr_pipe.read_to_string(&mut all);
            let _ = etx.send(all);
        });
        let stdin = child.stdin.take();
        let mut program = Program { child, stdin, lines, stderr, port: 0 };
        let line = program.expect_line("listening on", limit);
        let port = line.rsplit(':').next().and_then(|p| p.trim().parse().ok());
        program.port = port.unwrap_or_else(|| panic!("no port in {line:?}"));
        program
    }

    /// Waits for a stdout line containing `needle`.
    pub fn expect_line(&mut self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(_) => panic!("no line containing {needle:?} within {limit:?}"),
            }
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn sigint(&self) {
        // SAFETY: kill(2) with the PID of a child we started and have not reaped.
        let rc = unsafe { libc::kill(self.pid(), libc::SIGINT) };
        assert_eq!(rc, 0, "kill(SIGINT)");
    }

    /// Waits (at most `limit`) for the program to exit; returns its status and stderr.
    pub fn wait(mut self, limit: Duration) -> (ExitStatus, String) {
        let exited = child_common::wait_or_kill(&mut self.child, limit);
        let stderr = self.stderr.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
        match exited {
            Ok(status) => (status, stderr),
            Err(_) => panic!("the program did not exit within {limit:?}; stderr:\n{stderr}"),
        }
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Asserts a clean exit: status 0 and no sanitizer report in stderr.
pub fn assert_clean_exit(name: &str, status: ExitStatus, stderr: &str) {
    for marker in ["Sanitizer", "runtime error", "ERROR:"] {
        assert!(!stderr.contains(marker), "{name}: sanitizer report:\n{stderr}");
    }
    assert!(status.success(), "{name}: exit status {status:?}; stderr:\n{stderr}");
}

pub type Client = WebSocket<TcpStream>;

/// Opens a WebSocket to `path_and_query` (e.g. "/ws?room=a") with tungstenite.
pub fn connect(port: u16, path_and_query: &str) -> Client {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("read timeout");
    let url = format!("ws://127.0.0.1:{port}{path_and_query}");
    let (ws, _) = tungstenite::client::client(url, stream).expect("WebSocket handshake");
    ws
}

/// The HTTP status of a refused upgrade, or None when it was accepted.
pub fn upgrade_status(port: u16, path_and_query: &str) -> Option<u16> {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("read timeout");
    let url = format!("ws://127.0.0.1:{port}{path_and_query}");
    match tungstenite::client::client(url, stream) {
        Ok(_) => None,
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            Some(resp.status().as_u16())
        }
        Err(e) => panic!("unexpected handshake error: {e}"),
    }
}

/// The next data message (pings and pongs skipped).
pub fn next_message(ws: &mut Client) -> Message {
    loop {
        match ws.read().expect("read a message") {
            m @ (Message::Text(_) | Message::Binary(_) | Message::Close(_)) => return m,
            _ => continue,
        }
    }
}

pub fn next_text(ws: &mut Client) -> String {
    match next_message(ws) {
        Message::Text(t) => t.as_str().to_owned(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// Reads until the server's close frame and sends the reply (so the server
/// need not wait out its close timeout); returns the code.
pub fn expect_close(ws: &mut Client) -> u16 {
    loop {
        let code = match ws.read() {
            Ok(Message::Close(Some(frame))) => u16::from(frame.code),
            Ok(Message::Close(None)) => 1005,
            Ok(_) => continue,
            Err(e) => panic!("connection ended without a close frame: {e}"),
        };
        let _ = ws.flush();
        return code;
    }
}
