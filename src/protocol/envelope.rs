//! The JSON envelope of text frames: parsing what a client sends into a
//! [`Request`] (or the [`ErrorReply`] it deserves), and building what the
//! server sends.
//!
//! Pure functions: nothing here knows about connections or rooms' state, so
//! any string can be thrown at [`parse_text`] (the property tests do).
//!
//! Parsing costs about the envelope's size, never a tree of values many times
//! larger: the envelope and payload are read as borrowed raw JSON
//! ([`RawValue`]), each field is parsed on its own into its plain type, and
//! the opaque parts (a publish's `data`, a ping's payload) stay raw text that
//! is copied once and written out verbatim.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::{Error as _, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;
use serde_json::value::RawValue;

use crate::error::invalid_room_text;
use crate::hub::rooms::is_valid_room;
pub(crate) use crate::hub::rooms::MAX_ROOM_LEN;

/// Longest `id` a client may attach to a request, in bytes.
pub(crate) const MAX_ID_LEN: usize = 64;
/// Most objects and arrays open at once in a text frame, the envelope itself
/// counting as one. serde_json parses (and drops) nesting recursively, so the
/// depth it allows (128) is a stack size a reader thread must have; this bound
/// keeps what a peer can make the reader use small, whatever the configured
/// stack (see `reader_stack_size`).
pub(crate) const MAX_DEPTH: usize = 32;

/// The error codes of docs/protocol.md, as sent in `error` payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Malformed JSON, a missing or non-string `type`, a wrong payload, a
    /// malformed binary frame.
    BadRequest,
    /// A well-formed envelope whose `type` the server does not know.
    UnknownType,
    /// Leaving a room the connection is not in.
    NotFound,
    /// Publishing or typing in a room the connection has not joined.
    Forbidden,
    /// Over the per-client rate limit.
    RateLimited,
    /// A field over its size limit (room name over 128 bytes, `id` over 64).
    TooLarge,
    /// The server failed (e.g. it is stopping).
    Internal,
    /// The cluster's Redis cannot be reached (`--redis`): try again shortly.
    Unavailable,
}

impl ErrorCode {
    /// The code's wire name, e.g. `bad_request`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Internal => "internal",
            ErrorCode::Unavailable => "unavailable",
        }
    }
}

/// An `error` frame to send: the code, a human-readable message, and the
/// request's `id` when one could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    /// The request's `id`, when it had a valid one.
    pub id: Option<String>,
    /// What went wrong, for programs.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
}

impl ErrorReply {
    /// An error with no `id`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorReply { id: None, code, message: message.into() }
    }

    fn with_id(mut self, id: &Option<String>) -> Self {
        self.id = id.clone();
        self
    }

    /// The complete `error` frame text.
    pub fn to_text(&self) -> String {
        frame("error", self.id.as_deref(), json!({"code": self.code.as_str(), "message": self.message}))
    }
}

/// A client request that parsed and passed every shape check.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The `id` to correlate the reply with; `None` asks for no ack.
    pub id: Option<String>,
    /// What the client asks for.
    pub kind: RequestKind,
}

/// Opaque JSON from a client (a publish's `data`, a ping's payload), kept as
/// the text it was sent in: validated, never turned into a tree of values.
#[derive(Debug, Clone)]
pub struct RawJson(Box<RawValue>);

impl RawJson {
    /// Wraps JSON text that was already validated (a backend API body's field).
    pub(crate) fn from_raw(raw: Box<RawValue>) -> Self {
        RawJson(raw)
    }

    /// The JSON text, exactly as the client sent it.
    pub fn get(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for RawJson {
    /// Equal when the texts are (not merely the values they denote).
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Serialize for RawJson {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// The client → server message types of docs/protocol.md.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RequestKind {
    /// `room:join {room, since?, epoch?}`.
    Join {
        /// The room.
        room: String,
        /// The last seq the client saw, asking for recovery.
        since: Option<u64>,
        /// The epoch the client saw `since` in (a wshub extension).
        epoch: Option<String>,
    },
    /// `room:leave {room}`.
    Leave {
        /// The room.
        room: String,
    },
    /// `room:publish {room, data, echo?, key?}`.
    Publish {
        /// The room.
        room: String,
        /// Any JSON value, as sent.
        data: RawJson,
        /// Whether the sender gets the message too.
        echo: bool,
        /// The idempotency key (protocol 1.1): a resend with a key the room's
        /// history still holds publishes nothing.
        key: Option<String>,
    },
    /// `typing:start` / `typing:stop {room}`.
    Typing {
        /// The room.
        room: String,
        /// True for `typing:start`.
        active: bool,
    },
    /// `presence:get {room}`.
    PresenceGet {
        /// The room.
        room: String,
    },
    /// `ping` with any payload.
    Ping {
        /// Echoed back in the ack, as sent (`null` when there was none).
        payload: RawJson,
    },
    /// `auth:refresh {token}` (protocol 1.1): a fresh token extends the session.
    AuthRefresh {
        /// The new token (never logged).
        token: String,
    },
}

/// Milliseconds since the Unix epoch, the `ts` of every server frame.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A server frame: `{"type", "id"?, "ts", "payload"}`, stamped now.
pub fn frame(kind: &str, id: Option<&str>, payload: impl Serialize) -> String {
    frame_at(kind, id, payload, now_ms())
}

/// The server envelope, with its fields in the documented order.
#[derive(Serialize)]
struct Outgoing<'a, P> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    ts: u64,
    payload: P,
}

/// A server frame stamped with `ts`.
pub fn frame_at(kind: &str, id: Option<&str>, payload: impl Serialize, ts: u64) -> String {
    let out = Outgoing { kind, id, ts, payload };
    // Serializing strings, numbers, Values and validated raw JSON cannot fail.
    serde_json::to_string(&out).unwrap_or_default()
}

/// An `ack` frame for request `id`.
pub fn ack(id: &str, payload: impl Serialize) -> String {
    frame("ack", Some(id), payload)
}

/// Reads the `id` of an envelope whatever else is wrong with it, for
/// replies to requests refused before parsing (rate limit). Reads no further
/// than the `id` and keeps nothing else: the fields before it are skipped
/// without being stored, the text after it is not looked at.
pub fn peek_id(text: &str) -> Option<String> {
    if too_deep(text) {
        return None;
    }
    struct IdOnly<'s>(&'s mut Option<String>);
    impl<'de> Visitor<'de> for IdOnly<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an envelope")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<String>()? {
                if key == "id" {
                    *self.0 = map.next_value::<Option<String>>()?;
                    // Stop here: the rest of the envelope is not needed.
                    return Err(A::Error::custom("id read"));
                }
                map.next_value::<IgnoredAny>()?;
            }
            Ok(())
        }
    }
    let mut id = None;
    let mut de = serde_json::Deserializer::from_str(text);
    let _ = de.deserialize_map(IdOnly(&mut id));
    id.filter(|id| id.len() <= MAX_ID_LEN)
}

/// A field that is present, `null` included (a missing one is `None`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

/// The envelope's fields as sent, unparsed; unknown fields are skipped.
#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present", rename = "type")]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    payload: Option<&'a RawValue>,
}

/// The fields of every room request's payload, unparsed.
#[derive(Deserialize)]
struct RoomPayload<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    room: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    since: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    epoch: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    echo: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    key: Option<&'a RawValue>,
}

/// Parses one raw field as `T`; `None` when it is not one.
fn field<'a, T: Deserialize<'a>>(raw: &'a RawValue) -> Option<T> {
    serde_json::from_str(raw.get()).ok()
}

/// What is wrong with text that did not parse as an object of fields.
fn shape_error(text: &str, e: &serde_json::Error, what: &str) -> ErrorReply {
    let message = if e.is_syntax() || e.is_eof() {
        format!("malformed JSON: {e}")
    } else if !text.trim_start().starts_with('{') {
        format!("{what} must be a JSON object")
    } else {
        format!("malformed {what}: {e}")
    };
    ErrorReply::new(ErrorCode::BadRequest, message)
}

/// True when `text` opens more than [`MAX_DEPTH`] objects and arrays at
/// once. Only brackets outside strings count; malformed JSON is left to the
/// parser, which stops at the first error.
fn too_deep(text: &str) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in text.as_bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Parses one text frame from a client.
pub fn parse_text(text: &str) -> Result<Request, ErrorReply> {
    if too_deep(text) {
        return Err(ErrorReply::new(
            ErrorCode::BadRequest,
            format!("objects and arrays nested more than {MAX_DEPTH} deep"),
        ));
    }
    let incoming: Incoming<'_> =
        serde_json::from_str(text).map_err(|e| shape_error(text, &e, "the envelope"))?;
    let id = match incoming.id {
        None => None,
        Some(raw) => match field::<Option<String>>(raw) {
            Some(Some(id)) if id.len() > MAX_ID_LEN => {
                return Err(ErrorReply::new(
                    ErrorCode::TooLarge,
                    format!("id is longer than {MAX_ID_LEN} bytes"),
                ))
            }
            Some(id) => id,
            None => return Err(ErrorReply::new(ErrorCode::BadRequest, "id must be a string")),
        },
    };
    let kind = match incoming.kind.map(field::<String>) {
        Some(Some(t)) => t,
        Some(None) => {
            return Err(ErrorReply::new(ErrorCode::BadRequest, "type must be a string").with_id(&id))
        }
        None => return Err(ErrorReply::new(ErrorCode::BadRequest, "missing type").with_id(&id)),
    };
    let kind = parse_kind(&kind, incoming.payload).map_err(|e| e.with_id(&id))?;
    Ok(Request { id, kind })
}

fn parse_kind(kind: &str, payload: Option<&RawValue>) -> Result<RequestKind, ErrorReply> {
    if kind == "ping" {
        let payload = payload.map_or_else(|| RawValue::NULL.to_owned(), ToOwned::to_owned);
        return Ok(RequestKind::Ping { payload: RawJson(payload) });
    }
    if kind == "auth:refresh" {
        #[derive(Deserialize)]
        struct Refresh {
            token: Option<serde_json::Value>,
        }
        let Some(refresh) = payload.and_then(field::<Refresh>) else {
            return Err(ErrorReply::new(ErrorCode::BadRequest, "auth:refresh needs an object payload"));
        };
        return match refresh.token {
            Some(serde_json::Value::String(token)) => Ok(RequestKind::AuthRefresh { token }),
            _ => Err(ErrorReply::new(ErrorCode::BadRequest, "auth:refresh needs a token string")),
        };
    }
    let known = ["room:join", "room:leave", "room:publish", "typing:start", "typing:stop", "presence:get"];
    if !known.contains(&kind) {
        let shown: String = kind.chars().take(64).collect();
        return Err(ErrorReply::new(ErrorCode::UnknownType, format!("unknown type {shown:?}")));
    }
    let needs_object = || ErrorReply::new(ErrorCode::BadRequest, format!("{kind} needs an object payload"));
    let raw = payload.ok_or_else(needs_object)?.get();
    if !raw.starts_with('{') {
        return Err(needs_object());
    }
    let p: RoomPayload<'_> = serde_json::from_str(raw).map_err(|e| shape_error(raw, &e, "payload"))?;
    let room = room_field(p.room)?;
    let bad = |message: &str| ErrorReply::new(ErrorCode::BadRequest, message);
    Ok(match kind {
        "room:join" => RequestKind::Join {
            room,
            since: match p.since {
                None => None,
                Some(v) => {
                    field::<Option<u64>>(v).ok_or_else(|| bad("since must be a non-negative integer"))?
                }
            },
            epoch: match p.epoch {
                None => None,
                Some(v) => field::<Option<String>>(v).ok_or_else(|| bad("epoch must be a string"))?,
            },
        },
        "room:leave" => RequestKind::Leave { room },
        "room:publish" => RequestKind::Publish {
            room,
            data: RawJson(p.data.ok_or_else(|| bad("room:publish needs data"))?.to_owned()),
            echo: match p.echo {
                None => false,
                Some(v) => {
                    field::<Option<bool>>(v).ok_or_else(|| bad("echo must be a boolean"))?.unwrap_or(false)
                }
            },
            key: match p.key {
                None => None,
                Some(v) => match field::<Option<String>>(v) {
                    Some(key) => key.map(check_key).transpose()?,
                    None => return Err(bad(KEY_RULE)),
                },
            },
        },
        "typing:start" => RequestKind::Typing { room, active: true },
        "typing:stop" => RequestKind::Typing { room, active: false },
        _ => RequestKind::PresenceGet { room },
    })
}

/// What a publish's `key` must be.
pub(crate) const KEY_RULE: &str = "key must be a string of 1 to 64 bytes";

/// The longest idempotency key, in bytes.
pub(crate) const MAX_KEY_LEN: usize = 64;

/// A `key` as PROTOCOL.md 1.1 allows it: 1 to [`MAX_KEY_LEN`] bytes.
pub(crate) fn check_key(key: String) -> Result<String, ErrorReply> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(ErrorReply::new(ErrorCode::BadRequest, KEY_RULE));
    }
    Ok(key)
}

fn room_field(room: Option<&RawValue>) -> Result<String, ErrorReply> {
    match room.map(field::<String>) {
        Some(Some(room)) => check_room(room),
        Some(None) => Err(ErrorReply::new(ErrorCode::BadRequest, "room must be a string")),
        None => Err(ErrorReply::new(ErrorCode::BadRequest, "missing room")),
    }
}

/// Checks a room name: over [`MAX_ROOM_LEN`] bytes is `too_large`; empty or with control
/// characters is `bad_request`.
pub fn check_room(room: String) -> Result<String, ErrorReply> {
    if room.len() > MAX_ROOM_LEN {
        return Err(ErrorReply::new(
            ErrorCode::TooLarge,
            format!("room name is longer than {MAX_ROOM_LEN} bytes"),
        ));
    }
    if !is_valid_room(&room) {
        return Err(ErrorReply::new(ErrorCode::BadRequest, invalid_room_text!()));
    }
    Ok(room)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn code(text: &str) -> (ErrorCode, Option<String>) {
        let e = parse_text(text).unwrap_err();
        (e.code, e.id)
    }

    #[test]
    fn a_publish_parses() {
        let r =
            parse_text(r#"{"type":"room:publish","id":"c1","payload":{"room":"a","data":[1],"echo":true}}"#)
                .unwrap();
        assert_eq!(r.id.as_deref(), Some("c1"));
        let RequestKind::Publish { room, data, echo, key } = r.kind else { panic!("{:?}", r.kind) };
        assert_eq!((room.as_str(), data.get(), echo, key), ("a", "[1]", true, None));
        let r = parse_text(r#"{"type":"room:publish","payload":{"room":"a","data":1,"key":"k-1"}}"#).unwrap();
        let RequestKind::Publish { key, .. } = r.kind else { panic!("{:?}", r.kind) };
        assert_eq!(key.as_deref(), Some("k-1"));
    }

    #[test]
    fn bad_inputs_get_their_codes_with_the_id_when_readable() {
        assert_eq!(code("{"), (ErrorCode::BadRequest, None));
        assert_eq!(code("[]"), (ErrorCode::BadRequest, None));
        assert_eq!(code(r#"{"id":"x"}"#), (ErrorCode::BadRequest, Some("x".into())));
        assert_eq!(code(r#"{"id":"x","type":7}"#), (ErrorCode::BadRequest, Some("x".into())));
        assert_eq!(code(r#"{"id":"x","type":"nope"}"#), (ErrorCode::UnknownType, Some("x".into())));
        assert_eq!(code(r#"{"id":5,"type":"ping"}"#), (ErrorCode::BadRequest, None));
        let long_id = format!(r#"{{"id":"{}","type":"ping"}}"#, "i".repeat(65));
        assert_eq!(code(&long_id), (ErrorCode::TooLarge, None));
        let long_room =
            format!(r#"{{"id":"x","type":"room:join","payload":{{"room":"{}"}}}}"#, "r".repeat(129));
        assert_eq!(code(&long_room), (ErrorCode::TooLarge, Some("x".into())));
        assert_eq!(code(r#"{"type":"room:join","payload":{"room":""}}"#).0, ErrorCode::BadRequest);
        assert_eq!(
            code(r#"{"type":"room:join","payload":{"room":"a","since":-1}}"#).0,
            ErrorCode::BadRequest
        );
        assert_eq!(code(r#"{"type":"room:join","payload":"a"}"#).0, ErrorCode::BadRequest);
        assert_eq!(code(r#"{"type":"room:publish","payload":{"room":"a"}}"#).0, ErrorCode::BadRequest);
        assert_eq!(
            code(r#"{"type":"room:publish","payload":{"room":"a","data":1,"echo":1}}"#).0,
            ErrorCode::BadRequest
        );
        for key in [r#""""#, "7", &format!("{:?}", "k".repeat(65))] {
            let text = format!(r#"{{"type":"room:publish","payload":{{"room":"a","data":1,"key":{key}}}}}"#);
            assert_eq!(code(&text).0, ErrorCode::BadRequest, "{text}");
        }
    }

    #[test]
    fn peek_id_reads_up_to_the_id_only() {
        assert_eq!(peek_id(r#"{"payload":{"deep":[1,{"a":"b"}]},"id":"x"}"#).as_deref(), Some("x"));
        // What follows the id is not read: an envelope broken after it still has one.
        assert_eq!(peek_id(r#"{"id":"x", oops"#).as_deref(), Some("x"));
        assert_eq!(peek_id(r#"{"oops "#), None);
        assert_eq!(peek_id(r#"{"id":7}"#), None);
        assert_eq!(peek_id(&format!(r#"{{"id":"{}"}}"#, "i".repeat(65))), None);
    }

    #[test]
    fn opaque_json_is_passed_on_as_sent() {
        let r = parse_text(r#"{"type":"ping","id":"p","payload": { "b" : 1,"a":[ 2 ] }}"#).unwrap();
        let RequestKind::Ping { payload } = &r.kind else { panic!("{:?}", r.kind) };
        assert_eq!(payload.get(), r#"{ "b" : 1,"a":[ 2 ] }"#);
        let v: Value = serde_json::from_str(&ack("p", payload)).unwrap();
        assert_eq!(v["payload"], json!({"a": [2], "b": 1}));
        let none = parse_text(r#"{"type":"ping"}"#).unwrap();
        assert_eq!(none.kind, RequestKind::Ping { payload: RawJson(RawValue::NULL.to_owned()) });
        let dup = parse_text(r#"{"type":"ping","type":"ping"}"#).unwrap_err();
        assert_eq!(dup.code, ErrorCode::BadRequest);
    }

    #[test]
    fn frames_carry_type_id_ts_payload() {
        let v: Value = serde_json::from_str(&ack("c1", json!({"room": "a"}))).unwrap();
        assert_eq!(v["type"], "ack");
        assert_eq!(v["id"], "c1");
        assert!(v["ts"].as_u64().unwrap() > 1_600_000_000_000);
        assert_eq!(v["payload"]["room"], "a");
    }
}
