//! Binary frames: `[0x01][u16 BE room length][room][body]` from a client is a
//! publish, and `[0x03][u16 BE room length][room][u8 key length][key][body]` a
//! publish with an idempotency key (acked by a text `ack` whose `id` is the
//! key); members receive `[0x02][u16 BE room length][room][u64 BE seq][body]`.
//!
//! Pure functions over bytes, like [`envelope`](super::envelope).

use super::envelope::{check_key, check_room, ErrorCode, ErrorReply};

/// First byte of a client's binary publish.
pub(crate) const KIND_PUBLISH: u8 = 0x01;
/// First byte of a binary room message sent to members.
pub(crate) const KIND_MESSAGE: u8 = 0x02;
/// First byte of a client's binary publish with an idempotency key.
pub(crate) const KIND_KEYED_PUBLISH: u8 = 0x03;

/// A binary publish that parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryPublish<'a> {
    /// The room.
    pub room: String,
    /// The opaque body.
    pub body: &'a [u8],
    /// The idempotency key of a keyed publish (kind 0x03).
    pub key: Option<String>,
}

/// Parses a client's binary frame; anything but a well-formed publish is an
/// error to send back as text.
pub fn parse_binary(bytes: &[u8]) -> Result<BinaryPublish<'_>, ErrorReply> {
    let bad = |why: &str| ErrorReply::new(ErrorCode::BadRequest, format!("malformed binary frame: {why}"));
    let keyed = match bytes.first() {
        None => return Err(bad("empty")),
        Some(&KIND_PUBLISH) => false,
        Some(&KIND_KEYED_PUBLISH) => true,
        Some(other) => {
            return Err(bad(&format!("unknown kind 0x{other:02x} (0x01 is a publish, 0x03 a keyed one)")))
        }
    };
    let len_bytes = bytes.get(1..3).ok_or_else(|| bad("shorter than its 3-byte header"))?;
    let room_len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
    let room = bytes.get(3..3 + room_len).ok_or_else(|| bad("room length runs past the end"))?;
    let room = std::str::from_utf8(room).map_err(|_| bad("room is not UTF-8"))?;
    let room = check_room(room.to_owned())?;
    let mut at = 3 + room_len;
    let key = if keyed {
        let key_len = usize::from(*bytes.get(at).ok_or_else(|| bad("no key length"))?);
        let key = bytes.get(at + 1..at + 1 + key_len).ok_or_else(|| bad("key length runs past the end"))?;
        let key = std::str::from_utf8(key).map_err(|_| bad("key is not UTF-8"))?;
        at += 1 + key_len;
        Some(check_key(key.to_owned())?)
    } else {
        None
    };
    Ok(BinaryPublish { room, body: &bytes[at..], key })
}

/// The frame members receive for a binary publish.
pub fn encode_message(room: &str, seq: u64, body: &[u8]) -> Vec<u8> {
    let room_len = room.len().min(usize::from(u16::MAX));
    let mut out = Vec::with_capacity(1 + 2 + room_len + 8 + body.len());
    out.push(KIND_MESSAGE);
    out.extend_from_slice(&(room_len as u16).to_be_bytes());
    out.extend_from_slice(&room.as_bytes()[..room_len]);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_round_trip() {
        let mut f = vec![KIND_PUBLISH, 0, 3];
        f.extend_from_slice(b"abcBODY");
        let p = parse_binary(&f).unwrap();
        assert_eq!((p.room.as_str(), p.body, p.key), ("abc", &b"BODY"[..], None));
        let mut keyed = vec![KIND_KEYED_PUBLISH, 0, 3];
        keyed.extend_from_slice(b"abc\x02k1BODY");
        let p = parse_binary(&keyed).unwrap();
        assert_eq!((p.room.as_str(), p.body, p.key.as_deref()), ("abc", &b"BODY"[..], Some("k1")));
        let m = encode_message("abc", 7, b"BODY");
        assert_eq!(m, [&[2u8, 0, 3][..], b"abc", &7u64.to_be_bytes(), b"BODY"].concat());
    }

    #[test]
    fn malformed_frames_are_errors() {
        for f in [
            &[][..],
            &[2, 0, 1, b'a'],
            &[1],
            &[1, 0],
            &[1, 0, 5, b'a'],
            &[1, 0, 0],
            &[1, 0, 1, 0xff],
            &[3, 0, 1, b'a'],
            &[3, 0, 1, b'a', 0],
            &[3, 0, 1, b'a', 2, b'k'],
            &[3, 0, 1, b'a', 1, 0xff],
        ] {
            assert_eq!(parse_binary(f).unwrap_err().code, ErrorCode::BadRequest, "{f:?}");
        }
        let mut long = vec![1, 0, 129];
        long.extend(std::iter::repeat_n(b'r', 129));
        assert_eq!(parse_binary(&long).unwrap_err().code, ErrorCode::TooLarge);
    }
}
