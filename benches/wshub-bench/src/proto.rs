//! The few parts of the wshub envelope the generator reads, borrowed from the
//! frame where possible (the fan-out hot path parses every room:message).

use std::borrow::Cow;

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

/// The union of the payload fields used: room:message `{room, seq, data}`,
/// acks `{room, seq}`, errors `{code, message}`.
#[derive(Deserialize, Default)]
pub struct Payload<'a> {
    #[serde(default, borrow)]
    pub room: Option<Cow<'a, str>>,
    #[serde(default)]
    pub seq: Option<u64>,
    #[serde(default, borrow)]
    pub data: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub code: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub message: Option<Cow<'a, str>>,
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
    }

    #[test]
    fn reads_acks_errors_and_others() {
        let e = parse(br#"{"type":"ack","id":"j","ts":1,"payload":{"room":"a","seq":0,"members":3,"epoch":"x"}}"#)
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
