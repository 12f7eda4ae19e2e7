//! Reconnect storm: N `wshub::client` clients from this one process, spread
//! over 127.0.0.x source addresses (`Options::local_addr`), are cut off at once
//! by a server restart (SIGTERM, then the same port again after DOWN_MS). It
//! prints whether every client came back, how many handshakes the new server
//! refused, and a text histogram of the reconnect delays the clients drew.
//!
//! ```text
//! cargo bench --bench reconnect_storm                      # 2000 clients, backoff 1 s .. 30 s
//! CLIENTS=500 ADDRS=8 MIN_MS=200 MAX_MS=5000 DOWN_MS=1500 cargo bench --bench reconnect_storm
//! ```
//!
//! The server runs with its default caps: per address at most 256 sockets in
//! their handshake and no connection or connect-rate cap, and 1024 handshakes
//! in all; 2000 clients over 16 addresses stay inside them with the jitter.

#[path = "../tests/client_common/storm.rs"]
mod storm;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    // `cargo bench` passes --bench; nothing else is taken from the command line.
    let params = storm::Params {
        clients: env("CLIENTS", 2000) as usize,
        addrs: env("ADDRS", 16) as u8,
        min_ms: env("MIN_MS", 1000),
        max_ms: env("MAX_MS", 30000),
        down_ms: env("DOWN_MS", 3000),
        server: env!("CARGO_BIN_EXE_wshub").into(),
    };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("reconnect storm: {params:?}");
    println!("load average before: {}", load.trim());
    let report = storm::run(&params);
    print!("{}", report.text());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average after: {}", load.trim());
    if !report.all_back() || report.refused > 0 {
        std::process::exit(1);
    }
}
