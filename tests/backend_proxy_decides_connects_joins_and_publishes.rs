//! The backend proxy (PROTOCOL.md 1.2, "Namespaces and rights") against the
//! real binary and a small real HTTP backend this test runs (std
//! TcpListener, HTTP/1.1 with keep-alive): `--proxy-connect` admits with the
//! user and caps it answers, refuses with its 401/403, and turns anything
//! else into 503; `--proxy-join` refuses, grants rights, or is
//! `unavailable`; `--proxy-publish` refuses, replaces the data, or is
//! `unavailable`; a backend that hangs costs only the waiting upgrade its
//! timeout (others connect meanwhile); a backend that is down fails closed;
//! calls carry `X-Wshub-Node` and the key, reuse their connection, and are
//! counted on `/metrics`.

mod admission_common;
mod protocol_common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use admission_common::{ip, upgrade};
use protocol_common::{get, metric, Client, Wshub};
use serde_json::{json, Value};

/// One request the backend received.
#[derive(Debug, Clone)]
struct Call {
    path: String,
    headers: HashMap<String, String>,
    body: Value,
}

/// What the backend answers a call with.
enum Answer {
    Status(u16, Value),
    /// A redirect (status, `Location`), with an empty body.
    Redirect(u16, String),
    /// Holds the call without answering (until its connection is closed by
    /// the server, or the hold ends).
    Hang,
}

type Decide = dyn Fn(&Call) -> Answer + Send + Sync;

/// A small HTTP/1.1 backend on 127.0.0.1:0, one thread per connection.
struct Backend {
    addr: SocketAddr,
    calls: Arc<Mutex<Vec<Call>>>,
    connections: Arc<AtomicUsize>,
    /// Told of every call as it arrives (before it is answered).
    arrived: mpsc::Receiver<Call>,
}

impl Backend {
    fn start(decide: impl Fn(&Call) -> Answer + Send + Sync + 'static) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let addr = listener.local_addr().expect("addr");
        let calls = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (tx, arrived) = mpsc::channel();
        let decide: Arc<Decide> = Arc::new(decide);
        let (c, n) = (calls.clone(), connections.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().take(200) {
                let Ok(stream) = stream else { continue };
                n.fetch_add(1, SeqCst);
                let (c, decide, tx) = (c.clone(), decide.clone(), tx.clone());
                std::thread::spawn(move || serve(stream, &c, &*decide, &tx));
            }
        });
        Backend { addr, calls, connections, arrived }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn calls_to(&self, path: &str) -> Vec<Call> {
        self.calls.lock().unwrap().iter().filter(|c| c.path == path).cloned().collect()
    }
}

/// Serves one keep-alive connection: at most 100 requests.
fn serve(stream: TcpStream, calls: &Mutex<Vec<Call>>, decide: &Decide, arrived: &mpsc::Sender<Call>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    for _ in 0..100 {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split(' ').nth(1).unwrap_or("").to_owned();
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((name, value)) = h.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
            }
        }
        let len: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let call = Call { path, headers, body: serde_json::from_slice(&body).unwrap_or(Value::Null) };
        calls.lock().unwrap().push(call.clone());
        let _ = arrived.send(call.clone());
        match decide(&call) {
            Answer::Status(status, body) => {
                let body = if body.is_null() { String::new() } else { body.to_string() };
                let head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                if writer.write_all(head.as_bytes()).and_then(|()| writer.write_all(body.as_bytes())).is_err()
                {
                    return;
                }
            }
            Answer::Redirect(status, location) => {
                let head =
                    format!("HTTP/1.1 {status} X\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n");
                if writer.write_all(head.as_bytes()).is_err() {
                    return;
                }
            }
            Answer::Hang => {
                // Until the server gives up on it (its read ends) or the hold ends.
                let mut rest = Vec::new();
                let _ = reader.read_to_end(&mut rest);
                return;
            }
        }
    }
}

/// Upgrades with `cookie`; the HTTP status (101 when it opened) and the client.
fn connect_with(server: &Wshub, cookie: &str) -> (u16, Option<Client>) {
    let outcome = upgrade(ip("127.0.0.1"), server.addr, "", &[("Cookie", cookie)], &["wshub.v1.json"]);
    match outcome.status() {
        101 => (101, Some(outcome.open().0)),
        status => (status, None),
    }
}

fn code(reply: &Value) -> &str {
    assert_eq!(reply["type"], "error", "{reply}");
    reply["payload"]["code"].as_str().expect("code")
}

/// A port nothing listens on (bound, then let go).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn the_connect_proxy_admits_refuses_and_fails_closed() {
    let backend = Backend::start(|call| {
        match call.headers.get("authorization").map(String::as_str) {
            Some("apikey proxy-secret") => {}
            _ => return Answer::Status(500, Value::Null),
        }
        let cookie = call.body["headers"]["cookie"].as_str().unwrap_or("");
        match cookie {
            "session=alice" => Answer::Status(
                200,
                json!({"user": "alice", "caps": [{"rooms": ["chat"], "allow": ["join", "publish"]}]}),
            ),
            "session=mallory" => Answer::Status(403, Value::Null),
            "session=nobody" => Answer::Status(401, Value::Null),
            "session=weird" => Answer::Status(200, json!({"no": "user"})),
            _ => Answer::Status(500, json!({"error": "boom"})),
        }
    });
    let url = backend.url("/connect");
    let server = Wshub::start(&["--proxy-connect", &url, "--proxy-key", "proxy-secret"]);

    let (status, alice) = connect_with(&server, "session=alice");
    assert_eq!(status, 101);
    let mut alice = alice.expect("alice");
    alice.join("chat");
    alice.ok("room:publish", json!({"room": "chat", "data": 1}));
    assert_eq!(
        code(&alice.request("room:join", json!({"room": "elsewhere"}))),
        "forbidden",
        "caps from the backend"
    );
    assert_eq!(
        code(&alice.request("presence:get", json!({"room": "chat"}))),
        "forbidden",
        "no presence right"
    );

    for (cookie, want) in
        [("session=mallory", 403), ("session=nobody", 401), ("session=broken", 503), ("session=weird", 503)]
    {
        assert_eq!(connect_with(&server, cookie).0, want, "{cookie}");
    }

    let calls = backend.calls_to("/connect");
    assert_eq!(calls.len(), 5);
    let first = &calls[0];
    assert_eq!(first.body["path"], "/ws");
    assert!(first.body["remote_addr"].as_str().is_some_and(|a| a.starts_with("127.0.0.1:")), "{first:?}");
    assert_eq!(first.body["headers"]["cookie"], "session=alice");
    assert!(first.headers.get("x-wshub-node").is_some_and(|n| !n.is_empty()), "{first:?}");
    assert!(
        backend.connections.load(SeqCst) < calls.len(),
        "{} connections for {} calls: they are kept alive and reused",
        backend.connections.load(SeqCst),
        calls.len()
    );
    assert_eq!(metric(server.addr, r#"wshub_proxy_calls_total{kind="connect"}"#), 5);
    assert_eq!(metric(server.addr, r#"wshub_proxy_failures_total{kind="connect"}"#), 2);
}

#[test]
fn a_hanging_backend_costs_only_the_waiting_upgrade_and_a_down_one_fails_closed() {
    let backend = Backend::start(|call| match call.body["headers"]["cookie"].as_str() {
        Some("session=slow") => Answer::Hang,
        _ => Answer::Status(200, json!({"user": "quick"})),
    });
    let url = backend.url("/connect");
    // A generous timeout: the other upgrade below must fit inside it on a loaded machine.
    let server = Wshub::start(&["--proxy-connect", &url, "--proxy-timeout-ms", "5000"]);
    let addr = server.addr;
    let slow = std::thread::spawn(move || {
        let outcome = upgrade(ip("127.0.0.1"), addr, "", &[("Cookie", "session=slow")], &["wshub.v1.json"]);
        outcome.status()
    });
    // The backend holds the slow call; meanwhile others connect and the server answers.
    let held = backend.arrived.recv_timeout(Duration::from_secs(10)).expect("the slow call arrived");
    assert_eq!(held.body["headers"]["cookie"], "session=slow");
    let (status, quick) = connect_with(&server, "session=quick");
    assert_eq!(status, 101, "another upgrade went through while the backend held the first");
    assert!(!slow.is_finished(), "the slow upgrade is still waiting for the backend");
    assert_eq!(get(addr, "/healthz").0, 200);
    let mut quick = quick.expect("quick");
    quick.join("lobby");
    assert_eq!(slow.join().expect("slow thread"), 503, "no answer within the timeout is 503");
    assert_eq!(metric(addr, r#"wshub_proxy_failures_total{kind="connect"}"#), 1);

    // Nothing listens at all.
    let down = format!("http://127.0.0.1:{}/connect", closed_port());
    let server = Wshub::start(&["--proxy-connect", &down]);
    assert_eq!(connect_with(&server, "session=any").0, 503);
}

#[test]
fn the_join_proxy_refuses_grants_rights_or_is_unavailable() {
    let backend = Backend::start(|call| match call.body["room"].as_str() {
        Some("vip") => Answer::Status(403, Value::Null),
        Some("feed") => Answer::Status(200, json!({"allow": ["join"]})),
        Some("flaky") => Answer::Status(502, Value::Null),
        Some("nil") => Answer::Status(200, json!({"allow": null})),
        _ => Answer::Status(200, Value::Null),
    });
    let url = backend.url("/join");
    let server = Wshub::start(&["--proxy-join", &url, "--rate-limit", "0"]);
    let mut c = server.client();
    assert_eq!(code(&c.request("room:join", json!({"room": "vip"}))), "forbidden");
    assert_eq!(code(&c.request("room:join", json!({"room": "flaky"}))), "unavailable");
    c.join("feed");
    assert_eq!(
        code(&c.request("room:publish", json!({"room": "feed", "data": 1}))),
        "forbidden",
        "join alone: read-only"
    );
    c.join("open");
    c.ok("room:publish", json!({"room": "open", "data": 1}));
    // A rejoin of a room it is in does not ask again.
    c.join("open");
    // A present but null `allow` is not the token's rights (fail closed).
    assert_eq!(code(&c.request("room:join", json!({"room": "nil"}))), "unavailable");
    let calls = backend.calls_to("/join");
    assert_eq!(calls.len(), 5, "{calls:?}");
    assert_eq!(calls[0].body, json!({"user": null, "clientId": calls[0].body["clientId"], "room": "vip"}));
    assert!(calls[0].body["clientId"].is_string());
    // An event stream asks it too.
    let (status, _, _) = get(server.addr, "/sse?room=vip");
    assert_eq!(status, 403);
    assert_eq!(metric(server.addr, r#"wshub_proxy_calls_total{kind="join"}"#), 6);
    assert_eq!(metric(server.addr, r#"wshub_proxy_failures_total{kind="join"}"#), 2);

    let down = format!("http://127.0.0.1:{}/join", closed_port());
    let server = Wshub::start(&["--proxy-join", &down]);
    let mut c = server.client();
    assert_eq!(code(&c.request("room:join", json!({"room": "any"}))), "unavailable");
}

#[test]
fn the_publish_proxy_refuses_replaces_data_or_is_unavailable() {
    let backend = Backend::start(|call| match call.body["data"].as_str() {
        Some("spam") => Answer::Status(403, Value::Null),
        Some("shout") => Answer::Status(200, json!({"data": "SHOUT"})),
        Some("slow") => Answer::Hang,
        _ => Answer::Status(200, Value::Null),
    });
    let url = backend.url("/publish");
    let server = Wshub::start(&["--proxy-publish", &url, "--proxy-timeout-ms", "1000", "--rate-limit", "0"]);
    let mut a = server.client();
    let mut b = server.client();
    a.join("room");
    b.join("room");
    assert_eq!(a.json()["type"], "presence:join");
    assert_eq!(code(&a.request("room:publish", json!({"room": "room", "data": "spam"}))), "forbidden");
    a.ok("room:publish", json!({"room": "room", "data": "shout"}));
    a.ok("room:publish", json!({"room": "room", "data": {"as": "is"}}));
    assert_eq!(b.json()["payload"]["data"], "SHOUT", "the backend's data replaced the client's");
    assert_eq!(b.json()["payload"]["data"], json!({"as": "is"}));
    assert_eq!(code(&a.request("room:publish", json!({"room": "room", "data": "slow"}))), "unavailable");
    // Binary publishes cannot pass a JSON proxy: refused, not let through.
    let mut bin = vec![0x01, 0, 4];
    bin.extend_from_slice(b"roombody");
    a.send_binary(&bin);
    assert_eq!(code(&a.json()), "forbidden");
    b.assert_nothing_pending();
    let call = &backend.calls_to("/publish")[0];
    assert_eq!((call.body["room"].as_str(), call.body["data"].as_str()), (Some("room"), Some("spam")));
    assert!(call.body["clientId"].is_string() && call.body["user"].is_null(), "{call:?}");
    assert_eq!(metric(server.addr, r#"wshub_proxy_calls_total{kind="publish"}"#), 4);
    assert_eq!(metric(server.addr, r#"wshub_proxy_failures_total{kind="publish"}"#), 1);
}

#[test]
fn a_redirect_from_the_backend_is_a_failure_not_followed() {
    // Another host that would admit anyone: a followed redirect would ask it.
    let elsewhere =
        Backend::start(|_| Answer::Status(200, json!({"user": "intruder", "allow": ["join", "publish"]})));
    let target = elsewhere.url("/connect");
    let backend = Backend::start(move |call| match call.body["headers"]["cookie"].as_str() {
        Some("status=301") => Answer::Redirect(301, target.clone()),
        Some("status=302") => Answer::Redirect(302, target.clone()),
        Some("status=307") => Answer::Redirect(307, target.clone()),
        _ => Answer::Redirect(303, target.clone()),
    });
    let url = backend.url("/connect");
    let server = Wshub::start(&["--proxy-connect", &url, "--proxy-key", "proxy-secret"]);
    for cookie in ["status=301", "status=302", "status=303", "status=307"] {
        assert_eq!(connect_with(&server, cookie).0, 503, "{cookie}: a redirect is not an answer");
    }
    assert_eq!(backend.calls_to("/connect").len(), 4);
    assert!(elsewhere.calls_to("/connect").is_empty(), "the redirect was followed to another host");
    assert_eq!(metric(server.addr, r#"wshub_proxy_failures_total{kind="connect"}"#), 4);
}

#[test]
fn the_publish_proxy_cannot_replace_data_with_more_than_a_message_may_hold() {
    let backend = Backend::start(|call| match call.body["data"].as_str() {
        Some("grow") => Answer::Status(200, json!({"data": "x".repeat(10_000)})),
        _ => Answer::Status(200, json!({"data": "y".repeat(1_000)})),
    });
    let url = backend.url("/publish");
    let server = Wshub::start(&["--proxy-publish", &url, "--max-message-size", "4096", "--rate-limit", "0"]);
    let mut a = server.client();
    let mut b = server.client();
    a.join("room");
    b.join("room");
    assert_eq!(a.json()["type"], "presence:join");
    // Members are told `maxMessageBytes` 4096 and may refuse (1009) anything longer.
    assert_eq!(
        code(&a.request("room:publish", json!({"room": "room", "data": "grow"}))),
        "unavailable",
        "a replacement over the message size is the backend's failure"
    );
    b.assert_nothing_pending();
    a.ok("room:publish", json!({"room": "room", "data": "small"}));
    assert_eq!(b.json()["payload"]["data"], "y".repeat(1_000));
    assert_eq!(metric(server.addr, r#"wshub_proxy_failures_total{kind="publish"}"#), 1);
}

#[test]
fn presence_of_a_room_the_join_proxy_refuses_is_not_shown_to_a_non_member() {
    use jsonwebtoken::{encode, EncodingKey, Header};
    const SECRET: &str = "presence-proxy-secret";
    let backend = Backend::start(|call| match (call.body["user"].as_str(), call.body["room"].as_str()) {
        (Some("insider"), _) => Answer::Status(200, Value::Null),
        (_, Some("vip")) => Answer::Status(403, Value::Null),
        (_, Some("quiet")) => Answer::Status(200, json!({"allow": ["join"]})),
        _ => Answer::Status(200, Value::Null),
    });
    let url = backend.url("/join");
    let server = Wshub::start(&["--jwt-secret", SECRET, "--proxy-join", &url, "--rate-limit", "0"]);
    let connect = |claims: Value| {
        let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 300;
        let mut claims = claims;
        claims["exp"] = json!(exp);
        let token =
            encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap();
        let query = format!("?access_token={token}");
        upgrade(ip("127.0.0.1"), server.addr, &query, &[], &["wshub.v1.json"]).open().0
    };
    let mut insider = connect(json!({"sub": "insider"}));
    for room in ["vip", "quiet", "open"] {
        insider.join(room);
    }
    let mut spy = connect(json!({"sub": "spy", "rooms": ["vip", "quiet", "open"]}));
    assert_eq!(code(&spy.request("room:join", json!({"room": "vip"}))), "forbidden");
    assert_eq!(
        code(&spy.request("presence:get", json!({"room": "vip"}))),
        "forbidden",
        "the backend refuses this user the room: its members are not shown either"
    );
    assert_eq!(
        code(&spy.request("presence:get", json!({"room": "quiet"}))),
        "forbidden",
        "the backend's allow has no presence"
    );
    let open = spy.ok("presence:get", json!({"room": "open"}));
    assert_eq!(open["members"][0]["user"], "insider", "{open}");
}
