//! Server-to-client WebSocket framing (RFC 6455 section 5.2).
//!
//! Server frames are unmasked, so one message framed once is byte-identical for
//! every receiver: a broadcast frames its payload here, once, and every member's
//! writer writes the same shared bytes. The same holds compressed
//! (permessage-deflate without context takeover): a frame's compressed form
//! is made once, the first time a member that agreed to the extension needs
//! it, and kept next to the plain one, so every such member (and history)
//! shares it. A frame for one client only (a reply, a direct send: [`single`])
//! is compressed just before it is written instead, never by the hub: by
//! that client's writer, or by the thread sending it straight to the socket
//! (`connection/outbound.rs`).
//! Reading frames is `connection/assembly.rs`'s job.

use std::ops::Deref;
use std::sync::{Arc, OnceLock};

/// One complete frame, shared between every queue it was pushed to.
pub(crate) type SharedFrame = Arc<Frame>;

/// A complete frame's bytes, with its compressed form once one was needed.
#[derive(Debug, Default)]
pub(crate) struct Frame {
    bytes: Vec<u8>,
    /// The compressed frame (RSV1 set), or `None` when this frame is not a
    /// final data frame, is shorter than the minimum, or does not shrink.
    deflated: OnceLock<Option<SharedFrame>>,
    /// Of a compressed frame: the length of the plain frame it stands for.
    plain_len: usize,
    /// For one client only: compressed just before it is written (see [`single`]).
    single: bool,
}

impl Deref for Frame {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.bytes
    }
}

impl From<Vec<u8>> for Frame {
    fn from(bytes: Vec<u8>) -> Self {
        Frame { bytes, deflated: OnceLock::new(), plain_len: 0, single: false }
    }
}

/// Frames are equal when their bytes are (tests compare what was sent).
impl PartialEq for Frame {
    fn eq(&self, other: &Frame) -> bool {
        self.bytes == other.bytes
    }
}

impl PartialEq<Vec<u8>> for Frame {
    fn eq(&self, other: &Vec<u8>) -> bool {
        &self.bytes == other
    }
}

impl PartialEq<Frame> for Vec<u8> {
    fn eq(&self, other: &Frame) -> bool {
        self == &other.bytes
    }
}

impl<const N: usize> PartialEq<&[u8; N]> for Frame {
    fn eq(&self, other: &&[u8; N]) -> bool {
        self.bytes == other[..]
    }
}

/// Shares a frame's bytes.
pub(crate) fn shared(bytes: Vec<u8>) -> SharedFrame {
    Arc::new(Frame::from(bytes))
}

/// A frame for one client only (a reply, a direct send): its compressed form,
/// when it needs one, is made just before it is written (by the client's
/// writer, or by a sending thread that is not the hub, under the write lock),
/// not when it is queued.
pub(crate) fn single(bytes: Vec<u8>) -> SharedFrame {
    Arc::new(Frame { single: true, ..Frame::from(bytes) })
}

impl Frame {
    /// A frame for one client only, compressed (if at all) just before it is written.
    pub(crate) fn is_single(&self) -> bool {
        self.single
    }

    /// The plain frame's length, when this is a compressed one.
    pub(crate) fn compressed_from(&self) -> Option<usize> {
        (self.plain_len > 0).then_some(self.plain_len)
    }

    /// Whether [`Frame::for_deflate`] with these bounds tries to compress this
    /// frame: a final data frame whose payload is at least `min_bytes` (and
    /// at least one byte) and at most `max_payload`.
    pub(crate) fn qualifies_for_deflate(&self, max_payload: usize, min_bytes: usize) -> bool {
        data_payload(&self.bytes)
            .is_some_and(|(_, payload)| payload.len() <= max_payload && payload.len() >= min_bytes.max(1))
    }

    /// The form to send to a client that agreed to permessage-deflate and
    /// takes compressed payloads up to `max_payload` bytes; compressed once
    /// (on the first call) when the payload is at least `min_bytes`.
    pub(crate) fn for_deflate(self: &Arc<Self>, max_payload: usize, min_bytes: usize) -> SharedFrame {
        if !self.qualifies_for_deflate(max_payload, min_bytes) {
            return self.clone();
        }
        let Some((header, payload)) = data_payload(&self.bytes) else { return self.clone() };
        let deflated = self.deflated.get_or_init(|| {
            let packed = crate::connection::deflate::compress(payload)?;
            let mut bytes = Vec::with_capacity(packed.len() + 10);
            push_header(&mut bytes, self.bytes[0] & 0x0f, packed.len());
            bytes[0] |= 0x40;
            bytes.extend_from_slice(&packed);
            (bytes.len() < header + payload.len())
                .then(|| Arc::new(Frame { plain_len: self.bytes.len(), ..Frame::from(bytes) }))
        });
        deflated.clone().unwrap_or_else(|| self.clone())
    }
}

/// A final, uncompressed, unmasked text or binary frame's header length and payload.
fn data_payload(frame: &[u8]) -> Option<(usize, &[u8])> {
    let (&first, &second) = (frame.first()?, frame.get(1)?);
    if first & 0xf0 != 0x80 || !matches!(first & 0x0f, OP_TEXT | OP_BINARY) || second & 0x80 != 0 {
        return None;
    }
    let header = match second {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    Some((header, frame.get(header..)?))
}

pub(crate) const OP_TEXT: u8 = 0x1;
pub(crate) const OP_BINARY: u8 = 0x2;
pub(crate) const OP_CLOSE: u8 = 0x8;
pub(crate) const OP_PING: u8 = 0x9;
pub(crate) const OP_PONG: u8 = 0xA;

/// The frame header for a final, unmasked frame of `len` payload bytes.
fn push_header(out: &mut Vec<u8>, opcode: u8, len: usize) {
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(len as u8);
    } else if len <= u16::MAX as usize {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// Frames `payload` as one final frame.
pub(crate) fn encode(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    push_header(&mut out, opcode, payload.len());
    out.extend_from_slice(payload);
    out
}

/// Frames a data message, ready to share.
pub(crate) fn encode_message(message: &crate::Message) -> SharedFrame {
    shared(encode(message_opcode(message), message.as_bytes()))
}

/// Frames a data message for one client only (see [`single`]).
pub(crate) fn encode_single(message: &crate::Message) -> SharedFrame {
    single(encode(message_opcode(message), message.as_bytes()))
}

fn message_opcode(message: &crate::Message) -> u8 {
    if message.is_text() {
        OP_TEXT
    } else {
        OP_BINARY
    }
}

/// A close frame with a status code and a reason (cut to fit 125 bytes, on a
/// character boundary).
pub(crate) fn encode_close(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    encode(OP_CLOSE, &payload)
}

/// Whether a close code may be sent in a close frame (RFC 6455 section 7.4).
pub fn is_sendable_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Whether `bytes` is exactly one complete, unmasked pong frame (as
/// tungstenite writes the answer to a ping).
pub(crate) fn is_single_pong(bytes: &[u8]) -> bool {
    const FIN_PONG: u8 = 0x80 | 0x0a;
    bytes.len() >= 2 && bytes[0] == FIN_PONG && bytes[1] <= 125 && bytes.len() == 2 + usize::from(bytes[1])
}

/// Whether a run of complete unmasked frames (as tungstenite writes its pong and
/// close replies) contains a close frame.
pub(crate) fn contains_close(mut bytes: &[u8]) -> bool {
    while bytes.len() >= 2 {
        if bytes[0] & 0x0f == OP_CLOSE {
            return true;
        }
        let masked = bytes[1] & 0x80 != 0;
        let (len, header) = match bytes[1] & 0x7f {
            126 if bytes.len() >= 4 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            127 if bytes.len() >= 10 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&bytes[2..10]);
                (u64::from_be_bytes(n) as usize, 10)
            }
            126 | 127 => return false,
            n => (n as usize, 2),
        };
        let skip = header + if masked { 4 } else { 0 } + len;
        bytes = bytes.get(skip..).unwrap_or(&[]);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use tungstenite::protocol::frame::FrameHeader;

    fn parse(bytes: &[u8]) -> (FrameHeader, u64, usize) {
        let mut c = Cursor::new(bytes);
        let (h, len) = FrameHeader::parse(&mut c).unwrap().unwrap();
        (h, len, c.position() as usize)
    }

    #[test]
    fn every_length_class_parses_back_with_tungstenite() {
        for len in [0usize, 1, 125, 126, 65535, 65536, 300_000] {
            let payload = vec![7u8; len];
            let f = encode(OP_BINARY, &payload);
            let (h, l, at) = parse(&f);
            assert!(h.is_final && h.mask.is_none());
            assert_eq!(l as usize, len);
            assert_eq!(&f[at..], &payload[..]);
        }
    }

    #[test]
    fn close_reason_is_cut_on_a_char_boundary() {
        let reason = "é".repeat(100);
        let f = encode_close(1000, &reason);
        assert!(f.len() <= 2 + 125);
        let (_, len, at) = parse(&f);
        assert_eq!(&f[at..at + 2], &1000u16.to_be_bytes());
        assert!(std::str::from_utf8(&f[at + 2..at + len as usize]).is_ok());
    }

    #[test]
    fn finds_a_close_behind_a_pong() {
        let mut run = encode(0xA, b"hi");
        assert!(!contains_close(&run));
        run.extend(encode_close(1000, ""));
        assert!(contains_close(&run));
        assert!(!contains_close(&encode(OP_TEXT, &[0u8; 70000])));
    }

    #[test]
    fn close_codes() {
        assert!(is_sendable_close_code(1000) && is_sendable_close_code(4999));
        assert!(!is_sendable_close_code(1005) && !is_sendable_close_code(1006));
        assert!(!is_sendable_close_code(999) && !is_sendable_close_code(5000));
    }
}
