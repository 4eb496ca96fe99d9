//! Transport encryption (spec 3.3) and channel capabilities (spec 3.5).
//!
//! After the handshake each direction is one continuous XSalsa20 key stream:
//! the sender uses its own `tx` split key and the nonce from its own handshake
//! payload, the receiver the same pair (its `rx` key and the peer's nonce).
//! There is no MAC and frame boundaries do not matter.
//!
//! The capability in `Open` is keyed BLAKE2b-256:
//! `capability(key) = BLAKE2b-256("hypercore capability" || tx || key, key = rx)`;
//! the peer's expected value swaps `tx` and `rx`.

use blake2::digest::consts::U32;
use blake2::digest::Mac;
use blake2::Blake2bMac;
use salsa20::cipher::{KeyIvInit, StreamCipher};
use salsa20::XSalsa20;

/// The 20-byte domain string of capabilities.
pub const CAPABILITY_CONTEXT: &[u8] = b"hypercore capability";

/// One direction of the XSalsa20 transport cipher.
///
/// Encryption and decryption are the same XOR; the key stream continues
/// across calls.
pub struct TransportCipher {
    stream: XSalsa20,
}

impl std::fmt::Debug for TransportCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportCipher").finish_non_exhaustive()
    }
}

impl TransportCipher {
    /// A cipher at key stream offset 0.
    pub fn new(key: &[u8; 32], nonce: &[u8; 24]) -> Self {
        TransportCipher { stream: XSalsa20::new(key.into(), nonce.into()) }
    }

    /// XORs `data` in place with the next `data.len()` key stream bytes.
    pub fn apply(&mut self, data: &mut [u8]) {
        self.stream.apply_keystream(data);
    }

    /// Returns `data` XORed with the next key stream bytes.
    pub fn apply_to_vec(&mut self, data: &[u8]) -> Vec<u8> {
        let mut out = data.to_vec();
        self.apply(&mut out);
        out
    }
}

fn keyed_hash(mac_key: &[u8; 32], first: &[u8; 32], feed_key: &[u8]) -> [u8; 32] {
    // A 32-byte key is always a valid BLAKE2b key, so this cannot fail.
    let mut mac = match Blake2bMac::<U32>::new_from_slice(mac_key) {
        Ok(mac) => mac,
        Err(_) => return [0; 32],
    };
    mac.update(CAPABILITY_CONTEXT);
    mac.update(first);
    mac.update(feed_key);
    mac.finalize().into_bytes().into()
}

/// The capability this side sends in `Open` for feed public key `key`.
pub fn capability(tx_key: &[u8; 32], rx_key: &[u8; 32], key: &[u8]) -> [u8; 32] {
    keyed_hash(rx_key, tx_key, key)
}

/// The capability this side expects from the peer for feed public key `key`.
pub fn remote_capability(tx_key: &[u8; 32], rx_key: &[u8; 32], key: &[u8]) -> [u8; 32] {
    keyed_hash(tx_key, rx_key, key)
}

/// Checks a received capability against [`remote_capability`] in constant
/// time (with respect to the contents).
pub fn verify_remote_capability(tx_key: &[u8; 32], rx_key: &[u8; 32], key: &[u8], received: &[u8]) -> bool {
    let expected = remote_capability(tx_key, rx_key, key);
    if received.len() != expected.len() {
        return false;
    }
    expected.iter().zip(received).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}
