//! wshub serving TLS directly: `wss://` and `https://` on one port, against
//! real clients (Python `websockets`/`ssl`, rustls), with certificates each
//! test makes with the `openssl` CLI. The binary for the CLI paths (flags,
//! SIGHUP), the library in-process for the engine paths (client
//! certificates, order of frames, 1001, 1013, heartbeats).

mod child_common;
mod common;
mod protocol_common;
mod tls_common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use protocol_common::Wshub;
use tls_common::{client_config, https_get, tls_connect, wss_connect, Pki};
use tungstenite::Message as WsMessage;
use wshub::{Config, ConnId, Handler, Message, PemSource, RequestInfo, Server, ServerHandle, Upgrade};

fn tls_args(pki: &Pki, cert: &str) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        pki.path_str(&format!("{cert}.pem")),
        "--tls-key".into(),
        pki.path_str(&format!("{cert}.key")),
    ]
}

fn start(args: &[String]) -> Wshub {
    Wshub::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Runs a Python script to completion (bounded); its stdout when it exits 0.
fn python(args: &[&str]) -> String {
    let child = Command::new("python3")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 with `websockets` is needed");
    let out = child_common::output_within(child, Duration::from_secs(90), &format!("python {args:?}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

const PY_TLS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls_python_clients.py");
const PY_PROTOCOL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop_python_websockets.py");

fn echo_once(ws: &mut tungstenite::WebSocket<tls_common::TlsStream>, text: &str) {
    ws.send(WsMessage::text(text)).expect("send");
    loop {
        match ws.read().expect("read the echo") {
            WsMessage::Text(t) => {
                assert_eq!(t.as_str(), text);
                return;
            }
            WsMessage::Ping(_) | WsMessage::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn wss_echo_through_python_websockets_with_a_ca_file() {
    let pki = Pki::make();
    let mut args = tls_args(&pki, "server");
    args.push("--echo".into());
    let server = start(&args);
    let out = python(&[PY_TLS, "echo", &server.addr.to_string(), &pki.path_str("ca.pem")]);
    assert!(out.contains("tls ok"), "{out}");
}

#[test]
fn the_protocol_session_runs_over_wss() {
    let pki = Pki::make();
    let server = start(&tls_args(&pki, "server"));
    let out = python(&[PY_PROTOCOL, &server.addr.to_string(), &pki.path_str("ca.pem")]);
    assert!(out.contains("interop ok"), "{out}");
}

#[test]
fn https_serves_healthz_metrics_the_demo_page_and_client_js() {
    let pki = Pki::make();
    let server = start(&tls_args(&pki, "server"));
    let config = client_config(&pki.path("ca.pem"), None);
    let (status, body) = https_get(server.addr, config.clone(), "/healthz");
    assert_eq!(status, 200, "{body}");
    let (status, body) = https_get(server.addr, config.clone(), "/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("wshub_connections"), "{body}");
    assert_eq!(https_get(server.addr, config.clone(), "/").0, 200);
    assert_eq!(https_get(server.addr, config.clone(), "/client.js").0, 200);
    assert_eq!(https_get(server.addr, config, "/nothing-here").0, 404);
}

#[test]
fn a_client_trusting_another_ca_fails_the_handshake() {
    let pki = Pki::make();
    let server = start(&tls_args(&pki, "server"));
    let Err(err) = tls_connect(server.addr, client_config(&pki.path("wrong-ca.pem"), None)) else {
        panic!("the handshake must fail");
    };
    assert!(err.to_string().contains("UnknownIssuer") || err.to_string().contains("certificate"), "{err}");
    let out = python(&[PY_TLS, "wrong-ca", &server.addr.to_string(), &pki.path_str("wrong-ca.pem")]);
    assert!(out.contains("refused as expected"), "{out}");
    // The server is unharmed, and counts both failures (each is counted when
    // its reader thread sees the alert, which may be just after the client
    // gave up: wait for it, bounded).
    let config = client_config(&pki.path("ca.pem"), None);
    assert_eq!(https_get(server.addr, config.clone(), "/healthz").0, 200);
    let failures = || {
        let (_, body) = https_get(server.addr, config.clone(), "/metrics");
        let line =
            body.lines().find(|l| l.starts_with("wshub_tls_handshake_failures_total ")).map(str::to_owned);
        line.and_then(|l| l.rsplit(' ').next().and_then(|n| n.parse::<u64>().ok())).expect("the metric")
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while failures() < 2 {
        assert!(Instant::now() < deadline, "wshub_tls_handshake_failures_total stayed below 2");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(failures(), 2);
}

/// Reads until the server ends the connection; how long after `started` that was.
fn time_until_dropped(mut tcp: TcpStream, started: Instant) -> Duration {
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) | Err(_) => return started.elapsed(),
            Ok(_) => {} // an alert
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never dropped");
    }
}

#[test]
fn a_stalled_tls_handshake_is_dropped_after_the_timeout() {
    let pki = Pki::make();
    let mut args = tls_args(&pki, "server");
    args.extend(["--echo".into(), "--handshake-timeout-ms".into(), "600".into()]);
    let server = start(&args);
    // One says nothing; one sends the start of a ClientHello record and stalls.
    let started = Instant::now();
    let silent = TcpStream::connect(server.addr).unwrap();
    let mut partial = TcpStream::connect(server.addr).unwrap();
    partial.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]).unwrap();
    let (a, b) = (time_until_dropped(silent, started), time_until_dropped(partial, started));
    for waited in [a, b] {
        assert!(waited >= Duration::from_millis(450), "dropped too early: {waited:?}");
        assert!(waited < Duration::from_secs(5), "dropped too late: {waited:?}");
    }
    // Meanwhile and after, real clients are served.
    let mut ws = wss_connect(server.addr, client_config(&pki.path("ca.pem"), None), "/ws");
    echo_once(&mut ws, "still here");
}

#[test]
fn garbage_client_hellos_do_not_disturb_other_clients() {
    let pki = Pki::make();
    let mut args = tls_args(&pki, "server");
    args.push("--echo".into());
    // Every socket here comes from 127.0.0.1: 24 garbage handshakes, some
    // still in flight on a busy machine, must not reach the per-address bound
    // that this test is not about.
    args.extend(["--max-handshakes-per-ip".into(), "64".into()]);
    let server = start(&args);
    let config = client_config(&pki.path("ca.pem"), None);
    let mut ws = wss_connect(server.addr, config.clone(), "/ws");
    let garbage: [&[u8]; 4] = [
        b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n",
        &[0x16, 0x03, 0x01, 0x00, 0x05, 0xde, 0xad, 0xbe, 0xef, 0x00],
        &[0xff; 600],
        &[0x16, 0x03, 0x03, 0x40, 0x00],
    ];
    let mut bad = Vec::new();
    for (i, bytes) in garbage.iter().cycle().take(24).enumerate() {
        let mut tcp = TcpStream::connect(server.addr).unwrap();
        tcp.write_all(bytes).unwrap();
        bad.push(tcp);
        echo_once(&mut ws, &format!("message {i} between garbage"));
    }
    // The garbage connections are dropped (the last kind waits for more
    // bytes, so it ends at the handshake timeout, not here).
    for tcp in bad.into_iter().filter(|_| true).take(3) {
        assert!(time_until_dropped(tcp, Instant::now()) < Duration::from_secs(5));
    }
    echo_once(&mut ws, "after the garbage");
    let mut fresh = wss_connect(server.addr, config, "/ws");
    echo_once(&mut fresh, "a new client");
}

#[test]
fn sighup_reloads_the_certificate_while_an_open_connection_keeps_chatting() {
    let pki = Pki::make();
    let (live_pem, live_key) = (pki.path("live.pem"), pki.path("live.key"));
    std::fs::copy(pki.path("server.pem"), &live_pem).unwrap();
    std::fs::copy(pki.path("server.key"), &live_key).unwrap();
    let mut server = start(&[
        "--echo".into(),
        "--tls-cert".into(),
        pki.path_str("live.pem"),
        "--tls-key".into(),
        pki.path_str("live.key"),
    ]);
    let config = client_config(&pki.path("ca.pem"), None);
    let served = || {
        let s = tls_connect(server.addr, config.clone()).expect("handshake");
        s.conn.peer_certificates().expect("a certificate")[0].to_vec()
    };
    assert_eq!(served(), pki.der("server.pem"));
    let mut open = wss_connect(server.addr, config.clone(), "/ws");
    echo_once(&mut open, "before the reload");

    std::fs::copy(pki.path("server2.pem"), &live_pem).unwrap();
    std::fs::copy(pki.path("server2.key"), &live_key).unwrap();
    server.signal("HUP");
    common::wait_until("the new certificate is served", || served() == pki.der("server2.pem"));
    echo_once(&mut open, "after the reload, on the old session");

    // A bad file: logged, the old (second) certificate kept, nothing stops.
    std::fs::write(&live_pem, "not a certificate").unwrap();
    server.signal("HUP");
    for _ in 0..5 {
        assert_eq!(served(), pki.der("server2.pem"));
    }
    echo_once(&mut open, "after a bad reload");
    assert!(server.child.try_wait().unwrap().is_none(), "wshub must keep running");
    // And a good file again is picked up.
    std::fs::copy(pki.path("server.pem"), &live_pem).unwrap();
    std::fs::copy(pki.path("server.key"), &live_key).unwrap();
    server.signal("HUP");
    common::wait_until("the first certificate is back", || served() == pki.der("server.pem"));
}

/// Records the client-certificate subject every upgrade saw, and runs the
/// test's message hook.
struct Hooks {
    subjects: Sender<Option<String>>,
    on_message: Box<OnMessage>,
}

type OnMessage = dyn Fn(&ServerHandle, ConnId, Message) + Send + Sync;

impl Handler for Hooks {
    fn on_upgrade(&self, _: &ServerHandle, _: ConnId, request: &RequestInfo) -> Upgrade {
        let _ = self.subjects.send(request.tls_client_subject.clone());
        Upgrade::accept()
    }
    fn on_connect(&self, server: &ServerHandle, conn: ConnId, _: &RequestInfo) {
        server.join(conn, "all").unwrap();
    }
    fn on_message(&self, server: &ServerHandle, conn: ConnId, message: Message) {
        (self.on_message)(server, conn, message)
    }
}

fn tls_config(pki: &Pki) -> Config {
    // In-memory PEM for the certificate and key (the C setters' other form).
    Config::default()
        .bind("127.0.0.1:0".parse().unwrap())
        .tls_cert(Some(PemSource::Pem(std::fs::read(pki.path("server.pem")).unwrap())))
        .tls_key(Some(PemSource::Pem(std::fs::read(pki.path("server.key")).unwrap())))
}

fn echo_hooks() -> (Hooks, crossbeam_channel::Receiver<Option<String>>) {
    common::init_log();
    let (tx, rx) = crossbeam_channel::unbounded();
    let on_message = Box::new(|s: &ServerHandle, c: ConnId, m: Message| {
        let _ = s.send(c, m);
    });
    (Hooks { subjects: tx, on_message }, rx)
}

#[test]
fn client_certificates_are_required_and_their_subject_reaches_the_upgrade_hook() {
    let pki = Pki::make();
    let (hooks, subjects) = echo_hooks();
    let config = tls_config(&pki).tls_client_ca(Some(PemSource::File(pki.path("ca.pem"))));
    let server = Server::start(config, hooks).unwrap();
    let addr = server.local_addr();

    let with_cert =
        client_config(&pki.path("ca.pem"), Some((&pki.path("client.pem"), &pki.path("client.key"))));
    let mut ws = wss_connect(addr, with_cert, "/ws");
    echo_once(&mut ws, "with a certificate");
    let subject = subjects.recv_timeout(common::WAIT).unwrap();
    assert_eq!(subject.as_deref(), Some("CN=client one,O=wshub tests"));

    // Without a certificate: TLS 1.3 lets the client finish its side first,
    // so the refusal (an alert) shows on the first read, before any upgrade.
    let without = client_config(&pki.path("ca.pem"), None);
    let refused = tls_connect(addr, without).and_then(|mut s| {
        s.write_all(b"GET /ws HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
        let mut buf = [0u8; 64];
        s.read(&mut buf)
    });
    assert!(refused.is_err(), "a client without a certificate must be refused: {refused:?}");
    assert!(subjects.try_recv().is_err(), "no upgrade for it");
    echo_once(&mut ws, "the first client is unharmed");
    server.stop();
}

#[test]
fn heartbeats_and_graceful_stop_with_1001_over_tls() {
    let pki = Pki::make();
    let (hooks, _) = echo_hooks();
    let config = tls_config(&pki).heartbeat_interval(Duration::from_millis(100));
    let server = Server::start(config, hooks).unwrap();
    let mut ws = wss_connect(server.local_addr(), client_config(&pki.path("ca.pem"), None), "/ws");
    loop {
        if let WsMessage::Ping(_) = ws.read().expect("a heartbeat ping") {
            break;
        }
    }
    let stopper = {
        let server = server.clone();
        std::thread::spawn(move || server.stop())
    };
    let code = loop {
        match ws.read() {
            Ok(WsMessage::Close(frame)) => break frame.map(|f| u16::from(f.code)),
            Ok(_) => {}
            Err(e) => panic!("no close frame: {e}"),
        }
    };
    assert_eq!(code, Some(1001));
    let _ = ws.close(None);
    while ws.read().is_ok() {}
    stopper.join().unwrap();
}

/// Sends 0..n as 4-byte frames alternately straight from the callback's
/// thread and through the hub (a broadcast to the room the client is in).
/// `on_message` sends `n` numbers to the sender (each followed by `pad`
/// zero bytes), every hundredth as a broadcast to "all".
fn numbers_hooks(n: u32, pad: usize) -> Hooks {
    let (tx, _) = crossbeam_channel::unbounded();
    let on_message = Box::new(move |s: &ServerHandle, c: ConnId, _m: Message| {
        // A query answered by the hub: once it returns, the join from
        // on_connect has taken effect, so the first sends may go straight to
        // the socket (on a busy machine the hub could otherwise still hold the
        // join and every send would queue behind it).
        let _ = s.room_size("all");
        for i in 0..n {
            let mut bytes = i.to_be_bytes().to_vec();
            bytes.resize(4 + pad, 0);
            let frame = Message::Binary(bytes);
            let _ = if i % 100 == 99 { s.broadcast("all", frame, None) } else { s.send(c, frame) };
        }
    });
    Hooks { subjects: tx, on_message }
}

#[test]
fn frames_keep_their_order_over_tls_across_direct_sends_the_hub_and_the_writer() {
    common::init_log();
    let pki = Pki::make();
    const N: u32 = 30_000;
    let config = tls_config(&pki).outbound_queue(1 << 20).outbound_max_bytes(1 << 30);
    let server = Server::start(config, numbers_hooks(N, 1020)).unwrap();
    let mut ws = wss_connect(server.local_addr(), client_config(&pki.path("ca.pem"), None), "/ws");
    ws.send(WsMessage::text("go")).unwrap();
    // Not reading for a while fills the socket: partial direct sends leave
    // ciphertext in the session and the writer takes over.
    std::thread::sleep(Duration::from_millis(300));
    for expected in 0..N {
        match ws.read().expect("a number") {
            WsMessage::Binary(b) => {
                assert_eq!(b[..4], expected.to_be_bytes(), "frame {expected} out of order");
                assert_eq!(b.len(), 1024, "frame {expected} whole");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let stats = server.stats();
    assert!(stats.direct_sends > 0, "{stats:?}");
    // The socket did fill: the writer wrote some of them, behind the rest of
    // a partial direct send.
    assert!(stats.direct_sends < u64::from(N), "{stats:?}");
    server.stop();
}

#[test]
fn a_client_that_stops_reading_is_closed_with_1013_over_tls() {
    let pki = Pki::make();
    let config = tls_config(&pki).outbound_queue(64);
    // 100,000 frames of 1 KB: more than the socket buffers of a host that
    // lets them grow far (tcp_rmem up to 32 MB takes 100,000 frames of 4
    // bytes whole, and nobody is ever a slow consumer).
    let server = Server::start(config, numbers_hooks(100_000, 1020)).unwrap();
    let mut ws = wss_connect(server.local_addr(), client_config(&pki.path("ca.pem"), None), "/ws");
    ws.send(WsMessage::text("go")).unwrap();
    common::wait_until("the slow consumer is caught", || server.stats().dropped_slow_consumer == 1);
    let code = loop {
        match ws.read() {
            Ok(WsMessage::Close(frame)) => break frame.map(|f| u16::from(f.code)),
            Ok(_) => {}
            Err(e) => panic!("no close frame: {e}"),
        }
    };
    assert_eq!(code, Some(1013));
    server.stop();
}

#[test]
fn the_config_file_and_the_flags_turn_tls_on() {
    let help = Command::new(env!("CARGO_BIN_EXE_wshub")).arg("--help").output().expect("run --help");
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in ["--tls-cert", "--tls-key", "--tls-client-ca"] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
    let pki = Pki::make();
    let file = pki.path("wshub.toml");
    std::fs::write(
        &file,
        format!("tls_cert = {:?}\ntls_key = {:?}\n", pki.path_str("server.pem"), pki.path_str("server.key")),
    )
    .unwrap();
    let server = start(&["--config".into(), file.to_str().unwrap().into()]);
    assert_eq!(https_get(server.addr, client_config(&pki.path("ca.pem"), None), "/healthz").0, 200);
    // A certificate without its key is refused at start, naming the problem.
    let out = Command::new(env!("CARGO_BIN_EXE_wshub"))
        .args(["--bind", "127.0.0.1:0", "--tls-cert", &pki.path_str("server.pem")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tls_key"));
}

#[test]
fn the_overflow_thread_answers_over_tls() {
    let pki = Pki::make();
    let mut args = tls_args(&pki, "server");
    args.extend(["--max-handshakes", "4", "--max-handshakes-per-ip", "4"].map(String::from));
    let server = start(&args);
    let config = client_config(&pki.path("ca.pem"), None);
    // Every handshake slot held by idle sockets: what comes next goes to the
    // overflow thread.
    let idle: Vec<_> = (0..4).map(|_| TcpStream::connect(server.addr).unwrap()).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = https_get(server.addr, config.clone(), "/metrics");
        assert_eq!(status, 200, "{body}");
        if body.lines().any(|l| l == "wshub_handshakes_in_progress 4") {
            break;
        }
        assert!(Instant::now() < deadline, "the idle sockets never held every slot: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, body) = https_get(server.addr, config.clone(), "/healthz");
    assert_eq!(status, 200, "{body}");
    let stream = tls_connect(server.addr, config).expect("TLS handshake with the overflow thread");
    let url = format!("wss://localhost:{}/ws", server.addr.port());
    match tungstenite::client(url, stream) {
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            assert_eq!(response.status().as_u16(), 503);
            assert!(response.headers().get("retry-after").is_some(), "{response:?}");
        }
        Err(e) => panic!("expected 503, got {e}"),
        Ok(_) => panic!("expected 503, got an upgrade"),
    }
    drop(idle);
}

#[test]
fn tls_records_without_a_request_do_not_stretch_the_handshake_deadline() {
    let pki = Pki::make();
    let mut args = tls_args(&pki, "server");
    args.extend(["--handshake-timeout-ms", "2000"].map(String::from));
    let server = start(&args);
    let mut stream = tls_connect(server.addr, client_config(&pki.path("ca.pem"), None)).expect("TLS");
    let started = Instant::now();
    stream.sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    // A KeyUpdate every 300 ms: TLS records, never a byte of the request.
    let cut_after = loop {
        assert!(started.elapsed() < Duration::from_secs(20), "never cut");
        if stream.conn.refresh_traffic_keys().is_err() {
            break started.elapsed();
        }
        if stream.conn.write_tls(&mut stream.sock).is_err() {
            break started.elapsed();
        }
        let mut buf = [0u8; 4096];
        let gone = loop {
            match stream.sock.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => {} // a 408, its close_notify
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    break false
                }
                Err(_) => break true,
            }
        };
        if gone {
            break started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(cut_after < Duration::from_millis(5500), "cut after {cut_after:?} (deadline 2 s)");
}
