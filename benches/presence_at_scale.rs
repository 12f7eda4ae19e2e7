//! Joins into one big room, with and without join/leave events.
//!
//! Starts the `wshub` binary with a namespace `quiet:` whose `join_leave` is
//! false, then, for the room `loud:room` (top-level rules: every join sends
//! `presence:join` to every member) and `quiet:room`, opens MEMBERS clients
//! one after another and joins each. It prints, per room, the wall time of
//! all joins, the median and 99th percentile of one join (request to ack),
//! and the data frames the server sent meanwhile (`wshub_messages_out_total`):
//! about MEMBERS²/2 for the loud room, MEMBERS (the acks, plus `connected`)
//! for the quiet one.
//!
//! ```text
//! cargo bench --bench presence_at_scale                 # 10000 members
//! MEMBERS=200 cargo bench --bench presence_at_scale     # a quick check that it runs
//! ```
//!
//! Each member is a real socket (one file descriptor in this process, one in
//! the server's): `ulimit -n` must be above MEMBERS + 100. One thread here
//! reads and drops what members are sent, so none is closed as a slow consumer.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tungstenite::Message;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(members: u64) -> Server {
    let config = std::env::temp_dir().join(format!("wshub-presence-bench-{}.toml", std::process::id()));
    std::fs::write(&config, "[[namespace]]\nprefix = \"quiet:\"\njoin_leave = false\n")
        .expect("write config");
    let limit = (members * 2 + 100).to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wshub"))
        .args(["--bind", "127.0.0.1:0", "--log-level", "warn", "--rate-limit", "0"])
        .args(["--max-connections", &limit, "--max-rooms-per-client", "4"])
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start wshub");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("address line");
    let addr = line.trim().trim_start_matches("wshub listening on ").parse().expect("address");
    Server { child, addr }
}

fn messages_out(addr: SocketAddr) -> u64 {
    let mut s = TcpStream::connect(addr).expect("connect for /metrics");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n").expect("write");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .find_map(|l| l.strip_prefix("wshub_messages_out_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Reads and drops whatever the handed-over sockets receive, until stopped.
fn drainer(sockets: Arc<Mutex<Vec<TcpStream>>>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while !stop.load(Relaxed) {
            let mut read_any = false;
            for s in sockets.lock().expect("sockets").iter_mut() {
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    read_any = true;
                }
            }
            if !read_any {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    })
}

/// Opens `members` clients into `room`; the join latencies.
fn fill(addr: SocketAddr, room: &str, members: u64) -> (Duration, Vec<Duration>) {
    let sockets = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let drain = drainer(sockets.clone(), stop.clone());
    let mut latencies = Vec::new();
    let started = Instant::now();
    for i in 0..members {
        let stream = TcpStream::connect(addr).expect("connect (raise ulimit -n?)");
        stream.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
        let (mut ws, _) = tungstenite::client::client(format!("ws://{addr}/ws"), stream).expect("handshake");
        let _connected = ws.read().expect("connected");
        let join = Instant::now();
        let id = format!("j{i}");
        let request = format!(r#"{{"type":"room:join","id":"{id}","payload":{{"room":"{room}"}}}}"#);
        ws.send(Message::text(request)).expect("send join");
        loop {
            match ws.read().expect("read the ack") {
                Message::Text(t) if t.as_str().contains(&format!(r#""id":"{id}""#)) => break,
                _ => continue,
            }
        }
        latencies.push(join.elapsed());
        let raw = ws.get_ref().try_clone().expect("clone");
        raw.set_nonblocking(true).expect("nonblocking");
        sockets.lock().expect("sockets").push(raw);
        // The clone keeps the connection open: one descriptor per member
        // here, so 10,000 members fit a `ulimit -n` of 20,000.
        drop(ws);
    }
    let total = started.elapsed();
    stop.store(true, Relaxed);
    let _ = drain.join();
    latencies.sort();
    (total, latencies)
}

fn main() {
    let members = env("MEMBERS", 10_000);
    println!("presence at scale: {members} members per room, joined one after another");
    println!(
        "{:<12} {:>10} {:>12} {:>12} {:>16}",
        "room", "all joins", "join p50", "join p99", "frames sent"
    );
    for room in ["loud:room", "quiet:room"] {
        let server = start(members);
        let before = messages_out(server.addr);
        let (total, lat) = fill(server.addr, room, members);
        let sent = messages_out(server.addr).saturating_sub(before);
        let at = |q: f64| lat.get(((lat.len() as f64 - 1.0) * q) as usize).copied().unwrap_or_default();
        println!(
            "{room:<12} {:>9.2}s {:>10.2}ms {:>10.2}ms {sent:>16}",
            total.as_secs_f64(),
            at(0.5).as_secs_f64() * 1e3,
            at(0.99).as_secs_f64() * 1e3
        );
    }
}
