//! `wshub-cli`: watch a room from a shell, on `wshub::client`.
//!
//! ```text
//! wshub-cli --url wss://chat.example.org/ws --room lobby --token-file ~/.wshub-token
//! ```
//!
//! Every message of the room is printed to stdout as one JSON line
//! (`{"room","seq","from","data"}`, or `"binary"` in base 16 for binary ones);
//! when the room's history was reset (a new epoch) a line
//! `{"room","epoch","previousEpoch"}` says so before the messages of the new
//! epoch. Every line read from stdin is published to the room (as JSON when it
//! parses as JSON, else as a string). Connection changes go to stderr (with
//! `--verbose`, why each connection ended and what a rejoin could not
//! recover). It reconnects by itself as `docs/clients.md` says; it ends at the
//! end of its input (after the acknowledgements, saying so on stderr: stdin at
//! its end from the start, as under a service manager, needs `--read-only` to
//! watch), on Ctrl-C (after sending what stdin gave and closing with 1000), or
//! when retrying cannot help.
//!
//! Exit codes (`docs/clients.md`, "wshub-cli exit codes"): see [`Exit`].

use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use clap::Parser;
use crossbeam_channel::{select, Receiver};
use serde_json::{json, Value};
use wshub::client::{Client, Error, Event, Options, Receipt};

/// How the process ends; the numbers are part of the CLI's interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    /// The end of input with every line acknowledged, or the server closed with 1000.
    Done = 0,
    /// Bad flags, URL, token file or CA file (clap uses 2 for its own usage errors).
    Usage = 2,
    /// The server could not be reached (or stayed busy past its `Retry-After`s),
    /// or lines were left unacknowledged: trying again later may help.
    Unreachable = 3,
    /// Refused for good: 401 or 403 at the handshake, a certificate not
    /// accepted, the join (or a rejoin) refused. Trying again unchanged cannot help.
    Refused = 4,
    /// Ctrl-C (SIGINT) or SIGTERM, after a clean close.
    Interrupted = 130,
}

/// How long the end of input or Ctrl-C waits for the lines' acknowledgements.
const SETTLE: Duration = Duration::from_secs(10);

/// How many times a busy server's `Retry-After` is waited out at startup.
const STARTUP_RETRIES: u32 = 10;

/// The longest `Retry-After` waited out at startup.
const MAX_RETRY_AFTER: u64 = 300;

/// Lines read from stdin that may wait to be published, and publishes that
/// may wait for their acknowledgement before stdin is read further.
const LINE_QUEUE: usize = 64;

/// How long the end waits for the lines taken to be written to stdout.
const PRINT_WAIT: Duration = Duration::from_secs(2);

/// How often a wait for an acknowledgement looks for Ctrl-C.
const STOP_POLL: Duration = Duration::from_millis(100);

#[derive(Parser)]
#[command(
    name = "wshub-cli",
    version,
    about = "Read a wshub room to stdout as JSON lines; publish lines from stdin",
    after_help = "Exit codes: 0 done, 2 usage, 3 unreachable (or lines unacknowledged), \
                  4 refused (401/403, certificate, join), 130 interrupted."
)]
struct Args {
    /// WebSocket URL of the server (ws:// or wss://).
    #[arg(long, default_value = "ws://127.0.0.1:9001/ws")]
    url: String,
    /// The room to read and publish to.
    #[arg(long)]
    room: String,
    /// Bearer token (or set WSHUB_TOKEN). Prefer --token-file: a flag shows in `ps`.
    #[arg(long, conflicts_with = "token_file")]
    token: Option<String>,
    /// Read the bearer token from this file (surrounding whitespace ignored).
    #[arg(long)]
    token_file: Option<std::path::PathBuf>,
    /// For wss://: trust only the CA certificates in this PEM file instead of the system's.
    #[arg(long)]
    ca_file: Option<std::path::PathBuf>,
    /// For wss://: accept any certificate (the traffic is encrypted, but to whoever answers).
    #[arg(long)]
    insecure: bool,
    /// Do not offer permessage-deflate (messages cross uncompressed both ways).
    #[arg(long)]
    no_compression: bool,
    /// Do not read stdin (only watch the room).
    #[arg(long)]
    read_only: bool,
    /// Say on stderr why each connection ended and what a rejoin could not recover.
    #[arg(long, short)]
    verbose: bool,
    /// Smallest reconnect delay cap, in milliseconds (at least 1: with 0 every
    /// delay is 0, and a server that is down is retried without pause).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    backoff_min_ms: u64,
    /// Largest reconnect delay, in milliseconds (at least 1).
    #[arg(long, default_value_t = 30000, value_parser = clap::value_parser!(u64).range(1..))]
    backoff_max_ms: u64,
}

fn main() {
    let args = Args::parse();
    std::process::exit(run(&args) as i32);
}

/// A line on stderr; a stderr that is gone (`2>&1 | head -1`) is not a reason
/// to panic. Control characters are shown escaped: much of what is said comes
/// from the server (error texts, close reasons, ids), and raw they could drive
/// the terminal (clear it, retitle it, hide text).
fn say(what: &str) {
    let shown: String = what
        .chars()
        .map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() })
        .collect();
    let _ = writeln!(std::io::stderr().lock(), "wshub-cli: {shown}");
}

fn run(args: &Args) -> Exit {
    let mut options = Options::default()
        .backoff(Duration::from_millis(args.backoff_min_ms), Duration::from_millis(args.backoff_max_ms))
        .insecure(args.insecure)
        .compression(!args.no_compression);
    if let Some(path) = &args.ca_file {
        options = options.ca_file(path);
    }
    let token = match &args.token_file {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(t) if !t.trim().is_empty() => Some(t.trim().to_owned()),
            Ok(_) => {
                say(&format!("the token file {} is empty", path.display()));
                return Exit::Usage;
            }
            Err(e) => {
                say(&format!("cannot read the token file {}: {e}", path.display()));
                return Exit::Usage;
            }
        },
        None => args.token.clone().or_else(|| std::env::var("WSHUB_TOKEN").ok()),
    };
    if let Some(token) = token {
        options = options.token(token);
    }
    if args.insecure {
        say("--insecure: the server's certificate is NOT checked; anyone on the path can read and change the traffic");
    }
    let client = match connect(&args.url, options) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(e) = client.join(&args.room) {
        say(&format!("joining {}: {e}", args.room));
        return match e {
            // Refused by rule (the token's rooms, the room's rights, the name):
            // the same join will be refused again.
            Error::Server { code, .. } if matches!(code.as_str(), "forbidden" | "bad_request") => {
                Exit::Refused
            }
            _ => Exit::Unreachable,
        };
    }
    say(&format!("in room {} (Ctrl-C to quit)", args.room));
    watch(args, &client)
}

/// The first connection; a busy server's `Retry-After` is waited out.
fn connect(url: &str, options: Options) -> Result<Client, Exit> {
    let mut retries = 0;
    loop {
        let e = match Client::connect(url, options.clone()) {
            Ok(c) => return Ok(c),
            Err(e) => e,
        };
        say(&e.to_string());
        match e {
            Error::BadUrl(_) | Error::Options(_) => return Err(Exit::Usage),
            Error::Tls(_) | Error::Refused { status: 401 | 403, .. } => return Err(Exit::Refused),
            Error::Refused { retry_after: Some(s), .. } if retries < STARTUP_RETRIES => {
                retries += 1;
                let s = s.min(MAX_RETRY_AFTER);
                say(&format!("the server is busy: trying again in {s} s, as it asked (Retry-After)"));
                std::thread::sleep(Duration::from_secs(s));
            }
            _ => return Err(Exit::Unreachable),
        }
    }
}

/// Prints the room until the client stops, the input ends or a signal comes.
fn watch(args: &Args, client: &Client) -> Exit {
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
    let (done_tx, done_rx) = crossbeam_channel::bounded::<Published>(1);
    let signals = signal_channel();
    let mut refused = false;
    let mut last_close = None;
    let mut interrupted = false;
    // stdout is written by its own thread: a stalled stdout (a full pipe,
    // Ctrl-S) then holds back the events, but not Ctrl-C.
    let (print_tx, printed) = printer();
    // A line waiting for the printer; meanwhile no event is taken.
    let mut pending: Option<String> = None;
    // A sender that is never ready and a receiver that never yields, for the
    // arm that is off (crossbeam's `select!` has no conditional arms).
    let (idle_tx, _idle_rx) = crossbeam_channel::bounded::<String>(0);
    let idle_rx = crossbeam_channel::never::<Event>();
    std::thread::scope(|scope| {
        if !args.read_only {
            let lines = stdin_lines();
            let room = args.room.as_str();
            scope.spawn(move || {
                let published = publish_lines(client, room, &lines, &stop_rx);
                let _ = done_tx.send(published);
            });
        }
        let code = loop {
            let (events, print) =
                if pending.is_some() { (&idle_rx, &print_tx) } else { (client.events(), &idle_tx) };
            select! {
                send(print, pending.clone().unwrap_or_default()) -> sent => {
                    if sent.is_err() {
                        break Exit::Done; // stdout closed (e.g. `| head`)
                    }
                    pending = None;
                }
                recv(events) -> event => {
                    let Ok(event) = event else { break Exit::Unreachable };
                    if let Event::Closed { reason } = &event {
                        say(&format!("stopped: {reason}"));
                        break if refused {
                            Exit::Refused
                        } else if last_close == Some(1000) {
                            Exit::Done
                        } else {
                            Exit::Unreachable
                        };
                    }
                    // The room's rejoin refused for good (the client left it):
                    // nothing more will come, the same join is refused again.
                    let mut left = false;
                    match &event {
                        Event::Error { code, message } => {
                            refused |= matches!(code.as_str(), "http_401" | "http_403" | "tls");
                            left = message.starts_with("rejoining ");
                        }
                        Event::Disconnected { code, .. } => last_close = Some(*code),
                        _ => {}
                    }
                    pending = describe(event, args.verbose).map(|line| line.to_string());
                    if left {
                        break Exit::Refused;
                    }
                }
                recv(signals) -> _ => {
                    if args.read_only {
                        interrupted = true;
                        break Exit::Interrupted;
                    }
                    if interrupted {
                        break Exit::Interrupted; // a second Ctrl-C does not wait
                    }
                    interrupted = true;
                    say("interrupted: sending what was read, then closing");
                    let _ = stop_tx.try_send(());
                }
                recv(done_rx) -> published => {
                    let Ok(published) = published else { break Exit::Unreachable };
                    if interrupted {
                        break Exit::Interrupted;
                    }
                    say(&published.at_the_end_of_input());
                    break if published.all_sent { Exit::Done } else { Exit::Unreachable };
                }
            }
        };
        client.close();
        // The lines taken are written, unless stdout stays stalled.
        drop(print_tx);
        let _ = printed.recv_timeout(PRINT_WAIT);
        // The stdin thread may be blocked in a read: the process ends without it.
        std::process::exit(code as i32)
    })
}

/// Writes the lines it is given to stdout, each flushed; ends when stdout
/// fails (its receiver dropped, so a send fails) or the sender is dropped
/// (then the second channel is disconnected).
fn printer() -> (crossbeam_channel::Sender<String>, Receiver<()>) {
    let (tx, rx) = crossbeam_channel::bounded::<String>(1);
    let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
    std::thread::spawn(move || {
        let mut out = std::io::stdout().lock();
        for line in rx {
            if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                break;
            }
        }
        drop(done_tx);
    });
    (tx, done_rx)
}

/// A stdout line for messages and epoch resets; everything else goes to stderr here.
fn describe(event: Event, verbose: bool) -> Option<Value> {
    match event {
        Event::Message { room, seq, from, data } => {
            return Some(json!({"room": room, "seq": seq, "from": from, "data": data}))
        }
        Event::Binary { room, seq, body } => {
            let hex: String = body.iter().map(|b| format!("{b:02x}")).collect();
            return Some(json!({"room": room, "seq": seq, "binary": hex}));
        }
        Event::Recovery { room, epoch, previous_epoch: Some(previous), .. } if previous != epoch => {
            if verbose {
                say(&format!(
                    "room {room} was reset (its history starts again, epoch {previous} -> {epoch}): \
                     reading it again from its first message"
                ));
            }
            return Some(json!({"room": room, "epoch": epoch, "previousEpoch": previous}));
        }
        Event::Recovery { room, .. } if verbose => say(&format!(
            "room {room}: messages were missed while disconnected (history no longer reached back)"
        )),
        Event::Reconnecting { attempt, delay } => {
            say(&format!("reconnecting in {:.1} s (attempt {attempt})", delay.as_secs_f64()))
        }
        Event::Disconnected { code, reason } if verbose => {
            let reason = if reason.is_empty() { String::new() } else { format!(": {reason}") };
            say(&format!("connection lost: {} (close code {code}){reason}", close_meaning(code)))
        }
        Event::Connected { client_id } if verbose => say(&format!("connected as client {client_id}")),
        Event::Error { code, message } => say(&format!("error {code}: {message}")),
        _ => {}
    }
    None
}

/// A close code in plain words (PROTOCOL.md, "Close codes").
fn close_meaning(code: u16) -> &'static str {
    match code {
        1000 => "closed normally",
        1001 => "the server is shutting down",
        1002 => "protocol error",
        1006 => "the network connection ended without a close",
        1008 => "closed by policy (rate, token expired)",
        1009 => "a message was too big",
        1011 => "server error",
        1013 => "too slow to read: the server gave up on this client",
        4000..=4999 => "closed by the application (kicked or banned)",
        _ => "closed",
    }
}

/// SIGINT and SIGTERM as a channel (never fires when they cannot be caught).
fn signal_channel() -> Receiver<()> {
    let (tx, rx) = crossbeam_channel::bounded(4);
    use signal_hook::consts::{SIGINT, SIGTERM};
    match signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) {
        Ok(mut signals) => {
            std::thread::spawn(move || {
                for _ in signals.forever() {
                    let _ = tx.try_send(());
                }
            });
        }
        Err(e) => say(&format!("cannot catch Ctrl-C ({e}): it will end the process at once")),
    }
    rx
}

/// The lines of stdin, read by their own thread (ends with the input).
fn stdin_lines() -> Receiver<String> {
    let (tx, rx) = crossbeam_channel::bounded(LINE_QUEUE);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// What [`publish_lines`] did with the input.
struct Published {
    /// Whether every line taken was acknowledged.
    all_sent: bool,
    /// The lines taken to publish (blank lines are skipped).
    lines: usize,
}

impl Published {
    /// What stderr says when the input has ended.
    fn at_the_end_of_input(&self) -> String {
        match (self.lines, self.all_sent) {
            (0, _) => "end of input: no line to publish; closing (--read-only watches the room without reading stdin)"
                .to_owned(),
            (1, true) => "end of input: 1 line published and acknowledged; closing".to_owned(),
            (n, true) => format!("end of input: {n} lines published and acknowledged; closing"),
            (n, false) => format!("end of input: of {n} lines read, some were not sent (above); closing"),
        }
    }
}

/// Publishes each line until the input ends or `stop` comes (then the lines
/// already read are published too); waits at most [`SETTLE`] for the
/// acknowledgements.
fn publish_lines(client: &Client, room: &str, lines: &Receiver<String>, stop: &Receiver<()>) -> Published {
    let mut receipts = VecDeque::new();
    let mut all_sent = true;
    let mut taken = 0;
    // Whether the line was taken (or was empty).
    let publish = |line: String, receipts: &mut VecDeque<Receipt>| {
        if line.trim().is_empty() {
            return true;
        }
        let data = serde_json::from_str::<Value>(&line).unwrap_or(Value::String(line));
        match client.publish_nowait(room, &data) {
            Ok(r) => {
                receipts.push_back(r);
                true
            }
            Err(e) => {
                say(&format!("not sent: {e}"));
                false
            }
        }
    };
    let mut stopping = false;
    while !stopping {
        select! {
            recv(lines) -> line => match line {
                Ok(line) => {
                    taken += usize::from(!line.trim().is_empty());
                    all_sent &= publish(line, &mut receipts);
                }
                Err(_) => break,
            },
            recv(stop) -> _ => stopping = true,
        }
        // Keep the number of receipts held bounded: settle the oldest first
        // (while offline this waits for the connection, or for `stop`).
        while receipts.len() > LINE_QUEUE && !stopping {
            match receipts.front().and_then(|r| r.wait_timeout(STOP_POLL)) {
                Some(result) => {
                    receipts.pop_front();
                    if let Err(e) = result {
                        say(&format!("not sent: {e}"));
                        all_sent = false;
                    }
                }
                None => stopping = stop.try_recv().is_ok(),
            }
        }
        if stopping {
            while let Ok(line) = lines.try_recv() {
                taken += usize::from(!line.trim().is_empty());
                all_sent &= publish(line, &mut receipts);
            }
        }
    }
    let settle_by = Instant::now() + SETTLE;
    for r in receipts {
        match r.wait_timeout(settle_by.saturating_duration_since(Instant::now())) {
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                say(&format!("not sent: {e}"));
                all_sent = false;
            }
            None => {
                say("not sent: no acknowledgement in time");
                all_sent = false;
            }
        }
    }
    Published { all_sent, lines: taken }
}
