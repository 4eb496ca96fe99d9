//! Run-length encoding of bitfields as in bitfield-rle 2.2.1, used by
//! `Have.bitfield` (spec 3.10).
//!
//! The encoding is a sequence of chunks, each starting with a varint `v`:
//!
//! * `v & 1 == 1`: a run of `v >> 2` bytes, all `0xff` if `v & 2`, else `0x00`;
//! * `v & 1 == 0`: a literal of `v >> 1` bytes that follow.
//!
//! [`encode`] is byte-identical to the JS encoder: it drops trailing zero
//! bytes, then scans for runs of `0x00` / `0xff` and emits a run chunk only when
//! that is strictly cheaper than extending the pending literal. [`decode`]
//! accepts any valid encoding, is total and never produces more than a caller
//! given number of bytes.

use crate::varint::{self, VarintError};
use thiserror::Error;

/// Why an RLE bitfield could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RleError {
    /// A chunk header is not a valid varint.
    #[error("invalid chunk header: {0}")]
    Varint(#[from] VarintError),
    /// A literal chunk is longer than the remaining input.
    #[error("literal chunk runs past the end of the input")]
    Truncated,
    /// The decoded bitfield would be longer than allowed.
    #[error("decoded bitfield exceeds {max} bytes")]
    TooLong {
        /// The limit given to [`decode`].
        max: usize,
    },
}

/// Encodes `bitfield` exactly like bitfield-rle 2.2.1 `encode()`.
pub fn encode(bitfield: &[u8]) -> Vec<u8> {
    let end = bitfield.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    let mut enc = Encoder { input: &bitfield[..end], out: Vec::new(), consumed: 0 };
    let mut run_len = 0usize;
    let mut run_byte = 0u8;
    for (i, &byte) in enc.input.iter().enumerate() {
        if byte == run_byte {
            run_len += 1;
            continue;
        }
        if run_len > 0 {
            enc.run_ended(i, run_len, run_byte);
        }
        if byte == 0 || byte == 0xff {
            run_byte = byte;
            run_len = 1;
        } else {
            run_len = 0;
        }
    }
    if run_len > 0 {
        enc.run_ended(end, run_len, run_byte);
    }
    enc.literal(end);
    enc.out
}

struct Encoder<'a> {
    input: &'a [u8],
    out: Vec<u8>,
    /// Input bytes already covered by emitted chunks.
    consumed: usize,
}

impl Encoder<'_> {
    /// A run of `len` bytes equal to `byte` ended just before `end`: emit it
    /// (and the literal before it) if that beats one literal up to `end`.
    fn run_ended(&mut self, end: usize, len: usize, byte: u8) {
        let literal_len = end - len - self.consumed;
        let literal_cost =
            if literal_len > 0 { varint::encoded_len(2 * literal_len as u64) + literal_len } else { 0 };
        let header = 4 * len as u64 + if byte != 0 { 2 } else { 0 } + 1;
        let run_cost = literal_cost + varint::encoded_len(header);
        let pending = end - self.consumed;
        let literal_only_cost = varint::encoded_len(2 * pending as u64) + pending;
        if run_cost >= literal_only_cost {
            return;
        }
        if literal_len > 0 {
            self.literal(end - len);
        }
        varint::encode(header, &mut self.out);
        self.consumed = end;
    }

    /// Emits the pending input up to `end` as one literal chunk.
    fn literal(&mut self, end: usize) {
        let len = end - self.consumed;
        if len == 0 {
            return;
        }
        varint::encode(2 * len as u64, &mut self.out);
        self.out.extend_from_slice(&self.input[self.consumed..end]);
        self.consumed = end;
    }
}

/// Decodes an RLE bitfield, refusing to produce more than `max_len` bytes.
///
/// The result is exactly the concatenation of the chunks (no padding).
pub fn decode(encoded: &[u8], max_len: usize) -> Result<Vec<u8>, RleError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < encoded.len() {
        let (v, n) = varint::decode(&encoded[pos..])?;
        pos += n;
        let len = if v & 1 == 1 { v >> 2 } else { v >> 1 };
        let remaining = (max_len - out.len()) as u64;
        if len > remaining {
            return Err(RleError::TooLong { max: max_len });
        }
        let len = len as usize;
        if v & 1 == 1 {
            let byte = if v & 2 != 0 { 0xff } else { 0x00 };
            out.resize(out.len() + len, byte);
        } else {
            let literal = encoded.get(pos..pos + len).ok_or(RleError::Truncated)?;
            out.extend_from_slice(literal);
            pos += len;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples() {
        assert_eq!(encode(&[0xff, 0xff, 0xff, 0xff, 0xc0]), [0x13, 0x02, 0xc0]);
        assert_eq!(encode(&[0xff, 0xff, 0x80, 0xff]), [0x0b, 0x04, 0x80, 0xff]);
        assert_eq!(encode(&[0xff, 0x00, 0xff, 0x00]), [0x07, 0x05, 0x07]);
    }

    #[test]
    fn decode_errors() {
        assert_eq!(decode(&[0x04, 0x01], 100), Err(RleError::Truncated));
        assert_eq!(decode(&[0x13], 3), Err(RleError::TooLong { max: 3 }));
        assert_eq!(decode(&[0x80], 3), Err(RleError::Varint(VarintError::Truncated)));
        assert_eq!(decode(&[0xff; 10], usize::MAX), Err(RleError::Varint(VarintError::Overflow)));
    }
}
