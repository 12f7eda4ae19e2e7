//! The few parts of the wshub envelope the generator reads, borrowed from the
//! frame where possible (the fan-out hot path parses every room:message).

use std::borrow::Cow;

use std::fmt::Write as _;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

/// `{type, id?, ts, payload}` from the server; unknown fields are skipped.
#[derive(Deserialize)]
pub struct Env<'a> {
    #[serde(rename = "type", borrow)]
    pub ty: Cow<'a, str>,
    #[serde(default, borrow)]
    pub id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub payload: Payload<'a>,
}

/// The union of the payload fields used: room:message `{room, seq, data}`
/// (`data` the generator's string, or its chat object's `stamp`),
/// acks `{room, seq}`, errors `{code, message}`.
#[derive(Deserialize, Default)]
pub struct Payload<'a> {
    #[serde(default, borrow)]
    pub room: Option<Cow<'a, str>>,
    #[serde(default)]
    pub seq: Option<u64>,
    #[serde(default, borrow)]
    pub data: Option<Stamp<'a>>,
    #[serde(default, borrow)]
    pub code: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub message: Option<Cow<'a, str>>,
}

/// The send stamp a publish carries in `data`: the whole string (`--payload
/// bytes`) or the `stamp` field of a chat object (`--payload chat`).
pub struct Stamp<'a>(pub Cow<'a, str>);

impl std::ops::Deref for Stamp<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Stamp<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Stamp<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string, or an object with a string `stamp`")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Stamp<'de>, E> {
                Ok(Stamp(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Stamp<'de>, E> {
                Ok(Stamp(Cow::Owned(v.to_owned())))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Stamp<'de>, A::Error> {
                let mut stamp = None;
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    if key == "stamp" {
                        stamp = Some(map.next_value::<Stamp<'de>>()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                stamp.ok_or_else(|| de::Error::missing_field("stamp"))
            }
        }
        d.deserialize_any(V)
    }
}

const NAMES: [&str; 12] =
    ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "oscar"];
const WORDS: [&str; 64] = [
    "the", "a", "to", "and", "of", "in", "is", "it", "you", "that", "for", "on", "with", "this", "we", "be",
    "have", "are", "not", "at", "deploy", "build", "release", "meeting", "today", "tomorrow", "review",
    "merge", "branch", "fixed", "broken", "test", "server", "client", "latency", "room", "message", "ok",
    "thanks", "sure", "maybe", "later", "lunch", "coffee", "ticket", "issue", "customer", "update", "docs",
    "looks", "good", "great", "why", "how", "when", "where", "think", "know", "need", "can", "will", "just",
    "please", "check",
];

/// Writes chat-like JSON data of about `size` bytes into `out`: an object
/// with the send `stamp`, a channel and chat lines (author object, text of
/// common words, timestamps, reactions), varied by `seed`, as a chat
/// application's messages look on the wire (repeated keys, short words).
pub fn chat_data(out: &mut String, stamp: &str, size: usize, seed: u64) {
    let start = out.len();
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    let _ = write!(out, r#"{{"stamp":"{stamp}","kind":"chat.batch","channel":"general","lines":["#);
    let mut line = 0;
    while out.len() - start < size.saturating_sub(2) || line == 0 {
        if line > 0 {
            out.push(',');
        }
        let who = next(NAMES.len());
        let _ = write!(
            out,
            r#"{{"id":"m-{seed}-{line}","author":{{"id":"u{who}","name":"{}","avatar":"https://cdn.example.com/avatars/u{who}.png"}},"ts":{},"text":""#,
            NAMES[who],
            1_767_000_000_000u64 + seed * 1000 + line as u64
        );
        for w in 0..6 + next(14) {
            if w > 0 {
                out.push(' ');
            }
            out.push_str(WORDS[next(WORDS.len())]);
        }
        let _ = write!(out, r#"","reactions":[{{"emoji":"+1","count":{}}}],"edited":false}}"#, next(5));
        line += 1;
    }
    out.push_str("]}");
}

pub fn parse(text: &[u8]) -> Result<Env<'_>, String> {
    serde_json::from_slice(text).map_err(|e| {
        let shown = String::from_utf8_lossy(&text[..text.len().min(200)]).into_owned();
        format!("unparsable frame ({e}): {shown}")
    })
}

/// `room:join` with an id.
pub fn join(room: &str, id: &str) -> String {
    format!(r#"{{"type":"room:join","id":"{id}","payload":{{"room":"{room}"}}}}"#)
}

/// `code: message` of an error frame.
pub fn error_text(env: &Env<'_>) -> String {
    format!(
        "{}: {}",
        env.payload.code.as_deref().unwrap_or("?"),
        env.payload.message.as_deref().unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_room_message() {
        let f = br#"{"type":"room:message","ts":1,"payload":{"room":"bench-0","seq":7,"from":"c1","data":"12:0:3:xx"}}"#;
        let e = parse(f).unwrap();
        assert_eq!(e.ty, "room:message");
        assert_eq!(e.payload.seq, Some(7));
        assert_eq!(e.payload.data.as_deref(), Some("12:0:3:xx"));
        let mut data = String::new();
        chat_data(&mut data, "12:0:4:", 2048, 4);
        assert!((2000..2400).contains(&data.len()), "{}", data.len());
        let f = format!(r#"{{"type":"room:message","ts":1,"payload":{{"room":"r","seq":8,"data":{data}}}}}"#);
        let e = parse(f.as_bytes()).unwrap();
        assert_eq!((e.payload.seq, e.payload.data.as_deref()), (Some(8), Some("12:0:4:")));
    }

    #[test]
    fn reads_acks_errors_and_others() {
        let e = parse(
            br#"{"type":"ack","id":"j","ts":1,"payload":{"room":"a","seq":0,"members":3,"epoch":"x"}}"#,
        )
        .unwrap();
        assert_eq!((e.ty.as_ref(), e.id.as_deref(), e.payload.seq), ("ack", Some("j"), Some(0)));
        let e = parse(br#"{"type":"error","id":"5","ts":1,"payload":{"code":"rate_limited","message":"slow \"down\""}}"#)
            .unwrap();
        assert_eq!(error_text(&e), "rate_limited: slow \"down\"");
        let e = parse(br#"{"type":"connected","ts":1,"payload":{"clientId":"c1","protocol":1,"heartbeatMs":30000,"maxMessageBytes":1048576}}"#).unwrap();
        assert_eq!(e.ty, "connected");
        let e = parse(br#"{"type":"ack","id":"p","ts":1,"payload":{}}"#).unwrap();
        assert_eq!(e.id.as_deref(), Some("p"));
    }
}
