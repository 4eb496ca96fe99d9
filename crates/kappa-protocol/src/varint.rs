//! Protobuf unsigned varints (unsigned LEB128).
//!
//! Seven bits per byte, least significant group first, the high bit of each
//! byte marks a continuation. A `u64` needs at most [`MAX_LEN`] bytes.
//! Decoding is total: truncated input and varints that do not fit a `u64`
//! (longer than ten bytes, or a tenth byte above `0x01`) are typed errors.

use thiserror::Error;

/// The longest encoding of a `u64` (ten bytes).
pub const MAX_LEN: usize = 10;

/// Why a varint could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum VarintError {
    /// The input ended before the last byte of the varint.
    #[error("truncated varint")]
    Truncated,
    /// The varint does not fit in 64 bits.
    #[error("varint overflows u64")]
    Overflow,
}

/// Number of bytes [`encode`] writes for `value`.
pub fn encoded_len(value: u64) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Appends the varint encoding of `value` to `out`.
pub fn encode(value: u64, out: &mut Vec<u8>) {
    let mut v = value;
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Returns the varint encoding of `value` as a new vector.
pub fn encode_to_vec(value: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(value));
    encode(value, &mut out);
    out
}

/// Decodes one varint from the start of `input`.
///
/// Returns the value and the number of bytes it used.
pub fn decode(input: &[u8]) -> Result<(u64, usize), VarintError> {
    let mut value: u64 = 0;
    for (i, &byte) in input.iter().enumerate() {
        if i >= MAX_LEN {
            return Err(VarintError::Overflow);
        }
        let group = u64::from(byte & 0x7f);
        if i == MAX_LEN - 1 && group > 1 {
            return Err(VarintError::Overflow);
        }
        value |= group << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    if input.len() >= MAX_LEN {
        Err(VarintError::Overflow)
    } else {
        Err(VarintError::Truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        for (v, hex) in [
            (0u64, &[0x00u8][..]),
            (1, &[0x01]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (300, &[0xac, 0x02]),
            (1_048_576, &[0x80, 0x80, 0x40]),
        ] {
            assert_eq!(encode_to_vec(v), hex);
            assert_eq!(encoded_len(v), hex.len());
            assert_eq!(decode(hex), Ok((v, hex.len())));
        }
        let max = encode_to_vec(u64::MAX);
        assert_eq!(max.len(), 10);
        assert_eq!(decode(&max), Ok((u64::MAX, 10)));
    }

    #[test]
    fn errors() {
        assert_eq!(decode(&[]), Err(VarintError::Truncated));
        assert_eq!(decode(&[0x80, 0x80]), Err(VarintError::Truncated));
        assert_eq!(decode(&[0xff; 10]), Err(VarintError::Overflow));
        assert_eq!(decode(&[0xff; 11]), Err(VarintError::Overflow));
        let mut over = vec![0xff; 9];
        over.push(0x02);
        assert_eq!(decode(&over), Err(VarintError::Overflow));
    }
}
