//! permessage-deflate (RFC 7692) against the real `wshub` binary over
//! loopback, with a client that frames by hand (and compresses with flate2)
//! so every bit on the wire is the test's to choose and to check:
//! negotiation, a room message compressed once and shared by the members
//! that agreed (the plain frame for the others), and the inbound bounds (a
//! bomb closes 1009, bad DEFLATE data 1007, bad UTF-8 after inflating 1007)
//! while a bystander keeps working.

mod protocol_common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use protocol_common::{metric, Wshub, WAIT};
use serde_json::{json, Value};

/// A hand-framed client connection.
struct Raw {
    stream: TcpStream,
    /// The 101's `Sec-WebSocket-Extensions` value, if any.
    extensions: Option<String>,
}

/// One frame from the server: (first header byte, payload).
type Frame = (u8, Vec<u8>);

impl Raw {
    fn connect(addr: SocketAddr, offer: Option<&str>) -> Raw {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let offer = offer.map(|o| format!("Sec-WebSocket-Extensions: {o}\r\n")).unwrap_or_default();
        write!(
            stream,
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert!(head.len() < 4096, "response head too long");
            stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let extensions = head.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-extensions").then(|| value.trim().to_owned())
        });
        Raw { stream, extensions }
    }

    /// Sends one masked frame with this first header byte.
    fn send_frame(&mut self, first: u8, payload: &[u8]) {
        let mask = [0x11, 0x22, 0x33, 0x44];
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                out.push(0x80 | 126);
                out.extend((n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend((n as u64).to_be_bytes());
            }
        }
        out.extend(mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        // The server may close before it has read all of a refused frame.
        let _ = self.stream.write_all(&out);
    }

    fn send_json(&mut self, value: Value) {
        self.send_frame(0x81, value.to_string().as_bytes());
    }

    fn frame(&mut self) -> Frame {
        let mut head = [0u8; 2];
        self.stream.read_exact(&mut head).unwrap();
        let len = match head[1] & 0x7f {
            126 => {
                let mut n = [0u8; 2];
                self.stream.read_exact(&mut n).unwrap();
                u16::from_be_bytes(n) as usize
            }
            127 => {
                let mut n = [0u8; 8];
                self.stream.read_exact(&mut n).unwrap();
                u64::from_be_bytes(n) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        self.stream.read_exact(&mut payload).unwrap();
        (head[0], payload)
    }

    /// The next text message's JSON, inflated when RSV1 is set; pings skipped.
    fn json(&mut self) -> Value {
        for _ in 0..100 {
            let (first, payload) = self.frame();
            match first & 0x0f {
                0x1 => {
                    let text = if first & 0x40 != 0 { inflate(&payload) } else { payload };
                    return serde_json::from_slice(&text).unwrap();
                }
                0x9 | 0xA => continue,
                other => panic!("expected text, got opcode {other}"),
            }
        }
        panic!("no text message in 100 frames");
    }

    /// Reads until the server's close frame; its code.
    fn close_code(&mut self) -> u16 {
        for _ in 0..1000 {
            let (first, payload) = self.frame();
            if first & 0x0f == 0x8 {
                return u16::from_be_bytes([payload[0], payload[1]]);
            }
        }
        panic!("no close frame");
    }

    fn request(&mut self, kind: &str, id: &str, payload: Value) -> Value {
        self.send_json(json!({"type": kind, "id": id, "payload": payload}));
        for _ in 0..100 {
            let reply = self.json();
            if reply["id"] == id {
                return reply;
            }
        }
        panic!("no reply to {id}");
    }
}

fn compress(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

fn inflate(data: &[u8]) -> Vec<u8> {
    let mut d = Decompress::new(false);
    let mut input = data.to_vec();
    input.extend([0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(1 << 20);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync).unwrap();
    out
}

const AGREED: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

#[test]
fn offers_are_accepted_refused_or_ignored_without_failing_the_handshake() {
    let on = Wshub::start(&["--compression", "on"]);
    let browser = Raw::connect(on.addr, Some("permessage-deflate; client_max_window_bits"));
    assert_eq!(browser.extensions.as_deref(), Some(AGREED));
    let small_window = Raw::connect(on.addr, Some("permessage-deflate; server_max_window_bits=9"));
    assert_eq!(small_window.extensions, Some(format!("{AGREED}; server_max_window_bits=9")));
    let second_offer =
        Raw::connect(on.addr, Some("permessage-deflate; server_max_window_bits=16, permessage-deflate"));
    assert_eq!(second_offer.extensions.as_deref(), Some(AGREED));
    let unmeetable = Raw::connect(on.addr, Some("permessage-deflate; mystery=1"));
    assert_eq!(unmeetable.extensions, None);
    let none = Raw::connect(on.addr, None);
    assert_eq!(none.extensions, None);

    let off = Wshub::start(&["--compression", "off"]);
    assert_eq!(Raw::connect(off.addr, Some("permessage-deflate")).extensions, None);
}

#[test]
fn a_room_message_is_compressed_once_and_the_same_frame_reaches_every_member_that_agreed() {
    let server = Wshub::start(&["--compression", "on", "--compression-min-bytes", "256"]);
    let offer = Some("permessage-deflate; client_max_window_bits");
    let mut a = Raw::connect(server.addr, offer);
    let mut b = Raw::connect(server.addr, offer);
    let mut c = Raw::connect(server.addr, offer);
    let mut plain = Raw::connect(server.addr, None);
    for (c, id) in [(&mut a, "ja"), (&mut b, "jb"), (&mut c, "jc"), (&mut plain, "jp")] {
        assert_eq!(c.request("room:join", id, json!({"room": "lobby"}))["type"], "ack");
    }
    let text = "the quick brown fox jumps over the lazy dog; ".repeat(45);
    // Sent compressed too: the server inflates it. The publisher itself
    // gets its ack, not the message.
    let publish =
        json!({"type": "room:publish", "id": "p1", "payload": {"room": "lobby", "data": {"text": text}}});
    a.send_frame(0xC1, &compress(publish.to_string().as_bytes()));

    let frame_of = |c: &mut Raw| -> Frame {
        for _ in 0..100 {
            let f = c.frame();
            if f.0 & 0x0f == 0x1 {
                let body = if f.0 & 0x40 != 0 { inflate(&f.1) } else { f.1.clone() };
                let v: Value = serde_json::from_slice(&body).unwrap();
                if v["type"] == "room:message" {
                    assert_eq!(v["payload"]["data"]["text"], text.as_str(), "{v}");
                    return f;
                }
            }
        }
        panic!("no room:message");
    };
    let (fb, fc, fp) = (frame_of(&mut b), frame_of(&mut c), frame_of(&mut plain));
    assert_eq!(fb.0, 0xC1, "compressed: FIN, RSV1, text");
    assert_eq!(fb, fc, "the same compressed bytes for both members");
    assert_eq!(fp.0, 0x81, "plain for the member that did not agree");
    assert!(fb.1.len() * 3 < fp.1.len(), "{} compressed vs {} plain", fb.1.len(), fp.1.len());

    // A reply under the minimum goes uncompressed.
    let ack = loop {
        let (first, payload) = a.frame();
        let v: Value = serde_json::from_slice(&payload).unwrap();
        if v["id"] == "p1" {
            break first;
        }
    };
    assert_eq!(ack, 0x81, "a short ack is not compressed");

    assert_eq!(compressed_frames_reaching(server.addr, 2), 2);
    let packed = metric(server.addr, "wshub_compressed_bytes_total");
    let plain_bytes = metric(server.addr, "wshub_compressed_plain_bytes_total");
    assert!(packed > 0 && packed * 3 < plain_bytes, "{packed} vs {plain_bytes}");

    // History keeps the shared frames: a recovery replays the compressed one.
    let mut late = Raw::connect(server.addr, offer);
    late.send_json(json!({"type": "room:join", "id": "jl", "payload": {"room": "lobby", "since": 0}}));
    assert_eq!(frame_of(&mut late), fb, "the replay is the stored compressed frame");
}

#[test]
fn inflated_bytes_count_against_the_limit_and_bad_data_closes_1007() {
    let server = Wshub::start(&["--compression", "on", "--max-message-size", "65536"]);
    let offer = Some("permessage-deflate");
    let mut bystander = Raw::connect(server.addr, offer);

    // 16 MiB of zeros: about 16 KiB compressed; refused after at most the limit.
    let bomb = compress(&vec![0u8; 16 << 20]);
    assert!(bomb.len() < 65536, "{}", bomb.len());
    let mut c = Raw::connect(server.addr, offer);
    c.send_frame(0xC2, &bomb);
    assert_eq!(c.close_code(), 1009);

    let mut c = Raw::connect(server.addr, offer);
    c.send_frame(0xC1, &[0xff, 0xff, 0xff, 0xff]);
    assert_eq!(c.close_code(), 1007, "invalid DEFLATE data");

    let mut c = Raw::connect(server.addr, offer);
    c.send_frame(0xC1, &compress(&[b'a', 0xff, 0xfe]));
    assert_eq!(c.close_code(), 1007, "UTF-8 is checked after inflating");

    let mut c = Raw::connect(server.addr, None);
    c.send_frame(0xC1, &compress(b"{}"));
    assert_eq!(c.close_code(), 1002, "RSV1 without the extension");

    let mut c = Raw::connect(server.addr, offer);
    c.send_frame(0x41, &compress(b"{\"type\":")[..3]);
    c.send_frame(0xC0, b"x");
    assert_eq!(c.close_code(), 1002, "RSV1 on a continuation frame");

    let reply = bystander.request("ping", "still", json!("here"));
    assert_eq!(reply["payload"], "here");
}

#[test]
fn a_reply_over_the_minimum_arrives_compressed_and_a_shorter_one_plain() {
    let server = Wshub::start(&["--compression", "on", "--compression-min-bytes", "256"]);
    let mut c = Raw::connect(server.addr, Some("permessage-deflate"));
    let reply_to = |c: &mut Raw, id: &str, payload: &str| -> Frame {
        c.send_json(json!({"type": "ping", "id": id, "payload": payload}));
        for _ in 0..100 {
            let (first, body) = c.frame();
            if first & 0x0f != 0x1 {
                continue;
            }
            let text = if first & 0x40 != 0 { inflate(&body) } else { body.clone() };
            let v: Value = serde_json::from_slice(&text).unwrap();
            if v["id"] == id {
                assert_eq!(v["payload"], payload, "intact");
                return (first, body);
            }
        }
        panic!("no reply to {id}");
    };
    let long = "chat chat chat ".repeat(200);
    let (first, body) = reply_to(&mut c, "long", &long);
    assert_eq!(first, 0xC1, "over the minimum: FIN, RSV1, text");
    assert!(body.len() * 5 < long.len(), "{} bytes on the wire", body.len());
    let (first, body) = reply_to(&mut c, "short", "hi");
    assert_eq!(first, 0x81, "under the minimum: plain");
    // A reply of exactly the minimum (256 bytes) goes compressed, one byte
    // shorter plain: the reply grows with its payload byte for byte.
    let fill = |n: usize| "x".repeat(2 + n);
    let at_min = 256 - body.len();
    assert_eq!(reply_to(&mut c, "short", &fill(at_min - 1)).0, 0x81, "255 bytes: plain");
    let (first, body) = reply_to(&mut c, "short", &fill(at_min));
    assert_eq!(first, 0xC1, "256 bytes: compressed");
    assert_eq!(inflate(&body).len(), 256);
    assert_eq!(compressed_frames_reaching(server.addr, 2), 2);
}

/// `wshub_compressed_frames_total` once it reaches `want`, or its value after
/// [`WAIT`]: a frame sent straight to its socket is counted once sent, so the
/// count may come a moment after the frame did.
fn compressed_frames_reaching(addr: SocketAddr, want: u64) -> u64 {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let frames = metric(addr, "wshub_compressed_frames_total");
        if frames >= want || std::time::Instant::now() >= deadline {
            return frames;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn a_message_at_the_limit_sent_compressed_but_longer_than_plain_is_taken() {
    // Browsers compress every message once agreed, even ones that do not
    // shrink: stored blocks make such a message a few bytes longer than its
    // plain form. The limit counts the inflated bytes, so it is taken.
    let server = Wshub::start(&["--compression", "on", "--max-message-size", "1000"]);
    let mut c = Raw::connect(server.addr, Some("permessage-deflate"));
    assert_eq!(c.json()["type"], "connected");
    let base = json!({"type": "ping", "id": "s", "payload": ""}).to_string().len();
    let message = json!({"type": "ping", "id": "s", "payload": "q".repeat(1000 - base)}).to_string();
    assert_eq!(message.len(), 1000);
    let mut stored = Compress::new(Compression::none(), false);
    let mut packed = Vec::with_capacity(1100);
    stored.compress_vec(message.as_bytes(), &mut packed, FlushCompress::Sync).unwrap();
    packed.truncate(packed.len() - 4);
    assert!(packed.len() > 1000, "{} bytes compressed", packed.len());
    c.send_frame(0xC1, &packed);
    let reply = c.json();
    assert_eq!((reply["type"].as_str(), reply["id"].as_str()), (Some("ack"), Some("s")), "{reply}");
}
