//! At the process's thread limit every thread a connection needs fails to
//! start: that is logged once (then a count per period) through one limiter,
//! not once per connection, and every failure is counted in `/metrics` by
//! kind. A connection whose writer cannot start still gets its close reply.
//!
//! The server runs in a child process (this test binary again, as
//! `nobody`, whose RLIMIT_NPROC binds; root's does not), which lowers its
//! own limit when told: after the clients connected (only writer threads
//! fail), or before (their reader threads fail).

mod child_common;
mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use common::{connect, Recorder, WAIT};
use wshub::{Config, Server};

const CLIENTS: usize = 30;
/// Set in the child's environment: it runs the server.
const CHILD: &str = "WSHUB_THREAD_LIMIT_CHILD";

/// The child: starts a server, prints its address, and on each line from
/// stdin does what the line says: `limit` (no thread can start any more),
/// `metrics KIND` (prints that kind's spawn-failure line of its metrics),
/// `stop`.
#[test]
fn child_server() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let config = Config::default().bind("127.0.0.1:0".parse().unwrap());
    let server = Server::start(config, Recorder::new().0).unwrap();
    println!("addr {}", server.local_addr());
    for line in std::io::stdin().lock().lines().map_while(Result::ok) {
        match line.split_once(' ').unwrap_or((line.as_str(), "")) {
            ("limit", _) => {
                let none = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                // SAFETY: setrlimit with a valid pointer to an initialised rlimit.
                assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NPROC, &none) }, 0);
                println!("limited");
            }
            ("metrics", kind) => {
                let text = server.metrics_text();
                let name = format!("wshub_thread_spawn_failures_total{{kind=\"{kind}\"}}");
                println!("metrics {}", text.lines().find(|l| l.starts_with(&name)).unwrap_or("none"));
            }
            _ => break,
        }
    }
    server.stop();
}

/// The server child, as `nobody`, and what it logs.
struct Limited {
    child: Child,
    to_child: ChildStdin,
    from_child: BufReader<ChildStdout>,
    log: std::thread::JoinHandle<Vec<String>>,
    addr: std::net::SocketAddr,
}

impl Limited {
    fn start() -> Limited {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_server", "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .env("WSHUB_TEST_LOG", "error")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .uid(65534)
            .gid(65534) // nobody
            .spawn()
            .expect("start the child as nobody");
        let to_child = child.stdin.take().unwrap();
        let from_child = BufReader::new(child.stdout.take().unwrap());
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let log = std::thread::spawn(move || stderr.lines().map_while(Result::ok).collect::<Vec<_>>());
        let mut limited = Limited { child, to_child, from_child, log, addr: ([127, 0, 0, 1], 0).into() };
        limited.addr = limited.answer("addr").parse().unwrap();
        limited
    }

    /// What the child printed after `prefix` on its next line holding it.
    fn answer(&mut self, prefix: &str) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            assert!(self.from_child.read_line(&mut line).unwrap() > 0, "the child ended before `{prefix}`");
            // The test harness may print its own words before ours on the line.
            if let Some((_, rest)) = line.trim().split_once(prefix) {
                return rest.trim().to_owned();
            }
        }
    }

    fn limit(&mut self) {
        writeln!(self.to_child, "limit").unwrap();
        self.answer("limited");
    }

    /// Stops the child and checks what a thread `kind` that could not start
    /// `CLIENTS` times left: one or two lines holding `logged`, and the count.
    fn stop_and_check(mut self, kind: &str, logged: &str) -> String {
        writeln!(self.to_child, "metrics {kind}").unwrap();
        let metrics = self.answer("metrics");
        writeln!(self.to_child, "stop").unwrap();
        let status = child_common::wait_or_kill(&mut self.child, WAIT);
        let log = self.log.join().unwrap();
        let all = log.join("\n");
        assert!(status.is_ok_and(|s| s.success()), "the child failed: {status:?}\n{all}");
        let lines = log.iter().filter(|l| l.contains(logged)).count();
        assert!((1..=2).contains(&lines), "{lines} lines for {CLIENTS} {kind}s that could not start:\n{all}");
        assert_eq!(metrics, format!("wshub_thread_spawn_failures_total{{kind=\"{kind}\"}} {CLIENTS}"));
        all
    }
}

#[test]
fn writers_that_cannot_start_are_logged_once_not_once_per_connection() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let mut server = Limited::start();
    let clients: Vec<_> = (0..CLIENTS).map(|_| connect(server.addr, "/ws")).collect();
    server.limit();

    // Each close needs a writer for its reply: none starts, and the reader
    // writes the reply itself at its end.
    let closers: Vec<_> = clients
        .into_iter()
        .map(|mut ws| {
            std::thread::spawn(move || {
                ws.close(None).unwrap();
                loop {
                    match ws.read() {
                        Ok(_) => continue,
                        Err(tungstenite::Error::ConnectionClosed) => return true,
                        Err(_) => return false,
                    }
                }
            })
        })
        .collect();
    let answered = closers.into_iter().map(|c| c.join().unwrap()).filter(|&ok| ok).count();
    let all = server.stop_and_check("writer", "cannot start a writer thread");
    assert_eq!(answered, CLIENTS, "every client's close was answered\n{all}");
}

#[test]
fn readers_that_cannot_start_are_logged_once_not_once_per_connection() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let mut server = Limited::start();
    server.limit();
    // Each connection needs a reader thread: none starts, and the socket is dropped.
    for _ in 0..CLIENTS {
        let mut s = std::net::TcpStream::connect(server.addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let _ = s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut rest = Vec::new();
        let _ = std::io::Read::read_to_end(&mut s, &mut rest);
    }
    server.stop_and_check("reader", "reader thread");
}
