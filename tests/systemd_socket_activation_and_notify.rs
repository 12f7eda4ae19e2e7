//! The binary under systemd's protocols, started by `systemd-socket-activate`
//! (Debian's `systemd` package) as systemd would start it: it serves on the
//! socket passed as fd 3 (`LISTEN_FDS`/`LISTEN_PID`) with no flag, `--bind`
//! ignored; a WebSocket client connects through that socket; the test's own
//! Unix datagram socket, passed as `NOTIFY_SOCKET`, receives `READY=1`,
//! watchdog pings (`WATCHDOG_USEC`) and, on SIGTERM, `STOPPING=1`.

mod child_common;
mod common;

use std::net::TcpListener;
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tungstenite::Message as WsMessage;

/// The process this test started; killed by PID when the test fails.
struct Started(Child);

impl Drop for Started {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The next datagram on `sock` (bounded by its read timeout).
fn next_state(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("a datagram on NOTIFY_SOCKET in time");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn socket_activation_serves_the_passed_socket_and_notifies_ready_watchdog_and_stopping() {
    if Command::new("systemd-socket-activate").arg("--version").output().is_err() {
        panic!("systemd-socket-activate is missing: bash .ci/setup installs Debian's systemd package");
    }
    let dir = std::env::temp_dir().join(format!("wshub-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let notify_path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&notify_path);
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(common::WAIT)).unwrap();
    // A free port for systemd-socket-activate to listen on.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("systemd-socket-activate")
        .args(["-l", &format!("127.0.0.1:{port}")])
        .args(["-E", &format!("NOTIFY_SOCKET={}", notify_path.display())])
        .args(["-E", "WATCHDOG_USEC=300000"])
        .arg(env!("CARGO_BIN_EXE_wshub"))
        // Would fail if used: the passed socket replaces it.
        .args(["--bind", "127.0.0.1:1", "--echo"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start systemd-socket-activate");
    let mut started = Started(child);
    // systemd-socket-activate listens first and starts wshub on the first
    // connection: connecting is bounded by its backlog, not by wshub.
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + common::WAIT;
    let mut ws = loop {
        match std::net::TcpStream::connect(addr) {
            Ok(stream) => {
                stream.set_read_timeout(Some(common::WAIT)).unwrap();
                break tungstenite::client(format!("ws://{addr}/ws"), stream).expect("handshake").0;
            }
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("systemd-socket-activate does not listen: {e}"),
        }
    };
    ws.send(WsMessage::text("through fd 3")).unwrap();
    assert_eq!(common::next_data(&mut ws), WsMessage::text("through fd 3"));

    assert_eq!(next_state(&notify), "READY=1");
    // Pings at half the 300 ms interval.
    for _ in 0..2 {
        assert_eq!(next_state(&notify), "WATCHDOG=1");
    }
    // systemd-socket-activate exec'd wshub: the PID is wshub's.
    // SAFETY: kill(2) on the PID of the child this test started.
    assert_eq!(unsafe { libc::kill(started.0.id() as i32, libc::SIGTERM) }, 0);
    let stopping = (0..10).map(|_| next_state(&notify)).find(|s| s != "WATCHDOG=1");
    assert_eq!(stopping.as_deref(), Some("STOPPING=1"));
    assert_eq!(common::read_until_close(&mut ws), Some(1001));
    let status = child_common::wait_or_kill(&mut started.0, common::WAIT)
        .unwrap_or_else(|_| panic!("wshub did not exit after SIGTERM"));
    let out = started.0.wait_with_output_after_exit();
    assert!(status.success(), "exit {status:?}\n{out}");
    assert!(out.contains(&format!("wshub listening on 127.0.0.1:{port}")), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

trait Output {
    fn wait_with_output_after_exit(&mut self) -> String;
}

impl Output for Child {
    /// stdout and stderr of an exited child.
    fn wait_with_output_after_exit(&mut self) -> String {
        use std::io::Read;
        let mut all = String::new();
        if let Some(mut o) = self.stdout.take() {
            let _ = o.read_to_string(&mut all);
        }
        if let Some(mut e) = self.stderr.take() {
            let _ = e.read_to_string(&mut all);
        }
        all
    }
}

#[test]
fn the_packaged_units_are_sandboxed_and_sized_for_two_threads_per_connection() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging");
    let service = std::fs::read_to_string(dir.join("wshub.service")).unwrap();
    let socket = std::fs::read_to_string(dir.join("wshub.socket")).unwrap();
    let value = |unit: &str, key: &str| -> Option<String> {
        unit.lines().find_map(|l| l.strip_prefix(&format!("{key}=")).map(|v| v.trim().to_owned()))
    };
    for (key, want) in [
        ("Type", "notify"),
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("ExecStart", "/usr/bin/wshub --config /etc/wshub/wshub.toml"),
    ] {
        assert_eq!(value(&service, key).as_deref(), Some(want), "{key}");
    }
    assert!(value(&service, "WatchdogSec").is_some());
    // Two threads (reader and writer) and one socket per connection.
    let max = wshub::Config::default().max_connections as u64;
    let tasks: u64 = value(&service, "TasksMax").unwrap().parse().unwrap();
    let files: u64 = value(&service, "LimitNOFILE").unwrap().parse().unwrap();
    assert!(tasks >= 2 * max + 16, "TasksMax={tasks}");
    assert!(files >= max + 64, "LimitNOFILE={files}");
    assert!(value(&socket, "ListenStream").is_some());
    // systemd's own check, where systemd-analyze is installed.
    if let Ok(out) = Command::new("systemd-analyze").arg("--version").output() {
        if out.status.success() {
            let out = Command::new("systemd-analyze")
                .args(["verify", "--man=no"])
                .arg(dir.join("wshub.socket"))
                .arg(dir.join("wshub.service"))
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stderr);
            // /usr/bin/wshub is not installed on a test machine: that one complaint is expected.
            let bad: Vec<_> =
                text.lines().filter(|l| !l.contains("/usr/bin/wshub") && !l.trim().is_empty()).collect();
            assert!(bad.is_empty(), "systemd-analyze verify:\n{text}");
        }
    }
}
