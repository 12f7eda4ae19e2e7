//! The backend HTTP API (docs/protocol.md, "Backend HTTP API"): `/api/*` on
//! the WebSocket port, off (404) unless an API key is configured.
//!
//! Each call: the key (constant-time compare, never logged), the body (JSON,
//! already bounded by the max message size when the engine read it), then
//! the action through the same paths clients and the Rust/C handles use:
//! `publish.rs` for publishes, `bans.rs` for kick and ban, `reads.rs` for
//! presence, history and rooms. Every call leaves one info-level audit line
//! (method, target, caller's address, status).

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::bans::{self, DISCONNECT_CLOSE_CODE};
use super::envelope::{check_key, check_room, ErrorCode, ErrorReply, RawJson};
use super::handler::Shared;
use super::publish::{self, Body, Publish, Publisher};
use super::reads;
use crate::frame::is_sendable_close_code;
use crate::server::ServerHandle;
use crate::types::{HttpResponse, RequestInfo};

/// The prefix of every API path.
pub(crate) const PREFIX: &str = "/api/";

/// Most rooms one `/api/broadcast` may name.
pub(crate) const MAX_BROADCAST_ROOMS: usize = 1000;
/// Most messages `/api/history` returns (and its default `limit`).
pub(crate) const MAX_HISTORY: usize = 1000;
/// Most rooms `/api/rooms` lists (`truncated: true` when there are more).
pub(crate) const MAX_ROOMS_LISTED: usize = 10_000;

/// Answers one `/api/*` request, and logs it.
pub(crate) fn route(shared: &Shared, server: &ServerHandle, request: &RequestInfo) -> HttpResponse {
    // No key, or an empty one (the Rust API does not insist on `validate`): off.
    let Some(key) = shared.config.api_key.as_ref().filter(|k| !k.0.is_empty()) else {
        return HttpResponse::not_found();
    };
    let response = if !authorized(request, key.0.as_bytes()) {
        error(401, ErrorCode::Forbidden, "a valid API key is required (Authorization: apikey <KEY>)")
            .with_header("WWW-Authenticate", "apikey")
    } else {
        match call(shared, server, request) {
            Ok(body) => HttpResponse::new(200, JSON, body.to_string()),
            Err((status, e)) => error(status, e.code, &e.message),
        }
    };
    // The audit trail: who asked for what, never the key.
    log::info!(
        "api: {} {}{}{} from {}: {}",
        request.method,
        request.path,
        if request.query.is_empty() { "" } else { "?" },
        request.query,
        request.remote_addr,
        response.status
    );
    response
}

const JSON: &str = "application/json";

/// An API failure: the HTTP status and the error.
type Failure = (u16, ErrorReply);

fn bad(message: impl Into<String>) -> Failure {
    (400, ErrorReply::new(ErrorCode::BadRequest, message))
}

/// `{"error": {"code", "message"}}` with this status.
fn error(status: u16, code: ErrorCode, message: &str) -> HttpResponse {
    HttpResponse::new(status, JSON, json!({"error": {"code": code.as_str(), "message": message}}).to_string())
}

/// The HTTP status of a protocol error.
fn status_of(e: &ErrorReply) -> u16 {
    match e.code {
        ErrorCode::BadRequest | ErrorCode::UnknownType => 400,
        ErrorCode::NotFound => 404,
        ErrorCode::Forbidden => 403,
        ErrorCode::RateLimited => 429,
        ErrorCode::TooLarge => 413,
        ErrorCode::Internal | ErrorCode::Unavailable => 503,
    }
}

/// The key from `Authorization: apikey <KEY>` or `X-API-Key`, compared with
/// `expected` in constant time. An empty key, presented or expected, never
/// matches.
fn authorized(request: &RequestInfo, expected: &[u8]) -> bool {
    if expected.is_empty() {
        return false;
    }
    let from_auth = request.header("authorization").and_then(|v| {
        let (scheme, key) = v.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("apikey").then(|| key.trim())
    });
    match from_auth.or_else(|| request.header("x-api-key").map(str::trim)) {
        Some(key) if !key.is_empty() => constant_time_eq(key.as_bytes(), expected),
        _ => false,
    }
}

/// Whether the API is on and `request` carries its key: the check a body
/// waits for (`http::body_limit`), before it is read.
pub(crate) fn key_accepted(shared: &Shared, request: &RequestInfo) -> bool {
    shared.config.api_key.as_ref().is_some_and(|key| authorized(request, key.0.as_bytes()))
}

/// Equal byte strings, in a time that depends on their lengths only (not on
/// where they differ).
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn call(shared: &Shared, server: &ServerHandle, request: &RequestInfo) -> Result<Value, Failure> {
    let name = &request.path[PREFIX.len()..];
    let method = request.method.as_str();
    let (wanted, result) = match name {
        "publish" => ("POST", Action::Post(publish_call)),
        "broadcast" => ("POST", Action::Post(broadcast_call)),
        "disconnect" => ("POST", Action::Post(disconnect_call)),
        "ban" => ("POST", Action::Post(ban_call)),
        "unban" => ("POST", Action::Post(unban_call)),
        "presence" => ("GET", Action::Get(presence_call)),
        "history" => ("GET", Action::Get(history_call)),
        "rooms" => ("GET", Action::Get(rooms_call)),
        _ => return Err((404, ErrorReply::new(ErrorCode::NotFound, format!("no API call {name:?}")))),
    };
    if method != wanted {
        return Err((
            405,
            ErrorReply::new(ErrorCode::BadRequest, format!("{} takes {wanted}", request.path)),
        ));
    }
    match result {
        Action::Post(f) => f(shared, server, &request.body),
        Action::Get(f) => f(shared, request),
    }
}

type PostFn = fn(&Shared, &ServerHandle, &[u8]) -> Result<Value, Failure>;
type GetFn = fn(&Shared, &RequestInfo) -> Result<Value, Failure>;

enum Action {
    Post(PostFn),
    Get(GetFn),
}

/// Deserializes a call's JSON object body (unknown fields refused, so a
/// typo is an error rather than ignored).
fn fields<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Failure> {
    if body.is_empty() {
        return Err(bad("a JSON object body is required"));
    }
    serde_json::from_slice(body).map_err(|e| bad(format!("bad body: {e}")))
}

fn room(room: String) -> Result<String, Failure> {
    check_room(room).map_err(|e| (status_of(&e), e))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    room: String,
    data: Box<RawValue>,
    #[serde(default)]
    key: Option<String>,
}

fn publish_call(shared: &Shared, server: &ServerHandle, body: &[u8]) -> Result<Value, Failure> {
    let body: PublishBody = fields(body)?;
    let room = room(body.room)?;
    let key = body.key.map(check_key).transpose().map_err(|e| (400, e))?;
    let data = RawJson::from_raw(body.data);
    let p = Publish {
        room: &room,
        body: Body::Json(&data),
        from: FROM_API,
        publisher: Publisher::Server,
        key: key.as_deref(),
        except: None,
    };
    let published = publish::publish(shared, server, p).map_err(|e| (status_of(&e), e))?;
    Ok(published.ack_payload(&room))
}

/// The `from` of messages the backend publishes.
pub(crate) const FROM_API: &str = "api";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BroadcastBody {
    rooms: Vec<String>,
    data: Box<RawValue>,
}

fn broadcast_call(shared: &Shared, server: &ServerHandle, body: &[u8]) -> Result<Value, Failure> {
    let body: BroadcastBody = fields(body)?;
    if body.rooms.is_empty() || body.rooms.len() > MAX_BROADCAST_ROOMS {
        return Err(bad(format!("rooms must name 1 to {MAX_BROADCAST_ROOMS} rooms")));
    }
    let rooms = body.rooms.into_iter().map(room).collect::<Result<Vec<_>, _>>()?;
    let data = RawJson::from_raw(body.data);
    let mut results = Vec::with_capacity(rooms.len());
    for room in &rooms {
        let p = Publish {
            room,
            body: Body::Json(&data),
            from: FROM_API,
            publisher: Publisher::Server,
            key: None,
            except: None,
        };
        match publish::publish(shared, server, p) {
            Ok(published) => results.push(json!({"room": room, "seq": published.seq})),
            Err(e) => {
                results.push(json!({"room": room, "error": {"code": e.code.as_str(), "message": e.message}}))
            }
        }
    }
    Ok(json!({"results": results}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectBody {
    #[serde(default, rename = "clientId")]
    client_id: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    code: Option<u16>,
    #[serde(default)]
    reason: Option<String>,
}

fn disconnect_call(shared: &Shared, server: &ServerHandle, body: &[u8]) -> Result<Value, Failure> {
    let body: DisconnectBody = fields(body)?;
    let code = body.code.unwrap_or(DISCONNECT_CLOSE_CODE);
    let reason = body.reason.unwrap_or_default();
    if !is_sendable_close_code(code) || reason.len() > 123 {
        return Err(bad(crate::error::invalid_close_code_text!()));
    }
    let n = match (body.client_id, body.user) {
        (Some(client_id), None) => bans::disconnect_client_id(shared, server, &client_id, code, &reason),
        (None, Some(user)) => bans::disconnect_user_everywhere(shared, server, &user, code, &reason),
        _ => return Err(bad("give exactly one of clientId and user")),
    };
    Ok(json!({"disconnected": n}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BanBody {
    user: String,
    seconds: u64,
}

fn ban_call(shared: &Shared, server: &ServerHandle, body: &[u8]) -> Result<Value, Failure> {
    let body: BanBody = fields(body)?;
    if !shared.admission.has_tokens() {
        return Err(bad("auth is off (no --jwt-secret or --jwt-public-key): no connection has a user, so a ban could never match one".to_owned()));
    }
    if body.user.is_empty() || body.seconds == 0 || body.seconds > bans::MAX_BAN_SECS {
        return Err(bad(format!("user must be non-empty and seconds 1 to {}", bans::MAX_BAN_SECS)));
    }
    let until = bans::ban_everywhere(shared, server, &body.user, body.seconds)
        .map_err(|e| (503, ErrorReply::new(ErrorCode::Forbidden, e.to_string())))?;
    Ok(json!({"user": body.user, "until": bans::unix_ms(until)}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnbanBody {
    user: String,
}

fn unban_call(shared: &Shared, _: &ServerHandle, body: &[u8]) -> Result<Value, Failure> {
    let body: UnbanBody = fields(body)?;
    bans::unban_everywhere(shared, &body.user);
    Ok(json!({"user": body.user}))
}

fn query_room(request: &RequestInfo) -> Result<String, Failure> {
    room(request.query_param("room").ok_or_else(|| bad("missing room (?room=R)"))?)
}

fn query_number(request: &RequestInfo, name: &str) -> Result<Option<u64>, Failure> {
    match request.query_param(name) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| bad(format!("{name} must be a non-negative integer"))),
    }
}

fn presence_call(shared: &Shared, request: &RequestInfo) -> Result<Value, Failure> {
    let room = query_room(request)?;
    let presence = reads::presence(shared, &room).map_err(|e| (status_of(&e), e))?;
    Ok(presence.payload(&room))
}

fn history_call(shared: &Shared, request: &RequestInfo) -> Result<Value, Failure> {
    let room = query_room(request)?;
    let since = query_number(request, "since")?.unwrap_or(0);
    let limit = query_number(request, "limit")?.map_or(MAX_HISTORY, |l| (l as usize).min(MAX_HISTORY));
    let (epoch, messages) = reads::history(shared, &room, since, limit).map_err(|e| (status_of(&e), e))?;
    Ok(json!({"room": room, "epoch": epoch, "messages": messages}))
}

fn rooms_call(shared: &Shared, _: &RequestInfo) -> Result<Value, Failure> {
    let (rooms, truncated) = reads::rooms(shared, MAX_ROOMS_LISTED);
    let mut out = json!({"rooms": rooms});
    if truncated {
        out["truncated"] = Value::Bool(true);
    }
    Ok(out)
}

/// Drives an API body through everything `/api/*` does with one before it
/// acts: the JSON, each call's fields and their checks. For the fuzz target.
pub(crate) fn check_body(call: &str, body: &[u8]) -> Result<(), ErrorReply> {
    let checked = match call {
        "publish" => fields::<PublishBody>(body).and_then(|b| {
            room(b.room)?;
            b.key.map(check_key).transpose().map(drop).map_err(|e| (400, e))
        }),
        "broadcast" => fields::<BroadcastBody>(body)
            .and_then(|b| b.rooms.into_iter().try_for_each(|r| room(r).map(drop))),
        "disconnect" => fields::<DisconnectBody>(body).map(drop),
        "ban" => fields::<BanBody>(body).map(drop),
        _ => fields::<UnbanBody>(body).map(drop),
    };
    checked.map_err(|(_, e)| e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secre"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn bodies_are_checked() {
        assert!(check_body("publish", br#"{"room":"r","data":{"a":1}}"#).is_ok());
        assert!(check_body("publish", br#"{"room":"r","data":1,"key":"k"}"#).is_ok());
        assert!(check_body("publish", br#"{"room":"","data":1}"#).is_err());
        assert!(check_body("publish", br#"{"room":"r"}"#).is_err(), "data is required");
        assert!(check_body("publish", br#"{"room":"r","data":1,"extra":2}"#).is_err());
        assert!(check_body("publish", br#"{"room":"r","data":1,"key":""}"#).is_err());
        assert!(check_body("publish", b"[1]").is_err());
        assert!(check_body("publish", b"").is_err());
        assert!(check_body("ban", br#"{"user":"u","seconds":-1}"#).is_err());
        assert!(check_body("disconnect", br#"{"code":"x"}"#).is_err());
    }
}
