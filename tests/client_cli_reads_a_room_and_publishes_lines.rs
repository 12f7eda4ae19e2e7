//! `wshub-cli --room R` prints the room's messages as JSON lines and publishes
//! the lines it reads (JSON when they parse, else strings); at the end of its
//! input it waits for the acks and exits 0.

mod client_common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use client_common::{wait_for, Server};
use serde_json::{json, Value};
use wshub::client::{Client, Event, Options};

#[test]
fn the_cli_watches_a_room_and_publishes_stdin() {
    let server = Server::start(&[]);
    let url = format!("ws://{}/ws", server.addr);
    let other = Client::connect(&url, Options::default()).unwrap();
    other.join("r").unwrap();
    let mut cli = Command::new(env!("CARGO_BIN_EXE_wshub-cli"))
        .args(["--url", &url, "--room", "r"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wshub-cli");
    let mut stdin = cli.stdin.take().unwrap();
    let mut stdout = BufReader::new(cli.stdout.take().unwrap());
    let mut stderr = BufReader::new(cli.stderr.take().unwrap());
    let mut line = String::new();
    // Joined once it says so.
    while !line.contains("in room r") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "wshub-cli ended early");
    }
    other.publish("r", &json!({"x": 1})).unwrap();
    line.clear();
    stdout.read_line(&mut line).unwrap();
    let got: Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(got["data"], json!({"x": 1}));
    assert_eq!(got["room"], "r");
    assert_eq!(got["seq"], 1);

    writeln!(stdin, "hello there").unwrap();
    writeln!(stdin, "{{\"a\": 2}}").unwrap();
    drop(stdin);
    let mut seen = Vec::new();
    let first = wait_for(&other, &mut seen, |e| match e {
        Event::Message { data, .. } => Some(data.clone()),
        _ => None,
    });
    let second = wait_for(&other, &mut seen, |e| match e {
        Event::Message { data, .. } => Some(data.clone()),
        _ => None,
    });
    assert_eq!((first, second), (json!("hello there"), json!({"a": 2})));
    let status = client_common::child_common::wait_or_kill(&mut cli, client_common::WAIT)
        .unwrap_or_else(|_| panic!("wshub-cli did not exit at the end of its input"));
    assert!(status.success(), "{status}");
}

#[test]
fn the_cli_takes_compression_unless_told_not_to() {
    let server = Server::start(&["--compression", "on"]);
    let url = format!("ws://{}/ws", server.addr);
    let publisher = Client::connect(&url, Options::default().compression(false)).unwrap();
    publisher.join("r").unwrap();
    let watch = |extra: &[&str]| {
        let mut cli = Command::new(env!("CARGO_BIN_EXE_wshub-cli"))
            .args(["--url", &url, "--room", "r", "--read-only"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wshub-cli");
        let mut stderr = BufReader::new(cli.stderr.take().unwrap());
        let mut line = String::new();
        while !line.contains("in room r") {
            line.clear();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "wshub-cli ended early");
        }
        let stdout = BufReader::new(cli.stdout.take().unwrap());
        (cli, stdout)
    };
    let (mut compressed, mut compressed_out) = watch(&[]);
    let (mut plain, mut plain_out) = watch(&["--no-compression"]);
    let before = client_common::metric(server.addr, "wshub_compressed_frames_total");
    let text = "the same words again and again ".repeat(350);
    publisher.publish("r", &json!({ "text": text })).unwrap();
    for out in [&mut compressed_out, &mut plain_out] {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let got: Value = serde_json::from_str(&line).expect("a JSON line");
        assert_eq!(got["data"]["text"], text.as_str());
    }
    let after = client_common::metric_reaching(server.addr, "wshub_compressed_frames_total", before + 1);
    assert_eq!(after - before, 1, "compressed for the one CLI that offered it");
    for cli in [&mut compressed, &mut plain] {
        let _ = cli.kill();
        let _ = cli.wait();
    }
}
