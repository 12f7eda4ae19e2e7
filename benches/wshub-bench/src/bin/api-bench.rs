//! api-bench: the backend's paths into wshub, measured against a running
//! server (started with `--api-key`).
//!
//! - `publish`: `--workers` threads each send `POST /api/publish` requests
//!   one after another (a new connection each, as the server closes after
//!   every response) for `--secs`; requests/s and latency.
//! - `sse`: `--streams` `GET /sse` streams on one room, read by one mio event
//!   loop, while one WebSocket client publishes into the room flat out
//!   (`--window` publishes in flight, acked); events delivered/s to the
//!   streams, and loss (events a stream should have got and did not).
//!
//! One JSON line on stdout per run, a readable summary on stderr.
//!
//!   api-bench publish --addr 127.0.0.1:9001 --key K [--workers 4] [--secs 5] [--members 0]
//!   api-bench sse --addr 127.0.0.1:9001 [--streams 1000] [--secs 5] [--window 64] [--size 100]

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};
use serde_json::json;

fn arg<T: std::str::FromStr>(args: &HashMap<String, String>, name: &str, default: T) -> T {
    args.get(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let scenario = argv.first().cloned().unwrap_or_default();
    let mut args = HashMap::new();
    for pair in argv[1.min(argv.len())..].chunks(2) {
        if let [k, v] = pair {
            args.insert(k.trim_start_matches("--").to_owned(), v.clone());
        }
    }
    let addr: SocketAddr = arg(&args, "addr", "127.0.0.1:9001".parse().unwrap());
    match scenario.as_str() {
        "publish" => publish(&args, addr),
        "sse" => sse(&args, addr),
        _ => {
            eprintln!("usage: api-bench publish|sse --addr HOST:PORT [options] (see the file's header)");
            std::process::exit(2);
        }
    }
}

/// `POST /api/publish` requests/s from `--workers` sequential clients.
fn publish(args: &HashMap<String, String>, addr: SocketAddr) {
    let key: String = arg(&args.clone(), "key", String::from("bench"));
    let workers: usize = arg(args, "workers", 4);
    let secs: u64 = arg(args, "secs", 5);
    let members: usize = arg(args, "members", 0);
    let size: usize = arg(args, "size", 100);
    // Members read what is published, so the fan-out is part of the cost.
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..members {
        let (mut ws, _) = ws_join(addr, "api-bench");
        let stop = stop.clone();
        readers.push(std::thread::spawn(move || {
            let _ = ws.get_mut().set_read_timeout(Some(Duration::from_millis(200)));
            while !stop.load(Relaxed) {
                let _ = ws.read();
            }
        }));
    }
    let body = json!({"room": "api-bench", "data": "x".repeat(size)}).to_string();
    let request = format!(
        "POST /api/publish HTTP/1.1\r\nHost: bench\r\nAuthorization: apikey {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let threads: Vec<_> = (0..workers)
        .map(|_| {
            let (request, latencies, errors) = (request.clone(), latencies.clone(), errors.clone());
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                let mut buf = Vec::with_capacity(512);
                while Instant::now() < end {
                    let t = Instant::now();
                    let ok = TcpStream::connect(addr)
                        .and_then(|mut s| {
                            s.set_nodelay(true)?;
                            s.write_all(request.as_bytes())?;
                            buf.clear();
                            s.read_to_end(&mut buf)
                        })
                        .map(|_| buf.starts_with(b"HTTP/1.1 200"))
                        .unwrap_or(false);
                    if ok {
                        mine.push(t.elapsed());
                    } else {
                        errors.fetch_add(1, Relaxed);
                    }
                }
                latencies.lock().unwrap().extend(mine);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Relaxed);
    for r in readers {
        let _ = r.join();
    }
    let mut l = latencies.lock().unwrap().clone();
    l.sort_unstable();
    let q = |p: f64| {
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let rps = l.len() as f64 / elapsed;
    let errors = errors.load(Relaxed);
    eprintln!(
        "api publish: {workers} workers, {members} members, {size} B: {rps:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {errors} errors",
        q(0.5),
        q(0.99)
    );
    println!(
        "{}",
        json!({"scenario": "api-publish", "workers": workers, "members": members, "size": size, "secs": elapsed,
               "requests": l.len(), "requests_per_sec": rps.round(), "p50_ms": q(0.5), "p99_ms": q(0.99),
               "errors": errors, "ok": errors == 0})
    );
}

type Ws = tungstenite::WebSocket<TcpStream>;

/// A WebSocket client joined to `room` (its `connected` frame and the join's
/// ack read).
fn ws_join(addr: SocketAddr, room: &str) -> (Ws, u64) {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).unwrap();
    let (mut ws, _) = tungstenite::client::client(format!("ws://{addr}/ws"), stream).expect("handshake");
    let join = json!({"type": "room:join", "id": "j", "payload": {"room": room}}).to_string();
    ws.send(tungstenite::Message::text(join)).unwrap();
    loop {
        let m = ws.read().expect("join ack");
        if let Ok(text) = m.to_text() {
            if text.contains("\"id\":\"j\"") {
                let v: serde_json::Value = serde_json::from_str(text).unwrap();
                return (ws, v["payload"]["seq"].as_u64().unwrap_or(0));
            }
        }
    }
}

/// Counts `event: room:message` lines across reads (a match may span two).
struct Counter {
    carry: Vec<u8>,
    events: u64,
}

const NEEDLE: &[u8] = b"\nevent: room:message\n";

impl Counter {
    fn feed(&mut self, bytes: &[u8]) {
        self.carry.extend_from_slice(bytes);
        let hay = &self.carry;
        let mut i = 0;
        while i + NEEDLE.len() <= hay.len() {
            if &hay[i..i + NEEDLE.len()] == NEEDLE {
                self.events += 1;
                i += NEEDLE.len();
            } else {
                i += 1;
            }
        }
        let keep = NEEDLE.len() - 1;
        let cut = self.carry.len().saturating_sub(keep);
        self.carry.drain(..cut);
    }
}

/// SSE fan-out: `--streams` streams, one WebSocket publisher flat out.
fn sse(args: &HashMap<String, String>, addr: SocketAddr) {
    let streams: usize = arg(args, "streams", 1000);
    let secs: u64 = arg(args, "secs", 5);
    let window: usize = arg(args, "window", 64);
    let size: usize = arg(args, "size", 100);
    let room = "sse-bench";
    let mut poll = Poll::new().unwrap();
    let mut conns = Vec::with_capacity(streams);
    for i in 0..streams {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.write_all(format!("GET /sse?room={room} HTTP/1.1\r\nHost: bench\r\n\r\n").as_bytes()).unwrap();
        s.set_nonblocking(true).unwrap();
        let mut s = MioStream::from_std(s);
        poll.registry().register(&mut s, Token(i), Interest::READABLE).unwrap();
        conns.push((s, Counter { carry: Vec::new(), events: 0 }));
    }
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    let mut read_all = |poll: &mut Poll, conns: &mut Vec<(MioStream, Counter)>, wait: Duration| -> bool {
        poll.poll(&mut events, Some(wait)).unwrap();
        let mut closed = false;
        for e in events.iter() {
            let (s, c) = &mut conns[e.token().0];
            loop {
                match s.read(&mut buf) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(n) => c.feed(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
        }
        closed
    };
    // Every stream's `connected` first (read, not counted).
    let settle = Instant::now() + Duration::from_secs(10);
    while Instant::now() < settle {
        read_all(&mut poll, &mut conns, Duration::from_millis(100));
        if conns.iter().all(|(_, c)| !c.carry.is_empty()) {
            break;
        }
    }
    let (publisher, first_seq) = ws_join(addr, room);
    let published = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let pub_thread = {
        let (published, done) = (published.clone(), done.clone());
        let data = "x".repeat(size);
        std::thread::spawn(move || {
            let mut ws = publisher;
            let end = Instant::now() + Duration::from_secs(secs);
            let mut next = 0u64;
            let mut acked = 0u64;
            while Instant::now() < end {
                while next - acked < window as u64 {
                    let m = json!({"type": "room:publish", "id": next.to_string(), "payload": {"room": room, "data": data}});
                    ws.write(tungstenite::Message::text(m.to_string())).unwrap();
                    next += 1;
                }
                ws.flush().unwrap();
                if let Ok(m) = ws.read() {
                    if m.to_text().is_ok_and(|t| t.starts_with("{\"type\":\"ack\"")) {
                        acked += 1;
                    }
                }
            }
            while acked < next {
                if let Ok(m) = ws.read() {
                    if m.to_text().is_ok_and(|t| t.starts_with("{\"type\":\"ack\"")) {
                        acked += 1;
                    }
                }
            }
            published.store(acked, Relaxed);
            done.store(true, Relaxed);
        })
    };
    let started = Instant::now();
    let mut closed = 0;
    while !done.load(Relaxed) {
        closed += usize::from(read_all(&mut poll, &mut conns, Duration::from_millis(50)));
    }
    let publish_secs = started.elapsed().as_secs_f64();
    pub_thread.join().unwrap();
    let published = published.load(Relaxed);
    let expected = published * streams as u64;
    // Drain: at most 10 s for what is still in flight.
    let drain_end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < drain_end && conns.iter().map(|(_, c)| c.events).sum::<u64>() < expected {
        closed += usize::from(read_all(&mut poll, &mut conns, Duration::from_millis(50)));
    }
    let all_secs = started.elapsed().as_secs_f64();
    let delivered: u64 = conns.iter().map(|(_, c)| c.events).sum();
    let rate = delivered as f64 / all_secs;
    eprintln!(
        "sse fan-out: {streams} streams, {size} B: {published} published ({:.0}/s) from seq {first_seq}, \
         {delivered} of {expected} delivered in {all_secs:.1} s: {rate:.0} delivered/s; {closed} closed",
        published as f64 / publish_secs
    );
    println!(
        "{}",
        json!({"scenario": "sse-fanout", "streams": streams, "size": size, "published": published,
               "publish_per_sec": (published as f64 / publish_secs).round(), "delivered": delivered,
               "expected": expected, "delivered_per_sec": rate.round(), "secs": all_secs,
               "ok": delivered == expected && closed == 0})
    );
}
