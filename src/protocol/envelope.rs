//! The JSON envelope of text frames: parsing what a client sends into a
//! [`Request`] (or the [`ErrorReply`] it deserves), and building what the
//! server sends.
//!
//! Pure functions: nothing here knows about connections or rooms' state, so
//! any string can be thrown at [`parse_text`] (the property tests do).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::error::invalid_room_text;
pub(crate) use crate::hub::rooms::MAX_ROOM_LEN;
use crate::hub::rooms::is_valid_room;

/// Longest `id` a client may attach to a request, in bytes.
pub(crate) const MAX_ID_LEN: usize = 64;

/// The error codes of PROTOCOL.md, as sent in `error` payloads.
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

/// The client → server message types of PROTOCOL.md.
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
    /// `room:publish {room, data, echo?}`.
    Publish {
        /// The room.
        room: String,
        /// Any JSON value.
        data: Value,
        /// Whether the sender gets the message too.
        echo: bool,
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
        /// Echoed back in the ack.
        payload: Value,
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
pub fn frame(kind: &str, id: Option<&str>, payload: Value) -> String {
    frame_at(kind, id, payload, now_ms())
}

/// The server envelope, with its fields in the documented order.
#[derive(Serialize)]
struct Outgoing<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    ts: u64,
    payload: Value,
}

/// A server frame stamped with `ts`.
pub fn frame_at(kind: &str, id: Option<&str>, payload: Value, ts: u64) -> String {
    let out = Outgoing { kind, id, ts, payload };
    // Serializing a struct of strings, numbers and a Value cannot fail.
    serde_json::to_string(&out).unwrap_or_default()
}

/// An `ack` frame for request `id`.
pub fn ack(id: &str, payload: Value) -> String {
    frame("ack", Some(id), payload)
}

/// Reads the `id` of an envelope whatever else is wrong with it, for
/// replies to requests refused before parsing (rate limit).
pub fn peek_id(text: &str) -> Option<String> {
    let Value::Object(m) = serde_json::from_str::<Value>(text).ok()? else { return None };
    match m.get("id") {
        Some(Value::String(id)) if id.len() <= MAX_ID_LEN => Some(id.clone()),
        _ => None,
    }
}

/// Parses one text frame from a client.
pub fn parse_text(text: &str) -> Result<Request, ErrorReply> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ErrorReply::new(ErrorCode::BadRequest, format!("malformed JSON: {e}")))?;
    let Value::Object(mut m) = value else {
        return Err(ErrorReply::new(ErrorCode::BadRequest, "the envelope must be a JSON object"));
    };
    let id = match m.remove("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if id.len() <= MAX_ID_LEN => Some(id),
        Some(Value::String(_)) => {
            return Err(ErrorReply::new(ErrorCode::TooLarge, format!("id is longer than {MAX_ID_LEN} bytes")))
        }
        Some(_) => return Err(ErrorReply::new(ErrorCode::BadRequest, "id must be a string")),
    };
    let kind = match m.remove("type") {
        Some(Value::String(t)) => t,
        Some(_) => return Err(ErrorReply::new(ErrorCode::BadRequest, "type must be a string").with_id(&id)),
        None => return Err(ErrorReply::new(ErrorCode::BadRequest, "missing type").with_id(&id)),
    };
    let payload = m.remove("payload").unwrap_or(Value::Null);
    let kind = parse_kind(&kind, payload).map_err(|e| e.with_id(&id))?;
    Ok(Request { id, kind })
}

fn parse_kind(kind: &str, payload: Value) -> Result<RequestKind, ErrorReply> {
    if kind == "ping" {
        return Ok(RequestKind::Ping { payload });
    }
    if kind == "auth:refresh" {
        return match payload {
            Value::Object(mut p) => match p.remove("token") {
                Some(Value::String(token)) => Ok(RequestKind::AuthRefresh { token }),
                _ => Err(ErrorReply::new(ErrorCode::BadRequest, "auth:refresh needs a token string")),
            },
            _ => Err(ErrorReply::new(ErrorCode::BadRequest, "auth:refresh needs an object payload")),
        };
    }
    let known = ["room:join", "room:leave", "room:publish", "typing:start", "typing:stop", "presence:get"];
    if !known.contains(&kind) {
        let shown: String = kind.chars().take(64).collect();
        return Err(ErrorReply::new(ErrorCode::UnknownType, format!("unknown type {shown:?}")));
    }
    let Value::Object(mut p) = payload else {
        return Err(ErrorReply::new(ErrorCode::BadRequest, format!("{kind} needs an object payload")));
    };
    let room = room_field(&mut p)?;
    Ok(match kind {
        "room:join" => RequestKind::Join {
            room,
            since: match p.remove("since") {
                None | Some(Value::Null) => None,
                Some(v) => Some(v.as_u64().ok_or_else(|| {
                    ErrorReply::new(ErrorCode::BadRequest, "since must be a non-negative integer")
                })?),
            },
            epoch: match p.remove("epoch") {
                None | Some(Value::Null) => None,
                Some(Value::String(e)) => Some(e),
                Some(_) => return Err(ErrorReply::new(ErrorCode::BadRequest, "epoch must be a string")),
            },
        },
        "room:leave" => RequestKind::Leave { room },
        "room:publish" => RequestKind::Publish {
            room,
            data: p
                .remove("data")
                .ok_or_else(|| ErrorReply::new(ErrorCode::BadRequest, "room:publish needs data"))?,
            echo: match p.remove("echo") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => b,
                Some(_) => return Err(ErrorReply::new(ErrorCode::BadRequest, "echo must be a boolean")),
            },
        },
        "typing:start" => RequestKind::Typing { room, active: true },
        "typing:stop" => RequestKind::Typing { room, active: false },
        _ => RequestKind::PresenceGet { room },
    })
}

fn room_field(p: &mut Map<String, Value>) -> Result<String, ErrorReply> {
    match p.remove("room") {
        Some(Value::String(room)) => check_room(room),
        Some(_) => Err(ErrorReply::new(ErrorCode::BadRequest, "room must be a string")),
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
        return Err(ErrorReply::new(
            ErrorCode::BadRequest,
            invalid_room_text!(),
        ));
    }
    Ok(room)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(r.kind, RequestKind::Publish { room: "a".into(), data: json!([1]), echo: true });
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
