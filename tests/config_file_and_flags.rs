//! The binary's configuration: `--help` lists every flag, a TOML `--config`
//! file sets values, flags given on the command line override it, unknown keys
//! are refused with a message naming them.

mod child_common;
mod protocol_common;
use protocol_common as common;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::Wshub;

/// Writes a config file unique to this test process and test.
fn config_file(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("wshub-test-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn help_lists_every_setting() {
    let out = Command::new(env!("CARGO_BIN_EXE_wshub")).arg("--help").output().expect("run --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--bind",
        "--config",
        "--echo",
        "--path",
        "--max-message-size",
        "--outbound-queue",
        "--heartbeat-ms",
        "--idle-timeout-ms",
        "--max-connections",
        "--rate-limit",
        "--rate-burst",
        "--history-size",
        "--history-ttl-ms",
        "--drain-delay-ms",
        "--shutdown-timeout-ms",
        "--log-level",
        "--jwt-secret",
        "--jwt-public-key",
        "--jwt-audience",
        "--jwt-issuer",
        "--allow-origin",
        "--max-connections-per-user",
        "--max-connections-per-ip",
        "--connect-rate-per-ip",
        "--max-handshakes",
        "--max-handshakes-per-ip",
        "--overflow-sockets",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
}

#[test]
fn the_file_sets_values_and_explicit_flags_override_it() {
    let path = config_file(
        "override",
        "heartbeat_ms = 7000\nmax_message_size = 4000\nrate_limit = 50\nhistory_size = 10\nlog_level = \"warn\"\n",
    );
    let p = path.to_string_lossy().into_owned();
    let server = Wshub::start(&["--config", &p, "--heartbeat-ms", "9000"]);
    let mut c = common::Client::connect_raw(server.addr, &[]);
    let connected = c.json();
    assert_eq!(connected["payload"]["heartbeatMs"], 9000, "the flag wins");
    assert_eq!(connected["payload"]["maxMessageBytes"], 4000, "the file applies");
    drop(server);

    let defaults = Wshub::start(&[]);
    let mut d = common::Client::connect_raw(defaults.addr, &[]);
    let connected = d.json();
    assert_eq!(
        (connected["payload"]["heartbeatMs"].as_u64(), connected["payload"]["maxMessageBytes"].as_u64()),
        (Some(30_000), Some(1 << 20))
    );
    let _ = std::fs::remove_file(path);
}

#[test]
fn an_unknown_key_is_refused_with_its_name() {
    let path = config_file("unknown", "rate_limt = 5\n");
    let mut child = Command::new(env!("CARGO_BIN_EXE_wshub"))
        .args(["--bind", "127.0.0.1:0", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let status = child_common::wait_or_kill(&mut child, common::WAIT)
        .unwrap_or_else(|_| panic!("wshub accepted an unknown key and kept running"));
    let mut err = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut err).expect("read stderr");
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("rate_limt"), "{err}");
    let _ = std::fs::remove_file(path);
}

#[test]
fn the_example_config_file_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/wshub.example.toml");
    // --bind on the command line overrides the file's fixed port.
    let server = Wshub::start(&["--config", example]);
    let mut c = common::Client::connect_raw(server.addr, &[]);
    assert_eq!(c.json()["payload"]["heartbeatMs"], 30_000);
}

#[test]
fn admission_settings_come_from_the_file_and_flags() {
    let path = config_file(
        "admission",
        "connect_rate_per_ip = \"7/s\"\nmax_connections_per_ip = 2\nallow_origin = [\"https://a.example.com\"]\n\
         jwt_secret = \"file-secret\"\nmax_handshakes = 64\n",
    );
    let server = Wshub::start(&["--config", path.to_str().unwrap(), "--max-connections-per-ip", "3"]);
    // The file's secret is on: no token, 401.
    let (status, _) = common::head_only(
        server.addr,
        "GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    assert_eq!(status, 401);
    drop(server);
    let bad = Command::new(env!("CARGO_BIN_EXE_wshub"))
        .args(["--bind", "127.0.0.1:0", "--jwt-public-key", "/nonexistent/key.pem"])
        .output()
        .expect("run");
    assert_eq!(bad.status.code(), Some(2), "an unreadable key is a startup error");
    let _ = std::fs::remove_file(path);
}

/// The same upper bounds as the library's (one definition, `config::bounds`):
/// a size that used to abort the process (a 2^40-slot hub queue: "memory
/// allocation failed", exit 134) is a startup error naming the setting, from
/// a flag and from the file alike.
#[test]
fn sizes_over_their_bounds_are_startup_errors_from_flags_and_the_file() {
    let huge = (1u64 << 40).to_string();
    let path = config_file("over-bounds", &format!("read_buffer_size = {huge}\n"));
    let runs = [
        (vec!["--hub-queue", huge.as_str()], "hub_queue must be at most"),
        (vec!["--history-size", huge.as_str()], "history_size must be at most"),
        // Accepted before, then every publish with an idempotency key failed
        // as `unavailable` (Redis refused the out-of-range expiry).
        (vec!["--idempotency-ttl-ms", "18446744073709551615"], "idempotency_ttl must be at most"),
        (vec!["--redis-timeout-ms", "18446744073709551615"], "redis_timeout must be at most"),
        (vec!["--redis-timeout-ms", "0"], "redis_timeout must be above 0"),
        (vec!["--config", path.to_str().expect("utf-8 path")], "read_buffer_size must be at most"),
    ];
    for (args, expected) in runs {
        let out = Command::new(env!("CARGO_BIN_EXE_wshub"))
            .args(["--bind", "127.0.0.1:0"])
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {:?}\n{stderr}", out.status);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let _ = std::fs::remove_file(path);
}
