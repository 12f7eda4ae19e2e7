//! Inbound message assembly: the peer's frames (RFC 6455 section 5), read
//! from the reader's byte stream (plain or decrypted), checked, unmasked and
//! joined into messages; compressed ones (RSV1, with permessage-deflate
//! agreed) are inflated by `inflate.rs`.
//!
//! Every bound holds before the bytes it guards are read or made: a frame or
//! a message longer than the message size limit is refused from its header
//! (a compressed one past `inflate::compressed_limit`: stored blocks make a
//! message that does not shrink a little longer), and an inflated message
//! from the moment it passes the limit. Text is
//! checked as UTF-8 as it arrives (after inflating, when compressed).
//!
//! It only reads: a ping's pong and the close reply are returned to the
//! reader, which queues them for the writer.

use std::io::{self, Read};

use super::inflate::{compressed_limit, inflate, InflateError};

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// The most a frame's payload buffer grows ahead of the bytes that arrived.
const APPEND_STEP: usize = 64 * 1024;

/// What the peer sent, once a whole message or control frame is in.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Inbound {
    Text(String),
    Binary(Vec<u8>),
    /// Answer with a pong carrying these bytes.
    Ping(Vec<u8>),
    Pong,
    /// A close frame: its code and reason (none in an empty one).
    Close(Option<(u16, String)>),
}

/// Why the peer's input was refused, each with its close code.
#[derive(Debug)]
pub(crate) enum Fault {
    /// A frame RFC 6455 or 7692 does not allow: 1002.
    Protocol(&'static str),
    /// A frame or message, inflated or not, over the size limit: 1009.
    TooBig,
    /// Text that is not UTF-8: 1007.
    BadUtf8,
    /// Compressed data that does not inflate: 1007.
    BadDeflate,
    /// The socket's error (or a limit of the frame meter's).
    Io(io::Error),
}

impl Fault {
    /// The close code and reason the peer gets.
    pub(crate) fn close(&self) -> (u16, &'static str) {
        match self {
            Fault::Protocol(_) => (1002, "protocol error"),
            Fault::TooBig => (1009, "message too big"),
            Fault::BadUtf8 => (1007, "invalid UTF-8"),
            Fault::BadDeflate => (1007, "invalid compressed data"),
            Fault::Io(_) => (1006, ""),
        }
    }
}

impl From<io::Error> for Fault {
    fn from(e: io::Error) -> Self {
        Fault::Io(e)
    }
}

/// A data message still arriving.
#[derive(Debug)]
struct Partial {
    text: bool,
    compressed: bool,
    data: Vec<u8>,
    /// Uncompressed text: bytes already known to be UTF-8 (a character may
    /// still be cut at this point).
    checked: usize,
}

/// Reads frames and joins them into messages; one per connection.
#[derive(Debug)]
pub(crate) struct Assembly {
    /// Bytes read from the stream and not consumed yet.
    buf: Vec<u8>,
    start: usize,
    partial: Option<Partial>,
    max_message: usize,
    /// permessage-deflate was agreed: RSV1 marks a compressed message.
    deflate: bool,
}

impl Assembly {
    /// `leftover`: bytes that came after the request head; `buffer`: the
    /// read buffer's size.
    pub(crate) fn new(leftover: Vec<u8>, buffer: usize, max_message: usize, deflate: bool) -> Self {
        let mut buf = leftover;
        buf.reserve(buffer.saturating_sub(buf.len()));
        Assembly { buf, start: 0, partial: None, max_message, deflate }
    }

    /// Holds nothing: no message half assembled, no byte read and not yet
    /// consumed (the next `next` starts with a read of the stream).
    pub(crate) fn is_empty(&self) -> bool {
        self.partial.is_none() && self.start >= self.buf.len()
    }

    /// Reads until a message or a control frame is complete.
    pub(crate) fn next(&mut self, io: &mut impl Read) -> Result<Inbound, Fault> {
        loop {
            let mut head = [0u8; 2];
            self.read_exact(io, &mut head)?;
            let fin = head[0] & 0x80 != 0;
            let rsv1 = head[0] & 0x40 != 0;
            let opcode = head[0] & 0x0f;
            if head[0] & 0x30 != 0 {
                return Err(Fault::Protocol("RSV2 or RSV3 set"));
            }
            if head[1] & 0x80 == 0 {
                return Err(Fault::Protocol("unmasked frame from a client"));
            }
            let len = match head[1] & 0x7f {
                126 => {
                    let mut n = [0u8; 2];
                    self.read_exact(io, &mut n)?;
                    u64::from(u16::from_be_bytes(n))
                }
                127 => {
                    let mut n = [0u8; 8];
                    self.read_exact(io, &mut n)?;
                    // One with its top bit set is refused as too big, like any over the limit.
                    u64::from_be_bytes(n)
                }
                n => u64::from(n),
            };
            let mut mask = [0u8; 4];
            self.read_exact(io, &mut mask)?;
            match opcode {
                OP_CLOSE | OP_PING | OP_PONG => {
                    if !fin || len > 125 {
                        return Err(Fault::Protocol("fragmented or long control frame"));
                    }
                    if rsv1 {
                        return Err(Fault::Protocol("RSV1 on a control frame"));
                    }
                    let mut payload = vec![0u8; len as usize];
                    self.read_exact(io, &mut payload)?;
                    unmask(&mut payload, mask);
                    return control(opcode, payload);
                }
                OP_TEXT | OP_BINARY | OP_CONTINUATION => {}
                _ => return Err(Fault::Protocol("reserved opcode")),
            }
            let len = usize::try_from(len).map_err(|_| Fault::TooBig)?;
            let partial = match (opcode, self.partial.take()) {
                (OP_CONTINUATION, Some(p)) if !rsv1 => p,
                (OP_CONTINUATION, Some(_)) => return Err(Fault::Protocol("RSV1 on a continuation frame")),
                (OP_CONTINUATION, None) => return Err(Fault::Protocol("continuation without a message")),
                (_, Some(_)) => return Err(Fault::Protocol("new message before the last one ended")),
                (_, None) if rsv1 && !self.deflate => {
                    return Err(Fault::Protocol("RSV1 without permessage-deflate"))
                }
                (_, None) => {
                    Partial { text: opcode == OP_TEXT, compressed: rsv1, data: Vec::new(), checked: 0 }
                }
            };
            let mut partial = partial;
            // Compressed bytes may be a little longer than what they inflate to.
            let limit = match partial.compressed {
                true => compressed_limit(self.max_message),
                false => self.max_message,
            };
            if len > limit - partial.data.len().min(limit) {
                return Err(Fault::TooBig);
            }
            let at = partial.data.len();
            self.read_append(io, &mut partial.data, len)?;
            unmask(&mut partial.data[at..], mask);
            if partial.text && !partial.compressed {
                partial.checked = check_utf8(&partial.data, partial.checked, fin)?;
            }
            if !fin {
                self.partial = Some(partial);
                continue;
            }
            let data = match partial.compressed {
                true => inflate(&partial.data, self.max_message).map_err(|e| match e {
                    InflateError::TooBig => Fault::TooBig,
                    InflateError::Invalid => Fault::BadDeflate,
                })?,
                false => partial.data,
            };
            return match partial.text {
                true => String::from_utf8(data).map(Inbound::Text).map_err(|_| Fault::BadUtf8),
                false => Ok(Inbound::Binary(data)),
            };
        }
    }

    /// Appends `len` bytes of the stream to `data`, growing it only as bytes
    /// arrive (at most [`APPEND_STEP`] ahead of them): a header announcing a
    /// frame of the size limit costs memory only once its bytes come.
    fn read_append(&mut self, io: &mut impl Read, data: &mut Vec<u8>, len: usize) -> io::Result<()> {
        let end = data.len() + len;
        while data.len() < end {
            let at = data.len();
            let step = (end - at).min(APPEND_STEP.max(self.buf.capacity()));
            data.resize(at + step, 0);
            let got = self.read_some(io, &mut data[at..]);
            data.truncate(at + *got.as_ref().unwrap_or(&0));
            got?;
        }
        Ok(())
    }

    /// Reads at least one byte into `dst` (from the buffer, else the stream)
    /// and returns how many.
    fn read_some(&mut self, io: &mut impl Read, dst: &mut [u8]) -> io::Result<usize> {
        let buffered = self.buf.len() - self.start;
        if buffered > 0 {
            let n = buffered.min(dst.len());
            dst[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
            self.start += n;
            return Ok(n);
        }
        loop {
            match io.read(dst) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Fills `dst` from the buffer, then the stream: straight into `dst`
    /// when what is missing is at least a buffer's worth.
    fn read_exact(&mut self, io: &mut impl Read, dst: &mut [u8]) -> io::Result<()> {
        let mut filled = 0;
        while filled < dst.len() {
            let buffered = self.buf.len() - self.start;
            if buffered > 0 {
                let n = buffered.min(dst.len() - filled);
                dst[filled..filled + n].copy_from_slice(&self.buf[self.start..self.start + n]);
                self.start += n;
                filled += n;
                continue;
            }
            self.buf.clear();
            self.start = 0;
            let cap = self.buf.capacity().max(1);
            if dst.len() - filled >= cap {
                io.read_exact(&mut dst[filled..])?;
                return Ok(());
            }
            self.buf.resize(cap, 0);
            let n = loop {
                match io.read(&mut self.buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.buf.clear();
                        return Err(e);
                    }
                }
            };
            self.buf.truncate(n);
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(())
    }
}

/// A control frame's meaning; a close's code and reason are checked here.
fn control(opcode: u8, payload: Vec<u8>) -> Result<Inbound, Fault> {
    match opcode {
        OP_PING => Ok(Inbound::Ping(payload)),
        OP_PONG => Ok(Inbound::Pong),
        _ => match payload.len() {
            0 => Ok(Inbound::Close(None)),
            1 => Err(Fault::Protocol("close frame of one byte")),
            _ => {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                if !crate::frame::is_sendable_close_code(code) {
                    return Err(Fault::Protocol("close code not allowed"));
                }
                let reason = String::from_utf8(payload[2..].to_vec()).map_err(|_| Fault::BadUtf8)?;
                Ok(Inbound::Close(Some((code, reason))))
            }
        },
    }
}

/// Checks `data[from..]` as UTF-8 and returns how far it is known good; a
/// character cut at the end is allowed until the final frame.
fn check_utf8(data: &[u8], from: usize, fin: bool) -> Result<usize, Fault> {
    match std::str::from_utf8(&data[from..]) {
        Ok(_) => Ok(data.len()),
        Err(e) if e.error_len().is_none() && !fin => Ok(from + e.valid_up_to()),
        Err(_) => Err(Fault::BadUtf8),
    }
}

fn unmask(data: &mut [u8], mask: [u8; 4]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compress(data: &[u8]) -> Vec<u8> {
        crate::connection::deflate::compress(data).unwrap()
    }

    /// A masked client frame.
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                out.push(0x80 | 126);
                out.extend((n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend((n as u64).to_be_bytes());
            }
        }
        out.extend(mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        out
    }

    fn read_all(bytes: Vec<u8>, max: usize, deflate: bool) -> Vec<Result<Inbound, (u16, &'static str)>> {
        let mut asm = Assembly::new(Vec::new(), 64, max, deflate);
        let mut io = io::Cursor::new(bytes);
        let mut out = Vec::new();
        for _ in 0..100 {
            match asm.next(&mut io) {
                Ok(m) => out.push(Ok(m)),
                Err(Fault::Io(_)) => break,
                Err(f) => {
                    out.push(Err(f.close()));
                    break;
                }
            }
        }
        out
    }

    #[test]
    fn fragments_and_a_ping_between_them_join() {
        let mut s = frame(0x01, b"hel");
        s.extend(frame(0x89, b"p"));
        s.extend(frame(0x80, b"lo"));
        assert_eq!(
            read_all(s, 100, false),
            vec![Ok(Inbound::Ping(b"p".to_vec())), Ok(Inbound::Text("hello".into()))]
        );
    }

    #[test]
    fn a_compressed_text_in_fragments_inflates() {
        let packed = compress("héllo ".repeat(100).as_bytes());
        let (a, b) = packed.split_at(packed.len() / 2);
        let mut s = frame(0x41, a);
        s.extend(frame(0x80, b));
        s.extend(frame(0xC2, &compress(&[9u8; 300])));
        assert_eq!(
            read_all(s, 1000, true),
            vec![Ok(Inbound::Text("héllo ".repeat(100))), Ok(Inbound::Binary(vec![9u8; 300]))]
        );
    }

    #[test]
    fn refusals_carry_their_close_codes() {
        let cases: Vec<(Vec<u8>, bool, (u16, &str))> = vec![
            (frame(0xC1, &compress(b"x")), false, (1002, "protocol error")),
            (frame(0xC1, &compress(&[b'a'; 5000])), true, (1009, "message too big")),
            (frame(0xC1, &[0xff, 0xff, 0xff]), true, (1007, "invalid compressed data")),
            (frame(0xC1, &compress(&[0xff, 0xfe])), true, (1007, "invalid UTF-8")),
            (frame(0x81, &[0xff]), false, (1007, "invalid UTF-8")),
            (frame(0x82, &[0u8; 1001]), false, (1009, "message too big")),
            ([frame(0x01, b"a"), frame(0xC0, b"b")].concat(), true, (1002, "protocol error")),
            (frame(0x80, b"a"), false, (1002, "protocol error")),
            (frame(0xA1, b"a"), false, (1002, "protocol error")),
            (frame(0x83, b"a"), false, (1002, "protocol error")),
            (frame(0x09, b"a"), false, (1002, "protocol error")),
            (frame(0x88, &[3]), false, (1002, "protocol error")),
            (frame(0x88, &1005u16.to_be_bytes()), false, (1002, "protocol error")),
            (vec![0x81, 0x01, b'a'], false, (1002, "protocol error")),
        ];
        for (bytes, deflate, want) in cases {
            assert_eq!(read_all(bytes.clone(), 1000, deflate).pop(), Some(Err(want)), "{bytes:02x?}");
        }
    }

    #[test]
    fn invalid_utf8_fails_before_the_message_ends() {
        // The first fragment is already bad: refused before the rest arrives.
        let s = frame(0x01, &[b'a', 0xff]);
        assert_eq!(read_all(s, 100, false), vec![Err((1007, "invalid UTF-8"))]);
        // A character cut between fragments is fine.
        let e = "é".as_bytes();
        let s = [frame(0x01, &e[..1]), frame(0x80, &e[1..])].concat();
        assert_eq!(read_all(s, 100, false), vec![Ok(Inbound::Text("é".into()))]);
    }

    #[test]
    fn a_close_reports_its_code_and_reason() {
        let s = frame(0x88, &[&1000u16.to_be_bytes()[..], b"bye"].concat());
        assert_eq!(read_all(s, 100, false), vec![Ok(Inbound::Close(Some((1000, "bye".into()))))]);
        assert_eq!(read_all(frame(0x88, b""), 100, false), vec![Ok(Inbound::Close(None))]);
    }

    /// Hands out its bytes and records the largest buffer it was given.
    struct Trickle {
        bytes: io::Cursor<Vec<u8>>,
        largest: usize,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.largest = self.largest.max(buf.len());
            self.bytes.read(buf)
        }
    }

    #[test]
    fn a_big_frame_header_alone_does_not_reserve_its_length() {
        // A header announcing 8 MiB and ten bytes: the payload buffer may not
        // be grown (and zeroed) to 8 MiB before the bytes come.
        let mut s = frame(0x82, &[0u8; 10]);
        s[1] = 0x80 | 127;
        s.splice(2..2, (8u64 << 20).to_be_bytes());
        let mut io = Trickle { bytes: io::Cursor::new(s), largest: 0 };
        let mut asm = Assembly::new(Vec::new(), 64, 16 << 20, false);
        assert!(matches!(asm.next(&mut io), Err(Fault::Io(_))));
        assert!(io.largest <= APPEND_STEP, "{}", io.largest);
    }

    #[test]
    fn large_frames_read_straight_past_the_buffer() {
        let body = vec![5u8; 70_000];
        assert_eq!(read_all(frame(0x82, &body), 100_000, false), vec![Ok(Inbound::Binary(body))]);
    }
}
