//! `wshub genconfig` writes a config with fresh secrets (and never overwrites
//! one); `wshub gentoken` signs a token with that file's secret that a server
//! started with the same file accepts, within the token's `rooms`.

mod protocol_common;
use protocol_common as common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{Client, Wshub};
use serde_json::json;

/// A fresh directory for this test process and test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wshub-gen-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn wshub(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wshub")).args(args).output().expect("run wshub")
}

fn genconfig(path: &Path) -> Output {
    wshub(&["genconfig", "--config", path.to_str().expect("utf-8 path")])
}

fn key(text: &str, name: &str) -> String {
    let file: toml::Table = text.parse().expect("genconfig writes TOML");
    file[name].as_str().unwrap_or_else(|| panic!("{name} missing:\n{text}")).to_owned()
}

#[test]
fn genconfig_writes_fresh_secrets_and_refuses_to_overwrite() {
    let dir = scratch("fresh");
    let (a, b) = (dir.join("a.toml"), dir.join("b.toml"));
    assert!(genconfig(&a).status.success());
    assert!(genconfig(&b).status.success());
    let (a_text, b_text) = (std::fs::read_to_string(&a).unwrap(), std::fs::read_to_string(&b).unwrap());
    let secret = key(&a_text, "jwt_secret");
    assert_eq!(secret.len(), 64, "32 random bytes in hex: {secret}");
    assert_ne!(secret, key(&b_text, "jwt_secret"), "each file gets its own secret");
    assert_ne!(key(&a_text, "api_key"), key(&b_text, "api_key"));
    assert_ne!(secret, key(&a_text, "api_key"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&a).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "a file holding secrets is the owner's only");
    }

    let again = genconfig(&a);
    assert!(!again.status.success(), "overwrote an existing config");
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"), "{again:?}");
    assert_eq!(std::fs::read_to_string(&a).unwrap(), a_text, "the old file is untouched");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_token_from_gentoken_is_accepted_by_a_server_with_that_config() {
    let dir = scratch("token");
    let config = dir.join("wshub.toml");
    assert!(genconfig(&config).status.success());
    let config = config.to_str().expect("utf-8 path");
    let out = wshub(&["gentoken", "--config", config, "--sub", "alice", "--rooms", "chat:*", "--ttl", "1h"]);
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).expect("utf-8").trim().to_owned();

    let server = Wshub::start(&["--config", config]);
    // Without a token: 401, the file's secret is on.
    let (status, _) = common::head_only(
        server.addr,
        "GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    assert_eq!(status, 401);

    let stream = std::net::TcpStream::connect(server.addr).expect("connect");
    stream.set_read_timeout(Some(common::WAIT)).expect("timeout");
    let url = format!("ws://{}/ws?access_token={token}", server.addr);
    let (ws, _) = tungstenite::client::client(url, stream).expect("the token is accepted");
    let mut c = Client::from_parts(ws, None);
    let connected = c.json();
    assert_eq!(connected["payload"]["user"], "alice", "{connected}");
    assert_eq!(c.request("room:join", json!({"room": "chat:lobby"}))["type"], "ack");
    let outside = c.request("room:join", json!({"room": "other"}));
    assert_eq!(outside["payload"]["code"], "forbidden", "the token's rooms hold: {outside}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn gentoken_needs_a_config_with_a_secret() {
    let dir = scratch("nosecret");
    let config = dir.join("plain.toml");
    std::fs::write(&config, "bind = \"127.0.0.1:0\"\n").unwrap();
    let out = wshub(&["gentoken", "--config", config.to_str().unwrap(), "--sub", "bob"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no jwt_secret"), "{out:?}");
    let missing = wshub(&["gentoken", "--config", dir.join("absent.toml").to_str().unwrap(), "--sub", "bob"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read"), "{missing:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A write that fails (a full disk; here a file-size limit of 0 with SIGXFSZ
/// ignored, so the write returns EFBIG) leaves no empty file behind: that file
/// would make every later `genconfig` refuse to overwrite it and `gentoken`
/// say it has no secret.
#[cfg(unix)]
#[test]
fn a_failed_genconfig_write_leaves_no_file_behind() {
    let dir = scratch("full");
    let path = dir.join("wshub.toml");
    let out = Command::new("sh")
        .arg("-c")
        .arg("ulimit -f 0; trap '' XFSZ; exec \"$0\" genconfig --config \"$1\"")
        .arg(env!("CARGO_BIN_EXE_wshub"))
        .arg(&path)
        .output()
        .expect("run sh");
    assert!(!out.status.success(), "a write past the file-size limit succeeded: {out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot write"), "{out:?}");
    assert!(!path.exists(), "a failed genconfig left {} behind", path.display());
    assert!(genconfig(&path).status.success(), "genconfig can run again");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A server that verifies RS/ES tokens with `jwt_public_key` has no secret
/// `gentoken` could sign with: it says so (not "run genconfig") and fails.
#[test]
fn gentoken_refuses_a_config_with_a_public_key() {
    let dir = scratch("pubkey");
    let config = dir.join("rs.toml");
    std::fs::write(&config, "jwt_public_key = \"/etc/wshub/jwt.pub.pem\"\n").unwrap();
    let out = wshub(&["gentoken", "--config", config.to_str().unwrap(), "--sub", "bob"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty(), "no token printed: {out:?}");
    assert!(err.contains("jwt_public_key") && err.contains("only HS256 tokens"), "{err}");
    assert!(!err.contains("genconfig"), "genconfig's secret would not be accepted by this server: {err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The command genconfig's file suggests runs as written in a shell, whatever
/// the path holds (spaces, quotes, `$`).
#[cfg(unix)]
#[test]
fn the_gentoken_command_in_a_genconfig_file_is_quoted_for_a_shell() {
    let dir = scratch("quoted").join("a dir with 'quotes' and $HOME");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("my wshub.toml");
    assert!(genconfig(&path).status.success());
    let text = std::fs::read_to_string(&path).unwrap();
    let line = text.lines().find(|l| l.contains("wshub gentoken")).unwrap_or_else(|| panic!("{text}"));
    let command = line.split('`').nth(1).unwrap_or_else(|| panic!("no `command` in {line}"));
    let command = command.replace("USER", "alice");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("wshub() {{ \"$0\" \"$@\"; }}; {command}"))
        .arg(env!("CARGO_BIN_EXE_wshub"))
        .output()
        .expect("run sh");
    assert!(out.status.success(), "{command}: {out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).matches('.').count(), 2, "a token: {out:?}");
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
}
