//! A small reconnect storm (200 clients over 8 source addresses, the server
//! restarted under them): every client comes back, the new server refuses no
//! handshake, and every delay drawn is within its cap. The 2000-client run is
//! `cargo bench --bench reconnect_storm`.

#[path = "client_common/storm.rs"]
mod storm;

#[test]
fn two_hundred_clients_all_come_back_after_a_restart() {
    let report = storm::run(&storm::Params {
        clients: 200,
        addrs: 8,
        min_ms: 100,
        max_ms: 1600,
        down_ms: 800,
        server: env!("CARGO_BIN_EXE_wshub").into(),
    });
    let text = report.text();
    eprintln!("{text}");
    assert_eq!(report.back, report.clients, "{text}");
    assert_eq!(report.refused, 0, "{text}");
    assert_eq!(report.errors, 0, "{text}");
    assert_eq!(report.over_cap, 0, "{text}");
    // The jitter spreads them: the first delays are not all alike.
    let firsts: std::collections::BTreeSet<_> =
        report.delays.iter().filter(|(a, _)| *a == 1).map(|(_, d)| d.as_millis() / 10).collect();
    assert!(firsts.len() > 5, "{text}");
}
