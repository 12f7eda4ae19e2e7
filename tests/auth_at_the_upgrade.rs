//! Token auth at the upgrade (PROTOCOL.md "Handshake rules", "Identity and
//! authorization") against the real binary: every bad token is a 401 from
//! each of the three places a token can come from; RS256 and ES256 with keys
//! this test generates; the `rooms` claim; a session that ends at `exp`
//! (1008) unless refreshed; Origin; the per-user cap; and an honest client
//! chatting after all of it.

mod admission_common;
mod protocol_common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use admission_common::{ip, upgrade, Outcome};
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use protocol_common::{Frame, Wshub};
use serde_json::{json, Value};

const SECRET: &str = "test-secret-of-some-length";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn hs(alg: Algorithm, claims: &Value) -> String {
    encode(&Header::new(alg), claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Where a token goes.
#[derive(Debug, Clone, Copy)]
enum Place {
    Header,
    Query,
    Subprotocol,
}

/// Upgrades from 127.0.0.1 with `token` in `place` (None: no token).
fn try_token(server: &Wshub, token: Option<&str>, place: Place) -> Outcome {
    let (query, headers, protocols) = match (token, place) {
        (None, _) => (String::new(), vec![], vec!["wshub.v1.json".to_owned()]),
        (Some(t), Place::Header) => {
            (String::new(), vec![format!("Bearer {t}")], vec!["wshub.v1.json".to_owned()])
        }
        (Some(t), Place::Query) => (format!("?access_token={t}"), vec![], vec!["wshub.v1.json".to_owned()]),
        (Some(t), Place::Subprotocol) => {
            (String::new(), vec![], vec!["wshub.v1.json".to_owned(), format!("bearer.{t}")])
        }
    };
    let headers: Vec<(&str, &str)> = headers.iter().map(|h| ("Authorization", h.as_str())).collect();
    let protocols: Vec<&str> = protocols.iter().map(String::as_str).collect();
    upgrade(ip("127.0.0.1"), server.addr, &query, &headers, &protocols)
}

fn claims(sub: &str, exp_in: i64) -> Value {
    json!({"sub": sub, "exp": (now() as i64 + exp_in)})
}

#[test]
fn every_bad_token_is_a_401_from_every_place_and_good_ones_open() {
    let server = Wshub::start(&["--jwt-secret", SECRET, "--jwt-audience", "chat"]);
    let good = json!({"sub": "alice", "exp": now() + 300, "aud": "chat"});
    let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let body = b64(good.to_string().as_bytes());
    let bad_signature = {
        let t = hs(Algorithm::HS256, &good);
        let (rest, _) = t.rsplit_once('.').unwrap();
        format!("{rest}.{}", b64(b"not the signature at all, 32 by"))
    };
    let bad: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("malformed", Some("not.a-token".into())),
        ("badly signed", Some(bad_signature)),
        (
            "other secret",
            Some(encode(&Header::default(), &good, &EncodingKey::from_secret(b"other")).unwrap()),
        ),
        ("expired", Some(hs(Algorithm::HS256, &json!({"sub": "a", "exp": now() - 120, "aud": "chat"})))),
        ("no exp", Some(hs(Algorithm::HS256, &json!({"sub": "a", "aud": "chat"})))),
        (
            "not yet valid",
            Some(hs(
                Algorithm::HS256,
                &json!({"sub": "a", "exp": now() + 600, "nbf": now() + 300, "aud": "chat"}),
            )),
        ),
        (
            "wrong audience",
            Some(hs(Algorithm::HS256, &json!({"sub": "a", "exp": now() + 300, "aud": "other"}))),
        ),
        ("no audience", Some(hs(Algorithm::HS256, &claims("a", 300)))),
        ("alg none", Some(format!("{header}.{body}."))),
        ("alg none, signed", Some(format!("{header}.{body}.{}", b64(b"x")))),
    ];
    for place in [Place::Header, Place::Query, Place::Subprotocol] {
        for (what, token) in &bad {
            let outcome = try_token(&server, token.as_deref(), place);
            assert_eq!(outcome.status(), 401, "{what} in {place:?}: {outcome:?}");
        }
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let (mut c, connected) = try_token(&server, Some(&hs(alg, &good)), place).open();
            assert_eq!(connected["payload"]["user"], "alice", "{alg:?} in {place:?}");
            // The bearer entry is never the chosen subprotocol.
            assert_eq!(c.subprotocol.as_deref(), Some("wshub.v1.json"));
            c.assert_nothing_pending();
        }
    }
    // Within the 30 s leeway, nbf is honoured as clock skew.
    let skewed =
        hs(Algorithm::HS256, &json!({"sub": "a", "exp": now() + 300, "nbf": now() + 10, "aud": "chat"}));
    assert_eq!(try_token(&server, Some(&skewed), Place::Header).status(), 101);
}

/// Generates a key pair with the openssl CLI into a temporary directory;
/// (private PEM, public key path).
fn key_pair(kind: &str) -> (Vec<u8>, PathBuf) {
    let dir = std::env::temp_dir().join(format!("wshub-auth-{}-{kind}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let private = dir.join("private.pem");
    let public = dir.join("public.pem");
    let gen: Vec<&str> = match kind {
        "rsa" => vec!["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"],
        _ => vec!["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out"],
    };
    let ok = Command::new("openssl")
        .args(&gen)
        .arg(&private)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl genpkey");
    let ok = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public)
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl pkey -pubout");
    (std::fs::read(&private).unwrap(), public)
}

#[test]
fn rs256_and_es256_with_generated_keys_and_no_algorithm_confusion() {
    for (kind, alg) in [("rsa", Algorithm::RS256), ("ec", Algorithm::ES256)] {
        let (private, public) = key_pair(kind);
        let server = Wshub::start(&["--jwt-public-key", public.to_str().unwrap()]);
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&private).unwrap(),
            _ => EncodingKey::from_ec_pem(&private).unwrap(),
        };
        let token = encode(&Header::new(alg), &claims("bob", 300), &key).unwrap();
        for place in [Place::Header, Place::Query, Place::Subprotocol] {
            let (_, connected) = try_token(&server, Some(&token), place).open();
            assert_eq!(connected["payload"]["user"], "bob");
        }
        // HS256 keyed with the public key's own bytes: refused.
        let public_pem = std::fs::read(&public).unwrap();
        let confused = encode(
            &Header::new(Algorithm::HS256),
            &claims("bob", 300),
            &EncodingKey::from_secret(&public_pem),
        )
        .unwrap();
        assert_eq!(
            try_token(&server, Some(&confused), Place::Header).status(),
            401,
            "{kind}: HS256 confusion"
        );
        let expired = encode(&Header::new(alg), &claims("bob", -120), &key).unwrap();
        assert_eq!(try_token(&server, Some(&expired), Place::Query).status(), 401);
        let _ = std::fs::remove_dir_all(public.parent().unwrap());
    }
}

fn error_code(reply: &Value) -> &str {
    assert_eq!(reply["type"], "error", "{reply}");
    reply["payload"]["code"].as_str().unwrap()
}

#[test]
fn the_rooms_claim_limits_join_publish_binary_and_presence() {
    let server = Wshub::start(&["--jwt-secret", SECRET]);
    let limited =
        hs(Algorithm::HS256, &json!({"sub": "carol", "exp": now() + 300, "rooms": ["lobby", "chat:*"]}));
    let open_token = hs(Algorithm::HS256, &claims("dave", 300));
    let (mut dave, _) = try_token(&server, Some(&open_token), Place::Header).open();
    dave.join("secret");
    let (mut carol, _) = try_token(&server, Some(&limited), Place::Header).open();

    assert_eq!(error_code(&carol.request("room:join", json!({"room": "secret"}))), "forbidden");
    assert_eq!(error_code(&carol.request("room:publish", json!({"room": "secret", "data": 1}))), "forbidden");
    assert_eq!(error_code(&carol.request("presence:get", json!({"room": "secret"}))), "forbidden");
    let mut frame = vec![0x01, 0, 6];
    frame.extend_from_slice(b"secret");
    frame.extend_from_slice(b"body");
    carol.send_binary(&frame);
    assert_eq!(error_code(&carol.json()), "forbidden");

    // A `chat:*` claim allows chat:1; presence carries users.
    let ack = carol.join("chat:1");
    assert_eq!(ack["room"], "chat:1");
    let members = carol.ok("presence:get", json!({"room": "chat:1"}));
    assert_eq!(members["members"][0]["user"], "carol", "{members}");
    // An allowing claim is enough for presence without joining; no claim is not.
    carol.ok("presence:get", json!({"room": "lobby"}));
    assert_eq!(error_code(&dave.request("presence:get", json!({"room": "chat:1"}))), "forbidden");
    let seen = dave.ok("presence:get", json!({"room": "secret"}));
    assert_eq!(seen["members"][0]["user"], "dave");
    // Nothing Carol tried reached the room.
    dave.assert_nothing_pending();
}

#[test]
fn a_session_ends_at_exp_with_1008_unless_refreshed() {
    let server = Wshub::start(&["--jwt-secret", SECRET]);
    let exp = now() + 3;
    let short = hs(Algorithm::HS256, &json!({"sub": "erin", "exp": exp}));
    let (mut expiring, _) = try_token(&server, Some(&short), Place::Header).open();
    let (mut refreshed, _) = try_token(&server, Some(&short), Place::Query).open();

    // A bad or foreign token changes nothing.
    let foreign = hs(Algorithm::HS256, &claims("mallory", 300));
    assert_eq!(error_code(&refreshed.request("auth:refresh", json!({"token": foreign}))), "forbidden");
    assert_eq!(error_code(&refreshed.request("auth:refresh", json!({"token": "junk"}))), "forbidden");
    let fresh = hs(Algorithm::HS256, &claims("erin", 300));
    let ack = refreshed.ok("auth:refresh", json!({"token": fresh}));
    assert!(ack["exp"].as_u64().unwrap() >= now() + 290);

    // The expiring one sends nothing: the close must come at exp, not at its next message.
    let Frame::Close(code) = expiring.frame() else { panic!("expected a close") };
    let at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    assert_eq!(code, 1008);
    assert!(at >= exp as f64 - 0.05 && at < exp as f64 + 1.0, "closed at {at}, exp {exp}");

    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        refreshed.assert_nothing_pending();
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn origin_allow_list_and_per_user_cap() {
    let server = Wshub::start(&[
        "--jwt-secret",
        SECRET,
        "--allow-origin",
        "https://app.example.com",
        "--allow-origin",
        "https://*.example.org",
        "--max-connections-per-user",
        "2",
    ]);
    let token = format!("Bearer {}", hs(Algorithm::HS256, &claims("frank", 300)));
    let with_origin = |origin: &str| {
        upgrade(ip("127.0.0.1"), server.addr, "", &[("Authorization", &token), ("Origin", origin)], &[])
    };
    let refused = with_origin("https://evil.example.net");
    assert_eq!(refused.status(), 403, "{refused:?}");
    assert_eq!(with_origin("https://example.org").status(), 403);
    let (_a, _) = with_origin("https://app.example.com").open();
    let (_b, _) = with_origin("https://eu.example.org").open();
    let third = with_origin("https://app.example.com");
    assert_eq!(third.status(), 503, "per-user cap: {third:?}");
    assert!(third.header("retry-after").is_some());
    // Another user is not affected; a closed connection frees its place.
    let other = format!("Bearer {}", hs(Algorithm::HS256, &claims("grace", 300)));
    let (_g, _) = upgrade(ip("127.0.0.1"), server.addr, "", &[("Authorization", &other)], &[]).open();
    drop(_a);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match with_origin("https://app.example.com") {
            Outcome::Open(_) => break,
            other => {
                assert_eq!(other.status(), 503);
                assert!(Instant::now() < deadline, "the closed connection never freed its place");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

#[test]
fn a_session_ends_at_exp_even_while_a_frame_trickles_in() {
    let server = Wshub::start(&["--jwt-secret", SECRET]);
    let exp = now() + 3;
    let short = hs(Algorithm::HS256, &json!({"sub": "trickler", "exp": exp}));
    let (mut client, _) = try_token(&server, Some(&short), Place::Header).open();
    client.join("lobby");
    let stream = client.ws.get_mut();
    stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    // A masked text frame of 100 bytes, its header at once, then a byte every 300 ms.
    std::io::Write::write_all(stream, &[0x81, 0x80 | 100, 1, 2, 3, 4]).unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let mut next_byte = Instant::now();
    let closed_at = loop {
        assert!(started.elapsed() < Duration::from_secs(25), "never closed");
        if Instant::now() >= next_byte {
            if std::io::Write::write_all(stream, b"x").is_err() {
                break now();
            }
            next_byte += Duration::from_millis(300);
        }
        let mut buf = [0u8; 256];
        match std::io::Read::read(stream, &mut buf) {
            Ok(0) => break now(),
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.contains(&0x88) {
                    break now();
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break now(),
        }
    };
    // Seconds on the wall clock, with room for a loaded machine; the frame
    // would have taken 30 s to arrive.
    assert!(closed_at <= exp + 3, "closed at {closed_at}, exp {exp}");
    let close = got.iter().position(|&b| b == 0x88).expect("a close frame");
    assert_eq!(&got[close + 2..close + 4], &1008u16.to_be_bytes(), "{got:?}");
}
