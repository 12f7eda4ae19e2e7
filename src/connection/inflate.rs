//! Inflating one compressed message (permessage-deflate, RFC 7692 section
//! 7.2.2), bounded: the output may not pass the message size limit, and the
//! work stops as soon as it does, so a small message that would inflate to
//! gigabytes costs at most the limit (and one growth step) in memory.
//!
//! No state survives a message: the client was told
//! `client_no_context_takeover`, so every message is a fresh DEFLATE stream,
//! inflated by an inflater made for it and dropped with it.

use miniz_oxide::inflate::core::inflate_flags::{
    TINFL_FLAG_HAS_MORE_INPUT, TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF,
};
use miniz_oxide::inflate::core::{decompress, DecompressorOxide};
use miniz_oxide::inflate::TINFLStatus;

/// The empty stored block RFC 7692 has the sender strip from every message;
/// the receiver appends it back before inflating.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Why a message did not inflate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InflateError {
    /// It inflates to more than the limit.
    TooBig,
    /// Not valid DEFLATE data (a back-reference to before the message's own
    /// start included: there is no preset dictionary or earlier message to
    /// refer to).
    Invalid,
}

/// The most compressed bytes taken for a message that may inflate to at most
/// `limit` bytes. A sender may compress a message that does not shrink (a
/// browser compresses every one): its stored blocks make it longer than its
/// plain form, by 5 bytes a block, and a few more for the flush. This allows
/// for blocks down to 320 bytes, smaller than zlib makes at any `memLevel`
/// (some 500 bytes at 1), at a cost of 1/64 more bytes held at most.
pub(crate) fn compressed_limit(limit: usize) -> usize {
    limit.saturating_add(limit / 64).saturating_add(64)
}

/// Inflates `compressed` (one message's payload, without the stripped tail)
/// into at most `limit` bytes.
///
/// The output buffer is the whole message from its first byte (miniz_oxide's
/// non-wrapping mode), so a distance reaching before that start is refused
/// rather than read from an empty window as zeros.
pub(crate) fn inflate(compressed: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
    // Boxed: some 11 KiB, kept off small reader stacks.
    let mut inflater = Box::<DecompressorOxide>::default();
    let mut out: Vec<u8> = Vec::new();
    let mut pos = 0;
    for (mut input, more) in [(compressed, TINFL_FLAG_HAS_MORE_INPUT), (&TAIL[..], 0)] {
        loop {
            if pos == out.len() {
                if pos > limit {
                    return Err(InflateError::TooBig);
                }
                // Geometric growth, but never past one byte over the limit
                // (that byte is how going over is seen).
                let target = (out.len() * 2).max(4096).min(limit.saturating_add(1));
                out.resize(target, 0);
            }
            let flags = more | TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;
            let (status, used, produced) = decompress(&mut inflater, input, &mut out, pos, flags);
            input = &input[used..];
            pos += produced;
            if pos > limit {
                return Err(InflateError::TooBig);
            }
            match status {
                TINFLStatus::Done => {
                    // A final block ended the stream: what follows it is not DEFLATE.
                    out.truncate(pos);
                    return if input.is_empty() || input == &TAIL[TAIL.len() - input.len().min(4)..] {
                        Ok(out)
                    } else {
                        Err(InflateError::Invalid)
                    };
                }
                // The buffer is full: grown on the next turn.
                TINFLStatus::HasMoreOutput if pos == out.len() => {}
                // This input is all taken.
                TINFLStatus::NeedsMoreInput => break,
                // The tail taken and no final block: a message sent with sync
                // flushes only, as RFC 7692 senders do.
                TINFLStatus::FailedCannotMakeProgress if more == 0 => break,
                _ => return Err(InflateError::Invalid),
            }
        }
    }
    out.truncate(pos);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compress(data: &[u8]) -> Vec<u8> {
        crate::connection::deflate::compress(data).unwrap()
    }

    #[test]
    fn a_compressed_message_inflates_back() {
        let text =
            br#"{"type":"room:publish","room":"lobby","data":{"text":"hello hello hello"}}"#.repeat(50);
        let packed = compress(&text);
        assert!(packed.len() < text.len() / 4);
        assert_eq!(inflate(&packed, text.len()).unwrap(), text);
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        // 16 MiB of zeros packs into a few KiB; the limit is 64 KiB.
        let packed = compress(&vec![0u8; 16 << 20]);
        assert!(packed.len() < 64 * 1024);
        assert_eq!(inflate(&packed, 64 * 1024), Err(InflateError::TooBig));
        assert_eq!(inflate(&compress(&[7u8; 100]), 99), Err(InflateError::TooBig));
        assert_eq!(inflate(&compress(&[7u8; 100]), 100).unwrap().len(), 100);
    }

    #[test]
    fn every_size_around_the_buffer_steps_inflates_whole() {
        let mut seed = 7u32;
        for len in [4095usize, 4096, 4097, 8192, 65289, 65535, 65536, 65537, 131072, 300_000] {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    b"abcdefgh {}\"0123"[(seed >> 16) as usize % 16]
                })
                .collect();
            assert_eq!(inflate(&compress(&data), len).unwrap(), data, "{len}");
        }
    }

    #[test]
    fn stored_blocks_fit_the_compressed_limit() {
        use flate2::{Compress, Compression, FlushCompress};
        for len in [0usize, 1, 1000, 16 << 10, 65535, 65536, 1 << 20] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7919 % 251) as u8).collect();
            let mut stored = Compress::new(Compression::none(), false);
            let mut packed = Vec::with_capacity(len + len / 100 + 64);
            stored.compress_vec(&data, &mut packed, FlushCompress::Sync).unwrap();
            packed.truncate(packed.len() - 4);
            assert!(packed.len() <= compressed_limit(len), "{len}: {} bytes", packed.len());
            assert_eq!(inflate(&packed, len).unwrap(), data, "{len}");
        }
    }

    #[test]
    fn garbage_is_invalid() {
        // BTYPE 11 is reserved.
        assert_eq!(inflate(&[0xff, 0xff, 0xff], 1000), Err(InflateError::Invalid));
    }

    #[test]
    fn a_reference_before_the_start_is_invalid() {
        // Raw DEFLATE made with a preset dictionary ("hello hello"): a fixed
        // Huffman block whose first symbol is a match reaching into it.
        let with_dictionary = [0xca, 0x40, 0x30, 0x01, 0x00];
        assert_eq!(inflate(&with_dictionary, 1000), Err(InflateError::Invalid));
    }

    #[test]
    fn empty_message_inflates_to_nothing() {
        assert_eq!(inflate(&compress(b""), 10).unwrap(), b"");
        assert_eq!(inflate(&[0x00], 10).unwrap(), b"");
    }
}
