//! Reconnect storms, each printed as a summary and text histograms.
//!
//! 1. **Restart**: N `wshub::client` clients from this one process, spread
//!    over 127.0.0.x source addresses (`Options::local_addr`), are cut off at
//!    once by a server restart (SIGTERM, then the same port again after
//!    DOWN_MS). It prints whether every client came back, how many handshakes
//!    the new server refused, and the reconnect delays the clients drew.
//! 2. **Flapping**: the same clients against a server that accepts every
//!    connection, acks the join and closes it with 1011 at once, for FLAP_SECS.
//!    It prints the connections the server took per second against what the
//!    backoff schedule gives at the mean draw, and whether any client's
//!    attempt counter started again at 1 (it must not: no connection stayed up).
//!
//! ```text
//! cargo bench --bench reconnect_storm                      # both, 2000 clients, backoff 1 s .. 30 s
//! STORM=flap FLAP_SECS=60 cargo bench --bench reconnect_storm
//! CLIENTS=500 ADDRS=8 MIN_MS=200 MAX_MS=5000 DOWN_MS=1500 STORM=restart cargo bench --bench reconnect_storm
//! ```
//!
//! The server of the restart storm runs with its default caps: per address at
//! most 256 sockets in their handshake and no connection or connect-rate cap,
//! and 1024 handshakes in all; 2000 clients over 16 addresses stay inside them
//! with the jitter.

#[path = "../tests/client_common/storm.rs"]
mod storm;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_owned()
}

fn main() {
    // `cargo bench` passes --bench; nothing else is taken from the command line.
    let which = std::env::var("STORM").unwrap_or_else(|_| "both".into());
    let (clients, addrs) = (env("CLIENTS", 2000) as usize, env("ADDRS", 16) as u8);
    let (min_ms, max_ms) = (env("MIN_MS", 1000), env("MAX_MS", 30000));
    let mut ok = true;
    if which == "both" || which == "restart" {
        let params = storm::Params {
            clients,
            addrs,
            min_ms,
            max_ms,
            down_ms: env("DOWN_MS", 3000),
            server: env!("CARGO_BIN_EXE_wshub").into(),
        };
        println!("reconnect storm: {params:?}");
        println!("load average before: {}", load());
        let report = storm::run(&params);
        print!("{}", report.text());
        println!("load average after: {}", load());
        ok &= report.all_back() && report.refused == 0;
    }
    if which == "both" || which == "flap" {
        let params = storm::FlapParams { clients, addrs, min_ms, max_ms, secs: env("FLAP_SECS", 30) };
        println!("flapping storm: {params:?}");
        println!("load average before: {}", load());
        let report = storm::flap(&params);
        print!("{}", report.text());
        println!("load average after: {}", load());
        ok &= report.within_schedule();
    }
    if !ok {
        std::process::exit(1);
    }
}
