//! `wshub-cli` as a user meets it: distinct exit codes (2 usage, 3
//! unreachable, 4 refused, 130 Ctrl-C), a permanent refusal ends it at once
//! (also with --read-only, also while stdin is open), a busy server's
//! Retry-After is waited out at startup, the token can come from a file,
//! Ctrl-C closes with 1000 after sending what stdin gave, and --verbose and the
//! stdout epoch marker tell what happened to the room.

mod client_common;

use std::io::{BufRead, BufReader, Read, Write};

use crossbeam_channel::Receiver;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use client_common::fake::{self, Fake};
use client_common::{exit_status_within, wait_for, Server, WAIT};
use serde_json::{json, Value};
use wshub::client::{Client, Event, Options};

fn cli(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_wshub-cli"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wshub-cli")
}

/// Runs the CLI with stdin left open; its exit status and stderr.
fn run_to_exit(args: &[&str]) -> (ExitStatus, String) {
    let mut child = cli(args);
    let stdin = child.stdin.take();
    let status = exit_status_within(&mut child, WAIT);
    drop(stdin);
    let mut err = String::new();
    let _ = child.stderr.take().expect("stderr").read_to_string(&mut err);
    (status, err)
}

/// A child's output lines, read by their own thread (so every wait on them
/// is bounded).
struct Lines(Receiver<String>);

impl Lines {
    fn of(stream: impl Read + Send + 'static) -> Lines {
        let (tx, rx) = crossbeam_channel::unbounded();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines(rx)
    }

    /// The child's stderr.
    fn stderr(child: &mut Child) -> Lines {
        Lines::of(child.stderr.take().expect("stderr"))
    }

    /// The next line (within [`WAIT`]).
    fn next(&self) -> String {
        self.0.recv_timeout(WAIT).unwrap_or_else(|_| panic!("no line from wshub-cli within {WAIT:?}"))
    }

    /// Lines until one contains `what` (within [`WAIT`]); every line read so far.
    fn until(&self, what: &str) -> String {
        let deadline = Instant::now() + WAIT;
        let mut all = String::new();
        while !all.contains(what) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.0.recv_timeout(left) {
                Ok(line) => all.push_str(&(line + "\n")),
                Err(_) => panic!("no {what:?} from wshub-cli within {WAIT:?}: {all}"),
            }
        }
        all
    }

    /// Every line up to the end of the stream (within [`WAIT`]).
    fn rest(&self) -> String {
        let deadline = Instant::now() + WAIT;
        let mut all = String::new();
        while let Ok(line) = self.0.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            all.push_str(&(line + "\n"));
        }
        all
    }
}

fn token(secret: &str) -> String {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 3600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "ann", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[test]
fn usage_errors_exit_2() {
    let (status, err) = run_to_exit(&["--url", "http://127.0.0.1:1/ws", "--room", "r"]);
    assert_eq!(status.code(), Some(2), "{err}");
    let (status, err) =
        run_to_exit(&["--url", "ws://127.0.0.1:1/ws", "--room", "r", "--token-file", "/nonexistent"]);
    assert_eq!(status.code(), Some(2), "{err}");
    // A zero backoff retried a server that was down ~700 times a second.
    for flag in ["--backoff-min-ms", "--backoff-max-ms"] {
        let (status, err) = run_to_exit(&["--url", "ws://127.0.0.1:1/ws", "--room", "r", flag, "0"]);
        assert_eq!(status.code(), Some(2), "{flag} 0: {err}");
    }
    // A token no HTTP header can carry fails every attempt alike: a usage
    // error (it was 3, "unreachable", whatever the server), never shown.
    let dir = std::env::temp_dir().join(format!("wshub-cli-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, "s3cr3t\u{1}t0ken\n").unwrap();
    let file = file.to_str().unwrap();
    let (status, err) = run_to_exit(&["--url", "ws://127.0.0.1:1/ws", "--room", "r", "--token-file", file]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(!err.contains("s3cr3t"), "{err}");
}

#[test]
fn the_end_of_input_is_said_before_the_cli_exits_0() {
    let server = Server::start(&[]);
    let url = format!("ws://{}/ws", server.addr);
    // stdin at its end from the start (`< /dev/null`, a service without a
    // terminal): nothing to publish, and the user is told why it ends.
    let (status, err) = run_to_exit_with_input(&["--url", &url, "--room", "r"], "");
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains("end of input: no line to publish"), "{err}");
    assert!(err.contains("--read-only"), "the way to keep watching is named: {err}");
    let (status, err) = run_to_exit_with_input(&["--url", &url, "--room", "r"], "one\ntwo\n");
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains("end of input: 2 lines published and acknowledged"), "{err}");
}

/// Runs the CLI with `input` on stdin, then its end; its exit status and stderr.
fn run_to_exit_with_input(args: &[&str], input: &str) -> (ExitStatus, String) {
    let mut child = cli(args);
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).expect("write stdin");
    drop(stdin);
    let status = exit_status_within(&mut child, WAIT);
    let mut err = String::new();
    let _ = child.stderr.take().expect("stderr").read_to_string(&mut err);
    (status, err)
}

#[test]
fn an_unreachable_server_exits_3() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (status, err) = run_to_exit(&["--url", &format!("ws://127.0.0.1:{port}/ws"), "--room", "r"]);
    assert_eq!(status.code(), Some(3), "{err}");
}

#[test]
fn a_401_at_startup_exits_4_at_once() {
    let server = Server::start(&["--jwt-secret", "s"]);
    let url = format!("ws://{}/ws", server.addr);
    for extra in [&[][..], &["--read-only"][..]] {
        let mut args = vec!["--url", url.as_str(), "--room", "r"];
        args.extend(extra);
        let (status, err) = run_to_exit(&args);
        assert_eq!(status.code(), Some(4), "{extra:?}: {err}");
    }
}

/// The first connection is served and cut with 1011; every later one gets `refusal`.
fn refuse_after_first(refusal: &'static str) -> Fake {
    Fake::start(move |stream, ctx| {
        if ctx.n == 0 {
            let Some(mut ws) = fake::upgrade(stream) else { return };
            fake::connected(&mut ws, "a", 30_000, 1 << 20);
            if fake::ack_join(&mut ws, "e").is_some() {
                fake::close(&mut ws, 1011, "restarting");
                let _ = fake::close_reply(&mut ws, Duration::from_secs(2));
            }
        } else {
            fake::refuse(stream, refusal);
        }
    })
}

#[test]
fn a_refusal_while_running_exits_4_at_once_with_stdin_open() {
    for (refusal, extra) in [
        ("HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n", &[][..]),
        ("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", &["--read-only"][..]),
    ] {
        let server = refuse_after_first(refusal);
        let url = server.url();
        let mut args = vec!["--url", url.as_str(), "--room", "r", "--backoff-min-ms", "10"];
        args.extend(extra);
        let (status, err) = run_to_exit(&args);
        assert_eq!(status.code(), Some(4), "{refusal:?} {extra:?}: {err}");
    }
}

#[test]
fn retry_after_is_waited_out_at_startup() {
    let server = Fake::start(|stream, ctx| {
        if ctx.n == 0 {
            fake::refuse(
                stream,
                "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n",
            );
            return;
        }
        let Some(mut ws) = fake::upgrade(stream) else { return };
        fake::connected(&mut ws, "b", 30_000, 1 << 20);
        if fake::ack_join(&mut ws, "e").is_some() {
            std::thread::sleep(fake::SCRIPT_LIMIT);
        }
    });
    let mut child = cli(&["--url", &server.url(), "--room", "r", "--read-only"]);
    let said = Lines::stderr(&mut child).until("in room r");
    assert!(said.contains("Retry-After"), "{said}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_token_can_come_from_a_file() {
    let server = Server::start(&["--jwt-secret", "file-secret"]);
    let path = std::env::temp_dir().join(format!("wshub-cli-token-{}", std::process::id()));
    std::fs::write(&path, format!("{}\n", token("file-secret"))).unwrap();
    let url = format!("ws://{}/ws", server.addr);
    let mut child = cli(&["--url", &url, "--room", "r", "--token-file", path.to_str().unwrap()]);
    Lines::stderr(&mut child).until("in room r");
    drop(child.stdin.take());
    let status = exit_status_within(&mut child, WAIT);
    let _ = std::fs::remove_file(&path);
    assert_eq!(status.code(), Some(0));
}

/// `wshub_disconnects_total{code="CODE"}` from the server's /metrics.
fn disconnects(server: &Server, code: u16) -> u64 {
    let mut s = std::net::TcpStream::connect(server.addr).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let key = format!("wshub_disconnects_total{{code=\"{code}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&key)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

#[test]
fn ctrl_c_sends_what_was_read_and_closes_1000() {
    let server = Server::start(&[]);
    let url = format!("ws://{}/ws", server.addr);
    let other = Client::connect(&url, Options::default()).unwrap();
    other.join("r").unwrap();
    let mut child = cli(&["--url", &url, "--room", "r"]);
    Lines::stderr(&mut child).until("in room r");
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "one").unwrap();
    writeln!(stdin, "two").unwrap();
    stdin.flush().unwrap();
    let mut seen = Vec::new();
    for want in ["one", "two"] {
        let got = wait_for(&other, &mut seen, |e| match e {
            Event::Message { data, .. } => Some(data.clone()),
            _ => None,
        });
        assert_eq!(got, json!(want));
    }
    let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let status = exit_status_within(&mut child, WAIT);
    drop(stdin);
    assert_eq!(status.code(), Some(130), "{status}");
    let deadline = Instant::now() + WAIT;
    while disconnects(&server, 1000) == 0 {
        assert!(Instant::now() < deadline, "the server never saw a 1000 close");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(disconnects(&server, 1006), 0, "the server saw an unclean end");
}

#[test]
fn verbose_says_why_and_stdout_marks_an_epoch_change() {
    // Connection 1: epoch e1, message 1, then a 1011. Connection 2: the room
    // was reset (epoch e2): the rejoin, then the second join from 0, then a message.
    let server = Fake::start(|stream, ctx| {
        let Some(mut ws) = fake::upgrade(stream) else { return };
        fake::connected(&mut ws, &format!("c{}", ctx.n), 30_000, 1 << 20);
        let msg = |seq: u64, text: &str| json!({"type": "room:message", "payload": {"room": "r", "seq": seq, "from": "9", "data": text}});
        if ctx.n == 0 {
            if fake::ack_join(&mut ws, "e1").is_some() && fake::send(&mut ws, &msg(1, "old")) {
                std::thread::sleep(Duration::from_millis(300));
                fake::close(&mut ws, 1011, "restarting");
                let _ = fake::close_reply(&mut ws, Duration::from_secs(2));
            }
            return;
        }
        let Some(rejoin) = fake::request(&mut ws) else { return };
        let reset = json!({"room": "r", "seq": 0, "members": [], "epoch": "e2", "recovered": false});
        if !fake::ack(&mut ws, &rejoin, reset) {
            return;
        }
        if fake::ack_join(&mut ws, "e2").is_some() && fake::send(&mut ws, &msg(1, "new")) {
            std::thread::sleep(fake::SCRIPT_LIMIT);
        }
    });
    let mut child =
        cli(&["--url", &server.url(), "--room", "r", "--read-only", "--verbose", "--backoff-min-ms", "10"]);
    let (stdout, stderr) = (Lines::of(child.stdout.take().unwrap()), Lines::stderr(&mut child));
    let lines: Vec<Value> =
        (0..3).map(|_| serde_json::from_str(&stdout.next()).expect("a JSON line")).collect();
    let _ = child.kill();
    let _ = child.wait();
    let err = stderr.rest();
    assert_eq!(lines[0]["data"], "old");
    assert_eq!(lines[1], json!({"room": "r", "epoch": "e2", "previousEpoch": "e1"}));
    assert_eq!((lines[2]["data"].clone(), lines[2]["seq"].clone()), (json!("new"), json!(1)));
    assert!(err.contains("connection lost: server error (close code 1011): restarting"), "{err}");
    assert!(err.contains("room r was reset"), "{err}");
}

#[test]
fn the_end_of_input_while_the_server_is_away_waits_boundedly_then_exits_3() {
    let server = refuse_after_first("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
    let url = server.url();
    let mut child =
        cli(&["--url", &url, "--room", "r", "--backoff-min-ms", "200", "--backoff-max-ms", "400"]);
    let stderr = Lines::stderr(&mut child);
    stderr.until("reconnecting");
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "buffered while the server is away").unwrap();
    drop(stdin);
    let started = Instant::now();
    let status = exit_status_within(&mut child, WAIT);
    let took = started.elapsed();
    let rest = stderr.rest();
    // 10 s for the acknowledgements, then it gives up and says so.
    assert_eq!(status.code(), Some(3), "after {took:?}: {rest}");
    assert!(rest.contains("not sent"), "{rest}");
}

#[test]
fn a_trickled_101_at_startup_exits_3_within_the_attempt_deadline() {
    // 128 bytes every 700 ms: each read is quick, the whole 101 takes 28 s.
    let server = Fake::start(|stream, _| {
        let mut head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n".to_vec();
        for n in 0..40 {
            head.extend_from_slice(format!("X-Pad-{n:02}: {}\r\n", "a".repeat(116)).as_bytes());
        }
        fake::trickle(stream, &head, 128, Duration::from_millis(700));
    });
    let started = Instant::now();
    let (status, err) = run_to_exit(&["--url", &server.url(), "--room", "r"]);
    let took = started.elapsed();
    assert_eq!(status.code(), Some(3), "after {took:?}: {err}");
    // The default deadline is 5 s; the rest is slack for a loaded machine.
    assert!(took < Duration::from_secs(15), "{took:?}");
}

#[test]
fn against_a_flapping_server_the_cli_backs_off_further_each_time() {
    let server = Fake::start(fake::flap);
    let mut child = cli(&["--url", &server.url(), "--room", "r", "--read-only", "--backoff-min-ms", "10"]);
    let stderr = Lines::stderr(&mut child);
    let said = (0..4).map(|_| stderr.until("reconnecting")).collect::<String>();
    let _ = child.kill();
    let _ = child.wait();
    let attempts: Vec<&str> = said.lines().filter_map(|l| l.split("(attempt ").nth(1)).collect();
    assert_eq!(attempts, ["1)", "2)", "3)", "4)"], "{said}");
}

/// The first connection is served and cut with 1011; on every later one the
/// rejoin gets `error {code}`, and the connection stays open.
fn refuse_rejoins_with(code: &'static str) -> Fake {
    Fake::start(move |stream, ctx| {
        let Some(mut ws) = fake::upgrade(stream) else { return };
        fake::connected(&mut ws, &format!("c{}", ctx.n), 30_000, 1 << 20);
        if ctx.n == 0 {
            if fake::ack_join(&mut ws, "e").is_some() {
                fake::close(&mut ws, 1011, "restarting");
                let _ = fake::close_reply(&mut ws, Duration::from_secs(2));
            }
            return;
        }
        let Some(join) = fake::request(&mut ws) else { return };
        let error = json!({"type": "error", "id": join["id"], "payload": {"code": code, "message": "no"}});
        fake::send(&mut ws, &error);
        let _ = fake::close_reply(&mut ws, Duration::from_secs(10));
    })
}

#[test]
fn a_rejoin_refused_for_good_exits_4_and_one_refused_for_now_is_tried_again() {
    // Refused by rule: the CLI was left in no room, watching nothing, forever.
    let server = refuse_rejoins_with("forbidden");
    let url = server.url();
    let (status, err) = run_to_exit(&["--url", &url, "--room", "r", "--read-only", "--backoff-min-ms", "10"]);
    assert_eq!(status.code(), Some(4), "{err}");
    assert!(err.contains("rejoining"), "{err}");

    // Refused for now (a join backend down): the room was dropped just the
    // same; now the connection is given up and the room rejoined on the next.
    let server = refuse_rejoins_with("unavailable");
    let url = server.url();
    let mut child = cli(&["--url", &url, "--room", "r", "--read-only", "--backoff-min-ms", "10"]);
    let until = Instant::now() + WAIT;
    while server.accepted.load(std::sync::atomic::Ordering::SeqCst) < 4 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    let running = child.try_wait().expect("try_wait").is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(running, "the CLI ended on a rejoin refused for now");
    assert!(server.accepted.load(std::sync::atomic::Ordering::SeqCst) >= 4, "the rejoin was not tried again");
}

#[test]
fn a_stderr_that_is_gone_does_not_end_the_cli() {
    // Served, cut with 1011 a moment after the reader is gone, then served again.
    let server = Fake::start(|stream, ctx| {
        let Some(mut ws) = fake::upgrade(stream) else { return };
        fake::connected(&mut ws, &format!("c{}", ctx.n), 30_000, 1 << 20);
        if fake::ack_join(&mut ws, "e").is_none() {
            return;
        }
        if ctx.n == 0 {
            std::thread::sleep(Duration::from_millis(500));
            fake::close(&mut ws, 1011, "restarting");
            let _ = fake::close_reply(&mut ws, Duration::from_secs(2));
        } else {
            let _ = ctx.notes.send("back".into());
            let _ = fake::close_reply(&mut ws, Duration::from_secs(10));
        }
    });
    let url = server.url();
    let mut child = cli(&["--url", &url, "--room", "r", "--read-only", "--backoff-min-ms", "10"]);
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut first = String::new();
    let _ = stderr.read_line(&mut first);
    assert!(first.contains("in room"), "{first}");
    drop(stderr); // as `2>&1 | head -1`: the next line meets a broken pipe
    assert_eq!(server.note(WAIT).as_deref(), Some("back"), "no reconnection");
    std::thread::sleep(Duration::from_millis(300));
    let status = child.try_wait().expect("try_wait");
    let _ = child.kill();
    let _ = child.wait();
    // It panicked (exit 101) on the "reconnecting" line.
    assert!(status.is_none(), "the CLI ended: {status:?}");
}

#[test]
fn ctrl_c_is_heard_while_stdout_is_stalled() {
    // 300 messages of 1 KB: more than a pipe holds.
    let server = Fake::start(|stream, ctx| {
        let Some(mut ws) = fake::upgrade(stream) else { return };
        fake::connected(&mut ws, &format!("s{}", ctx.n), 30_000, 1 << 20);
        if fake::ack_join(&mut ws, "e").is_none() {
            return;
        }
        let pad = "p".repeat(1000);
        for seq in 1..=300 {
            let env = json!({"type": "room:message", "payload": {"room": "r", "seq": seq, "from": "7", "data": pad}});
            if !fake::send(&mut ws, &env) {
                return;
            }
        }
        let _ = ctx.notes.send("sent".into());
        let _ = fake::close_reply(&mut ws, Duration::from_secs(10));
    });
    let url = server.url();
    for extra in [&["--read-only"][..], &[][..]] {
        let mut args = vec!["--url", url.as_str(), "--room", "r"];
        args.extend(extra);
        // stdout is a pipe nobody reads: the CLI's writes to it block.
        let mut child = cli(&args);
        let stdout = child.stdout.take();
        Lines::stderr(&mut child).until("in room r");
        std::thread::sleep(Duration::from_millis(500));
        let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
        assert!(kill.success());
        let started = Instant::now();
        let status = exit_status_within(&mut child, WAIT);
        drop(stdout);
        // It never ended: the loop that hears signals was blocked in a write.
        assert_eq!(status.code(), Some(130), "{extra:?}: {status}");
        assert!(started.elapsed() < Duration::from_secs(8), "{extra:?}: took {:?}", started.elapsed());
    }
}

#[test]
fn what_a_server_says_reaches_the_terminal_without_control_characters() {
    let server = Fake::start(|stream, ctx| {
        let Some(mut ws) = fake::upgrade(stream) else { return };
        fake::connected(&mut ws, &format!("c{}\u{1b}[2J", ctx.n), 30_000, 1 << 20);
        if fake::ack_join(&mut ws, "e").is_none() || ctx.n > 0 {
            return;
        }
        let error =
            json!({"type": "error", "payload": {"code": "x\u{1b}[2J", "message": "\u{1b}]0;pwned\u{7}"}});
        fake::send(&mut ws, &error);
        fake::close(&mut ws, 4000, "\u{1b}[31mred\r");
        let _ = fake::close_reply(&mut ws, Duration::from_secs(2));
    });
    let url = server.url();
    let mut child =
        cli(&["--url", &url, "--room", "r", "--read-only", "--verbose", "--backoff-min-ms", "10"]);
    let stderr = Lines::stderr(&mut child);
    let mut seen = String::new();
    while !seen.contains("attempt 1") {
        seen.push_str(&stderr.next());
        seen.push('\n');
    }
    let _ = child.kill();
    let _ = child.wait();
    // A hostile server's error text, close reason and clientId went to the
    // terminal raw: escape sequences that clear it or retitle it.
    assert!(seen.contains("pwned") && seen.contains("red"), "{seen}");
    assert!(!seen.chars().any(|c| c.is_control() && c != '\n'), "{seen:?}");
}
