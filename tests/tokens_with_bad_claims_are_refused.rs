//! Token checks of PROTOCOL.md 1.2 ("Door and identity") against the real
//! binary: a token carrying `aud` when no audience is configured, a `rooms`
//! claim that is not an array of strings (`null` included) and an `exp` past
//! what the clock can add are all `401` (and the server goes on); a P-384
//! public key verifies ES384 tokens; a key of another type stops the binary
//! at start with a message saying so.

mod admission_common;
mod protocol_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use admission_common::{ip, upgrade, Outcome};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use protocol_common::Wshub;
use serde_json::{json, Value};

const SECRET: &str = "bad-claims-secret";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn signed(claims: &Value) -> String {
    encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

fn with_token(server: &Wshub, token: &str) -> Outcome {
    upgrade(ip("127.0.0.1"), server.addr, &format!("?access_token={token}"), &[], &["wshub.v1.json"])
}

#[test]
fn aud_without_a_configured_audience_bad_rooms_and_a_huge_exp_are_401() {
    let server = Wshub::start(&["--jwt-secret", SECRET]);
    let exp = now() + 300;
    let refused = [
        ("aud without --jwt-audience", json!({"sub": "a", "exp": exp, "aud": "billing"})),
        ("rooms null", json!({"sub": "a", "exp": exp, "rooms": null})),
        ("rooms a string", json!({"sub": "a", "exp": exp, "rooms": "lobby"})),
        ("rooms with a number", json!({"sub": "a", "exp": exp, "rooms": ["lobby", 7]})),
        ("rooms with null", json!({"sub": "a", "exp": exp, "rooms": [null]})),
        ("exp 2^63", json!({"sub": "a", "exp": 1u64 << 63})),
        ("exp u64::MAX", json!({"sub": "a", "exp": u64::MAX})),
    ];
    for (what, claims) in refused {
        assert_eq!(with_token(&server, &signed(&claims)).status(), 401, "{what}");
    }
    // Still serving, and good tokens still open.
    let (_, connected) = with_token(&server, &signed(&json!({"sub": "ok", "exp": exp}))).open();
    assert_eq!(connected["payload"]["user"], "ok");
    let rooms = json!({"sub": "ok", "exp": exp, "rooms": ["lobby", "chat:*"]});
    assert_eq!(with_token(&server, &signed(&rooms)).status(), 101);

    // With an audience configured, a token naming it passes.
    let server = Wshub::start(&["--jwt-secret", SECRET, "--jwt-audience", "chat"]);
    assert_eq!(with_token(&server, &signed(&json!({"sub": "a", "exp": exp, "aud": "chat"}))).status(), 101);
    assert_eq!(with_token(&server, &signed(&json!({"sub": "a", "exp": exp, "aud": "x"}))).status(), 401);
}

/// Generates a key with the openssl CLI: (private PEM, public key path).
fn key_pair(dir: &Path, name: &str, genpkey: &[&str]) -> (Vec<u8>, PathBuf) {
    let private = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub.pem"));
    let ok = Command::new("openssl")
        .arg("genpkey")
        .args(genpkey)
        .arg("-out")
        .arg(&private)
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl genpkey {genpkey:?}");
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
fn a_p384_key_verifies_es384_and_other_key_types_are_refused_at_start() {
    let dir = std::env::temp_dir().join(format!("wshub-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (p384, p384_pub) =
        key_pair(&dir, "p384", &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"]);
    let (p256, _) = key_pair(&dir, "p256", &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]);
    let server = Wshub::start(&["--jwt-public-key", p384_pub.to_str().unwrap()]);
    let claims = json!({"sub": "carol", "exp": now() + 300});
    let es384 = encode(&Header::new(Algorithm::ES384), &claims, &EncodingKey::from_ec_pem(&p384).unwrap());
    let (_, connected) = with_token(&server, &es384.unwrap()).open();
    assert_eq!(connected["payload"]["user"], "carol");
    let es256 = encode(&Header::new(Algorithm::ES256), &claims, &EncodingKey::from_ec_pem(&p256).unwrap());
    assert_eq!(with_token(&server, &es256.unwrap()).status(), 401, "another key, another algorithm");

    let (_, ed25519_pub) = key_pair(&dir, "ed25519", &["-algorithm", "ED25519"]);
    let out = Command::new(env!("CARGO_BIN_EXE_wshub"))
        .args(["--bind", "127.0.0.1:0", "--jwt-public-key", ed25519_pub.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run wshub");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an Ed25519 key must stop the start: {stderr}");
    assert!(stderr.contains("RSA, P-256 or P-384"), "a clear message: {stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A certificate of a P-256 key verifies ES256 as it did before the key's
/// type was checked (jsonwebtoken reads a certificate's key; an RSA
/// certificate verifies RS256 the same way).
#[test]
fn an_ec_certificate_still_verifies_es256() {
    let dir = std::env::temp_dir().join(format!("wshub-cert-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (p256, _) = key_pair(&dir, "p256", &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]);
    let (key, cert) = (dir.join("p256.pem"), dir.join("p256.crt"));
    let ok = Command::new("openssl")
        .args(["req", "-x509", "-subj", "/CN=tokens", "-days", "1", "-key"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl req -x509");
    let server = Wshub::start(&["--jwt-public-key", cert.to_str().unwrap()]);
    let claims = json!({"sub": "dave", "exp": now() + 300});
    let es256 = encode(&Header::new(Algorithm::ES256), &claims, &EncodingKey::from_ec_pem(&p256).unwrap());
    let (_, connected) = with_token(&server, &es256.unwrap()).open();
    assert_eq!(connected["payload"]["user"], "dave");
    let _ = std::fs::remove_dir_all(&dir);
}
