//! The head record (`kappa-head`): a small, checksummed copy of a feed's newest
//! signed state, kept beside hypercore's six files.
//!
//! hypercore 8 keeps each fact of a feed in one place only: the signature of the
//! newest batch in one slot of `signatures`, the roots it covers in `tree`, the
//! committed length in `bitfield`. One damaged file then loses the newest signed
//! state, and a writer that falls back to an older one and appends signs a second
//! history under the same key: a fork that peers holding the first reject
//! forever. The head record is the second copy that prevents it. It holds the
//! public key, whether the feed is a writer, the signed length, its roots and
//! their signature, so any one of the other files can be lost and recovery still
//! knows (and can prove) the newest signed state.
//!
//! Format (ours; JS hypercore ignores the file): two slots of [`SLOT_LEN`] bytes,
//! written alternately so a torn write always leaves the previous record intact.
//! A slot is `b"KHD1"`, `u8` flags (bit 0: writer), 32-byte public key, `u64le`
//! length, `u64le` highest length ever signed, 64-byte signature, `u16le` root count, per root `u64le` index, `u64le`
//! size and 32-byte hash, then a 32-byte BLAKE2b-256 of everything before it.

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};

use crate::crypto::{PublicKey, Signature};
use crate::node::Node;

/// Bytes per slot; the file holds two.
pub(crate) const SLOT_LEN: u64 = 4096;
const MAGIC: &[u8; 4] = b"KHD1";
/// A feed has at most 64 roots (one per bit of its length).
const MAX_ROOTS: usize = 64;

/// The newest signed state of a feed, as the head record stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) key: PublicKey,
    pub(crate) writer: bool,
    pub(crate) length: u64,
    /// The highest length this writer ever signed: `length`, unless recovery
    /// found entries it could not prove (then appends stay refused across
    /// reopens, even once the other files no longer show them).
    pub(crate) signed: u64,
    pub(crate) signature: Signature,
    pub(crate) roots: Vec<Node>,
}

impl Head {
    /// The slot bytes (shorter than [`SLOT_LEN`]; the rest of a slot is unused).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + 1 + 32 + 8 + 64 + 2 + 48 * self.roots.len() + 32);
        out.extend_from_slice(MAGIC);
        out.push(u8::from(self.writer));
        out.extend_from_slice(self.key.as_bytes());
        out.extend_from_slice(&self.length.to_le_bytes());
        out.extend_from_slice(&self.signed.to_le_bytes());
        out.extend_from_slice(&self.signature.0);
        out.extend_from_slice(&(self.roots.len() as u16).to_le_bytes());
        for r in &self.roots {
            out.extend_from_slice(&r.index.to_le_bytes());
            out.extend_from_slice(&r.size.to_le_bytes());
            out.extend_from_slice(&r.hash);
        }
        let sum = checksum(&out);
        out.extend_from_slice(&sum);
        out
    }

    /// Parses one slot; `None` unless it is a complete record whose checksum
    /// matches.
    pub(crate) fn decode(slot: &[u8]) -> Option<Head> {
        let mut r = Reader { bytes: slot, at: 0 };
        if r.take(4)? != MAGIC {
            return None;
        }
        let flags = r.take(1)?[0];
        let key = PublicKey::try_from_slice(r.take(32)?).ok()?;
        let length = u64::from_le_bytes(r.take(8)?.try_into().ok()?);
        let signed = u64::from_le_bytes(r.take(8)?.try_into().ok()?);
        let signature = Signature::try_from_slice(r.take(64)?).ok()?;
        let count = u16::from_le_bytes(r.take(2)?.try_into().ok()?) as usize;
        if count > MAX_ROOTS {
            return None;
        }
        let mut roots = Vec::with_capacity(count);
        for _ in 0..count {
            let index = u64::from_le_bytes(r.take(8)?.try_into().ok()?);
            let size = u64::from_le_bytes(r.take(8)?.try_into().ok()?);
            let hash: [u8; 32] = r.take(32)?.try_into().ok()?;
            roots.push(Node { index, hash, size });
        }
        let body_end = r.at;
        let sum = r.take(32)?;
        if sum != checksum(&slot[..body_end]) {
            return None;
        }
        Some(Head { key, writer: flags & 1 == 1, length, signed, signature, roots })
    }
}

fn checksum(bytes: &[u8]) -> [u8; 32] {
    let mut h = Blake2b::<U32>::new();
    h.update(bytes);
    h.finalize().into()
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::KeyPair;

    fn sample() -> Head {
        let kp = KeyPair::from_seed(&[1; 32]);
        let roots =
            vec![Node { index: 3, hash: [7; 32], size: 12 }, Node { index: 8, hash: [9; 32], size: 1 }];
        Head { key: kp.public_key(), writer: true, length: 5, signed: 7, signature: kp.sign(b"x"), roots }
    }

    #[test]
    fn round_trips() {
        let h = sample();
        let bytes = h.encode();
        assert!(bytes.len() as u64 <= SLOT_LEN);
        assert_eq!(Head::decode(&bytes), Some(h));
    }

    #[test]
    fn any_damage_or_truncation_is_refused() {
        let bytes = sample().encode();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert_eq!(Head::decode(&b), None, "flip at {i}");
            assert_eq!(Head::decode(&bytes[..i]), None, "cut at {i}");
        }
    }

    #[test]
    fn the_largest_record_fits_a_slot() {
        let mut h = sample();
        h.roots = vec![Node { index: 0, hash: [0; 32], size: 0 }; MAX_ROOTS];
        assert!(h.encode().len() as u64 <= SLOT_LEN);
    }
}
