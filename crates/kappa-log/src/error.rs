use kappa_storage::StorageError;

/// A key or signature could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Wrong number of bytes.
    #[error("{what} must be {expected} bytes, got {got}")]
    Length {
        /// What was parsed.
        what: &'static str,
        /// Bytes expected.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
    /// Not valid hex.
    #[error("not a hex key: {0:?}")]
    Hex(String),
    /// The public half of a secret key does not belong to its seed.
    #[error("secret key does not match its public key")]
    Mismatch,
}

/// Why a block received from a peer was rejected. Nothing of a rejected block is
/// stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// A hash computed from the data and proof differs from one we already trust.
    #[error("checksum mismatch at tree node {node}")]
    ChecksumMismatch {
        /// The node whose hash differed.
        node: u64,
    },
    /// The proof does not reach the signed roots: a node needed is neither in the
    /// proof nor stored locally.
    #[error("proof is missing tree node {node}")]
    MissingNode {
        /// The node that was needed.
        node: u64,
    },
    /// The proof needs a signature and has none.
    #[error("proof has no signature")]
    MissingSignature,
    /// The signature does not verify against the roots.
    #[error("signature does not verify")]
    BadSignature,
    /// A node index, block index or size is out of the range a feed can have.
    #[error("out of range: {0}")]
    OutOfRange(&'static str),
}

/// A stored feed is not in a state we can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt {file} file: {reason}")]
pub struct CorruptError {
    /// Which of the six files.
    pub file: &'static str,
    /// What is wrong.
    pub reason: String,
}

/// Everything a [`Feed`](crate::Feed) operation can fail with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogError {
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The feed's files hold bytes we cannot accept.
    #[error(transparent)]
    Corrupt(#[from] CorruptError),
    /// A key was malformed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A block from a peer failed verification (peer misbehaviour).
    #[error("rejected block {index}: {source}")]
    Proof {
        /// The block index.
        index: u64,
        /// Why.
        #[source]
        source: ProofError,
    },
    /// Appending to a feed we have no secret key for.
    #[error("feed is not writable (opened from a public key only)")]
    NotWritable,
    /// The stored key differs from the one the feed was opened with.
    #[error("feed key mismatch: storage holds {stored}, asked for {given}")]
    KeyMismatch {
        /// Key found in storage.
        stored: String,
        /// Key given by the caller.
        given: String,
    },
    /// No feed exists in this storage, and creating one was not allowed.
    #[error("no feed in this storage")]
    NotFound,
    /// A block that is not stored locally.
    #[error("block {index} is not available (length {length})")]
    BlockNotAvailable {
        /// The block index.
        index: u64,
        /// The feed length.
        length: u64,
    },
    /// An earlier write failed half way; the in-memory state can no longer be
    /// trusted. Reopen the feed (recovery brings it back to the last complete,
    /// signed state).
    #[error("feed storage failed earlier; reopen the feed to recover")]
    Poisoned,
    /// A value could not be encoded or decoded.
    #[error("value encoding: {0}")]
    Encoding(String),
    /// A block larger than one wire frame can carry ([`crate::MAX_BLOCK_SIZE`]).
    #[error("a block of {size} bytes is larger than the {max} bytes a peer can receive in one frame")]
    BlockTooLarge {
        /// The block's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// This writer signed more entries than its files can still prove; an append
    /// would sign a sequence number a second time (a fork that peers holding the
    /// lost entries refuse forever).
    #[error(
        "feed signed {signed} entries but its files prove only {length}: appending would fork it; \
         restore it from a peer that holds it, or accept the loss explicitly"
    )]
    WouldFork {
        /// The highest length the files say was signed.
        signed: u64,
        /// The length they prove.
        length: u64,
    },
    /// This writer's `secret_key` is missing or damaged: it opened read-only.
    #[error("feed cannot sign: {0}")]
    SecretKey(#[source] CorruptError),
    /// Too many or too large entries for one append.
    #[error("append too large: {0}")]
    TooLarge(&'static str),
}
