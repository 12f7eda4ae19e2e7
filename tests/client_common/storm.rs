//! The reconnect storms, shared by `benches/reconnect_storm.rs` (2000 clients)
//! and `tests/client_reconnect_storm_all_come_back.rs` (smaller ones): a
//! restart of the real server ([`run`]), and a flapping server that accepts,
//! acks the join and closes 1011 every connection ([`flap`]).
#![allow(dead_code)]

#[path = "fake.rs"]
mod fake;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wshub::client::{Backoff, Client, Event, Options};

/// What to run.
#[derive(Debug, Clone)]
pub struct Params {
    pub clients: usize,
    /// Source addresses 127.0.0.1 ..= 127.0.0.ADDRS.
    pub addrs: u8,
    pub min_ms: u64,
    pub max_ms: u64,
    /// How long the server stays down.
    pub down_ms: u64,
    pub server: std::path::PathBuf,
}

/// What happened.
pub struct Report {
    pub params: Params,
    pub clients: usize,
    /// Clients whose `Connected` came after the restart.
    pub back: usize,
    /// Time from the restart to the last client's `Connected`.
    pub last_back: Duration,
    /// Every (attempt, delay) drawn after the cut, all clients together.
    pub delays: Vec<(u32, Duration)>,
    /// When each client was back, from the restart.
    pub arrivals: Vec<Duration>,
    /// The attempt number on which each client got back.
    pub winning_attempts: Vec<u32>,
    /// Handshakes the new server refused or overflowed (from /metrics).
    pub refused: u64,
    pub errors: usize,
    pub over_cap: usize,
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(path: &std::path::Path, bind: SocketAddr) -> Server {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut child = Command::new(path)
                .args(["--bind", &bind.to_string(), "--log-level", "error"])
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn wshub");
            let mut line = String::new();
            let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
            if let Some(a) = line.trim().strip_prefix("wshub listening on ") {
                return Server { child, addr: a.parse().unwrap() };
            }
            let _ = child.kill();
            let _ = child.wait();
            assert!(Instant::now() < deadline, "wshub did not start on {bind}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "wshub did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sum of the refusal counters of /metrics.
    fn refusals(&self) -> u64 {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body.lines()
            .filter(|l| {
                l.starts_with("wshub_handshake_rejects_total{")
                    || l.starts_with("wshub_handshake_overflow_total{")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs one storm.
pub fn run(p: &Params) -> Report {
    let server = Server::start(&p.server, "127.0.0.1:0".parse().unwrap());
    let addr = server.addr;
    let url = format!("ws://{addr}/ws");
    let backoff = Backoff { min: Duration::from_millis(p.min_ms), max: Duration::from_millis(p.max_ms) };
    let mut clients = Vec::with_capacity(p.clients);
    for i in 0..p.clients {
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % p.addrs.max(1) as usize) as u8));
        let options = Options::default()
            .backoff(backoff.min, backoff.max)
            .local_addr(ip)
            .request_timeout(Duration::from_secs(10))
            .event_capacity(256);
        let c = Client::connect(&url, options).unwrap_or_else(|e| panic!("client {i}: {e}"));
        // 20 clients a room: rejoins are exercised without a presence flood.
        c.join(&format!("storm-{}", i / 20)).expect("join");
        clients.push(c);
    }
    // Drain what the joins produced.
    for c in &clients {
        while c.events().try_recv().is_ok() {}
    }
    server.stop();
    std::thread::sleep(Duration::from_millis(p.down_ms));
    let restarted = Instant::now();
    let server = Server::start(&p.server, addr);

    let mut back_at: Vec<Option<Duration>> = vec![None; clients.len()];
    let mut last_attempt = vec![0u32; clients.len()];
    let mut winning = vec![0u32; clients.len()];
    let mut delays = Vec::new();
    let mut errors = 0;
    // Everyone should be back within the down time plus a few full caps.
    let limit = Duration::from_millis(p.down_ms + 4 * p.max_ms + 10_000);
    let deadline = restarted + limit;
    while back_at.iter().any(Option::is_none) && Instant::now() < deadline {
        let mut idle = true;
        for (i, c) in clients.iter().enumerate() {
            while let Ok(event) = c.events().try_recv() {
                idle = false;
                match event {
                    Event::Reconnecting { attempt, delay } => {
                        delays.push((attempt, delay));
                        last_attempt[i] = attempt;
                    }
                    Event::Connected { .. } => {
                        back_at[i] = Some(restarted.elapsed());
                        winning[i] = last_attempt[i];
                    }
                    Event::Error { .. } | Event::Closed { .. } => errors += 1,
                    _ => {}
                }
            }
        }
        if idle {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let refused = server.refusals();
    let over_cap = delays.iter().filter(|(a, d)| *d > backoff.cap(*a)).count();
    let report = Report {
        params: p.clone(),
        clients: clients.len(),
        back: back_at.iter().filter(|b| b.is_some()).count(),
        last_back: back_at.iter().flatten().max().copied().unwrap_or_default(),
        delays,
        arrivals: back_at.iter().flatten().copied().collect(),
        winning_attempts: winning,
        refused,
        errors,
        over_cap,
    };
    // Close in parallel: each close waits for its server's close reply.
    std::thread::scope(|s| {
        for chunk in clients.chunks(100) {
            s.spawn(move || chunk.iter().for_each(Client::close));
        }
    });
    drop(server);
    report
}

impl Report {
    pub fn all_back(&self) -> bool {
        self.back == self.clients && self.errors == 0 && self.over_cap == 0
    }

    /// The summary and the histogram, as text.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let p = &self.params;
        out += &format!(
            "clients {} over {} source addresses; backoff {} ms .. {} ms, full jitter; server down {} ms\n",
            self.clients, p.addrs, p.min_ms, p.max_ms, p.down_ms
        );
        out += &format!(
            "back: {}/{} in {:.2} s after the restart; refused handshakes: {}; errors: {}; delays over their cap: {}\n",
            self.back,
            self.clients,
            self.last_back.as_secs_f64(),
            self.refused,
            self.errors,
            self.over_cap
        );
        let mut by_attempt = std::collections::BTreeMap::new();
        for a in &self.winning_attempts {
            *by_attempt.entry(*a).or_insert(0usize) += 1;
        }
        out += &format!("attempt that got each client back: {by_attempt:?}\n");
        out += &histogram("reconnect delays drawn (all attempts)", &self.delays, p.max_ms);
        let arrivals: Vec<_> = self.arrivals.iter().map(|d| (0, *d)).collect();
        let span = self.last_back.as_millis() as u64 + 1;
        out += &histogram("clients back, by time since the restart", &arrivals, span);
        let firsts: Vec<_> = self.delays.iter().filter(|(a, _)| *a == 1).copied().collect();
        out += &histogram("first-attempt delays (cap = min)", &firsts, p.min_ms);
        out
    }
}

fn histogram(title: &str, delays: &[(u32, Duration)], span_ms: u64) -> String {
    const BUCKETS: u64 = 20;
    let width = (span_ms / BUCKETS).max(1);
    let mut counts = [0usize; BUCKETS as usize + 1];
    for (_, d) in delays {
        let b = (d.as_millis() as u64 / width).min(BUCKETS) as usize;
        counts[b] += 1;
    }
    let most = counts.iter().copied().max().unwrap_or(1).max(1);
    let mut out = format!("{title}: {} delays, {width} ms buckets\n", delays.len());
    for (i, n) in counts.iter().enumerate() {
        if i == BUCKETS as usize && *n == 0 {
            continue;
        }
        let bar = "#".repeat((n * 50).div_ceil(most));
        out += &format!("  {:>6} ms {:>6} {bar}\n", i as u64 * width, n);
    }
    out
}

/// What to run against the flapping server.
#[derive(Debug, Clone)]
pub struct FlapParams {
    pub clients: usize,
    /// Source addresses 127.0.0.1 ..= 127.0.0.ADDRS.
    pub addrs: u8,
    pub min_ms: u64,
    pub max_ms: u64,
    /// How long the clients are left against it.
    pub secs: u64,
}

/// What the flapping server saw.
pub struct FlapReport {
    pub params: FlapParams,
    /// Connections the server accepted during the window (the clients' first ones excluded).
    pub connections: usize,
    /// Per second of the window, the connections accepted.
    pub per_second: Vec<usize>,
    /// Reconnects whose attempt number was not the previous one plus 1.
    pub resets: usize,
    /// Delays longer than their attempt's cap.
    pub over_cap: usize,
    /// Reconnects reported, all clients together.
    pub reconnects: usize,
    /// The connections the schedule gives all clients in the window when
    /// every draw is the mean one (half the cap).
    pub expected: f64,
    pub highest_attempt: u32,
}

/// Runs `clients` clients against a server that closes every connection with
/// 1011 right after acking the join, for `secs` seconds.
pub fn flap(p: &FlapParams) -> FlapReport {
    let server = fake::Fake::start(fake::flap);
    let url = server.url();
    let backoff = Backoff { min: Duration::from_millis(p.min_ms), max: Duration::from_millis(p.max_ms) };
    let mut clients = Vec::with_capacity(p.clients);
    for i in 0..p.clients {
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % p.addrs.max(1) as usize) as u8));
        let options = Options::default()
            .backoff(backoff.min, backoff.max)
            .local_addr(ip)
            .request_timeout(Duration::from_secs(10))
            .event_capacity(256);
        let c = Client::connect(&url, options).unwrap_or_else(|e| panic!("client {i}: {e}"));
        // The ack may lose the race with the close; the rejoins go on either way.
        let _ = c.join("flap");
        clients.push(c);
    }
    let started = Instant::now();
    let accepted_at_start = server.accepted.load(std::sync::atomic::Ordering::SeqCst);
    let mut last_attempt = vec![0u32; clients.len()];
    let (mut resets, mut over_cap, mut reconnects, mut highest) = (0, 0, 0, 0);
    let mut per_second = vec![0usize; p.secs as usize];
    let mut seen = accepted_at_start;
    let window = Duration::from_secs(p.secs);
    while started.elapsed() < window {
        let mut idle = true;
        for (i, c) in clients.iter().enumerate() {
            while let Ok(event) = c.events().try_recv() {
                idle = false;
                if let Event::Reconnecting { attempt, delay } = event {
                    reconnects += 1;
                    if attempt != last_attempt[i] + 1 {
                        resets += 1;
                    }
                    if delay > backoff.cap(attempt) {
                        over_cap += 1;
                    }
                    last_attempt[i] = attempt;
                    highest = highest.max(attempt);
                }
            }
        }
        let now = server.accepted.load(std::sync::atomic::Ordering::SeqCst);
        let second = (started.elapsed().as_secs() as usize).min(per_second.len().saturating_sub(1));
        if let Some(slot) = per_second.get_mut(second) {
            *slot += now - seen;
        }
        seen = now;
        if idle {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let connections = seen - accepted_at_start;
    // At the mean draw (cap / 2) a client waits sum(cap(n) / 2) before attempt n.
    let mut expected_per_client = 0.0;
    let mut waited = 0.0;
    for n in 1.. {
        waited += backoff.cap(n).as_secs_f64() / 2.0;
        if waited > window.as_secs_f64() {
            break;
        }
        expected_per_client += 1.0;
    }
    std::thread::scope(|s| {
        for chunk in clients.chunks(100) {
            s.spawn(move || chunk.iter().for_each(Client::close));
        }
    });
    FlapReport {
        params: p.clone(),
        connections,
        per_second,
        resets,
        over_cap,
        reconnects,
        expected: expected_per_client * p.clients as f64,
        highest_attempt: highest,
    }
}

impl FlapReport {
    /// Whether the storm kept to the schedule: no counter started again, no delay over its cap.
    pub fn within_schedule(&self) -> bool {
        self.resets == 0 && self.over_cap == 0
    }

    /// The summary and connections per second, as text.
    pub fn text(&self) -> String {
        let p = &self.params;
        let mut out = format!(
            "flapping server (accept, ack the join, close 1011): {} clients over {} source addresses; backoff {} ms .. {} ms; {} s\n",
            p.clients, p.addrs, p.min_ms, p.max_ms, p.secs
        );
        out += &format!(
            "connections accepted: {} ({:.0} expected at the mean draw); reconnects: {}; highest attempt: {}; counters started again: {}; delays over their cap: {}\n",
            self.connections, self.expected, self.reconnects, self.highest_attempt, self.resets, self.over_cap
        );
        let most = self.per_second.iter().copied().max().unwrap_or(1).max(1);
        out += "connections per second:\n";
        for (s, n) in self.per_second.iter().enumerate() {
            out += &format!("  {:>3} s {:>6} {}\n", s, n, "#".repeat((n * 50).div_ceil(most)));
        }
        out
    }
}
