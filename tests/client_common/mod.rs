//! Test plumbing for the client tests: the real `wshub` binary started on a
//! chosen port (so it can be stopped and started again on the same one), a
//! TCP proxy that can cut, refuse or swallow, and bounded event waits.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
#[path = "../child_common/mod.rs"]
pub mod child_common;
pub mod fake;

use wshub::client::{Client, Event};

/// The longest any single wait in these tests may take.
pub const WAIT: Duration = Duration::from_secs(20);

/// A running `wshub` process, killed by its PID on drop.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Server {
    /// `wshub --bind 127.0.0.1:0 ARGS`.
    pub fn start(args: &[&str]) -> Server {
        Server::start_at("127.0.0.1:0".parse().unwrap(), args).expect("start wshub")
    }

    /// `wshub --bind ADDR ARGS`; retried for a while when the port is still taken.
    pub fn start_at(addr: SocketAddr, args: &[&str]) -> Option<Server> {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            let mut child = Command::new(env!("CARGO_BIN_EXE_wshub"))
                .args(["--bind", &addr.to_string(), "--log-level", "error"])
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn wshub");
            let mut line = String::new();
            let _ = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
            if let Some(a) = line.trim().strip_prefix("wshub listening on ") {
                return Some(Server { child, addr: a.parse().expect("address") });
            }
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// SIGTERM (clients get 1001) and waits for the exit.
    pub fn stop(mut self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        assert!(status.expect("kill").success());
        let deadline = Instant::now() + WAIT;
        while self.child.try_wait().expect("try_wait").is_none() {
            assert!(Instant::now() < deadline, "wshub did not stop");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the proxy does with new connections and with bytes from the server.
#[derive(Default)]
struct ProxyState {
    /// New connections are closed at once.
    refuse: bool,
    /// Bytes from the server to the client are dropped (the client sees nothing).
    swallow_down: bool,
    /// Every open pair, to cut them.
    open: Vec<(TcpStream, TcpStream)>,
}

/// A TCP proxy on 127.0.0.1 port 0 in front of `upstream`.
pub struct Proxy {
    pub addr: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, stp) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stp.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = conn else { continue };
                if st.lock().refuse {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                st.lock().open.push((client.try_clone().unwrap(), server.try_clone().unwrap()));
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || pump(client, server, None));
                let st2 = st.clone();
                std::thread::spawn(move || pump(s2, c2, Some(st2)));
            }
        });
        Proxy { addr, state, stop }
    }

    pub fn set_refuse(&self, on: bool) {
        self.state.lock().refuse = on;
    }

    pub fn set_swallow_down(&self, on: bool) {
        self.state.lock().swallow_down = on;
    }

    /// Cuts every open connection (both sides see the TCP connection end).
    pub fn cut(&self) {
        for (a, b) in self.state.lock().open.drain(..) {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut();
        let _ = TcpStream::connect(self.addr);
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, down: Option<Arc<Mutex<ProxyState>>>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if down.as_ref().is_some_and(|s| s.lock().swallow_down) {
            continue;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// Waits for the next event matching `pick`, keeping every event read on the
/// way in `seen`; panics after [`WAIT`].
pub fn wait_for<T>(client: &Client, seen: &mut Vec<Event>, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = client
            .events()
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no matching event within {WAIT:?}; saw {seen:#?}"));
        let hit = pick(&event);
        seen.push(event);
        if let Some(t) = hit {
            return t;
        }
    }
}

/// A counter's value on the server's `/metrics` (0 when it is not there).
pub fn metric(addr: SocketAddr, name: &str) -> u64 {
    let mut s = TcpStream::connect(addr).expect("connect for /metrics");
    s.set_read_timeout(Some(WAIT)).expect("a read timeout");
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("the request");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// [`metric`] once it reaches `want` (a counter bumped after its frame was
/// sent may lag the frame), or its value after [`WAIT`].
pub fn metric_reaching(addr: SocketAddr, name: &str, want: u64) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let value = metric(addr, name);
        if value >= want || Instant::now() >= deadline {
            return value;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The events of `seen` that are messages of `room`, as (seq, data).
pub fn messages(seen: &[Event], room: &str) -> Vec<(u64, serde_json::Value)> {
    seen.iter()
        .filter_map(|e| match e {
            Event::Message { room: r, seq, data, .. } if r == room => Some((*seq, data.clone())),
            _ => None,
        })
        .collect()
}

/// Waits for a child (a node script that bounds its own run) to exit; past
/// `limit` it is killed, by its PID through `Child`.
pub fn exit_status_within(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    child_common::wait_or_kill(child, limit).unwrap_or_else(|killed| killed)
}
