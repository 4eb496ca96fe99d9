//! [`Feed`]: one hypercore-8 log on any storage.

use std::ops::Range;
use std::sync::Arc;

use kappa_storage::{BoxedStorage, DirectoryProvider, LockGuard, MemoryProvider, Provider, RandomAccess};

use crate::bitfield::{Bitfield, PAGE_SIZE};
use crate::cache::{BlockCache, NodeCache};
use crate::crypto::{KeyPair, PublicKey, Signature, SignatureForm, SignatureMemo};
use crate::error::{CorruptError, LogError};
use crate::files::{Files, HeaderKind, HEADER_LEN, HEAD_FILE};
use crate::flat;
use crate::node::Node;
use crate::offsets::{Offsets, CHUNK};
use crate::recover::{
    choose_key, read_head, read_secret, restore_key_file, secret_problem, would_fork, Recovery, Secret,
};

/// When a feed flushes its writes to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SyncPolicy {
    /// Never sync explicitly; the operating system writes back when it likes. A
    /// power loss can lose recent appends, but recovery on open still yields a
    /// verifiable prefix. The default, as in hypercore.
    #[default]
    None,
    /// Sync data, tree and signatures, then the bitfield, before an append (or a
    /// stored download) returns: once `append` returns `Ok`, the entries survive a
    /// power loss.
    PerBatch,
}

/// The most entries one append call may add, and the most bytes, bounding the
/// memory one call uses.
const MAX_BATCH_ENTRIES: usize = 1 << 24;

/// The largest block a feed accepts: a block travels in one wire frame with its
/// proof (at most 8 MiB in hypercore-protocol 7 and 8), so it must leave room for
/// the nodes and the signature. hypercore 9 refuses blocks over 8 MiB; a larger
/// one would be stored and then never replicate.
pub const MAX_BLOCK_SIZE: usize = 8 * 1024 * 1024 - 8 * 1024;

mod append;
pub(crate) use append::{BatchSource, Prepared, Tip};
mod clear;
mod open;
mod pending;
mod read;
mod replica;
mod sync;
mod verify;

pub use clear::Cleared;
pub use open::FeedBuilder;
use pending::Pending;
use sync::sync_both;

/// One signed append-only log, stored in hypercore 8's six files.
///
/// A feed is writable when it holds the secret key; otherwise it is a replica that
/// stores blocks received with proofs ([`Feed::put`]), possibly sparsely.
///
/// ```
/// use kappa_log::Feed;
/// let mut feed = Feed::in_memory()?;
/// feed.append(b"hello")?;
/// feed.append_batch(["big", "world"])?;
/// assert_eq!(feed.len(), 3);
/// assert_eq!(feed.get(2)?.as_deref(), Some(&b"world"[..]));
/// feed.verify()?;
/// # Ok::<(), kappa_log::LogError>(())
/// ```
pub struct Feed {
    pub(crate) files: Files,
    pub(crate) key: PublicKey,
    pub(crate) key_pair: Option<KeyPair>,
    pub(crate) length: u64,
    pub(crate) byte_length: u64,
    pub(crate) roots: Vec<Node>,
    pub(crate) bitfield: Bitfield,
    /// Byte offsets of blocks of the fully present prefix: a bounded cache
    /// filled lazily from the tree's leaf sizes, extended by appends.
    pub(crate) offsets: Offsets,
    /// Blocks `0 .. contiguous` are all present.
    pub(crate) contiguous: u64,
    pub(crate) sync: SyncPolicy,
    pub(crate) poisoned: bool,
    /// Direct-mapped cache of tree nodes (nodes never change once written).
    pub(crate) node_cache: NodeCache,
    /// Bitfield pages changed by deferred puts and not yet written.
    pub(crate) bitfield_pending: bool,
    /// Data, nodes and signatures of deferred puts, written (coalesced) by
    /// `flush_deferred` before the bitfield. Reads look here first.
    pub(crate) pending: Pending,
    /// Verified blocks read recently.
    pub(crate) blocks: BlockCache,
    /// A read-ahead window of the data file: (offset, bytes).
    pub(crate) read_cache: Option<(u64, Vec<u8>)>,
    /// Where the previous small read ended (to detect sequential reading).
    pub(crate) last_read_end: u64,
    /// What open found and repaired.
    pub(crate) recovery: Recovery,
    /// The head record slot the next write goes to.
    pub(crate) head_slot: u64,
    /// The head record of an append under [`SyncPolicy::None`] not written
    /// yet: the signature and the length it signs (written by
    /// `flush_deferred` if the feed is still at that length).
    pub(crate) head_pending: Option<(Signature, u64)>,
    /// Entries appended under [`SyncPolicy::None`] since the bitfield bytes
    /// and the head record were last written.
    pub(crate) appends_unflushed: u64,
    /// The form appends are signed in.
    pub(crate) sign_form: SignatureForm,
    /// The last signature verified (not verified again).
    pub(crate) sig_memo: SignatureMemo,
    _lock: LockGuard,
}

/// Pending deferred writes above this many bytes are flushed at once.
const MAX_PENDING: usize = 1 << 20;

/// Under [`SyncPolicy::None`], the bitfield bytes and the head record of
/// appends are written once this many entries have been appended since they
/// last were (and by every flush, sync and close), not after each append:
/// both are rebuilt or superseded on open when they lag (docs/semantics.md),
/// and they were two of the five writes of a single append. A batch of this
/// many entries or more writes them at once, as before.
const ENTRIES_PER_BITFIELD_WRITE: u64 = 64;
/// Size of the read-ahead window for small blocks.
const READ_AHEAD: u64 = 64 * 1024;

/// The default size of a feed's block cache ([`FeedBuilder::block_cache`]).
pub const DEFAULT_BLOCK_CACHE: usize = 8 * 1024 * 1024;

/// Nodes read together when one is not cached (5 KiB of the tree file).
const NODE_WINDOW: u64 = 1 << 7;

impl Drop for Feed {
    fn drop(&mut self) {
        // Deferred puts not flushed yet: write them now (best effort; a failure
        // leaves the previous, consistent state on disk).
        if !self.poisoned && (self.bitfield_pending || self.pending.bytes > 0 || self.head_pending.is_some())
        {
            let _ = self.flush_deferred();
        }
    }
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("key", &self.key)
            .field("writable", &self.is_writable())
            .field("length", &self.length)
            .field("byte_length", &self.byte_length)
            .finish_non_exhaustive()
    }
}

impl Feed {
    // ----- accessors ---------------------------------------------------------

    /// The feed's public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.key
    }

    /// The discovery key (what the network sees instead of the public key).
    pub fn discovery_key(&self) -> [u8; 32] {
        self.key.discovery_key()
    }

    /// The key pair, if this feed is writable.
    pub fn key_pair(&self) -> Option<&KeyPair> {
        self.key_pair.as_ref()
    }

    /// Whether this feed holds its secret key.
    pub fn is_writable(&self) -> bool {
        self.key_pair.is_some()
    }

    /// Number of blocks (the highest signed length we know; a sparse replica may
    /// not hold all of them).
    pub fn len(&self) -> u64 {
        self.length
    }

    /// Whether the feed has no blocks.
    pub fn is_empty(&self) -> bool {
        self.length == 0
    }

    /// Total bytes of all blocks up to [`len`](Self::len).
    pub fn byte_len(&self) -> u64 {
        self.byte_length
    }

    /// The current roots (the merkle state that the newest signature covers).
    pub fn roots(&self) -> &[Node] {
        &self.roots
    }

    /// The sync policy.
    pub fn sync_policy(&self) -> SyncPolicy {
        self.sync
    }

    /// Whether block `index` is stored locally.
    pub fn has(&self, index: u64) -> bool {
        index < flat::MAX_NODE / 2 && self.bitfield.has_block(index)
    }

    /// Number of blocks stored locally in `range`.
    pub fn downloaded(&self, range: Range<u64>) -> u64 {
        let end = range.end.min(self.length.max(self.bitfield.data_bits()));
        self.bitfield.count_blocks(range.start, end)
    }

    /// Whether every block `0 .. len()` is stored locally.
    pub fn is_complete(&self) -> bool {
        self.contiguous >= self.length
    }

    /// The data bitfield byte `b` (blocks `8b .. 8b + 8`, most significant bit
    /// first), as sent in a Have message.
    pub fn bitfield_byte(&self, b: u64) -> u8 {
        self.bitfield.data_byte(b)
    }

    /// The bitfield, read-only.
    pub fn bitfield(&self) -> &Bitfield {
        &self.bitfield
    }

    /// Whether tree node `index` is stored.
    pub fn has_node(&self, index: u64) -> bool {
        index < flat::MAX_NODE && self.bitfield.has_node(index)
    }

    // ----- writing -----------------------------------------------------------

    fn check_poisoned(&self) -> Result<(), LogError> {
        if self.poisoned {
            Err(LogError::Poisoned)
        } else {
            Ok(())
        }
    }

    /// Runs a write step; any failure poisons the feed (the in-memory state may
    /// now differ from storage).
    pub(crate) fn guarded<T>(
        &mut self,
        f: impl FnOnce(&mut Feed) -> Result<T, LogError>,
    ) -> Result<T, LogError> {
        self.check_poisoned()?;
        let r = f(self);
        if matches!(r, Err(LogError::Storage(_))) {
            self.poisoned = true;
        }
        r
    }
}
