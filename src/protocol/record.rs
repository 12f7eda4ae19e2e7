//! A room's message as history keeps it: a [`Record`] (its seq, who sent it,
//! its body) around the one WebSocket frame members got, framed once and
//! shared. This module is the one encoder of a message: the WebSocket
//! `room:message` frame, the event streams' `room:message` event, the
//! `/api/history` entry, and the form Redis stores (`cluster/`), and the one
//! decoder of that form. Nothing else reads a message back out of a frame.
//!
//! A record keeps no copy of its body: it knows where in its frame the
//! encoder wrote each part, so history costs the frame and no more.

use std::fmt::Write as _;
use std::ops::Range;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::binary;
use super::envelope::RawJson;
use super::publish::Body;
use super::sse;
use crate::frame::{self as wire, SharedFrame};

/// One published message: its seq and its frame, with where the frame
/// holds each part.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    seq: u64,
    frame: SharedFrame,
    /// `None` for a frame read from Redis whose parts could not be found
    /// (a text no node wrote, put there by another tool): no member is
    /// sent it ([`is_message`](Record::is_message)), and streams and
    /// history reads leave it out.
    parts: Option<Parts>,
}

/// Where a record's parts lie in its frame's bytes.
#[derive(Debug, Clone)]
enum Parts {
    /// A JSON publish: the `room:message` payload object, and in it `data`
    /// and `from` (the clientId as a JSON string, quotes included).
    Json { payload: Range<usize>, data: Range<usize>, from: Range<usize> },
    /// A binary publish: its bytes (the frame does not hold who sent it).
    Binary { body: Range<usize> },
}

/// The text of a JSON message's frame up to its seq (`..."seq":`): what
/// Redis stores after `t`, and the start of the frame's text.
struct Head {
    text: String,
    payload_start: usize,
    data: Range<usize>,
    from: Range<usize>,
}

fn head(room: &str, ts: u64, from: &str, data: &RawJson) -> Head {
    let mut text = String::with_capacity(data.get().len() + from.len() + room.len() + 96);
    let _ = write!(text, r#"{{"type":"room:message","ts":{ts},"payload":"#);
    let payload_start = text.len();
    text.push_str(r#"{"data":"#);
    let data_start = text.len();
    text.push_str(data.get());
    let data_end = text.len();
    text.push_str(r#","from":"#);
    let from_start = text.len();
    push_json_str(&mut text, from);
    let from_end = text.len();
    text.push_str(r#","room":"#);
    push_json_str(&mut text, room);
    text.push_str(r#","seq":"#);
    Head { text, payload_start, data: data_start..data_end, from: from_start..from_end }
}

/// `s` as a JSON string, escaped as serde_json escapes it.
fn push_json_str(out: &mut String, s: &str) {
    // Serializing a string cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

impl Record {
    /// Encodes a publish as message `seq` of `room`, at `ts` (Unix ms), from
    /// clientId `from`: the frame members get, built once.
    pub fn encode(room: &str, seq: u64, ts: u64, from: &str, body: Body<'_>) -> Record {
        match body {
            Body::Json(data) => Self::finish_text(head(room, ts, from, data), seq),
            Body::Binary(bytes) => Self::binary(room, seq, bytes),
        }
    }

    /// Appends `<seq>}}` to a head and frames it.
    fn finish_text(head: Head, seq: u64) -> Record {
        let Head { mut text, payload_start, data, from } = head;
        let _ = write!(text, "{seq}}}");
        let payload_end = text.len();
        text.push('}');
        let frame = wire::encode(wire::OP_TEXT, text.as_bytes());
        let at = frame.len() - text.len();
        let shift = |r: Range<usize>| r.start + at..r.end + at;
        let parts =
            Parts::Json { payload: shift(payload_start..payload_end), data: shift(data), from: shift(from) };
        Record { seq, frame: wire::shared(frame), parts: Some(parts) }
    }

    fn binary(room: &str, seq: u64, bytes: &[u8]) -> Record {
        let frame = wire::encode(wire::OP_BINARY, &binary::encode_message(room, seq, bytes));
        let body = frame.len() - bytes.len()..frame.len();
        Record { seq, frame: wire::shared(frame), parts: Some(Parts::Binary { body }) }
    }

    /// What Redis stores for a publish (its stream entry's and channel
    /// message's body): `t` and the frame's text up to its seq, or `b` and
    /// the binary body. The seq is Redis's to assign.
    pub fn redis_body(room: &str, ts: u64, from: &str, body: Body<'_>) -> Vec<u8> {
        match body {
            Body::Json(data) => {
                let head = head(room, ts, from, data).text;
                let mut out = Vec::with_capacity(head.len() + 1);
                out.push(b't');
                out.extend_from_slice(head.as_bytes());
                out
            }
            Body::Binary(bytes) => {
                let mut out = Vec::with_capacity(bytes.len() + 1);
                out.push(b'b');
                out.extend_from_slice(bytes);
                out
            }
        }
    }

    /// Message `seq` of `room` from what Redis stored ([`redis_body`](Self::redis_body)):
    /// the same frame the publishing node would have built.
    pub fn from_redis(room: &str, seq: u64, stored: &[u8]) -> Record {
        match stored.split_first() {
            Some((b't', head)) => {
                let mut text = Vec::with_capacity(head.len() + 24);
                text.extend_from_slice(head);
                let _ = write!(Digits(&mut text), "{seq}}}}}");
                let parts = text_parts(&text);
                let frame = wire::encode(wire::OP_TEXT, &text);
                let at = frame.len() - text.len();
                let shift = |r: Range<usize>| r.start + at..r.end + at;
                let parts = parts.map(|(payload, data, from)| Parts::Json {
                    payload: shift(payload),
                    data: shift(data),
                    from: shift(from),
                });
                Record { seq, frame: wire::shared(frame), parts }
            }
            Some((_, bytes)) => Self::binary(room, seq, bytes),
            None => Self::binary(room, seq, &[]),
        }
    }

    /// A record of a frame whose parts nobody reads (the room table's tests).
    #[cfg(test)]
    pub fn opaque(seq: u64, frame: SharedFrame) -> Record {
        Record { seq, frame, parts: None }
    }

    /// Whether this is a message a node wrote: false for a text read from
    /// Redis that is no `room:message` (its frame would reach members as
    /// text no client can parse, or not even UTF-8).
    pub fn is_message(&self) -> bool {
        self.parts.is_some()
    }

    /// The frame members get (shared: cloning it copies no bytes).
    pub fn frame(&self) -> &SharedFrame {
        &self.frame
    }

    fn text(&self, r: &Range<usize>) -> Option<&str> {
        std::str::from_utf8(self.frame.get(r.clone())?).ok()
    }

    /// The message as an event stream's `room:message` event. A binary
    /// message names its publisher only when `from` is given (a live
    /// delivery on the publishing node: the frame does not hold it).
    pub fn sse_event(&self, room: &str, from: Option<&str>) -> Option<SharedFrame> {
        let data = match self.parts.as_ref()? {
            Parts::Json { payload, .. } => self.text(payload)?.to_owned(),
            Parts::Binary { body } => {
                let mut m = String::new();
                m.push_str(r#"{"binary":"#);
                push_json_str(&mut m, &sse::base64(self.frame.get(body.clone())?));
                if let Some(from) = from {
                    m.push_str(r#","from":"#);
                    push_json_str(&mut m, from);
                }
                m.push_str(r#","room":"#);
                push_json_str(&mut m, room);
                let _ = write!(m, r#","seq":{}}}"#, self.seq);
                m
            }
        };
        Some(wire::shared(sse::event(Some(self.seq), "room:message", &data)))
    }

    /// The message as `/api/history` lists it: `{seq, from, data}`, or
    /// `{seq, binary}` (base64).
    pub fn api_entry(&self) -> Option<Value> {
        match self.parts.as_ref()? {
            Parts::Json { data, from, .. } => {
                let data: &RawValue = serde_json::from_str(self.text(data)?).ok()?;
                let from: String = serde_json::from_str(self.text(from)?).ok()?;
                Some(json!({"seq": self.seq, "from": from, "data": data}))
            }
            Parts::Binary { body } => {
                Some(json!({"seq": self.seq, "binary": sse::base64(self.frame.get(body.clone())?)}))
            }
        }
    }
}

/// Where the payload, `data` and `from` lie in a message's text, read once
/// (a text from Redis: another node's encoder wrote it).
fn text_parts(text: &[u8]) -> Option<(Range<usize>, Range<usize>, Range<usize>)> {
    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        payload: &'a RawValue,
    }
    #[derive(Deserialize)]
    struct Payload<'a> {
        #[serde(borrow)]
        data: &'a RawValue,
        #[serde(borrow)]
        from: &'a RawValue,
    }
    let text = std::str::from_utf8(text).ok()?;
    let env: Envelope<'_> = serde_json::from_str(text).ok()?;
    let p: Payload<'_> = serde_json::from_str(env.payload.get()).ok()?;
    let base = text.as_ptr() as usize;
    let range = |raw: &RawValue| {
        let start = raw.get().as_ptr() as usize - base;
        start..start + raw.get().len()
    };
    Some((range(env.payload), range(p.data), range(p.from)))
}

/// `fmt::Write` into a byte vector.
struct Digits<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Digits<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::envelope::frame_at;

    const AWKWARD: &str = r#"{"t":"0}}","q":"\"é✓ \\ \u0001","n":[1,2]}"#;

    fn raw(text: &str) -> RawJson {
        RawJson::from_raw(RawValue::from_string(text.to_owned()).unwrap())
    }

    /// The frame is what the envelope's own serializer writes.
    #[test]
    fn a_text_record_is_the_envelope_frame() {
        let data = raw(AWKWARD);
        let r = Record::encode("r\"é", 7, 1_700_000_000_000, "n-1\"", Body::Json(&data));
        // The payload as the envelope's serializer writes a struct with raw data.
        #[derive(serde::Serialize)]
        struct Payload<'a> {
            data: &'a RawJson,
            from: &'a str,
            room: &'a str,
            seq: u64,
        }
        let payload = Payload { data: &data, from: "n-1\"", room: "r\"é", seq: 7 };
        let want = frame_at("room:message", None, payload, 1_700_000_000_000);
        assert_eq!(**r.frame(), wire::encode(wire::OP_TEXT, want.as_bytes()));
        assert_eq!(r.api_entry().unwrap(), json!({"seq": 7, "from": "n-1\"", "data": &data}));
    }

    /// What Redis stores decodes to the very frame and parts the publishing
    /// node built, for every seq width.
    #[test]
    fn what_redis_stores_decodes_to_the_same_record() {
        let data = raw(AWKWARD);
        for seq in [1, 9, 10, 99, 100, 12345, u64::MAX] {
            for body in [Body::Json(&data), Body::Binary(b"\x00\xff0}}"), Body::Binary(b"")] {
                let here = Record::encode("room", seq, 5, "n-3", body);
                let stored = Record::redis_body("room", 5, "n-3", body);
                let there = Record::from_redis("room", seq, &stored);
                assert_eq!(here.frame(), there.frame(), "seq {seq}");
                assert_eq!(here.api_entry(), there.api_entry(), "seq {seq}");
                assert_eq!(here.sse_event("room", None), there.sse_event("room", None), "seq {seq}");
            }
        }
    }

    #[test]
    fn events_carry_the_payload_and_binary_bodies_in_base64() {
        let data = raw("[1]");
        let r = Record::encode("r", 3, 1, "7", Body::Json(&data));
        assert_eq!(
            **r.sse_event("r", None).unwrap(),
            *b"id: 3\nevent: room:message\ndata: {\"data\":[1],\"from\":\"7\",\"room\":\"r\",\"seq\":3}\n\n"
        );
        let b = Record::encode("r", 4, 1, "7", Body::Binary(b"foo"));
        assert_eq!(
            **b.sse_event("r", None).unwrap(),
            *b"id: 4\nevent: room:message\ndata: {\"binary\":\"Zm9v\",\"room\":\"r\",\"seq\":4}\n\n"
        );
        assert_eq!(
            **b.sse_event("r", Some("7")).unwrap(),
            *b"id: 4\nevent: room:message\ndata: {\"binary\":\"Zm9v\",\"from\":\"7\",\"room\":\"r\",\"seq\":4}\n\n"
        );
        assert_eq!(b.api_entry().unwrap(), json!({"seq": 4, "binary": "Zm9v"}));
    }

    #[test]
    fn a_redis_text_that_is_no_message_is_delivered_but_not_read() {
        let r = Record::from_redis("r", 2, b"tnot json");
        assert!(r.api_entry().is_none() && r.sse_event("r", None).is_none());
        assert!(!r.frame().is_empty());
    }
}
