//! `wshub-cli`: watch a room from a shell, on `wshub::client`.
//!
//! ```text
//! wshub-cli --url ws://127.0.0.1:9001/ws --room lobby
//! ```
//!
//! Every message of the room is printed to stdout as one JSON line
//! (`{"room","seq","from","data"}`, or `"binary"` in base 16 for binary ones);
//! every line read from stdin is published to the room (as JSON when it parses
//! as JSON, else as a string). Connection changes go to stderr. It reconnects
//! by itself as `docs/clients.md` says; end it with Ctrl-C or end of input.

use std::io::{BufRead, Write};
use std::time::Duration;

use clap::Parser;
use serde_json::{json, Value};
use wshub::client::{Client, Event, Options};

#[derive(Parser)]
#[command(
    name = "wshub-cli",
    version,
    about = "Read a wshub room to stdout as JSON lines; publish lines from stdin"
)]
struct Args {
    /// WebSocket URL of the server.
    #[arg(long, default_value = "ws://127.0.0.1:9001/ws")]
    url: String,
    /// The room to read and publish to.
    #[arg(long)]
    room: String,
    /// Bearer token (or set WSHUB_TOKEN).
    #[arg(long)]
    token: Option<String>,
    /// Do not read stdin (only watch the room).
    #[arg(long)]
    read_only: bool,
    /// Smallest reconnect delay cap, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    backoff_min_ms: u64,
    /// Largest reconnect delay, in milliseconds.
    #[arg(long, default_value_t = 30000)]
    backoff_max_ms: u64,
}

fn main() {
    let args = Args::parse();
    let mut options = Options::default()
        .backoff(Duration::from_millis(args.backoff_min_ms), Duration::from_millis(args.backoff_max_ms));
    if let Some(token) = args.token.clone().or_else(|| std::env::var("WSHUB_TOKEN").ok()) {
        options = options.token(token);
    }
    let client = match Client::connect(&args.url, options) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wshub-cli: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = client.join(&args.room) {
        eprintln!("wshub-cli: joining {}: {e}", args.room);
        std::process::exit(1);
    }
    eprintln!("wshub-cli: in room {} (Ctrl-C to quit)", args.room);
    std::thread::scope(|scope| {
        if !args.read_only {
            scope.spawn(|| publish_stdin(&client, &args.room));
        }
        let stdout = std::io::stdout();
        for event in client.events().iter() {
            let line = match event {
                Event::Message { room, seq, from, data } => {
                    Some(json!({"room": room, "seq": seq, "from": from, "data": data}))
                }
                Event::Binary { room, seq, body } => {
                    let hex: String = body.iter().map(|b| format!("{b:02x}")).collect();
                    Some(json!({"room": room, "seq": seq, "binary": hex}))
                }
                Event::Closed { reason } => {
                    eprintln!("wshub-cli: stopped: {reason}");
                    break;
                }
                Event::Reconnecting { attempt, delay } => {
                    eprintln!("wshub-cli: reconnecting in {:.1} s (attempt {attempt})", delay.as_secs_f64());
                    None
                }
                other => {
                    eprintln!("wshub-cli: {other:?}");
                    None
                }
            };
            if let Some(line) = line {
                let mut out = stdout.lock();
                if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                    break; // stdout closed (e.g. `| head`)
                }
            }
        }
        client.close();
    });
}

/// Publishes each stdin line; at the end of input waits for the acks and closes.
fn publish_stdin(client: &Client, room: &str) {
    let mut receipts = std::collections::VecDeque::new();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let data = serde_json::from_str::<Value>(&line).unwrap_or(Value::String(line));
        match client.publish_nowait(room, &data) {
            Ok(r) => receipts.push_back(r),
            Err(e) => eprintln!("wshub-cli: not sent: {e}"),
        }
        // Keep the number of receipts held bounded: settle the oldest first.
        while receipts.len() > 64 {
            if let Some(Err(e)) = receipts.pop_front().map(|r| r.wait()) {
                eprintln!("wshub-cli: not sent: {e}");
            }
        }
    }
    for r in receipts {
        if let Err(e) = r.wait() {
            eprintln!("wshub-cli: not sent: {e}");
        }
    }
    client.close();
}
