//! Counts a peer's frames as their bytes pass from the socket to the message
//! assembly (`assembly.rs`), so the limits hold before a frame's payload is
//! read. Two limits come from the count:
//!
//! - **frames per second** (`Config::frame_rate_limit`, a token bucket with a
//!   burst of twice the rate): every frame counts, data, continuation, ping,
//!   pong and close alike, so a flood of empty pings or continuations costs
//!   the server no more than the limit allows;
//! - **fragments per message** (`Config::max_fragments`): a message may not
//!   arrive in more frames than this, so it cannot be kept open forever.
//!
//! Only frame headers are parsed; payloads are skipped by length. Malformed
//! headers are the assembly's to refuse: the meter only has to stay in step
//! with well-formed ones.

use std::fmt;
use std::time::Instant;

/// Which limit a peer crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameLimit {
    /// More frames per second than `frame_rate_limit` allows.
    Rate,
    /// A message in more than `max_fragments` frames.
    Fragments,
}

impl FrameLimit {
    /// The close code and reason the peer gets.
    pub(crate) fn close(self) -> (u16, &'static str) {
        match self {
            FrameLimit::Rate => (1008, "frame rate limit exceeded"),
            FrameLimit::Fragments => (1009, "message in too many fragments"),
        }
    }
}

impl fmt::Display for FrameLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.close().1)
    }
}

impl std::error::Error for FrameLimit {}

/// A token bucket of frames.
#[derive(Debug)]
struct Bucket {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
}

impl Bucket {
    fn take(&mut self) -> bool {
        if self.tokens < 1.0 {
            // The clock is read only once the tokens in hand are spent.
            let now = Instant::now();
            let earned = now.duration_since(self.refilled).as_secs_f64() * self.per_sec;
            self.tokens = (self.tokens + earned).min(self.burst);
            self.refilled = now;
            if self.tokens < 1.0 {
                return false;
            }
        }
        self.tokens -= 1.0;
        true
    }
}

/// Where the meter is in the peer's byte stream.
#[derive(Debug)]
pub(crate) struct FrameMeter {
    header: [u8; 14],
    /// Header bytes collected so far.
    have: usize,
    /// Header bytes this frame has (2 until the second byte says more).
    need: usize,
    /// Payload bytes of the current frame still to skip.
    payload_left: u64,
    /// Frames of the data message in progress (0 when none is).
    fragments: usize,
    /// Frames seen in all.
    frames: u64,
    bucket: Option<Bucket>,
    max_fragments: usize,
}

impl FrameMeter {
    /// A meter with `per_sec` frames a second (0: no rate limit) and
    /// `max_fragments` frames per message (0: no limit).
    pub(crate) fn new(per_sec: u32, max_fragments: usize) -> Self {
        let bucket = (per_sec > 0).then(|| {
            let burst = 2.0 * f64::from(per_sec);
            Bucket { per_sec: f64::from(per_sec), burst, tokens: burst, refilled: Instant::now() }
        });
        FrameMeter {
            header: [0; 14],
            have: 0,
            need: 2,
            payload_left: 0,
            fragments: 0,
            frames: 0,
            bucket,
            max_fragments,
        }
    }

    /// Takes the next bytes read from the peer; an error once a limit is crossed.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> Result<(), FrameLimit> {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let skip = self.payload_left.min(bytes.len() as u64);
                self.payload_left -= skip;
                bytes = &bytes[skip as usize..];
                continue;
            }
            let take = (self.need - self.have).min(bytes.len());
            self.header[self.have..self.have + take].copy_from_slice(&bytes[..take]);
            self.have += take;
            bytes = &bytes[take..];
            if self.have == 2 && self.need == 2 {
                let ext = match self.header[1] & 0x7f {
                    126 => 2,
                    127 => 8,
                    _ => 0,
                };
                let mask = if self.header[1] & 0x80 != 0 { 4 } else { 0 };
                self.need = 2 + ext + mask;
            }
            if self.have < self.need {
                continue;
            }
            let len = match self.header[1] & 0x7f {
                126 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
                127 => {
                    let mut n = [0u8; 8];
                    n.copy_from_slice(&self.header[2..10]);
                    u64::from_be_bytes(n)
                }
                n => u64::from(n),
            };
            let (fin, opcode) = (self.header[0] & 0x80 != 0, self.header[0] & 0x0f);
            self.have = 0;
            self.need = 2;
            self.payload_left = len;
            self.count(fin, opcode)?;
        }
        Ok(())
    }

    fn count(&mut self, fin: bool, opcode: u8) -> Result<(), FrameLimit> {
        self.frames += 1;
        if let Some(bucket) = &mut self.bucket {
            if !bucket.take() {
                return Err(FrameLimit::Rate);
            }
        }
        match opcode {
            // A continuation: one more fragment of the message in progress.
            0 if self.fragments > 0 => {
                self.fragments += 1;
                if self.max_fragments > 0 && self.fragments > self.max_fragments {
                    return Err(FrameLimit::Fragments);
                }
                if fin {
                    self.fragments = 0;
                }
            }
            // The first frame of a text or binary message.
            1 | 2 => self.fragments = usize::from(!fin),
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame with this first byte and payload length.
    fn frame(first: u8, len: usize) -> Vec<u8> {
        let mut f = vec![first];
        match len {
            0..=125 => f.push(0x80 | len as u8),
            126..=0xffff => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&[1, 2, 3, 4]);
        f.extend(std::iter::repeat_n(0xaa, len));
        f
    }

    #[test]
    fn frames_are_counted_whatever_the_read_boundaries() {
        let mut stream = Vec::new();
        for len in [0, 5, 125, 126, 300, 70_000] {
            stream.extend(frame(0x82, len));
        }
        stream.extend(frame(0x89, 0)); // a ping
        for chunk in [1, 3, 7, 4096, stream.len()] {
            let mut meter = FrameMeter::new(0, 0);
            for piece in stream.chunks(chunk) {
                meter.feed(piece).unwrap();
            }
            assert_eq!(meter.frames, 7, "chunks of {chunk}");
            assert_eq!((meter.have, meter.payload_left), (0, 0), "in step after the last frame");
        }
    }

    #[test]
    fn past_the_burst_the_rate_limit_bites() {
        // 1 frame/s, a burst of 2: the third frame in a row is refused (unless
        // a second passed, which this test does not wait for).
        let mut meter = FrameMeter::new(1, 0);
        meter.feed(&frame(0x89, 0)).unwrap();
        meter.feed(&frame(0x81, 3)).unwrap();
        assert_eq!(meter.feed(&frame(0x8a, 0)), Err(FrameLimit::Rate));
    }

    #[test]
    fn a_message_may_have_at_most_max_fragments_frames() {
        let mut meter = FrameMeter::new(0, 3);
        // Three fragments, a ping between them: fine, and the count starts over.
        for _ in 0..2 {
            meter.feed(&frame(0x01, 2)).unwrap();
            meter.feed(&frame(0x89, 0)).unwrap();
            meter.feed(&frame(0x00, 2)).unwrap();
            meter.feed(&frame(0x80, 2)).unwrap();
        }
        meter.feed(&frame(0x02, 0)).unwrap();
        meter.feed(&frame(0x00, 0)).unwrap();
        meter.feed(&frame(0x00, 0)).unwrap();
        assert_eq!(meter.feed(&frame(0x00, 0)), Err(FrameLimit::Fragments));
    }

    #[test]
    fn off_means_off() {
        let mut meter = FrameMeter::new(0, 0);
        meter.feed(&frame(0x01, 0)).unwrap();
        for _ in 0..100_000 {
            meter.feed(&frame(0x00, 0)).unwrap();
        }
    }
}
