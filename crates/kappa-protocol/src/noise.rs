//! The Noise handshakes of hypercore-protocol 7 (spec 3.2) and hypercore-protocol
//! 8 as one sans-IO state machine. Which one a connection speaks is its
//! [`Generation`].
//!
//! **kappa-core 6** (hypercore-protocol 7, noise-protocol 1.0.0): the suite is
//! called `Noise_XX_25519_XChaChaPoly_BLAKE2b` but is not the standard one:
//!
//! * DH results are 64 bytes, derived like libsodium `crypto_kx`:
//!   `K = BLAKE2b-512(X25519(sk, pk) || pkI || pkR)`, `DH = K[32..] || K[..32]`,
//!   where `pkI` / `pkR` are the initiator-side / responder-side public keys of
//!   the token.
//! * The AEAD is XChaCha20-Poly1305 with nonce `16 zero bytes || u64le(n)`.
//!
//! **kappa-core 7** (hypercore-protocol 8, noise-protocol 3.0.1): the standard
//! `Noise_XX_25519_ChaChaPoly_BLAKE2b`: plain 32-byte X25519 results, and
//! ChaCha20-Poly1305 (IETF) with nonce `4 zero bytes || u64le(n)`.
//!
//! In both, HASH is BLAKE2b-512, HMAC is HMAC-BLAKE2b-512 (128-byte block), HKDF
//! is the Noise HKDF on top of it, and the prologue is empty. Everything after the
//! handshake (the XSalsa20 transport, capabilities, messages) is the same.
//!
//! Message 1 (`-> e`, payload) is sent before any key exists, so it is the same
//! bytes in both suites: an initiator that does not know which generation the
//! peer speaks ([`Wire::Auto`]) runs both handshake states on the same ephemeral
//! key and nonce, and keeps the one whose message 2 decrypts
//! ([`Handshake::generation`] then says which). A responder has to answer
//! message 1 in one suite, chosen by whoever creates it.
//!
//! Each handshake message travels as `varint(len) || message`. Every message
//! carries the payload [`NoisePayload`] `{ nonce }` with the sender's 24-byte
//! transport nonce (the initiator sends the same payload in messages 1 and 3).
//!
//! Usage: create a [`Handshake`], send whatever [`Handshake::take_outgoing`]
//! returns, feed received bytes to [`Handshake::receive`] (any chunking), and
//! once [`Handshake::is_finished`] take the [`HandshakeResult`] and any bytes
//! that followed the handshake ([`Handshake::take_leftover`], transport data).
//! The initiator is finished as soon as it has produced message 3.

use crate::message::NoisePayload;
use crate::varint::{self, VarintError};
use blake2::digest::Digest;
use blake2::Blake2b512;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce, XChaCha20Poly1305, XNonce};
use rand_core::{OsRng, RngCore};
use thiserror::Error;
use x25519_dalek::{PublicKey as XPublicKey, StaticSecret};

/// The protocol name hashed into the initial state (kappa-core 6).
pub const PROTOCOL_NAME: &[u8] = b"Noise_XX_25519_XChaChaPoly_BLAKE2b";

/// The protocol name of hypercore-protocol 8 (kappa-core 7).
pub const PROTOCOL_NAME_8: &[u8] = b"Noise_XX_25519_ChaChaPoly_BLAKE2b";

/// A wire generation: which Noise suite a connection speaks. Everything else on
/// the wire is the same in both; the feeds differ only in the signatures
/// hypercore 9 writes (see `kappa_log::SignatureForm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Generation {
    /// kappa-core 6: hypercore 8, hypercore-protocol 7, multifeed 5 (what JS
    /// kappa-core 6 and cabal-core 13 speak).
    #[default]
    KappaCore6,
    /// kappa-core 7: hypercore 9, hypercore-protocol 8, multifeed 6 (cabal-core
    /// 14 to 16).
    KappaCore7,
}

impl Generation {
    /// Both generations, the older first.
    pub const ALL: [Generation; 2] = [Generation::KappaCore6, Generation::KappaCore7];

    /// The other generation.
    pub fn other(self) -> Generation {
        match self {
            Generation::KappaCore6 => Generation::KappaCore7,
            Generation::KappaCore7 => Generation::KappaCore6,
        }
    }

    /// The Noise protocol name of this generation.
    pub fn protocol_name(self) -> &'static [u8] {
        match self {
            Generation::KappaCore6 => PROTOCOL_NAME,
            Generation::KappaCore7 => PROTOCOL_NAME_8,
        }
    }

    /// The kappa-core major version (6 or 7), as `--wire` spells it.
    pub fn number(self) -> u8 {
        match self {
            Generation::KappaCore6 => 6,
            Generation::KappaCore7 => 7,
        }
    }

    /// Whether a peer of this generation can verify signatures in the 40-byte
    /// (hypercore 9) form.
    pub fn verifies_long_signatures(self) -> bool {
        self == Generation::KappaCore7
    }
}

impl std::fmt::Display for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Generation::KappaCore6 => "kappa-core 6 (hypercore-protocol 7)",
            Generation::KappaCore7 => "kappa-core 7 (hypercore-protocol 8)",
        })
    }
}

/// Which generations a connection may speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Wire {
    /// Either: an initiator detects the peer's from message 2; a responder
    /// answers in the generation it is given per connection (see
    /// `ProtocolOptions::responder_generation`).
    #[default]
    Auto,
    /// Only this one.
    Only(Generation),
}

impl Wire {
    /// Whether `generation` is allowed.
    pub fn allows(self, generation: Generation) -> bool {
        match self {
            Wire::Auto => true,
            Wire::Only(g) => g == generation,
        }
    }
}

impl std::fmt::Display for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Wire::Auto => f.write_str("auto"),
            Wire::Only(g) => write!(f, "{}", g.number()),
        }
    }
}

impl std::str::FromStr for Wire {
    type Err = String;

    /// `auto`, `6` or `7` (also `kc6`, `kc7`).
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Wire::Auto),
            "6" | "kc6" | "kappa-core-6" => Ok(Wire::Only(Generation::KappaCore6)),
            "7" | "kc7" | "kappa-core-7" => Ok(Wire::Only(Generation::KappaCore7)),
            other => Err(format!("unknown wire generation {other:?}: expected auto, 6 or 7")),
        }
    }
}

/// Length of the transport nonce carried in the payload.
pub const NONCE_LEN: usize = 24;

/// Largest handshake message accepted (the Noise limit).
pub const MAX_HANDSHAKE_MESSAGE_LEN: usize = 65535;

const HASHLEN: usize = 64;
const BLOCKLEN: usize = 128;
const TAGLEN: usize = 16;
const PKLEN: usize = 32;

/// Handshake failures.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HandshakeError {
    /// A message failed authentication (wrong keys or corrupted bytes).
    #[error("handshake message failed authentication")]
    BadMac,
    /// The length prefix of a handshake message is not a valid varint.
    #[error("invalid handshake length prefix: {0}")]
    LengthPrefix(VarintError),
    /// A handshake message is larger than [`MAX_HANDSHAKE_MESSAGE_LEN`].
    #[error("handshake message of {0} bytes is too large")]
    TooLarge(u64),
    /// A handshake message is shorter than its fixed part.
    #[error("handshake message {message} is {len} bytes, needs at least {min}")]
    TooShort {
        /// Which message (1 to 3).
        message: u8,
        /// Its length.
        len: usize,
        /// The minimum.
        min: usize,
    },
    /// The remote did not include a handshake payload.
    #[error("remote did not include a handshake payload")]
    MissingPayload,
    /// The remote payload is not a valid `NoisePayload`.
    #[error("invalid handshake payload")]
    InvalidPayload,
    /// The remote payload nonce is not 24 bytes.
    #[error("payload nonce is {0} bytes, expected 24")]
    BadNonceLength(usize),
    /// A remote public key gives an all-zero X25519 result (low-order point).
    #[error("remote public key is a low-order point")]
    WeakPublicKey,
    /// An earlier error made the handshake unusable.
    #[error("handshake already failed: {0}")]
    Failed(Box<HandshakeError>),
    /// Message 2 failed in both generations' suites (an initiator with
    /// [`Wire::Auto`]): the peer speaks neither, or its bytes were damaged.
    #[error("the peer's answer fails in both wire generations (kappa-core 6: {kc6}; kappa-core 7: {kc7})")]
    BothGenerations {
        /// Why the kappa-core 6 suite failed.
        kc6: Box<HandshakeError>,
        /// Why the kappa-core 7 suite failed.
        kc7: Box<HandshakeError>,
    },
}

/// An X25519 key pair as libsodium `crypto_kx` uses it.
#[derive(Clone)]
pub struct KeyPair {
    public: [u8; 32],
    secret: [u8; 32],
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair").field("public", &Hex(&self.public)).finish_non_exhaustive()
    }
}

struct Hex<'a>(&'a [u8]);

impl std::fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl KeyPair {
    /// The key pair of a secret key: `pk = X25519(sk, basepoint)`.
    pub fn from_secret(secret: [u8; 32]) -> Self {
        let public = XPublicKey::from(&StaticSecret::from(secret)).to_bytes();
        KeyPair { public, secret }
    }

    /// libsodium `crypto_kx_seed_keypair`: `sk = BLAKE2b-256(seed)`.
    pub fn from_seed(seed: &[u8]) -> Self {
        let mut h = blake2::Blake2b::<blake2::digest::consts::U32>::new();
        h.update(seed);
        Self::from_secret(h.finalize().into())
    }

    /// A fresh random key pair (operating system RNG).
    pub fn generate() -> Self {
        let mut secret = [0u8; 32];
        OsRng.fill_bytes(&mut secret);
        Self::from_secret(secret)
    }

    /// The public key.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public
    }

    /// The secret key.
    pub fn secret_key(&self) -> &[u8; 32] {
        &self.secret
    }
}

/// A fresh random 24-byte transport nonce.
pub fn random_nonce() -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut n);
    n
}

/// What a finished handshake yields.
#[derive(Clone, PartialEq, Eq)]
pub struct HandshakeResult {
    /// Whether this side was the initiator.
    pub is_initiator: bool,
    /// Our split key for sending (XSalsa20 key, and capability input).
    pub tx_key: [u8; 32],
    /// Our split key for receiving (= the peer's `tx_key`).
    pub rx_key: [u8; 32],
    /// The nonce we sent in our payload (our XSalsa20 nonce).
    pub local_nonce: [u8; NONCE_LEN],
    /// The nonce the peer sent (the peer's XSalsa20 nonce).
    pub remote_nonce: [u8; NONCE_LEN],
    /// The peer's static Noise public key.
    pub remote_static_key: [u8; 32],
    /// The generation the handshake was made in.
    pub generation: Generation,
}

impl std::fmt::Debug for HandshakeResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandshakeResult")
            .field("is_initiator", &self.is_initiator)
            .field("generation", &self.generation)
            .field("remote_static_key", &Hex(&self.remote_static_key))
            .finish_non_exhaustive()
    }
}

impl HandshakeResult {
    /// The capability we send in `Open` for feed `key` (spec 3.5).
    pub fn capability(&self, key: &[u8]) -> [u8; 32] {
        crate::cipher::capability(&self.tx_key, &self.rx_key, key)
    }

    /// The capability we expect from the peer for feed `key`.
    pub fn remote_capability(&self, key: &[u8]) -> [u8; 32] {
        crate::cipher::remote_capability(&self.tx_key, &self.rx_key, key)
    }

    /// The encrypting half of the transport cipher.
    pub fn encryptor(&self) -> crate::cipher::TransportCipher {
        crate::cipher::TransportCipher::new(&self.tx_key, &self.local_nonce)
    }

    /// The decrypting half of the transport cipher.
    pub fn decryptor(&self) -> crate::cipher::TransportCipher {
        crate::cipher::TransportCipher::new(&self.rx_key, &self.remote_nonce)
    }
}

// ---------------------------------------------------------------------------
// Primitives

fn hash(parts: &[&[u8]]) -> [u8; HASHLEN] {
    let mut h = Blake2b512::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// HMAC-BLAKE2b-512 with a 128-byte block.
fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; HASHLEN] {
    let mut block = [0u8; BLOCKLEN];
    if key.len() > BLOCKLEN {
        block[..HASHLEN].copy_from_slice(&hash(&[key]));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut ipad = [0u8; BLOCKLEN];
    let mut opad = [0u8; BLOCKLEN];
    for i in 0..BLOCKLEN {
        ipad[i] = block[i] ^ 0x36;
        opad[i] = block[i] ^ 0x5c;
    }
    let mut inner = Blake2b512::new();
    inner.update(ipad);
    for p in parts {
        inner.update(p);
    }
    let inner = inner.finalize();
    hash(&[&opad, &inner])
}

fn hkdf(ck: &[u8; HASHLEN], ikm: &[u8]) -> ([u8; HASHLEN], [u8; HASHLEN]) {
    let t = hmac(ck, &[ikm]);
    let o1 = hmac(&t, &[&[1u8]]);
    let o2 = hmac(&t, &[&o1, &[2u8]]);
    (o1, o2)
}

/// The DH of a generation: kappa-core 6's 64-byte crypto_kx-style result, or
/// kappa-core 7's plain 32-byte X25519.
fn dh(
    generation: Generation,
    own: &KeyPair,
    remote: &[u8; 32],
    pk_i: &[u8; 32],
    pk_r: &[u8; 32],
) -> Result<Vec<u8>, HandshakeError> {
    let q = StaticSecret::from(own.secret).diffie_hellman(&XPublicKey::from(*remote));
    if !q.was_contributory() {
        return Err(HandshakeError::WeakPublicKey);
    }
    if generation == Generation::KappaCore7 {
        return Ok(q.as_bytes().to_vec());
    }
    let k = hash(&[q.as_bytes(), pk_i, pk_r]);
    let mut out = vec![0u8; 64];
    out[..32].copy_from_slice(&k[32..]);
    out[32..].copy_from_slice(&k[..32]);
    Ok(out)
}

fn aead_nonce(n: u64) -> XNonce {
    let mut nonce = [0u8; 24];
    nonce[16..].copy_from_slice(&n.to_le_bytes());
    XNonce::from(nonce)
}

/// ChaCha20-Poly1305 (IETF): `4 zero bytes || u64le(n)`.
fn ietf_nonce(n: u64) -> Nonce {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&n.to_le_bytes());
    Nonce::from(nonce)
}

fn aead_encrypt(generation: Generation, k: &[u8; 32], n: u64, payload: Payload<'_, '_>) -> Vec<u8> {
    // Encryption with a valid key and nonce cannot fail for handshake-sized
    // inputs; fall back to an empty vector.
    match generation {
        Generation::KappaCore6 => XChaCha20Poly1305::new(k.into()).encrypt(&aead_nonce(n), payload),
        Generation::KappaCore7 => ChaCha20Poly1305::new(k.into()).encrypt(&ietf_nonce(n), payload),
    }
    .unwrap_or_default()
}

fn aead_decrypt(
    generation: Generation,
    k: &[u8; 32],
    n: u64,
    payload: Payload<'_, '_>,
) -> Result<Vec<u8>, HandshakeError> {
    match generation {
        Generation::KappaCore6 => XChaCha20Poly1305::new(k.into()).decrypt(&aead_nonce(n), payload),
        Generation::KappaCore7 => ChaCha20Poly1305::new(k.into()).decrypt(&ietf_nonce(n), payload),
    }
    .map_err(|_| HandshakeError::BadMac)
}

#[derive(Clone)]
struct SymmetricState {
    generation: Generation,
    ck: [u8; HASHLEN],
    h: [u8; HASHLEN],
    k: Option<[u8; 32]>,
    n: u64,
}

impl SymmetricState {
    fn new(generation: Generation) -> Self {
        let name = generation.protocol_name();
        let mut h = [0u8; HASHLEN];
        h[..name.len()].copy_from_slice(name);
        let mut s = SymmetricState { generation, ck: h, h, k: None, n: 0 };
        s.mix_hash(&[]); // empty prologue
        s
    }

    fn mix_hash(&mut self, data: &[u8]) {
        self.h = hash(&[&self.h, data]);
    }

    fn mix_key(&mut self, ikm: &[u8]) {
        let (ck, t) = hkdf(&self.ck, ikm);
        self.ck = ck;
        let mut k = [0u8; 32];
        k.copy_from_slice(&t[..32]);
        self.k = Some(k);
        self.n = 0;
    }

    fn encrypt_and_hash(&mut self, plaintext: &[u8]) -> Vec<u8> {
        let out = match &self.k {
            None => plaintext.to_vec(),
            Some(k) => {
                let payload = Payload { msg: plaintext, aad: &self.h };
                let c = aead_encrypt(self.generation, k, self.n, payload);
                self.n += 1;
                c
            }
        };
        self.mix_hash(&out);
        out
    }

    fn decrypt_and_hash(&mut self, ciphertext: &[u8]) -> Result<Vec<u8>, HandshakeError> {
        let out = match &self.k {
            None => ciphertext.to_vec(),
            Some(k) => {
                let payload = Payload { msg: ciphertext, aad: &self.h };
                let p = aead_decrypt(self.generation, k, self.n, payload)?;
                self.n += 1;
                p
            }
        };
        self.mix_hash(ciphertext);
        Ok(out)
    }

    fn split(&self) -> ([u8; 32], [u8; 32]) {
        let (k1, k2) = hkdf(&self.ck, &[]);
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        a.copy_from_slice(&k1[..32]);
        b.copy_from_slice(&k2[..32]);
        (a, b)
    }
}

// ---------------------------------------------------------------------------
// Handshake state machine

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Initiator waiting for message 2.
    AwaitMessage2,
    /// Responder waiting for message 1.
    AwaitMessage1,
    /// Responder waiting for message 3.
    AwaitMessage3,
    Finished,
    Failed,
}

/// The handshake state machine for one side of a connection.
pub struct Handshake {
    is_initiator: bool,
    generation: Generation,
    /// An initiator with [`Wire::Auto`]: the kappa-core 7 state run beside this
    /// (kappa-core 6) one until message 2 decides.
    alt: Option<Box<Handshake>>,
    step: Step,
    sym: SymmetricState,
    s: KeyPair,
    e: KeyPair,
    re: [u8; 32],
    rs: [u8; 32],
    local_nonce: [u8; NONCE_LEN],
    remote_nonce: [u8; NONCE_LEN],
    outgoing: Vec<u8>,
    incoming: Vec<u8>,
    leftover: Vec<u8>,
    result: Option<HandshakeResult>,
    error: Option<HandshakeError>,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("is_initiator", &self.is_initiator)
            .field("generation", &self.generation())
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

impl Handshake {
    fn new(
        generation: Generation,
        is_initiator: bool,
        s: KeyPair,
        e: KeyPair,
        nonce: [u8; NONCE_LEN],
    ) -> Self {
        Handshake {
            is_initiator,
            generation,
            alt: None,
            step: if is_initiator { Step::AwaitMessage2 } else { Step::AwaitMessage1 },
            sym: SymmetricState::new(generation),
            s,
            e,
            re: [0; 32],
            rs: [0; 32],
            local_nonce: nonce,
            remote_nonce: [0; NONCE_LEN],
            outgoing: Vec::new(),
            incoming: Vec::new(),
            leftover: Vec::new(),
            result: None,
            error: None,
        }
    }

    /// A kappa-core 6 initiator with the given static key pair, ephemeral key
    /// pair and transport nonce. Message 1 is ready in
    /// [`take_outgoing`](Self::take_outgoing) immediately.
    pub fn new_initiator(static_keypair: KeyPair, ephemeral: KeyPair, nonce: [u8; NONCE_LEN]) -> Self {
        Self::new_initiator_for(Wire::Only(Generation::KappaCore6), static_keypair, ephemeral, nonce)
    }

    /// An initiator for `wire`: with [`Wire::Auto`] both generations' states run
    /// on the same keys and nonce until message 2 shows which one the peer speaks.
    pub fn new_initiator_for(
        wire: Wire,
        static_keypair: KeyPair,
        ephemeral: KeyPair,
        nonce: [u8; NONCE_LEN],
    ) -> Self {
        let start = |generation| {
            let mut hs = Self::new(generation, true, static_keypair.clone(), ephemeral.clone(), nonce);
            // -> e, payload
            let mut msg = hs.e.public.to_vec();
            hs.sym.mix_hash(&hs.e.public);
            let payload = hs.payload();
            msg.extend(hs.sym.encrypt_and_hash(&payload));
            hs.push_message(&msg);
            hs
        };
        match wire {
            Wire::Only(g) => start(g),
            Wire::Auto => {
                let mut hs = start(Generation::KappaCore6);
                let mut alt = start(Generation::KappaCore7);
                // Message 1 carries no ciphertext yet: the same bytes in both.
                debug_assert_eq!(alt.outgoing, hs.outgoing);
                alt.outgoing.clear();
                hs.alt = Some(Box::new(alt));
                hs
            }
        }
    }

    /// A kappa-core 6 responder with the given static key pair, ephemeral key
    /// pair and transport nonce. It sends nothing until message 1 arrives.
    pub fn new_responder(static_keypair: KeyPair, ephemeral: KeyPair, nonce: [u8; NONCE_LEN]) -> Self {
        Self::new_responder_for(Generation::KappaCore6, static_keypair, ephemeral, nonce)
    }

    /// A responder that answers in `generation`.
    pub fn new_responder_for(
        generation: Generation,
        static_keypair: KeyPair,
        ephemeral: KeyPair,
        nonce: [u8; NONCE_LEN],
    ) -> Self {
        Self::new(generation, false, static_keypair, ephemeral, nonce)
    }

    /// A kappa-core 6 initiator with a random ephemeral key and nonce.
    pub fn initiator(static_keypair: KeyPair) -> Self {
        Self::new_initiator(static_keypair, KeyPair::generate(), random_nonce())
    }

    /// A kappa-core 6 responder with a random ephemeral key and nonce.
    pub fn responder(static_keypair: KeyPair) -> Self {
        Self::new_responder(static_keypair, KeyPair::generate(), random_nonce())
    }

    /// An initiator for `wire` with a random ephemeral key and nonce.
    pub fn initiator_for(wire: Wire, static_keypair: KeyPair) -> Self {
        Self::new_initiator_for(wire, static_keypair, KeyPair::generate(), random_nonce())
    }

    /// A responder in `generation` with a random ephemeral key and nonce.
    pub fn responder_for(generation: Generation, static_keypair: KeyPair) -> Self {
        Self::new_responder_for(generation, static_keypair, KeyPair::generate(), random_nonce())
    }

    /// Whether this side is the initiator.
    pub fn is_initiator(&self) -> bool {
        self.is_initiator
    }

    /// The generation this handshake speaks; `None` while an initiator with
    /// [`Wire::Auto`] has not yet seen message 2.
    pub fn generation(&self) -> Option<Generation> {
        if self.alt.is_some() {
            None
        } else {
            Some(self.generation)
        }
    }

    /// Whether message 1 has been answered by us (a responder waiting for
    /// message 3): a peer that hangs up now may speak the other generation.
    pub fn answered(&self) -> bool {
        !self.is_initiator && self.step == Step::AwaitMessage3
    }

    /// Our static public key.
    pub fn local_static_key(&self) -> &[u8; 32] {
        &self.s.public
    }

    /// Bytes to send to the peer (framed handshake messages); drains them.
    pub fn take_outgoing(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.outgoing)
    }

    /// Whether the handshake has completed.
    pub fn is_finished(&self) -> bool {
        self.step == Step::Finished
    }

    /// The result, once finished.
    pub fn result(&self) -> Option<&HandshakeResult> {
        self.result.as_ref()
    }

    /// Bytes received after the last handshake message (transport data, still
    /// encrypted); drains them.
    pub fn take_leftover(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.leftover)
    }

    /// Feeds received bytes, in any chunking.
    ///
    /// Bytes that arrive after the handshake finished are kept as leftover
    /// transport data. After an error every call fails with
    /// [`HandshakeError::Failed`].
    pub fn receive(&mut self, data: &[u8]) -> Result<(), HandshakeError> {
        let Some(mut alt) = self.alt.take() else { return self.receive_one(data) };
        let main = self.receive_one(data);
        let other = alt.receive_one(data);
        match (main, other) {
            // Message 2 is not whole yet in either.
            (Ok(()), Ok(())) if !self.is_finished() && !alt.is_finished() => {
                self.alt = Some(alt);
                Ok(())
            }
            (Ok(()), _) => Ok(()),
            (Err(_), Ok(())) => {
                *self = *alt;
                Ok(())
            }
            (Err(kc6), Err(kc7)) => {
                let err = HandshakeError::BothGenerations { kc6: Box::new(kc6), kc7: Box::new(kc7) };
                self.error = Some(err.clone());
                Err(err)
            }
        }
    }

    fn receive_one(&mut self, data: &[u8]) -> Result<(), HandshakeError> {
        if let Some(err) = &self.error {
            return Err(HandshakeError::Failed(Box::new(err.clone())));
        }
        if self.step == Step::Finished {
            self.leftover.extend_from_slice(data);
            return Ok(());
        }
        self.incoming.extend_from_slice(data);
        match self.process() {
            Ok(()) => Ok(()),
            Err(err) => {
                self.step = Step::Failed;
                self.incoming = Vec::new();
                self.error = Some(err.clone());
                Err(err)
            }
        }
    }

    fn process(&mut self) -> Result<(), HandshakeError> {
        while self.step != Step::Finished {
            let (len, n) = match varint::decode(&self.incoming) {
                Ok(v) => v,
                Err(VarintError::Truncated) if self.incoming.len() < varint::MAX_LEN => return Ok(()),
                Err(e) => return Err(HandshakeError::LengthPrefix(e)),
            };
            if len > MAX_HANDSHAKE_MESSAGE_LEN as u64 {
                return Err(HandshakeError::TooLarge(len));
            }
            let len = len as usize;
            if self.incoming.len() - n < len {
                return Ok(());
            }
            let msg: Vec<u8> = self.incoming[n..n + len].to_vec();
            self.incoming.drain(..n + len);
            match self.step {
                Step::AwaitMessage1 => self.read_message1(&msg)?,
                Step::AwaitMessage2 => self.read_message2(&msg)?,
                Step::AwaitMessage3 => self.read_message3(&msg)?,
                Step::Finished | Step::Failed => {}
            }
        }
        self.leftover.append(&mut self.incoming);
        Ok(())
    }

    fn payload(&self) -> Vec<u8> {
        NoisePayload { nonce: self.local_nonce.to_vec() }.encode()
    }

    fn push_message(&mut self, msg: &[u8]) {
        varint::encode(msg.len() as u64, &mut self.outgoing);
        self.outgoing.extend_from_slice(msg);
    }

    fn read_payload(&mut self, plaintext: &[u8]) -> Result<[u8; NONCE_LEN], HandshakeError> {
        if plaintext.is_empty() {
            return Err(HandshakeError::MissingPayload);
        }
        let payload = NoisePayload::decode(plaintext).map_err(|_| HandshakeError::InvalidPayload)?;
        payload.nonce.as_slice().try_into().map_err(|_| HandshakeError::BadNonceLength(payload.nonce.len()))
    }

    fn check_len(message: u8, msg: &[u8], min: usize) -> Result<(), HandshakeError> {
        if msg.len() < min {
            return Err(HandshakeError::TooShort { message, len: msg.len(), min });
        }
        Ok(())
    }

    /// Responder: `-> e`, payload; then writes `<- e, ee, s, es`, payload.
    fn read_message1(&mut self, msg: &[u8]) -> Result<(), HandshakeError> {
        Self::check_len(1, msg, PKLEN)?;
        self.re.copy_from_slice(&msg[..PKLEN]);
        self.sym.mix_hash(&self.re);
        let payload = self.sym.decrypt_and_hash(&msg[PKLEN..])?;
        self.remote_nonce = self.read_payload(&payload)?;

        let mut out = self.e.public.to_vec();
        self.sym.mix_hash(&self.e.public);
        let ee = dh(self.generation, &self.e, &self.re, &self.re, &self.e.public)?;
        self.sym.mix_key(&ee);
        let s_pub = self.s.public;
        out.extend(self.sym.encrypt_and_hash(&s_pub));
        let es = dh(self.generation, &self.s, &self.re, &self.re, &self.s.public)?;
        self.sym.mix_key(&es);
        let payload = self.payload();
        out.extend(self.sym.encrypt_and_hash(&payload));
        self.push_message(&out);
        self.step = Step::AwaitMessage3;
        Ok(())
    }

    /// Initiator: `<- e, ee, s, es`, payload; then writes `-> s, se`, payload.
    fn read_message2(&mut self, msg: &[u8]) -> Result<(), HandshakeError> {
        Self::check_len(2, msg, PKLEN + PKLEN + TAGLEN + TAGLEN)?;
        self.re.copy_from_slice(&msg[..PKLEN]);
        self.sym.mix_hash(&self.re);
        let ee = dh(self.generation, &self.e, &self.re, &self.e.public, &self.re)?;
        self.sym.mix_key(&ee);
        let rs = self.sym.decrypt_and_hash(&msg[PKLEN..2 * PKLEN + TAGLEN])?;
        self.rs.copy_from_slice(&rs);
        let es = dh(self.generation, &self.e, &self.rs, &self.e.public, &self.rs)?;
        self.sym.mix_key(&es);
        let payload = self.sym.decrypt_and_hash(&msg[2 * PKLEN + TAGLEN..])?;
        self.remote_nonce = self.read_payload(&payload)?;

        let s_pub = self.s.public;
        let mut out = self.sym.encrypt_and_hash(&s_pub);
        let se = dh(self.generation, &self.s, &self.re, &self.s.public, &self.re)?;
        self.sym.mix_key(&se);
        let payload = self.payload();
        out.extend(self.sym.encrypt_and_hash(&payload));
        self.push_message(&out);
        self.finish();
        Ok(())
    }

    /// Responder: `-> s, se`, payload.
    fn read_message3(&mut self, msg: &[u8]) -> Result<(), HandshakeError> {
        Self::check_len(3, msg, PKLEN + TAGLEN + TAGLEN)?;
        let rs = self.sym.decrypt_and_hash(&msg[..PKLEN + TAGLEN])?;
        self.rs.copy_from_slice(&rs);
        let se = dh(self.generation, &self.e, &self.rs, &self.rs, &self.e.public)?;
        self.sym.mix_key(&se);
        let payload = self.sym.decrypt_and_hash(&msg[PKLEN + TAGLEN..])?;
        // The initiator repeats its message-1 payload; it must be present.
        self.read_payload(&payload)?;
        self.finish();
        Ok(())
    }

    fn finish(&mut self) {
        let (k1, k2) = self.sym.split();
        let (tx_key, rx_key) = if self.is_initiator { (k1, k2) } else { (k2, k1) };
        self.result = Some(HandshakeResult {
            is_initiator: self.is_initiator,
            tx_key,
            rx_key,
            local_nonce: self.local_nonce,
            remote_nonce: self.remote_nonce,
            remote_static_key: self.rs,
            generation: self.generation,
        });
        self.step = Step::Finished;
    }
}
