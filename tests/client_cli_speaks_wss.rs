//! `wshub-cli --url wss://…` against the real server with the TLS tests'
//! certificates: exit 4 for a CA it does not trust (2 for a CA file that is
//! not there), a room read with `--ca-file`, and `--insecure` accepted only
//! with a warning on stderr.

mod client_common;
mod tls_common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use client_common::{exit_status_within, Server, WAIT};
use tls_common::Pki;

/// Runs the CLI with the given flags until it says it joined (then ends its
/// input) or exits; (exit code, stderr). Bounded by [`WAIT`].
fn cli(url: &str, extra: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wshub-cli"))
        .args(["--url", url, "--room", "r"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wshub-cli");
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + WAIT;
    let mut said = String::new();
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if line.contains("in room r") {
            drop(child.stdin.take()); // the end of input: it exits 0
        }
        said.push_str(&line);
        said.push('\n');
    }
    let status = exit_status_within(&mut child, WAIT);
    (status.code(), said)
}

#[test]
fn wss_is_verified_refused_for_an_unknown_ca_and_accepted_with_ca_file() {
    let pki = Pki::make();
    let server =
        Server::start(&["--tls-cert", &pki.path_str("server.pem"), "--tls-key", &pki.path_str("server.key")]);
    let url = format!("wss://localhost:{}/ws", server.addr.port());

    let (code, said) = cli(&url, &[]);
    assert_eq!(code, Some(4), "the system's roots do not hold the test CA: {said}");
    let (code, said) = cli(&url, &["--ca-file", &pki.path_str("wrong-ca.pem")]);
    assert_eq!(code, Some(4), "{said}");
    let (code, said) = cli(&url, &["--ca-file", &pki.path_str("no-such.pem")]);
    assert_eq!(code, Some(2), "a CA file that is not there is a usage error: {said}");

    let (code, said) = cli(&url, &["--ca-file", &pki.path_str("ca.pem")]);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("in room r"), "{said}");

    let (code, said) = cli(&url, &["--insecure"]);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("NOT checked"), "--insecure must say so: {said}");
}
