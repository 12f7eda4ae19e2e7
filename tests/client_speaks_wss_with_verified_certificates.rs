//! wshub::client over wss:// against the real server with the TLS tests'
//! certificates: refused for a CA it does not trust (the system's roots by
//! default, or another CA file), accepted with the right `ca_file` (by name
//! and by IP address), and with `insecure`; URLs with the scheme in any case
//! and an IPv6 host in brackets.

mod client_common;
mod tls_common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use client_common::fake::{self, Fake};
use client_common::Server;
use serde_json::json;
use tls_common::Pki;
use wshub::client::{Client, Error, Event, Options};

fn tls_server(pki: &Pki) -> Server {
    Server::start(&["--tls-cert", &pki.path_str("server.pem"), "--tls-key", &pki.path_str("server.key")])
}

#[test]
fn an_unknown_ca_is_refused_and_the_right_ca_file_accepted() {
    let pki = Pki::make();
    let server = tls_server(&pki);
    let port = server.addr.port();
    let by_name = format!("wss://localhost:{port}/ws");

    // Default: the system's roots, which do not hold the test CA.
    match Client::connect(&by_name, Options::default()) {
        Err(Error::Tls(why)) => assert!(why.contains("certificate"), "{why}"),
        other => panic!("the test CA was trusted by default: {other:?}"),
    }
    // Another CA than the one that signed the server's certificate.
    let wrong = Options::default().ca_file(pki.path("wrong-ca.pem"));
    assert!(matches!(Client::connect(&by_name, wrong), Err(Error::Tls(_))));
    // A file that is not there, or holds no certificate, is a clear error,
    // not a silent fallback to the system's roots.
    let missing = Options::default().ca_file(pki.path("no-such.pem"));
    assert!(matches!(Client::connect(&by_name, missing), Err(Error::Options(_))));
    let not_a_ca = Options::default().ca_file(pki.path("server.ext"));
    assert!(matches!(Client::connect(&by_name, not_a_ca), Err(Error::Options(_))));

    // The right CA, by name and by IP address (the certificate names both),
    // with the scheme in upper case.
    for url in [by_name.clone(), format!("WSS://127.0.0.1:{port}/ws")] {
        let client = Client::connect(&url, Options::default().ca_file(pki.path("ca.pem")))
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        client.join("r").expect("join over wss");
        let ack = client.publish("r", &json!({"over": "tls"})).expect("publish over wss");
        assert!(ack["seq"].as_u64().is_some(), "{ack}");
        assert_eq!(client.request("ping", json!({"n": 1})).expect("ping"), json!({"n": 1}));
    }

    // Messages of many TLS records each, both ways.
    let ca = || Options::default().ca_file(pki.path("ca.pem"));
    let (a, b) = (Client::connect(&by_name, ca()).unwrap(), Client::connect(&by_name, ca()).unwrap());
    a.join("big").unwrap();
    b.join("big").unwrap();
    let text = "t".repeat(300_000);
    for n in 0..3 {
        a.publish("big", &json!({"n": n, "text": text})).expect("a big publish over wss");
    }
    let mut got = Vec::new();
    while got.len() < 3 {
        let event = b.events().recv_timeout(client_common::WAIT).expect("the big messages");
        if let wshub::client::Event::Message { data, .. } = event {
            assert_eq!(data["text"].as_str().map(str::len), Some(300_000));
            got.push(data["n"].clone());
        }
    }
    assert_eq!(got, [json!(0), json!(1), json!(2)]);
}

#[test]
fn insecure_accepts_any_certificate() {
    let pki = Pki::make();
    let server = tls_server(&pki);
    let url = format!("wss://localhost:{}/ws", server.addr.port());
    let client = Client::connect(&url, Options::default().insecure(true)).expect("insecure connect");
    client.join("r").expect("join");
}

#[test]
fn an_ipv6_host_in_brackets_and_a_scheme_in_any_case() {
    let server = Fake::start_on("[::1]:0", |stream, _| {
        let Some(mut ws) = fake::upgrade(stream) else { return };
        fake::connected(&mut ws, "v6", 30_000, 1 << 20);
        if fake::ack_join(&mut ws, "e").is_some() {
            std::thread::sleep(fake::SCRIPT_LIMIT);
        }
    });
    let url = format!("Ws://[::1]:{}/ws", server.addr.port());
    let client = Client::connect(&url, Options::default()).expect("an IPv6 URL");
    client.join("r").expect("join");
    assert!(matches!(Client::connect("ftp://[::1]/ws", Options::default()), Err(Error::BadUrl(_))));
}

#[test]
fn a_tls_failure_that_is_not_about_the_certificate_is_retried() {
    let pki = Pki::make();
    let server = tls_server(&pki);
    let port = server.addr.port();
    let url = format!("wss://localhost:{port}/ws");
    let options = Options::default()
        .ca_file(pki.path("ca.pem"))
        .backoff(Duration::from_millis(10), Duration::from_millis(50));
    let client = Client::connect(&url, options).expect("connect over wss");
    client.join("r").expect("join");
    // The port now answers plain HTTP to the ClientHello (a proxy, a server
    // started without its TLS flags): rustls sees a corrupt record.
    drop(server);
    let _plain = Fake::start_on(&format!("127.0.0.1:{port}"), |mut stream, _| {
        let mut buf = [0u8; 1024];
        let _ = stream.read(&mut buf);
        let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
    });
    // It stopped for good at the first such attempt ("TLS: received corrupt
    // message"), as if the certificate had been refused.
    let until = Instant::now() + client_common::WAIT;
    let mut attempts = 0;
    while attempts < 3 {
        assert!(Instant::now() < until, "only {attempts} attempts");
        match client.events().recv_timeout(client_common::WAIT) {
            Ok(Event::Reconnecting { attempt, .. }) => attempts = attempt,
            Ok(Event::Closed { reason }) => panic!("the client stopped: {reason}"),
            Ok(_) => {}
            Err(_) => panic!("no event"),
        }
    }
}
