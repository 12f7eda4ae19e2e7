//! wshub-bench: a load generator for wshub.
//!
//! One process, one thread, one mio event loop holding every client
//! connection. Scenarios: `conns` (idle connections and the server's cost per
//! connection), `fanout` (room broadcast throughput, loss and latency), `echo`
//! (sequential ping round trips). Each prints a readable summary on stderr and
//! one JSON line on stdout that starts with `{"scenario":`.

mod conns;
mod echo;
mod fanout;
mod measure;
mod net;
mod proto;
mod tls;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::net::{Ev, Net, Target};

const USAGE: &str = "\
usage: wshub-bench <scenario> [options]

scenarios:
  conns   --pid PID [-n 1000] [--hold 2]
          open N idle connections; handshakes/s and the server's RSS, threads
          and fds per connection (needs the server's pid)
  fanout  [--subscribers 1000] [--rooms 1] [--size 100] [--rate 0] [--secs 10]
          [--window 64] [--drain 5] [--drain-max 60] [--also-url ws://HOST:PORT/ws]
          [--payload bytes|chat] [--deflate true]
          subscribers join rooms bench-0..K-1, one publisher per room publishes
          (--rate msgs/s per room, 0 = flat out with --window publishes in
          flight); delivered msgs/s, loss, latency, publish→ack latency,
          slow-consumer closes, wire bytes per delivered message.
          --payload chat: data is chat-like JSON of about --size bytes;
          --deflate true: offer permessage-deflate. --also-url: another node of the same cluster;
          connections alternate between the two (the publisher on --url)
  echo    [--clients 1] [--trips 1000]
          each client does sequential ping requests; RTT and requests/s

common options:
  --url ws://127.0.0.1:9001/ws   the server's WebSocket endpoint (wss://HOST:PORT/ws for TLS)
  --tls-ca FILE                  wss:// only: the CA certificate (PEM) the server's chains to
  --pid PID                      the server's pid, for its CPU/RSS/threads/fds
  --label TEXT                   copied into the JSON line
  --timeout SECS (10)            for each connect+handshake, reply and close
  --concurrency N (256)          handshakes in flight while connecting; keep it
                                 <= the server's listen backlog (4096 for wshub)
                                 for honest handshakes/s

see benches/wshub-bench/README.md for what is measured and the JSON fields.

exit status: 0 ok, 1 the run finished but found loss/errors/closes (ok=false),
2 usage or setup error.
";

/// Options shared by every scenario.
pub struct Common {
    pub url: String,
    pub target: Target,
    pub pid: Option<u32>,
    pub label: String,
    pub timeout: Duration,
}

/// `--key value` options, checked off as they are read.
pub struct Opts {
    map: BTreeMap<String, String>,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Opts, String> {
        let mut map = BTreeMap::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let key = if a == "-n" {
                "n".to_string()
            } else if let Some(k) = a.strip_prefix("--") {
                k.to_string()
            } else {
                return Err(format!("unexpected argument {a:?}"));
            };
            let (key, value) = match key.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => {
                    let v = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
                    (key, v.clone())
                }
            };
            if map.insert(key.clone(), value).is_some() {
                return Err(format!("--{key} given twice"));
            }
        }
        Ok(Opts { map })
    }

    pub fn get<T: FromStr>(&mut self, key: &str, default: T) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        match self.map.remove(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e| format!("--{key} {v:?}: {e}")),
        }
    }

    pub fn opt<T: FromStr>(&mut self, key: &str) -> Result<Option<T>, String>
    where
        T::Err: std::fmt::Display,
    {
        match self.map.remove(key) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|e| format!("--{key} {v:?}: {e}")),
        }
    }

    /// Errors on anything not read.
    pub fn finish(self) -> Result<(), String> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(k) => Err(format!("unknown option --{k} for this scenario")),
        }
    }
}

/// The JSON line, fields in insertion order (`scenario` first).
pub struct Report {
    fields: Vec<(String, Value)>,
    pub ok: bool,
    pub problems: Vec<String>,
}

impl Report {
    pub fn new(scenario: &str, common: &Common) -> Report {
        let mut r = Report { fields: Vec::new(), ok: true, problems: Vec::new() };
        r.put("scenario", json!(scenario));
        r.put("label", json!(common.label));
        r.put("url", json!(common.url));
        r
    }

    pub fn put(&mut self, key: &str, value: Value) {
        self.fields.push((key.to_string(), value));
    }

    /// Marks the run as not ok, with a reason for stderr.
    pub fn problem(&mut self, msg: String) {
        self.ok = false;
        self.problems.push(msg);
    }

    pub fn line(&self) -> String {
        let body: Vec<String> =
            self.fields.iter().map(|(k, v)| format!("{}:{}", Value::String(k.clone()), v)).collect();
        format!("{{{}}}", body.join(","))
    }

    /// Frame and byte counts of the whole run, and the server pings answered.
    pub fn put_net(&mut self, net: &Net) {
        let s = net.stats;
        self.put(
            "net",
            json!({"frames_in": s.frames_in, "frames_out": s.frames_out, "bytes_in": s.bytes_in,
                   "bytes_out": s.bytes_out, "pings_answered": s.pings_answered,
                   "compressed_in": s.compressed_in, "compressed_wire_bytes_in": s.compressed_wire_bytes_in}),
        );
    }

    /// Reports failed close handshakes as a problem, then adds the common
    /// trailing fields.
    pub fn finish_common(&mut self, cpu: measure::CpuUse, closing: &Closing) {
        if closing.unclean > 0 {
            self.problem(format!(
                "{} close handshakes failed: {}",
                closing.unclean,
                closing.first_error.as_deref().unwrap_or("-")
            ));
        }
        self.put("gen_cpu_pct", json!(cpu.gen_pct));
        self.put("server_cpu_pct", json!(cpu.server_pct));
        self.put("gen_maxrss_kb", json!(measure::gen_maxrss_kb()));
        let ok = self.ok;
        self.put("ok", json!(ok));
    }
}

/// Outcome of opening connections.
pub struct Opened {
    /// Connections that got their `connected` frame and are still open.
    pub tokens: Vec<usize>,
    pub elapsed: Duration,
    pub errors: u64,
    pub first_error: Option<String>,
}

/// Opens `n` connections, at most `concurrency` handshaking at once, and waits
/// for each one's `connected` frame. With `stop_on_error` no new connection is
/// started after the first failure.
pub fn open_all(
    net: &mut Net,
    n: usize,
    concurrency: usize,
    timeout: Duration,
    stop_on_error: bool,
) -> Result<Opened, String> {
    let start = Instant::now();
    let mut pending: Vec<bool> = Vec::new();
    let mut done: Vec<usize> = Vec::with_capacity(n);
    let (mut started, mut inflight, mut errors) = (0usize, 0usize, 0u64);
    let mut first_error: Option<String> = None;
    let mut stopped = false;
    let mut last_report = Instant::now();
    while (!stopped && started < n) || inflight > 0 {
        while !stopped && started < n && inflight < concurrency.max(1) {
            match net.open() {
                Ok(tok) => {
                    if pending.len() <= tok {
                        pending.resize(tok + 1, false);
                    }
                    pending[tok] = true;
                    started += 1;
                    inflight += 1;
                }
                Err(e) => {
                    errors += 1;
                    first_error
                        .get_or_insert_with(|| format!("connection #{}: socket/connect: {e}", started + 1));
                    stopped = true;
                }
            }
        }
        net.turn(Duration::from_millis(50), &mut |net, tok, ev| match ev {
            Ev::Upgraded => net.set_deadline(tok, Some((Instant::now() + timeout, "the `connected` frame"))),
            Ev::Text(t) => {
                if pending.get(tok).copied().unwrap_or(false) {
                    match proto::parse(t) {
                        Ok(env) if env.ty == "connected" => {
                            pending[tok] = false;
                            inflight -= 1;
                            net.set_deadline(tok, None);
                            done.push(tok);
                        }
                        Ok(env) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| {
                                format!("first frame is {:?}, not `connected`", env.ty)
                            });
                        }
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(e);
                        }
                    }
                }
            }
            Ev::Binary(_) => {}
            Ev::Closed { code, reason, .. } => {
                if pending.get(tok).copied().unwrap_or(false) {
                    pending[tok] = false;
                    inflight -= 1;
                }
                errors += 1;
                first_error
                    .get_or_insert_with(|| format!("server closed a connection: code {code:?} {reason:?}"));
            }
            Ev::Failed(msg) => {
                if pending.get(tok).copied().unwrap_or(false) {
                    pending[tok] = false;
                    inflight -= 1;
                }
                errors += 1;
                first_error.get_or_insert(msg);
            }
        })
        .map_err(|e| format!("poll: {e}"))?;
        if errors > 0 && stop_on_error {
            stopped = true;
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!("  ... {} of {n} connected, {inflight} in handshake, {errors} errors", done.len());
        }
    }
    let elapsed = start.elapsed();
    done.retain(|&t| net.is_live(t));
    Ok(Opened { tokens: done, elapsed, errors, first_error })
}

/// Outcome of closing connections.
#[derive(Default, Debug)]
pub struct Closing {
    /// Close handshakes completed (the server answered our close frame).
    pub clean: u64,
    /// Connections that failed or timed out instead.
    pub unclean: u64,
    pub first_error: Option<String>,
}

/// Sends a close frame (1000) on every live connection and waits for the
/// answers (each bounded by the close timeout).
pub fn close_all(net: &mut Net) -> Result<Closing, String> {
    let mut out = Closing::default();
    for tok in net.live_tokens() {
        net.close(tok, 1000);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while net.live() > 0 && Instant::now() < deadline {
        net.turn(Duration::from_millis(50), &mut |_, _, ev| match ev {
            Ev::Closed { by_us: true, .. } => out.clean += 1,
            Ev::Closed { code, reason, .. } => {
                out.unclean += 1;
                out.first_error.get_or_insert_with(|| format!("server closed first: {code:?} {reason:?}"));
            }
            Ev::Failed(msg) => {
                out.unclean += 1;
                out.first_error.get_or_insert(msg);
            }
            _ => {}
        })
        .map_err(|e| format!("poll: {e}"))?;
    }
    if net.live() > 0 {
        out.unclean += net.live() as u64;
        out.first_error.get_or_insert_with(|| "close handshakes still open after 15 s".into());
        net.drop_all();
    }
    Ok(out)
}

fn run() -> Result<Report, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(scenario) = args.first() else { return Err(USAGE.into()) };
    if scenario == "-h" || scenario == "--help" || scenario == "help" {
        print!("{USAGE}");
        std::process::exit(0);
    }
    let mut opts = Opts::parse(&args[1..])?;
    let url: String = opts.get("url", "ws://127.0.0.1:9001/ws".to_string())?;
    let common = Common {
        target: Target::parse_with_ca(&url, opts.opt::<String>("tls-ca")?.as_deref())?,
        url,
        pid: opts.opt("pid")?,
        label: opts.get("label", String::new())?,
        timeout: Duration::from_secs_f64(opts.get("timeout", 10.0f64)?),
    };
    if let Some(pid) = common.pid {
        measure::ProcStats::read(pid)?;
    }
    measure::now_ns();
    let nofile = measure::raise_nofile();
    match scenario.as_str() {
        "conns" => conns::run(&common, opts, nofile),
        "fanout" => fanout::run(&common, opts, nofile),
        "echo" => echo::run(&common, opts, nofile),
        other => Err(format!("unknown scenario {other:?}\n\n{USAGE}")),
    }
}

/// Fails early when the fd limit cannot hold `conns` sockets.
pub fn check_nofile(conns: usize, nofile: u64) -> Result<(), String> {
    let need = conns as u64 + 16;
    if nofile < need {
        return Err(format!(
            "{conns} connections need about {need} fds but RLIMIT_NOFILE is {nofile} (hard limit); raise it with ulimit -Hn"
        ));
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(report) => {
            for p in &report.problems {
                eprintln!("PROBLEM: {p}");
            }
            println!("{}", report.line());
            if report.ok {
                ExitCode::SUCCESS
            } else {
                eprintln!("wshub-bench: run finished with problems (ok=false)");
                ExitCode::from(1)
            }
        }
        Err(msg) => {
            eprintln!("wshub-bench: {msg}");
            ExitCode::from(2)
        }
    }
}
