//! At the process's thread limit every connection that needs a writer
//! thread fails to start one: that is logged once (then a count per
//! period), not once per connection, every failure is counted in
//! `/metrics`, and each connection still gets its close reply.
//!
//! The server runs in a child process (this test binary again, as
//! `nobody`, whose RLIMIT_NPROC binds; root's does not), which lowers its
//! own limit once the clients are connected, so that only writer threads
//! fail to start.

mod child_common;
mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use common::{connect, Recorder, WAIT};
use wshub::{Config, Server};

const CLIENTS: usize = 30;
/// Set in the child's environment: it runs the server.
const CHILD: &str = "WSHUB_THREAD_LIMIT_CHILD";

/// The child: starts a server, prints its address, and on each line from
/// stdin does what the line says: `limit` (no thread can start any more),
/// `metrics` (prints the spawn-failure line of its metrics), `stop`.
#[test]
fn child_server() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let config = Config::default().bind("127.0.0.1:0".parse().unwrap());
    let server = Server::start(config, Recorder::new().0).unwrap();
    println!("addr {}", server.local_addr());
    for line in std::io::stdin().lock().lines().map_while(Result::ok) {
        match line.as_str() {
            "limit" => {
                let none = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                // SAFETY: setrlimit with a valid pointer to an initialised rlimit.
                assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NPROC, &none) }, 0);
                println!("limited");
            }
            "metrics" => {
                let text = server.metrics_text();
                let line = text.lines().find(|l| l.starts_with("wshub_thread_spawn_failures_total{"));
                println!("metrics {}", line.unwrap_or("none"));
            }
            _ => break,
        }
    }
    server.stop();
}

#[test]
fn writers_that_cannot_start_are_logged_once_not_once_per_connection() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
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
    let mut to_child = child.stdin.take().unwrap();
    let mut from_child = BufReader::new(child.stdout.take().unwrap());
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let log = std::thread::spawn(move || stderr.lines().map_while(Result::ok).collect::<Vec<_>>());
    let mut answer = |prefix: &str| -> String {
        let mut line = String::new();
        loop {
            line.clear();
            assert!(from_child.read_line(&mut line).unwrap() > 0, "the child ended before `{prefix}`");
            // The test harness may print its own words before ours on the line.
            if let Some((_, rest)) = line.trim().split_once(prefix) {
                return rest.trim().to_owned();
            }
        }
    };
    let addr: std::net::SocketAddr = answer("addr").parse().unwrap();
    let clients: Vec<_> = (0..CLIENTS).map(|_| connect(addr, "/ws")).collect();
    writeln!(to_child, "limit").unwrap();
    answer("limited");

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
    writeln!(to_child, "metrics").unwrap();
    let metrics = answer("metrics");
    writeln!(to_child, "stop").unwrap();
    let status = child_common::wait_or_kill(&mut child, WAIT);
    let log = log.join().unwrap();
    let all = log.join("\n");
    assert!(status.is_ok_and(|s| s.success()), "the child failed: {status:?}\n{all}");
    assert_eq!(answered, CLIENTS, "every client's close was answered\n{all}");
    let lines = log.iter().filter(|l| l.contains("cannot start a writer thread")).count();
    assert!((1..=2).contains(&lines), "{lines} lines for {CLIENTS} writers that could not start:\n{all}");
    assert_eq!(metrics, format!("wshub_thread_spawn_failures_total{{kind=\"writer\"}} {CLIENTS}"));
}
