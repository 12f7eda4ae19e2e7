//! The client's side of permessage-deflate (RFC 7692): the offer in the
//! upgrade request, the check of the server's answer, inflating the messages
//! it sends compressed, and compressing the ones sent to it.
//!
//! Both directions without context takeover, as the server's side
//! (`connection/deflate.rs`): every message is a DEFLATE stream of its own,
//! compressed with the server's `compress` and inflated with its bounded
//! `inflate` (`connection/inflate.rs`), so a message that would inflate past
//! `Options::max_message_bytes` costs at most that much before it is refused.
//!
//! tungstenite refuses any frame with RSV1 set, so [`Unpack`] sits between
//! the socket's bytes and tungstenite's reader: it passes every frame through
//! untouched except a compressed message, whose frames it collects, inflates
//! and hands on as one plain frame. It keeps all its state between reads, so a
//! read that stops half way (the session's ticks) resumes where it was.

use std::io;

use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::{Frame, FrameHeader};
use tungstenite::Message;

use crate::connection::inflate::{compressed_limit, inflate, InflateError};

/// The `Sec-WebSocket-Extensions` value of the upgrade request.
/// `client_max_window_bits` (no value) lets the server answer with a window
/// for the client's messages, which [`accept`] then honours (RFC 7692
/// section 7.1.2.2: one answered without being offered fails the connection).
pub(crate) const OFFER: &str =
    "permessage-deflate; client_no_context_takeover; server_no_context_takeover; client_max_window_bits";

/// What the server agreed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Agreed {
    /// Largest payload sent compressed: 2 to the power of the server's
    /// `client_max_window_bits` (a message no longer than the window never
    /// refers back past it); any size without one.
    pub max_payload: usize,
}

/// Reads the server's `Sec-WebSocket-Extensions` answer (all its values):
/// `None` when it did not take the extension; an error (the connection
/// attempt fails) when it answers with anything this client did not offer or
/// cannot meet (RFC 7692 section 5: the client fails the connection).
pub(crate) fn accept<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Option<Agreed>, String> {
    let extensions: Vec<&str> =
        values.into_iter().flat_map(|v| v.split(',')).map(str::trim).filter(|e| !e.is_empty()).collect();
    let [answer] = extensions[..] else {
        return match extensions.len() {
            0 => Ok(None),
            _ => Err(format!("the server answered with extensions not offered: {extensions:?}")),
        };
    };
    let bad = |why: &str| Err(format!("the server's permessage-deflate answer {answer:?}: {why}"));
    let mut parts = answer.split(';').map(str::trim);
    if !parts.next().is_some_and(|name| name.eq_ignore_ascii_case("permessage-deflate")) {
        return bad("an extension not offered");
    }
    let (mut seen, mut server_no_takeover, mut max_payload) = (Vec::new(), false, usize::MAX);
    for part in parts {
        let (name, value) = match part.split_once('=') {
            Some((n, v)) => (n.trim().to_ascii_lowercase(), Some(v.trim())),
            None => (part.to_ascii_lowercase(), None),
        };
        if seen.contains(&name) {
            return bad("a parameter given twice");
        }
        match (name.as_str(), value) {
            ("server_no_context_takeover", None) => server_no_takeover = true,
            ("client_no_context_takeover", None) => {}
            (window @ ("server_max_window_bits" | "client_max_window_bits"), Some(value)) => {
                let Some(bits) = window_bits(value) else {
                    return Err(format!(
                        "the server's permessage-deflate answer has {window}={value}: \
                         a window is 8 to 15, in digits without a leading zero (RFC 7692 section 7.1.2)"
                    ));
                };
                // Any server window inflates here: each message is inflated on its own.
                if window == "client_max_window_bits" {
                    max_payload = 1 << bits;
                }
            }
            _ => return bad("a parameter not offered or not valid"),
        }
        seen.push(name);
    }
    if !server_no_takeover {
        // Offered, so it must be accepted (RFC 7692 section 7.1.1.1); without
        // it the server might refer back to earlier messages.
        return bad("no server_no_context_takeover");
    }
    Ok(Some(Agreed { max_payload }))
}

/// A `*_max_window_bits` value as RFC 7692 section 7.1.2 allows it: 8 to 15
/// in decimal digits without a leading zero, bare or as a quoted string
/// (`"10"`) with nothing else inside the quotes.
fn window_bits(value: &str) -> Option<u8> {
    let digits = match value.strip_prefix('"') {
        Some(quoted) => quoted.strip_suffix('"')?,
        None => value,
    };
    let well_formed = !digits.is_empty()
        && digits.len() <= 2
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    let bits: u8 = digits.parse().ok().filter(|_| well_formed)?;
    (8..=15).contains(&bits).then_some(bits)
}

/// `message` as it is to be sent: compressed (RSV1 set) when the extension
/// was agreed, it is a text or binary message of at least `min_bytes` and at
/// most the agreed size, and compressing makes it shorter; else as it is.
pub(crate) fn outgoing(message: Message, agreed: Option<Agreed>, min_bytes: usize) -> Message {
    let Some(agreed) = agreed else { return message };
    let (data, payload): (Data, &[u8]) = match &message {
        Message::Text(t) => (Data::Text, t.as_bytes()),
        Message::Binary(b) => (Data::Binary, b),
        _ => return message,
    };
    if payload.len() < min_bytes.max(1) || payload.len() > agreed.max_payload {
        return message;
    }
    match crate::connection::deflate::compress(payload) {
        Some(packed) if packed.len() < payload.len() => {
            let mut frame = Frame::message(packed, OpCode::Data(data), true);
            frame.header_mut().rsv1 = true;
            // tungstenite masks it, as every frame a client sends.
            Message::Frame(frame)
        }
        _ => message,
    }
}

/// A refusal of what the server sent, carried up through tungstenite as the
/// read's `io::Error` (see [`refusal`]).
#[derive(Debug)]
pub(crate) struct Refusal {
    /// The close code the server is sent.
    pub code: u16,
    pub why: &'static str,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.why)
    }
}

impl std::error::Error for Refusal {}

fn refuse(code: u16, why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, Refusal { code, why })
}

/// The [`Refusal`] inside a read's error, if it is one.
pub(crate) fn refusal(e: &io::Error) -> Option<&Refusal> {
    e.get_ref()?.downcast_ref::<Refusal>()
}

/// Bytes read from the stream at once.
const CHUNK: usize = 16 * 1024;

/// The filter between the stream and tungstenite (see the module comment).
#[derive(Debug)]
pub(crate) struct Unpack {
    /// The largest message inflated (compressed: see `compressed_limit`).
    limit: usize,
    /// Bytes read from the stream and not yet handled.
    input: Vec<u8>,
    /// Bytes ready for tungstenite, from `out_at`.
    out: Vec<u8>,
    out_at: usize,
    /// Payload bytes of a frame passed through, still to come.
    pass: u64,
    /// The compressed message being collected: its opcode and bytes so far.
    message: Option<(u8, Vec<u8>)>,
    /// Payload bytes of its current frame still to come.
    collect: usize,
    /// Its current frame is its last.
    last: bool,
}

impl Unpack {
    pub(crate) fn new(limit: usize) -> Self {
        Unpack {
            limit,
            input: Vec::new(),
            out: Vec::new(),
            out_at: 0,
            pass: 0,
            message: None,
            collect: 0,
            last: false,
        }
    }

    /// Lowers the largest message (the server's `maxMessageBytes` and room
    /// for the envelope).
    pub(crate) fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// Reads what tungstenite is to see into `buf`, reading the stream with
    /// `read` (whose errors, `WouldBlock` included, pass up with nothing lost).
    pub(crate) fn read(
        &mut self,
        buf: &mut [u8],
        read: &mut dyn FnMut(&mut [u8]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.out_at < self.out.len() {
                let n = (self.out.len() - self.out_at).min(buf.len());
                buf[..n].copy_from_slice(&self.out[self.out_at..self.out_at + n]);
                self.out_at += n;
                if self.out_at == self.out.len() {
                    self.out.clear();
                    self.out_at = 0;
                }
                return Ok(n);
            }
            if self.pass > 0 {
                let want = usize::try_from(self.pass).unwrap_or(usize::MAX).min(buf.len());
                let n = match self.input.is_empty() {
                    true => read(&mut buf[..want])?,
                    false => {
                        let n = want.min(self.input.len());
                        buf[..n].copy_from_slice(&self.input[..n]);
                        self.input.drain(..n);
                        n
                    }
                };
                self.pass -= n as u64;
                return Ok(n);
            }
            if self.message.is_some() && self.collect > 0 {
                if self.input.is_empty() && self.fill(read)? == 0 {
                    return Ok(0);
                }
                let n = self.collect.min(self.input.len());
                if let Some((_, data)) = &mut self.message {
                    data.extend_from_slice(&self.input[..n]);
                }
                self.input.drain(..n);
                self.collect -= n;
                continue;
            }
            if self.last {
                if let Some((opcode, data)) = self.message.take() {
                    self.last = false;
                    let plain = inflate(&data, self.limit).map_err(|e| match e {
                        InflateError::TooBig => refuse(1009, "a compressed message inflates past the limit"),
                        InflateError::Invalid => refuse(1007, "invalid compressed data"),
                    })?;
                    self.out = crate::frame::encode(opcode, &plain);
                    self.out_at = 0;
                    continue;
                }
            }
            let mut at = io::Cursor::new(&self.input[..]);
            let parsed = FrameHeader::parse(&mut at);
            let head = at.position() as usize;
            match parsed {
                Ok(None) => {
                    if self.fill(read)? == 0 {
                        // The end: whatever is left goes to tungstenite, which says what it was.
                        self.out = std::mem::take(&mut self.input);
                        if self.out.is_empty() {
                            return Ok(0);
                        }
                    }
                }
                // tungstenite parses it again and says what is wrong.
                Err(_) => self.pass_through(head, u64::MAX),
                Ok(Some((header, len))) => self.frame(&header, head, len)?,
            }
        }
    }

    /// One frame's header, `head` bytes long, with a payload of `len` bytes.
    fn frame(&mut self, header: &FrameHeader, head: usize, len: u64) -> io::Result<()> {
        let data_opcode = match header.opcode {
            OpCode::Data(Data::Text) => Some(crate::frame::OP_TEXT),
            OpCode::Data(Data::Binary) => Some(crate::frame::OP_BINARY),
            _ => None,
        };
        let continuation = header.opcode == OpCode::Data(Data::Continue);
        let collected = self.message.as_ref().map(|(_, data)| data.len());
        match (data_opcode, collected) {
            (Some(_), Some(_)) => return Err(refuse(1002, "a new message before the compressed one ended")),
            (Some(opcode), None) if header.rsv1 => self.message = Some((opcode, Vec::new())),
            (None, Some(_)) if continuation && header.rsv1 => {
                return Err(refuse(1002, "RSV1 on a continuation frame"));
            }
            (None, Some(_)) if continuation => {}
            // Anything else (plain frames, control frames, also between the
            // fragments of a compressed message) is tungstenite's to read.
            _ => {
                self.pass_through(head, len);
                return Ok(());
            }
        }
        // A frame collected here never reaches tungstenite, which would refuse these.
        if header.mask.is_some() {
            return Err(refuse(1002, "a masked frame from the server"));
        }
        if header.rsv2 || header.rsv3 {
            return Err(refuse(1002, "RSV2 or RSV3 set"));
        }
        let so_far = self.message.as_ref().map_or(0, |(_, data)| data.len());
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > compressed_limit(self.limit).saturating_sub(so_far) {
            return Err(refuse(1009, "a compressed message longer than the limit"));
        }
        self.input.drain(..head);
        self.collect = len;
        self.last = header.is_final;
        Ok(())
    }

    /// Hands a frame's `head` header bytes on as they came, then `len` payload bytes.
    fn pass_through(&mut self, head: usize, len: u64) {
        self.out = self.input.drain(..head).collect();
        self.out_at = 0;
        self.pass = len;
    }

    /// Reads more of the stream into `input`; 0 at its end.
    fn fill(&mut self, read: &mut dyn FnMut(&mut [u8]) -> io::Result<usize>) -> io::Result<usize> {
        let at = self.input.len();
        self.input.resize(at + CHUNK, 0);
        let got = read(&mut self.input[at..]);
        self.input.truncate(at + *got.as_ref().unwrap_or(&0));
        got
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_accepted_only_as_offered() {
        let agreed = |v: &str| accept([v]);
        assert_eq!(agreed(""), Ok(None));
        let both = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
        assert_eq!(agreed(both), Ok(Some(Agreed { max_payload: usize::MAX })));
        assert_eq!(
            agreed("permessage-deflate;server_no_context_takeover;client_max_window_bits=10"),
            Ok(Some(Agreed { max_payload: 1024 }))
        );
        for bad in [
            "permessage-deflate",
            "permessage-deflate; client_no_context_takeover",
            "permessage-deflate; server_no_context_takeover; mystery",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover; client_max_window_bits=16",
            "permessage-deflate; server_no_context_takeover; client_max_window_bits",
            "x-webkit-deflate-frame",
        ] {
            assert!(agreed(bad).is_err(), "{bad}");
        }
        // An answer's client_max_window_bits is taken only because the offer
        // has it (RFC 7692 section 7.1.2.2: else the client must fail).
        assert!(OFFER.split(';').any(|p| p.trim() == "client_max_window_bits"), "{OFFER}");
        assert!(accept([both, both]).is_err(), "two extensions");
    }

    /// RFC 7692 section 7.1.2: a window-bits value is a decimal 8 to 15
    /// without leading zeros (plain or as a quoted string), given at most once;
    /// anything else fails the connection rather than being read leniently.
    #[test]
    fn window_bits_are_read_strictly() {
        let with = |param: &str| {
            accept([format!("permessage-deflate; server_no_context_takeover; {param}").as_str()])
        };
        for (param, max_payload) in [
            ("client_max_window_bits=8", 256),
            ("client_max_window_bits=15", 1 << 15),
            ("client_max_window_bits=\"9\"", 512),
            // Whitespace around `=` is the header grammar's (implied LWS), not the value's.
            ("client_max_window_bits = 10", 1024),
            ("server_max_window_bits=12", usize::MAX),
        ] {
            assert_eq!(with(param), Ok(Some(Agreed { max_payload })), "{param}");
        }
        for name in ["client_max_window_bits", "server_max_window_bits"] {
            for value in [
                "+9",
                "-9",
                "09",
                "010",
                "008",
                "7",
                "16",
                "0",
                "",
                "9a",
                "0x9",
                "9.0",
                "1e1",
                "\"\"",
                "\"9",
                "9\"",
                "\"+9\"",
                "\"09\"",
                "\" 9\"",
                "\"9 \"",
                "\"\"9\"\"",
                "'9'",
                "9 9",
                "\u{0669}",
                "999999999999",
            ] {
                let param = format!("{name}={value}");
                let answer = with(&param);
                assert!(answer.as_ref().is_err_and(|e| e.contains(&param)), "{param}: {answer:?}");
            }
            let twice = format!("{name}=10; {name}=10");
            assert!(with(&twice).is_err(), "{twice}");
            let cased = format!("{}=10; {name}=11", name.to_ascii_uppercase());
            assert!(with(&cased).is_err(), "{cased}");
        }
    }

    #[test]
    fn a_message_of_the_minimum_goes_compressed_one_byte_shorter_plain() {
        let agreed = Some(Agreed { max_payload: usize::MAX });
        let rsv1 = |m: &Message| matches!(m, Message::Frame(f) if f.header().rsv1);
        assert!(rsv1(&outgoing(Message::text("a".repeat(128)), agreed, 128)));
        assert_eq!(outgoing(Message::text("a".repeat(127)), agreed, 128), Message::text("a".repeat(127)));
        assert!(rsv1(&outgoing(Message::binary(vec![0u8; 128]), agreed, 128)));
        assert!(!rsv1(&outgoing(Message::text("a".repeat(128)), None, 128)), "not agreed");
        let small_window = Some(Agreed { max_payload: 256 });
        assert!(!rsv1(&outgoing(Message::text("a".repeat(257)), small_window, 128)), "past the window");
        let Message::Frame(f) = outgoing(Message::text("ab".repeat(500)), agreed, 128) else { panic!() };
        let inflated = crate::connection::inflate::inflate(f.payload(), 1000).unwrap();
        assert_eq!(inflated, "ab".repeat(500).as_bytes());
    }

    /// Feeds `bytes` to an [`Unpack`] a few bytes per read, with a
    /// `WouldBlock` between reads, and returns what tungstenite would see.
    fn unpack(bytes: &[u8], limit: usize) -> io::Result<Vec<u8>> {
        let mut u = Unpack::new(limit);
        let (mut at, mut blocked) = (0, false);
        let mut read = |buf: &mut [u8]| {
            blocked = !blocked;
            if blocked {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(3).min(bytes.len() - at);
            buf[..n].copy_from_slice(&bytes[at..at + n]);
            at += n;
            Ok(n)
        };
        let mut seen = Vec::new();
        let mut buf = [0u8; 5];
        for _ in 0..100_000 {
            match u.read(&mut buf, &mut read) {
                Ok(0) => return Ok(seen),
                Ok(n) => seen.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        panic!("no end");
    }

    fn compressed(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = crate::frame::encode(first & 0x0f, payload);
        f[0] = first;
        f
    }

    #[test]
    fn plain_frames_pass_and_compressed_fragments_come_out_as_one_plain_frame() {
        let text = "hello compressed world, ".repeat(20);
        let packed = crate::connection::deflate::compress(text.as_bytes()).unwrap();
        let mut wire = crate::frame::encode(crate::frame::OP_TEXT, b"plain");
        // Two fragments with a ping between them.
        wire.extend(compressed(0x41, &packed[..10]));
        wire.extend(crate::frame::encode(crate::frame::OP_PING, b"p"));
        wire.extend(compressed(0x80, &packed[10..]));
        wire.extend(crate::frame::encode(crate::frame::OP_BINARY, &[9u8; 300]));
        let mut expected = crate::frame::encode(crate::frame::OP_TEXT, b"plain");
        expected.extend(crate::frame::encode(crate::frame::OP_PING, b"p"));
        expected.extend(crate::frame::encode(crate::frame::OP_TEXT, text.as_bytes()));
        expected.extend(crate::frame::encode(crate::frame::OP_BINARY, &[9u8; 300]));
        assert_eq!(unpack(&wire, 1 << 20).unwrap(), expected);
    }

    #[test]
    fn refusals_carry_their_close_codes() {
        let code = |wire: Vec<u8>, limit| refusal(&unpack(&wire, limit).unwrap_err()).map(|r| r.code);
        let bomb = crate::connection::deflate::compress(&vec![0u8; 4 << 20]).unwrap();
        assert_eq!(code(compressed(0xC2, &bomb), 64 * 1024), Some(1009));
        assert_eq!(code(compressed(0xC1, &[0xff; 8]), 1000), Some(1007));
        assert_eq!(code(compressed(0xC1, &[0u8; 2000]), 1000), Some(1009), "longer than the limit");
        let mut two = compressed(0x41, b"ab");
        two.extend(compressed(0xC0, b"c"));
        assert_eq!(code(two, 1000), Some(1002));
        let mut interleaved = compressed(0x41, b"ab");
        interleaved.extend(crate::frame::encode(crate::frame::OP_TEXT, b"x"));
        assert_eq!(code(interleaved, 1000), Some(1002));
    }

    #[test]
    fn a_message_at_the_limit_compressed_longer_than_plain_is_taken() {
        use flate2::{Compress, Compression, FlushCompress};
        let text = "q".repeat(1000);
        let mut stored = Compress::new(Compression::none(), false);
        let mut packed = Vec::with_capacity(1100);
        stored.compress_vec(text.as_bytes(), &mut packed, FlushCompress::Sync).unwrap();
        packed.truncate(packed.len() - 4);
        assert!(packed.len() > 1000);
        let expected = crate::frame::encode(crate::frame::OP_TEXT, text.as_bytes());
        assert_eq!(unpack(&compressed(0xC1, &packed), 1000).unwrap(), expected);
    }

    #[test]
    fn reserved_bits_and_masks_on_a_compressed_message_are_refused() {
        let code = |wire: Vec<u8>| refusal(&unpack(&wire, 1000).unwrap_err()).map(|r| r.code);
        let packed = crate::connection::deflate::compress(b"hello hello hello").unwrap();
        // RSV2 or RSV3 next to RSV1: no extension here gives them a meaning.
        assert_eq!(code(compressed(0xE1, &packed)), Some(1002), "RSV2");
        assert_eq!(code(compressed(0xD1, &packed)), Some(1002), "RSV3");
        let mut continued = compressed(0x41, &packed[..2]);
        continued.extend(compressed(0xA0, &packed[2..]));
        assert_eq!(code(continued), Some(1002), "RSV2 on its continuation");
        // A masked continuation (an all-zero key leaves the bytes as they were).
        let mut masked = compressed(0x41, &packed[..2]);
        let mut tail = vec![0x80, 0x80 | (packed.len() - 2) as u8, 0, 0, 0, 0];
        tail.extend_from_slice(&packed[2..]);
        masked.extend(tail);
        assert_eq!(code(masked), Some(1002), "masked continuation");
    }
}
