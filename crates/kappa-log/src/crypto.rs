//! Hashes, keys and signatures (spec §1.2 to §1.5).

use std::fmt;
use std::str::FromStr;

use blake2::digest::consts::U32;
use blake2::digest::Mac;
use blake2::{Blake2b, Blake2bMac, Digest};
use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};

use crate::error::KeyError;
use crate::Node;

type Blake2b256 = Blake2b<U32>;

/// A 32-byte BLAKE2b-256 hash.
pub type Hash = [u8; 32];

const LEAF_TYPE: [u8; 1] = [0];
const PARENT_TYPE: [u8; 1] = [1];
const ROOT_TYPE: [u8; 1] = [2];

/// The hash of a block: `BLAKE2b-256(0x00 ‖ u64be(len) ‖ data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    // One update for the header: each `update` call of the digest crate
    // goes through its block buffer, which costs more than these few bytes.
    let mut head = [0u8; 9];
    head[0] = LEAF_TYPE[0];
    head[1..].copy_from_slice(&(data.len() as u64).to_be_bytes());
    let mut h = Blake2b256::new();
    h.update(head);
    h.update(data);
    h.finalize().into()
}

/// The hash of a parent: `BLAKE2b-256(0x01 ‖ u64be(size) ‖ left.hash ‖ right.hash)`.
/// `left` must be the child with the smaller index; `size` is the sum of the sizes.
pub fn parent_hash(left: &Hash, right: &Hash, size: u64) -> Hash {
    let mut buf = [0u8; 73];
    buf[0] = PARENT_TYPE[0];
    buf[1..9].copy_from_slice(&size.to_be_bytes());
    buf[9..41].copy_from_slice(left);
    buf[41..].copy_from_slice(right);
    Blake2b256::digest(buf).into()
}

/// The tree hash of a list of roots, the 32 bytes a signature covers.
pub fn tree_hash<'a>(roots: impl IntoIterator<Item = &'a Node>) -> Hash {
    // The roots are laid out in a stack buffer and hashed in few updates
    // (a feed has at most 64 roots, so one): three small `update`s per root
    // cost more than the hashing itself on the single-append path.
    const PER_ROOT: usize = 48;
    const ROOTS: usize = 64;
    let mut buf = [0u8; 1 + ROOTS * PER_ROOT];
    buf[0] = ROOT_TYPE[0];
    let mut len = 1;
    let mut h = Blake2b256::new();
    for r in roots {
        if len + PER_ROOT > buf.len() {
            h.update(&buf[..len]);
            len = 0;
        }
        let slot = &mut buf[len..len + PER_ROOT];
        slot[..32].copy_from_slice(&r.hash);
        slot[32..40].copy_from_slice(&r.index.to_be_bytes());
        slot[40..].copy_from_slice(&r.size.to_be_bytes());
        len += PER_ROOT;
    }
    h.update(&buf[..len]);
    h.finalize().into()
}

/// What a signature of a feed covers: the two forms hypercore has used.
///
/// hypercore 8 (kappa-core 6) signs the 32-byte [`tree_hash`] of the roots and
/// can verify only that. hypercore 9 (kappa-core 7) signs [`signable`]: the tree
/// hash followed by the length as `u64be` (40 bytes), and verifies that form
/// first, then the 32-byte one, signature by signature. So a 32-byte signature
/// is read by both generations and a 40-byte one only by hypercore 9.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SignatureForm {
    /// hypercore 8: `tree_hash(roots)` (32 bytes). Both generations verify it.
    #[default]
    TreeHash,
    /// hypercore 9: `tree_hash(roots) ‖ u64be(length)` (40 bytes). hypercore 8
    /// cannot verify it.
    TreeHashAndLength,
}

impl SignatureForm {
    /// Whether a hypercore 8 (kappa-core 6) peer can verify a signature of this form.
    pub fn hypercore8_verifies(self) -> bool {
        self == SignatureForm::TreeHash
    }
}

impl fmt::Display for SignatureForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SignatureForm::TreeHash => "32-byte (hypercore 8) form",
            SignatureForm::TreeHashAndLength => "40-byte (hypercore 9) form",
        })
    }
}

/// hypercore 9's `signable(roots, length)`: `tree_hash(roots) ‖ u64be(length)`.
pub fn signable<'a>(roots: impl IntoIterator<Item = &'a Node>, length: u64) -> [u8; 40] {
    let mut out = [0u8; 40];
    out[..32].copy_from_slice(&tree_hash(roots));
    out[32..].copy_from_slice(&length.to_be_bytes());
    out
}

/// The feed length the full roots `roots` describe (0 for none).
fn roots_length(roots: &[Node]) -> u64 {
    roots.last().map_or(0, |r| crate::flat::right_span(r.index) / 2 + 1)
}

/// `BLAKE2b-256("hypercore", key = public key)`: the name a feed is found by on the
/// network, which does not reveal the key.
pub fn discovery_key(public_key: &[u8; 32]) -> Hash {
    // A 32-byte key is always a valid BLAKE2b key length.
    let mut mac = match <Blake2bMac<U32> as Mac>::new_from_slice(public_key) {
        Ok(m) => m,
        Err(_) => unreachable!("32 bytes is a valid BLAKE2b key length"),
    };
    mac.update(b"hypercore");
    mac.finalize().into_bytes().into()
}

/// An Ed25519 public key: the identity of a feed.
///
/// Any 32 bytes are accepted (hypercore does too); a key that is not a valid
/// curve point simply never verifies a signature.
///
/// ```
/// use kappa_log::PublicKey;
/// let k: PublicKey = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8".parse()?;
/// assert_eq!(k.to_hex()[..8], *"03a107bf");
/// assert!("xyz".parse::<PublicKey>().is_err());
/// # Ok::<(), kappa_log::KeyError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// Wraps 32 bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        PublicKey(bytes)
    }

    /// Parses exactly 32 bytes.
    pub fn try_from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        let arr: [u8; 32] = bytes.try_into().map_err(|_| KeyError::Length {
            what: "public key",
            expected: 32,
            got: bytes.len(),
        })?;
        Ok(PublicKey(arr))
    }

    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        let bytes = hex::decode(s.trim()).map_err(|_| KeyError::Hex(s.chars().take(80).collect()))?;
        Self::try_from_slice(&bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The discovery key of this public key.
    pub fn discovery_key(&self) -> Hash {
        discovery_key(&self.0)
    }

    /// Whether `signature` is a valid Ed25519 signature of `message` by this key.
    pub fn verify(&self, message: &[u8], signature: &Signature) -> bool {
        match VerifyingKey::from_bytes(&self.0) {
            Ok(vk) => vk.verify(message, &ed25519_dalek::Signature::from_bytes(&signature.0)).is_ok(),
            Err(_) => false,
        }
    }

    /// Which form of signature over the full roots `roots` `signature` is, if it
    /// verifies in either: the 40-byte hypercore 9 form is tried first, then the
    /// 32-byte one, as hypercore 9 does.
    pub fn verify_roots(&self, roots: &[Node], signature: &Signature) -> Option<SignatureForm> {
        let Ok(vk) = VerifyingKey::from_bytes(&self.0) else { return None };
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        let long = signable(roots, roots_length(roots));
        if vk.verify(&long, &sig).is_ok() {
            Some(SignatureForm::TreeHashAndLength)
        } else if vk.verify(&long[..32], &sig).is_ok() {
            Some(SignatureForm::TreeHash)
        } else {
            None
        }
    }
}

/// The last signature a feed verified, so the same one is not checked again
/// (a proof and the uploader's look at the state it signs verify one
/// signature twice, and each check tried the 40-byte form before the 32-byte
/// one). Verification is a pure function of the key, the signed bytes and
/// the signature, so remembering the last success changes no answer; the
/// form that verified last is also tried first next time.
#[derive(Default)]
pub(crate) struct SignatureMemo {
    key: Option<VerifyingKey>,
    last: Option<([u8; 40], [u8; 64], SignatureForm)>,
}

impl SignatureMemo {
    /// [`PublicKey::verify_roots`], remembered.
    pub(crate) fn verify_roots(
        &mut self,
        key: &PublicKey,
        roots: &[Node],
        signature: &Signature,
    ) -> Option<SignatureForm> {
        let long = signable(roots, roots_length(roots));
        if let Some((m, s, form)) = &self.last {
            if *m == long && *s == signature.0 {
                return Some(*form);
            }
        }
        let vk = match self.key {
            Some(vk) => vk,
            None => {
                let vk = VerifyingKey::from_bytes(&key.0).ok()?;
                self.key = Some(vk);
                vk
            }
        };
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        let first = self.last.as_ref().map_or(SignatureForm::TreeHashAndLength, |l| l.2);
        let forms = match first {
            SignatureForm::TreeHash => [SignatureForm::TreeHash, SignatureForm::TreeHashAndLength],
            SignatureForm::TreeHashAndLength => [SignatureForm::TreeHashAndLength, SignatureForm::TreeHash],
        };
        let form = forms.into_iter().find(|form| {
            let message = match form {
                SignatureForm::TreeHash => &long[..32],
                SignatureForm::TreeHashAndLength => &long[..],
            };
            vk.verify(message, &sig).is_ok()
        })?;
        self.last = Some((long, signature.0, form));
        Some(form)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        Self::from_hex(s)
    }
}

impl From<[u8; 32]> for PublicKey {
    fn from(bytes: [u8; 32]) -> Self {
        PublicKey(bytes)
    }
}

impl AsRef<[u8]> for PublicKey {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// A 64-byte Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);

impl Signature {
    /// Parses exactly 64 bytes.
    pub fn try_from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        let arr: [u8; 64] = bytes.try_into().map_err(|_| KeyError::Length {
            what: "signature",
            expected: 64,
            got: bytes.len(),
        })?;
        Ok(Signature(arr))
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }

    /// Whether this is the all-zero "no signature" slot value.
    pub fn is_blank(&self) -> bool {
        self.0.iter().all(|&b| b == 0)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", hex::encode(self.0))
    }
}

/// An Ed25519 key pair: what makes a feed writable.
///
/// The 64-byte secret key format is libsodium's `seed ‖ public key`, which is what
/// hypercore stores in `secret_key`.
///
/// ```
/// use kappa_log::KeyPair;
/// let kp = KeyPair::from_seed(&[0; 32]);
/// let again = KeyPair::from_secret_key_bytes(&kp.secret_key_bytes())?;
/// assert_eq!(kp.public_key(), again.public_key());
/// # Ok::<(), kappa_log::KeyError>(())
/// ```
#[derive(Clone)]
pub struct KeyPair {
    signing: SigningKey,
}

impl KeyPair {
    /// A fresh random key pair from the operating system's RNG.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut seed);
        Self::from_seed(&seed)
    }

    /// The key pair of a 32-byte seed (libsodium `crypto_sign_seed_keypair`).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        KeyPair { signing: SigningKey::from_bytes(seed) }
    }

    /// Parses a 64-byte libsodium secret key (`seed ‖ public key`), checking that the
    /// public half belongs to the seed.
    pub fn from_secret_key_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.len() != 64 {
            return Err(KeyError::Length { what: "secret key", expected: 64, got: bytes.len() });
        }
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&bytes[..32]);
        let kp = Self::from_seed(&seed);
        if kp.public_key().as_bytes()[..] != bytes[32..] {
            return Err(KeyError::Mismatch);
        }
        Ok(kp)
    }

    /// The public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key().to_bytes())
    }

    /// The 64-byte secret key as hypercore stores it.
    pub fn secret_key_bytes(&self) -> [u8; 64] {
        self.signing.to_keypair_bytes()
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.signing.sign(message).to_bytes())
    }

    /// Signs the full roots `roots` in `form`.
    pub fn sign_roots(&self, roots: &[Node], form: SignatureForm) -> Signature {
        let long = signable(roots, roots_length(roots));
        match form {
            SignatureForm::TreeHash => self.sign(&long[..32]),
            SignatureForm::TreeHashAndLength => self.sign(&long),
        }
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair").field("public_key", &self.public_key()).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roots(seed: u8) -> Vec<Node> {
        // Full roots of a feed of length 3: nodes 1 and 4.
        vec![Node { index: 1, hash: [seed; 32], size: 6 }, Node { index: 4, hash: [seed ^ 1; 32], size: 3 }]
    }

    /// The memo answers exactly what a fresh verification would, in both
    /// forms, whatever was verified before it.
    #[test]
    fn the_memo_changes_no_answer() {
        let kp = KeyPair::generate();
        let key = kp.public_key();
        let mut memo = SignatureMemo::default();
        let (a, b) = (roots(1), roots(2));
        let short = kp.sign_roots(&a, SignatureForm::TreeHash);
        let long = kp.sign_roots(&a, SignatureForm::TreeHashAndLength);
        let other = KeyPair::generate().sign_roots(&a, SignatureForm::TreeHash);
        let cases = [
            (&a, short, Some(SignatureForm::TreeHash)),
            (&a, short, Some(SignatureForm::TreeHash)),
            // The same signature over other roots, right after it verified.
            (&b, short, None),
            (&a, long, Some(SignatureForm::TreeHashAndLength)),
            (&a, long, Some(SignatureForm::TreeHashAndLength)),
            (&b, long, None),
            (&a, short, Some(SignatureForm::TreeHash)),
            // Another key's signature of the same roots.
            (&a, other, None),
            (&a, Signature([0; 64]), None),
        ];
        for (i, (r, sig, want)) in cases.into_iter().enumerate() {
            assert_eq!(key.verify_roots(r, &sig), want, "case {i}, unremembered");
            assert_eq!(memo.verify_roots(&key, r, &sig), want, "case {i}, remembered");
        }
    }
}
