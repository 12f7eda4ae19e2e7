//! Small reconnect storms. 200 clients over 8 source addresses, the server
//! restarted under them: every client comes back, the new server refuses no
//! handshake, and every delay drawn is within its cap. 100 clients against a
//! server that accepts, acks the join and closes 1011: their backoff keeps
//! growing (no counter starts again at 1). The 2000-client runs are
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

#[test]
fn a_hundred_clients_against_a_flapping_server_keep_to_the_backoff_schedule() {
    let report =
        storm::flap(&storm::FlapParams { clients: 100, addrs: 4, min_ms: 50, max_ms: 2000, secs: 4 });
    let text = report.text();
    eprintln!("{text}");
    assert!(report.reconnects >= 100, "{text}");
    assert_eq!(report.resets, 0, "{text}");
    assert_eq!(report.over_cap, 0, "{text}");
    assert!(report.highest_attempt >= 4, "{text}");
}
