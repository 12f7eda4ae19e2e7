//! Property tests over the envelope and binary-frame parsers: any input gives
//! a request or a well-formed `error` reply, never a panic; and against the
//! real binary, any frame gives at most a reply (or nothing) and the
//! connection lives on.

mod protocol_common;
use protocol_common as common;

use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::{json, Value};
use wshub::protocol::binary::parse_binary;
use wshub::protocol::envelope::{parse_text, ErrorCode};

const CODES: [&str; 7] =
    ["bad_request", "unknown_type", "not_found", "forbidden", "rate_limited", "too_large", "internal"];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        vec(any::<char>(), 0..20).prop_map(|c| Value::from(String::from_iter(c))),
        prop_oneof![Just("lobby"), Just(""), Just("a\u{1}b")].prop_map(Value::from),
        (0usize..200).prop_map(|n| Value::from("r".repeat(n))),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            vec(
                (
                    prop_oneof![
                        Just("room".to_owned()),
                        Just("since".to_owned()),
                        Just("data".to_owned()),
                        Just("echo".to_owned()),
                        Just("epoch".to_owned()),
                        "[a-z]{1,4}".prop_map(|s| s)
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Envelopes shaped like the real thing, with random fields.
fn envelope() -> impl Strategy<Value = String> {
    let kind = prop_oneof![
        Just(json!("room:join")),
        Just(json!("room:leave")),
        Just(json!("room:publish")),
        Just(json!("typing:start")),
        Just(json!("typing:stop")),
        Just(json!("presence:get")),
        Just(json!("ping")),
        json_value(),
    ];
    let id = prop_oneof![
        Just(None),
        json_value().prop_map(Some),
        (0usize..80).prop_map(|n| Some(json!("i".repeat(n))))
    ];
    (kind, id, json_value(), any::<bool>()).prop_map(|(kind, id, payload, with_type)| {
        let mut m = serde_json::Map::new();
        if with_type {
            m.insert("type".into(), kind);
        }
        if let Some(id) = id {
            m.insert("id".into(), id);
        }
        m.insert("payload".into(), payload);
        Value::Object(m).to_string()
    })
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        vec(any::<char>(), 0..64).prop_map(String::from_iter),
        vec(any::<u8>(), 0..64).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        envelope(),
        // A valid envelope cut short or with a byte flipped.
        (envelope(), any::<usize>()).prop_map(|(e, cut)| {
            let n = cut % (e.len() + 1);
            e.chars().take(n).collect()
        }),
    ]
}

fn any_binary() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..64),
        (any::<u8>(), any::<u16>(), vec(any::<u8>(), 0..200)).prop_map(|(kind, len, rest)| {
            let mut f = vec![kind];
            f.extend_from_slice(&len.to_be_bytes());
            f.extend(rest);
            f
        }),
        (0usize..140, vec(any::<u8>(), 0..16)).prop_map(|(n, body)| {
            let mut f = vec![1u8];
            f.extend_from_slice(&(n as u16).to_be_bytes());
            f.extend(std::iter::repeat_n(b'r', n));
            f.extend(body);
            f
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn any_text_parses_or_gets_a_well_formed_error(text in any_text()) {
        match parse_text(&text) {
            Ok(request) => prop_assert!(request.id.as_ref().is_none_or(|id| id.len() <= 64)),
            Err(e) => {
                let frame: Value = serde_json::from_str(&e.to_text()).expect("error frames are JSON");
                prop_assert_eq!(&frame["type"], "error");
                prop_assert!(CODES.contains(&frame["payload"]["code"].as_str().unwrap_or("")));
                prop_assert!(frame["ts"].is_u64());
                prop_assert!(e.code != ErrorCode::Internal);
            }
        }
    }

    #[test]
    fn any_bytes_parse_as_a_binary_publish_or_get_an_error(bytes in any_binary()) {
        match parse_binary(&bytes) {
            Ok(p) => {
                prop_assert!(wshub::rooms::is_valid_room(&p.room));
                prop_assert_eq!(p.body.len(), bytes.len() - 3 - p.room.len());
            }
            Err(e) => prop_assert!(matches!(e.code, ErrorCode::BadRequest | ErrorCode::TooLarge)),
        }
    }
}

proptest! {
    // Each case is a round trip to the real binary; fewer cases, same server.
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn the_server_answers_any_frame_with_at_most_one_reply_and_lives_on(
        frames in vec(prop_oneof![any_text().prop_map(Ok), any_binary().prop_map(Err)], 1..8)
    ) {
        let server = SERVER.with(|s| s.addr);
        let mut c = common::Client::connect(server, &[]);
        for frame in frames {
            match &frame {
                Ok(text) => c.send_text(text),
                Err(bytes) => c.send_binary(bytes),
            }
            // Not in any room before this frame, a client gets at most: its
            // own echoed message (publish with echo), replayed history (join
            // with since) ... and one reply. Count what comes before a ping's ack.
            let id = c.send_request("ping", json!("sync"));
            let mut replies = 0;
            for _ in 0..2000 {
                match c.frame() {
                    common::Frame::Json(v) if v["id"] == id.as_str() => break,
                    common::Frame::Json(v) if v["type"] == "ack" || v["type"] == "error" => replies += 1,
                    common::Frame::Json(v) => prop_assert!(
                        ["room:message", "presence:join", "presence:leave", "typing"].contains(&v["type"].as_str().unwrap_or("")),
                        "unexpected {}", v
                    ),
                    common::Frame::Binary(b) => prop_assert_eq!(b.first(), Some(&2u8)),
                    common::Frame::Close(code) => prop_assert!(false, "closed with {} after {:?}", code, frame),
                }
            }
            prop_assert!(replies <= 1, "{} replies to {:?}", replies, frame);
        }
    }
}

thread_local! {
    static SERVER: common::Wshub = common::Wshub::start(&["--rate-limit", "0"]);
}
