//! [`Feed`]: one hypercore-8 log on any storage.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use kappa_storage::{BoxedStorage, DirectoryProvider, LockGuard, MemoryProvider, Provider, RandomAccess};

use crate::bitfield::{Bitfield, PAGE_SIZE};
use crate::cache::{BlockCache, NodeCache};
use crate::crypto::{KeyPair, PublicKey, Signature, SignatureForm};
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

/// How to open a [`Feed`]; see [`Feed::builder`].
#[must_use = "a builder does nothing until `open` is called"]
pub struct FeedBuilder {
    provider: Arc<dyn Provider>,
    key_pair: Option<KeyPair>,
    public_key: Option<PublicKey>,
    create: bool,
    sync: SyncPolicy,
    store_secret_key: bool,
    repair_headers: bool,
    block_cache: usize,
    signature_form: SignatureForm,
    bitfield_lock: bool,
}

impl std::fmt::Debug for FeedBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedBuilder")
            .field("public_key", &self.public_key)
            .field("create", &self.create)
            .field("sync", &self.sync)
            .finish_non_exhaustive()
    }
}

impl FeedBuilder {
    /// Open as a writer with this key pair (creating the feed if needed).
    pub fn key_pair(mut self, key_pair: KeyPair) -> Self {
        self.key_pair = Some(key_pair);
        self
    }

    /// Open the feed of this public key, read-only unless the storage holds its
    /// secret key (creating an empty replica if needed).
    pub fn public_key(mut self, key: PublicKey) -> Self {
        self.public_key = Some(key);
        self
    }

    /// Whether a feed may be created when the storage holds none (default `true`).
    /// With `false`, opening empty storage fails with [`LogError::NotFound`].
    pub fn create(mut self, create: bool) -> Self {
        self.create = create;
        self
    }

    /// The sync policy (default [`SyncPolicy::None`]).
    pub fn sync(mut self, sync: SyncPolicy) -> Self {
        self.sync = sync;
        self
    }

    /// Whether to write the `secret_key` file for a new writer (default `true`).
    pub fn store_secret_key(mut self, store: bool) -> Self {
        self.store_secret_key = store;
        self
    }

    /// Whether a damaged header of `tree`, `signatures` or `bitfield` is
    /// rewritten (default `false`: it is an error, since a foreign file is
    /// better reported than overwritten). The headers are constants, so an
    /// explicit repair may rewrite them without losing anything.
    pub fn repair_headers(mut self, repair: bool) -> Self {
        self.repair_headers = repair;
        self
    }

    /// How many bytes of recently read blocks to keep in memory, verified
    /// (default [`DEFAULT_BLOCK_CACHE`]; 0 turns the cache off). Blocks up to
    /// 64 KiB are cached; a cached block is served without a system call.
    pub fn block_cache(mut self, bytes: usize) -> Self {
        self.block_cache = bytes;
        self
    }

    /// The form this writer signs its appends in (default
    /// [`SignatureForm::TreeHash`], which hypercore 8 and 9 both verify;
    /// [`SignatureForm::TreeHashAndLength`] is what hypercore 9 writes, and only
    /// hypercore 9 peers can verify it). Verification accepts both forms always.
    pub fn signature_form(mut self, form: SignatureForm) -> Self {
        self.signature_form = form;
        self
    }

    /// Whether to take the exclusive `flock` on the `bitfield` file (default
    /// `true`): the lock JS hypercore 8 takes when it opens a feed directory,
    /// so a JS process and this one exclude each other on one feed. The lock
    /// holds a descriptor of its own for as long as the feed is open (outside
    /// the storage's file pool, since closing it would drop the lock). A set
    /// of feeds under a lock of its own turns it off (kappa-multifeed's
    /// `LOCK`: JS multifeed locks no file of its feeds), so that a set of
    /// 10,000 feeds does not need 10,000 descriptors.
    pub fn bitfield_lock(mut self, lock: bool) -> Self {
        self.bitfield_lock = lock;
        self
    }

    /// Opens (or creates) the feed.
    pub fn open(self) -> Result<Feed, LogError> {
        Feed::open_with(self)
    }
}

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
    _lock: LockGuard,
}

#[derive(Default)]
pub(crate) struct Pending {
    pub(crate) data: BTreeMap<u64, Vec<u8>>,
    pub(crate) nodes: BTreeMap<u64, Node>,
    pub(crate) signatures: Vec<(u64, Signature)>,
    pub(crate) bytes: usize,
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

/// The tree writes of an append: its new nodes as runs of adjacent nodes, one
/// write each. From `fresh` on (the nodes of the new blocks) a run goes on
/// over the places of nodes not complete yet, as zeros, which is what the file
/// holds there anyway.
fn node_runs(mut nodes: Vec<Node>, fresh: u64) -> Vec<(u64, Vec<u8>)> {
    nodes.sort_unstable_by_key(|n| n.index);
    nodes.dedup_by_key(|n| n.index);
    let mut runs: Vec<(u64, Vec<u8>)> = Vec::new();
    for n in nodes {
        match runs.last_mut() {
            Some((first, bytes)) if *first + (bytes.len() / 40) as u64 == n.index => {
                bytes.extend_from_slice(&n.encode())
            }
            Some((first, bytes)) if *first + (bytes.len() / 40) as u64 >= fresh => {
                bytes.resize(((n.index - *first) * 40) as usize, 0);
                bytes.extend_from_slice(&n.encode())
            }
            _ => runs.push((n.index, n.encode().to_vec())),
        }
    }
    runs
}

/// Syncs two files at once: two `fdatasync`s in flight share the disk's
/// flush rather than waiting one after the other.
fn sync_both(a: &mut BoxedStorage, b: &mut BoxedStorage) -> Result<(), LogError> {
    if !a.needs_sync() || !b.needs_sync() {
        a.sync()?;
        return Ok(b.sync()?);
    }
    let (ra, rb) = std::thread::scope(|s| {
        let other = s.spawn(|| b.sync());
        let ra = a.sync();
        (ra, other.join())
    });
    ra?;
    match rb {
        Ok(r) => Ok(r?),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// The state an append builds on.
struct Tip {
    length: u64,
    byte_length: u64,
    roots: Vec<Node>,
}

/// One batch hashed and signed, not yet written.
struct Prepared {
    start: u64,
    new_length: u64,
    byte_length: u64,
    new_byte_length: u64,
    data: Vec<u8>,
    sizes: Vec<u64>,
    nodes: Vec<Node>,
    roots: Vec<Node>,
    signature: Signature,
}

impl Prepared {
    fn count(&self) -> u64 {
        self.new_length - self.start
    }

    fn range(&self) -> Range<u64> {
        self.start..self.new_length
    }
}

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
    /// Starts opening a feed stored in `provider`.
    pub fn builder(provider: impl Provider + 'static) -> FeedBuilder {
        FeedBuilder {
            provider: Arc::new(provider),
            key_pair: None,
            public_key: None,
            create: true,
            sync: SyncPolicy::None,
            store_secret_key: true,
            repair_headers: false,
            block_cache: DEFAULT_BLOCK_CACHE,
            signature_form: SignatureForm::TreeHash,
            bitfield_lock: true,
        }
    }

    /// A new writable feed with a random key pair, in memory.
    pub fn in_memory() -> Result<Feed, LogError> {
        Feed::builder(MemoryProvider::new()).open()
    }

    /// Opens the feed stored in directory `dir`, creating a new writable one (random
    /// key pair) if the directory holds none.
    pub fn open_dir(dir: impl AsRef<std::path::Path>) -> Result<Feed, LogError> {
        Feed::builder(DirectoryProvider::new(dir.as_ref())).open()
    }

    fn open_with(b: FeedBuilder) -> Result<Feed, LogError> {
        let lock = if b.bitfield_lock { b.provider.lock("bitfield")? } else { LockGuard::none() };
        let mut files = Files::open(&*b.provider)?;
        let mut recovery = Recovery::default();

        let (head, head_damaged) = read_head(&mut files)?;
        let head_record = head.as_ref().map(|(h, _)| h);
        let holds_blocks = files.bitfield.len()? > HEADER_LEN
            || files.tree.len()? > HEADER_LEN
            || files.signatures.len()? > HEADER_LEN
            || files.data.len()? > 0
            || head_record.is_some();
        let key_len = files.key.len()?;
        let key_file = match key_len {
            32 => Some(PublicKey::try_from_slice(&files.key.read(0, 32)?)?),
            _ => None,
        };
        let secret = read_secret(&mut files)?;

        let given_key = b.key_pair.as_ref().map(KeyPair::public_key).or(b.public_key);
        if let (Some(kp), Some(pk)) = (&b.key_pair, b.public_key) {
            if kp.public_key() != pk {
                return Err(LogError::KeyMismatch { stored: pk.to_hex(), given: kp.public_key().to_hex() });
            }
        }

        let secret_public_half = match files.secret_key.len()? {
            64 => PublicKey::try_from_slice(&files.secret_key.read(32, 32)?).ok(),
            _ => None,
        };
        let chosen =
            choose_key(key_file, head_record, &secret, secret_public_half).map_err(|()| CorruptError {
                file: "key",
                reason: "key, secret_key and kappa-head name different keys; the files are kept as they are"
                    .into(),
            })?;
        let (key, key_pair) = match chosen {
            Some(stored) if holds_blocks || key_file.is_some() || matches!(secret, Secret::Valid(_)) => {
                if let Some(given) = given_key {
                    if given != stored {
                        return Err(LogError::KeyMismatch { stored: stored.to_hex(), given: given.to_hex() });
                    }
                }
                if restore_key_file(&mut files, &stored)? {
                    recovery.repaired.push(if key_len == 0 {
                        "missing key file rebuilt".to_owned()
                    } else {
                        format!("damaged key file ({key_len} bytes) rebuilt")
                    });
                }
                let from_file = match secret {
                    Secret::Valid(kp) if kp.public_key() == stored => Ok(Some(kp)),
                    Secret::SeedOnly(kp) if kp.public_key() == stored => {
                        // The seed is intact; the public half was damaged.
                        files.secret_key.write(0, &kp.secret_key_bytes())?;
                        files.secret_key.sync()?;
                        recovery.repaired.push("damaged public half of secret_key rebuilt".into());
                        Ok(Some(kp))
                    }
                    Secret::Valid(_) => Err(secret_problem("belongs to a different public key")),
                    Secret::SeedOnly(_) => {
                        Err(secret_problem("damaged: its seed does not give this feed's key"))
                    }
                    Secret::Unusable(reason) => Err(secret_problem(reason)),
                    Secret::Missing if head_record.is_some_and(|h| h.writer) => {
                        Err(secret_problem("missing (this feed was written here)"))
                    }
                    Secret::Missing => Ok(None),
                };
                let kp = match (from_file, b.key_pair) {
                    (Ok(Some(kp)), _) => Some(kp),
                    (_, Some(kp)) => {
                        if b.store_secret_key {
                            files.secret_key.truncate(0)?;
                            files.secret_key.write(0, &kp.secret_key_bytes())?;
                        }
                        Some(kp)
                    }
                    (Ok(None), None) => None,
                    (Err(problem), None) => {
                        recovery.secret_key = Some(problem);
                        None
                    }
                };
                (stored, kp)
            }
            _ if holds_blocks || key_len == 32 => {
                // Entries without a key to tell whose they are: keep everything,
                // refuse to guess.
                return Err(CorruptError {
                    file: "key",
                    reason: format!(
                        "{} and neither secret_key nor {HEAD_FILE} can rebuild it; the feed's other files are kept as they are",
                        if key_len == 0 { "missing".to_owned() } else { format!("{key_len} bytes, expected 32") }
                    ),
                }
                .into());
            }
            _ => {
                if !b.create {
                    return Err(LogError::NotFound);
                }
                // Nothing but the leftovers of a creation cut short (no entries):
                // start over.
                files.reset()?;
                let kp = match (b.key_pair, b.public_key) {
                    (Some(kp), _) => Some(kp),
                    (None, Some(_)) => None,
                    (None, None) => Some(KeyPair::generate()),
                };
                let key = match (&kp, b.public_key) {
                    (Some(kp), _) => kp.public_key(),
                    (None, Some(pk)) => pk,
                    (None, None) => unreachable!("a key pair was generated above"),
                };
                // Secret key first: the key file is what marks the feed as created.
                if files.secret_key.len()? > 0 {
                    files.secret_key.truncate(0)?;
                }
                if let Some(kp) = &kp {
                    if b.store_secret_key {
                        files.secret_key.write(0, &kp.secret_key_bytes())?;
                    }
                }
                files.key.truncate(0)?;
                files.key.write(0, key.as_bytes())?;
                (key, kp)
            }
        };

        for kind in [HeaderKind::Bitfield, HeaderKind::Signatures, HeaderKind::Tree] {
            if files.ensure_header(kind, b.repair_headers)? && holds_blocks {
                recovery.repaired.push(format!("{} header rewritten", kind.file()));
            }
        }

        let body_len = files.bitfield.len()?.saturating_sub(HEADER_LEN);
        let body_len = usize::try_from(body_len)
            .map_err(|_| CorruptError { file: "bitfield", reason: "too large".into() })?;
        let body = files.bitfield.read(HEADER_LEN, body_len)?;
        let bitfield = Bitfield::from_bytes(&body);

        let mut feed = Feed {
            files,
            key,
            key_pair,
            length: 0,
            byte_length: 0,
            roots: Vec::new(),
            bitfield,
            offsets: Offsets::new(),
            contiguous: 0,
            sync: b.sync,
            poisoned: false,
            // Allocated at the first node read, growing with the feed: a feed
            // opened only to list it costs no cache.
            node_cache: NodeCache::new(),
            bitfield_pending: false,
            pending: Pending::default(),
            read_cache: None,
            blocks: BlockCache::new(b.block_cache),
            last_read_end: u64::MAX,
            recovery,
            // The next record goes beside the newest one, so a torn write keeps it.
            head_slot: head.as_ref().map_or(0, |(_, slot)| slot ^ 1),
            head_pending: None,
            appends_unflushed: 0,
            sign_form: b.signature_form,
            _lock: lock,
        };
        feed.recover(head.map(|(h, _)| h), head_damaged)?;
        Ok(feed)
    }

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

    /// Tree node `index`, if stored.
    pub fn node(&mut self, index: u64) -> Result<Option<Node>, LogError> {
        if !self.has_node(index) {
            return Ok(None);
        }
        if let Some(n) = self.pending.nodes.get(&index) {
            return Ok(Some(*n));
        }
        if let Some(n) = self.node_cache.get(index) {
            return Ok(Some(n));
        }
        if let Some(n) = self.read_node_window(index)? {
            return Ok(Some(n));
        }
        let mut buf = [0u8; 40];
        self.files.tree.read_into(HEADER_LEN + 40 * index, &mut buf).map_err(|e| match e {
            kappa_storage::StorageError::OutOfBounds { .. } => LogError::Corrupt(CorruptError {
                file: "tree",
                reason: format!("node {index} is marked present but lies past the end"),
            }),
            e => e.into(),
        })?;
        let node = Node::decode(index, &buf);
        match node {
            Some(n) => self.cache_node(n),
            // The bitfield claims a node the tree file does not hold (damage):
            // it is missing.
            None => {
                self.bitfield.clear_node(index);
            }
        }
        Ok(node)
    }

    /// Reads the nodes of the aligned window of [`NODE_WINDOW`] around
    /// `index` in one read, as far as the last node there the bitfield marks
    /// present, and caches those present (a sequential reader, such as an
    /// indexer or `kappa log`, then reads the tree once per window, not once
    /// per block). `None` when there is nothing around `index` to read with it,
    /// or the read fails: the caller reads the one node (and reports what is
    /// wrong with it).
    fn read_node_window(&mut self, index: u64) -> Result<Option<Node>, LogError> {
        let start = index & !(NODE_WINDOW - 1);
        let Some(last) = (start..start + NODE_WINDOW).rev().find(|&i| self.has_node(i)) else {
            return Ok(None);
        };
        if last <= index {
            return Ok(None);
        }
        let mut buf = vec![0u8; 40 * (last - start + 1) as usize];
        if self.files.tree.read_into(HEADER_LEN + 40 * start, &mut buf).is_err() {
            return Ok(None);
        }
        let mut wanted = None;
        for (i, bytes) in (start..=last).zip(buf.chunks_exact(40)) {
            if !self.has_node(i) || self.pending.nodes.contains_key(&i) {
                continue;
            }
            let Ok(bytes) = <&[u8; 40]>::try_from(bytes) else { continue };
            if let Some(n) = Node::decode(i, bytes) {
                if i == index {
                    wanted = Some(n);
                }
                self.cache_node(n);
            }
        }
        // A node the window does not hold as marked is read alone, which
        // says what is wrong with it.
        Ok(wanted)
    }

    pub(crate) fn require_node(&mut self, index: u64) -> Result<Node, LogError> {
        self.node(index)?
            .ok_or_else(|| CorruptError { file: "tree", reason: format!("node {index} is missing") }.into())
    }

    /// The raw signature slot `slot` (`None` if blank or past the end).
    pub fn signature_slot(&mut self, slot: u64) -> Result<Option<Signature>, LogError> {
        if slot >= flat::MAX_NODE {
            return Ok(None);
        }
        if let Some((_, sig)) = self.pending.signatures.iter().rev().find(|(s, _)| *s == slot) {
            return Ok(Some(*sig));
        }
        let offset = HEADER_LEN + 64 * slot;
        if self.files.signatures.len()? < offset + 64 {
            return Ok(None);
        }
        let mut buf = [0u8; 64];
        self.files.signatures.read_into(offset, &mut buf)?;
        let sig = Signature(buf);
        Ok(if sig.is_blank() { None } else { Some(sig) })
    }

    /// The signature of the current state (slot `len() − 1`).
    pub fn signature(&mut self) -> Result<Option<Signature>, LogError> {
        if self.length == 0 {
            return Ok(None);
        }
        self.signature_slot(self.length - 1)
    }

    /// The form of the signature of the current state (slot `len − 1` over the
    /// roots of [`len`](Self::len)): `None` for an empty feed or one whose
    /// newest signature does not verify. A feed whose head is in the 40-byte
    /// form cannot be verified by a hypercore 8 (kappa-core 6) peer.
    pub fn signature_form(&mut self) -> Result<Option<SignatureForm>, LogError> {
        let Some(sig) = self.signature()? else { return Ok(None) };
        Ok(self.key.verify_roots(&self.roots, &sig))
    }

    /// The form this feed signs its appends in ([`FeedBuilder::signature_form`]).
    pub fn signing_form(&self) -> SignatureForm {
        self.sign_form
    }

    // ----- reading -----------------------------------------------------------

    /// Block `index`, or `None` if it is not stored locally (past the end, or a
    /// block a sparse replica has not downloaded).
    ///
    /// Every block read from the data file is checked against its leaf hash: a
    /// block whose bytes were damaged on disk is not returned but becomes a hole
    /// (as if never downloaded; a peer that holds it can restore it).
    pub fn get(&mut self, index: u64) -> Result<Option<Vec<u8>>, LogError> {
        if !self.has(index) {
            return Ok(None);
        }
        if let Some(v) = self.blocks.get(index) {
            return Ok(Some(v.to_vec()));
        }
        let (offset, size) = match self.block_range(index) {
            Ok(r) => r,
            // A node needed to place the block is gone: it cannot be read
            // (a peer's proof brings the node back with the block).
            Err(LogError::Corrupt(_)) => return self.lose_block(index),
            Err(e) => return Err(e),
        };
        if self.pending.data.contains_key(&offset) {
            // Verified when it was put, not yet written: write what is held
            // first, so nothing a reader saw (and, say, indexed into a view that
            // commits at once) is lost if the process dies before the
            // replication burst ends.
            self.flush_deferred()?;
        }
        let read = if size == 0 { Some(Vec::new()) } else { self.read_ahead(offset, size)? };
        let data = match read {
            Some(v) => v,
            None => match self.read_block(index, offset, size)? {
                Some(v) => v,
                // Past the end of the data file: the data or the leaf's size is
                // damaged.
                None => {
                    return match self.node(2 * index)? {
                        Some(leaf) => self.resolve_mismatch(index, leaf, offset),
                        None => self.lose_block(index),
                    }
                }
            },
        };
        match self.node(2 * index)? {
            Some(leaf) if leaf == Node::leaf(index, &data) => {
                self.blocks.insert(index, &data);
                Ok(Some(data))
            }
            Some(leaf) => self.resolve_mismatch(index, leaf, offset),
            None => self.lose_block(index),
        }
    }

    /// A block's data and its leaf node disagree: one of them is damaged. The
    /// parent and sibling decide. A leaf that hashes with its sibling to the
    /// parent is right, so the data is damaged: the block becomes a hole. A leaf
    /// that does not is damaged: rebuilt from the data if the data then fits the
    /// parent, dropped otherwise (a peer's proof restores it with the block).
    fn resolve_mismatch(&mut self, index: u64, leaf: Node, offset: u64) -> Result<Option<Vec<u8>>, LogError> {
        let x = 2 * index;
        let (p, s) = (flat::parent(x), flat::sibling(x));
        let (Some(parent), Some(sibling)) = (self.node(p)?, self.node(s)?) else {
            return self.lose_block(index);
        };
        let pair = |a: Node, b: Node| if x < s { Node::parent_of(&a, &b) } else { Node::parent_of(&b, &a) };
        if pair(leaf, sibling) == Some(parent) {
            return self.lose_block(index);
        }
        if let Some(size) = parent.size.checked_sub(sibling.size) {
            if let Some(data) = self.read_block(index, offset, size)? {
                let rebuilt = Node::leaf(index, &data);
                if pair(rebuilt, sibling) == Some(parent) {
                    self.guarded(|f| Ok(f.files.tree.write(HEADER_LEN + 40 * x, &rebuilt.encode())?))?;
                    self.forget_node(x);
                    self.recovery.repaired.push(format!("damaged leaf node of block {index} rebuilt"));
                    return Ok(Some(data));
                }
            }
        }
        self.guarded(|f| {
            f.bitfield.clear_node(x);
            Ok(())
        })?;
        self.forget_node(x);
        self.lose_block(index)
    }

    /// Puts a node just written into the node cache.
    pub(crate) fn cache_node(&mut self, n: Node) {
        self.node_cache.insert(n);
    }

    /// Drops what is cached from tree node `x` (it was rewritten or dropped).
    pub(crate) fn forget_node(&mut self, x: u64) {
        self.node_cache.remove(x);
        let first_block = flat::left_span(x) / 2;
        self.offsets.truncate_after(first_block);
    }

    /// The bytes of a block from the data file; `None` if they lie past its end.
    fn read_block(&mut self, index: u64, offset: u64, size: u64) -> Result<Option<Vec<u8>>, LogError> {
        // Sizes come from disk: bound large ones by the data file before allocating
        // (small reads past the end fail cleanly in the read itself).
        let data_len = if size > 64 * 1024 { self.files.data.len()? } else { u64::MAX };
        if offset.checked_add(size).is_none_or(|end| end > data_len) {
            return Ok(None);
        }
        let size = usize::try_from(size)
            .map_err(|_| CorruptError { file: "tree", reason: format!("block {index} too large") })?;
        let mut buf = vec![0u8; size];
        match self.files.data.read_into(offset, &mut buf) {
            Ok(()) => Ok(Some(buf)),
            Err(kappa_storage::StorageError::OutOfBounds { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// A stored block turned out damaged or gone: it becomes a hole.
    pub(crate) fn lose_block(&mut self, index: u64) -> Result<Option<Vec<u8>>, LogError> {
        self.blocks.remove(index);
        self.guarded(|f| {
            f.bitfield.set_block(index, false);
            f.flush_bitfield()
        })?;
        self.read_cache = None;
        self.contiguous = self.contiguous.min(index);
        if self.key_pair.is_some() || self.recovery.secret_key.is_some() {
            self.recovery.missing_blocks += 1;
        }
        Ok(None)
    }

    /// Serves small reads of complete feeds from a read-ahead window of the data
    /// file (sequential readers, uploaders); `None` when not applicable.
    fn read_ahead(&mut self, offset: u64, size: u64) -> Result<Option<Vec<u8>>, LogError> {
        if size > 4096 || !self.is_complete() || !self.pending.data.is_empty() {
            return Ok(None);
        }
        let end = offset + size;
        if let Some((start, buf)) = &self.read_cache {
            if offset >= *start && end <= start + buf.len() as u64 {
                let from = (offset - start) as usize;
                return Ok(Some(buf[from..from + size as usize].to_vec()));
            }
        }
        // Only sequential readers gain from a window; random ones would pay
        // 64 KiB per read.
        let sequential = self.last_read_end == offset;
        self.last_read_end = end;
        if !sequential {
            return Ok(None);
        }
        // A complete feed holds all of 0 .. byte_length in the data file.
        let window_end = (offset + READ_AHEAD).min(self.byte_length);
        if window_end < end {
            return Ok(None);
        }
        let buf = match self.files.data.read(offset, (window_end - offset) as usize) {
            Ok(buf) => buf,
            // The data file is shorter than the feed: the block-by-block path
            // tells which blocks are gone.
            Err(kappa_storage::StorageError::OutOfBounds { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let v = buf[..size as usize].to_vec();
        self.read_cache = Some((offset, buf));
        Ok(Some(v))
    }

    /// Block `index`, failing with [`LogError::BlockNotAvailable`] if it is not
    /// stored locally.
    pub fn try_get(&mut self, index: u64) -> Result<Vec<u8>, LogError> {
        self.get(index)?.ok_or(LogError::BlockNotAvailable { index, length: self.length })
    }

    /// Byte offset and size of a stored block.
    pub(crate) fn block_range(&mut self, index: u64) -> Result<(u64, u64), LogError> {
        if !self.offsets.covers(index) && index < self.contiguous {
            self.fill_offsets(index)?;
        }
        if let Some((start, end)) = self.offsets.range(index) {
            let size = end.checked_sub(start).ok_or_else(|| CorruptError {
                file: "tree",
                reason: format!("block {index} ends before it starts"),
            })?;
            return Ok((start, size));
        }
        let offset = self.data_offset(index, &[])?;
        let leaf = self.require_node(2 * index)?;
        Ok((offset, leaf.size))
    }

    /// Caches the offsets of the chunk of blocks around `index` (bounded by
    /// the contiguous prefix), from one read of their leaf sizes in the tree
    /// file.
    fn fill_offsets(&mut self, index: u64) -> Result<(), LogError> {
        // Leaf sizes are read from the tree file: write held-back nodes first.
        if self.pending.bytes > 0 {
            self.flush_deferred()?;
        }
        let k = index / CHUNK;
        let first = k * CHUNK;
        let end = (first + CHUNK).min(self.contiguous);
        if end <= first {
            return Ok(());
        }
        let start = match self.offsets.get(first) {
            Some(o) => o,
            None => match self.data_offset(first, &[]) {
                Ok(o) => o,
                // A node needed is missing or damaged: the slow path says which.
                Err(LogError::Corrupt(_)) => return Ok(()),
                Err(e) => return Err(e),
            },
        };
        // Leaves 2·first .. 2·(end−1), inclusive, with the parents between.
        let count = 2 * (end - first) - 1;
        let bytes = self.files.tree.read(HEADER_LEN + 40 * 2 * first, (40 * count) as usize)?;
        let mut acc = start;
        let mut chunk = Vec::with_capacity((end - first + 1) as usize);
        chunk.push(acc);
        for b in 0..(end - first) as usize {
            let at = 80 * b + 32;
            let mut size = [0u8; 8];
            size.copy_from_slice(&bytes[at..at + 8]);
            acc = acc
                .checked_add(u64::from_be_bytes(size))
                .ok_or_else(|| CorruptError { file: "tree", reason: "block sizes overflow".into() })?;
            chunk.push(acc);
        }
        // The leaf sizes must add up to what the parents above them say; a
        // damaged leaf size would shift every later block. Then the chunk is not
        // cached and its blocks take the slow path, which reads the parents.
        match self.data_offset(end, &[]) {
            Ok(expected) if expected != acc => Ok(()),
            _ => {
                self.offsets.insert(k, chunk);
                Ok(())
            }
        }
    }

    /// The byte offset of block `index`: the total size of `full_roots(2·index)`,
    /// looked up in `extra` first, then in the tree file.
    pub(crate) fn data_offset(&mut self, index: u64, extra: &[Node]) -> Result<u64, LogError> {
        if let Some(o) = self.offsets.get(index) {
            return Ok(o);
        }
        let mut offset = 0u64;
        for r in flat::full_roots(2 * index) {
            let size = match extra.iter().find(|n| n.index == r) {
                Some(n) => n.size,
                None => self.require_node(r)?.size,
            };
            offset = offset
                .checked_add(size)
                .ok_or_else(|| CorruptError { file: "tree", reason: "block sizes overflow".into() })?;
        }
        Ok(offset)
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

    /// Appends one block; returns its index. One signature per call.
    pub fn append(&mut self, value: impl AsRef<[u8]>) -> Result<u64, LogError> {
        Ok(self.append_batch([value])?.start)
    }

    /// Appends blocks as one batch, signed once (the signature lands in the slot of
    /// the last block, as in hypercore). Returns the indices given to them. An empty
    /// batch changes nothing.
    pub fn append_batch<I, V>(&mut self, values: I) -> Result<Range<u64>, LogError>
    where
        I: IntoIterator<Item = V>,
        V: AsRef<[u8]>,
    {
        self.check_poisoned()?;
        let tip = self.tip();
        let prepared = self.prepare(&tip, values)?;
        if prepared.count() == 0 {
            return Ok(tip.length..tip.length);
        }
        let range = prepared.range();
        self.commit(vec![prepared])?;
        Ok(range)
    }

    /// Appends several batches, each signed once as by
    /// [`append_batch`](Self::append_batch), with the writes and syncs of all of
    /// them shared: one write per file (per run of adjacent bytes) and, under
    /// [`SyncPolicy::PerBatch`], one round of syncs for all (group commit, used
    /// by [`SharedFeed`](crate::SharedFeed) for concurrent appenders).
    ///
    /// Returns one result per batch. A batch that cannot be appended (a block too
    /// large, a read-only feed) fails alone; when a write fails, the first batch
    /// of the group gets the error and the others [`LogError::Poisoned`].
    pub fn append_batches<B, V>(
        &mut self,
        batches: impl IntoIterator<Item = B>,
    ) -> Vec<Result<Range<u64>, LogError>>
    where
        B: IntoIterator<Item = V>,
        V: AsRef<[u8]>,
    {
        let mut results: Vec<Result<Range<u64>, LogError>> = Vec::new();
        let mut prepared = Vec::new();
        let mut owners = Vec::new();
        let mut tip = self.tip();
        for values in batches {
            let r = self.check_poisoned().and_then(|()| self.prepare(&tip, values));
            match r {
                Ok(p) if p.count() == 0 => results.push(Ok(tip.length..tip.length)),
                Ok(p) => {
                    results.push(Ok(p.range()));
                    tip =
                        Tip { length: p.new_length, byte_length: p.new_byte_length, roots: p.roots.clone() };
                    owners.push(results.len() - 1);
                    prepared.push(p);
                }
                Err(e) => results.push(Err(e)),
            }
        }
        if prepared.is_empty() {
            return results;
        }
        if let Err(e) = self.commit(prepared) {
            let mut e = Some(e);
            for i in owners {
                results[i] = Err(e.take().unwrap_or(LogError::Poisoned));
            }
        }
        results
    }

    /// The state appends build on.
    fn tip(&self) -> Tip {
        Tip { length: self.length, byte_length: self.byte_length, roots: self.roots.clone() }
    }

    /// Hashes and signs one batch on top of `tip`, writing nothing.
    fn prepare<I, V>(&self, tip: &Tip, values: I) -> Result<Prepared, LogError>
    where
        I: IntoIterator<Item = V>,
        V: AsRef<[u8]>,
    {
        if let Some(e) = would_fork(&self.recovery, tip.length) {
            return Err(e);
        }
        let Some(key_pair) = self.key_pair.as_ref() else { return Err(LogError::NotWritable) };
        let start = tip.length;
        // A writer may have holes (blocks whose data was lost, which a peer can
        // restore): the new roots need only the old roots, not the data.
        let mut data = Vec::new();
        let mut roots = tip.roots.clone();
        let mut sizes = Vec::new();
        let mut nodes: Vec<Node> = Vec::new();
        for (k, v) in values.into_iter().enumerate() {
            if k >= MAX_BATCH_ENTRIES {
                return Err(LogError::TooLarge("more than 2^24 entries in one batch"));
            }
            let v = v.as_ref();
            if v.len() > MAX_BLOCK_SIZE {
                return Err(LogError::BlockTooLarge { size: v.len(), max: MAX_BLOCK_SIZE });
            }
            let leaf = Node::leaf(start + k as u64, v);
            nodes.push(leaf);
            roots.push(leaf);
            while roots.len() >= 2 {
                let (a, b) = (roots[roots.len() - 2], roots[roots.len() - 1]);
                if flat::parent(a.index) != flat::parent(b.index) {
                    break;
                }
                let p = Node::parent_of(&a, &b).ok_or(LogError::TooLarge("feed byte length overflows"))?;
                roots.truncate(roots.len() - 2);
                nodes.push(p);
                roots.push(p);
            }
            data.extend_from_slice(v);
            sizes.push(v.len() as u64);
        }
        let count = sizes.len() as u64;
        let new_byte_length = tip
            .byte_length
            .checked_add(data.len() as u64)
            .ok_or(LogError::TooLarge("feed byte length overflows"))?;
        let signature =
            if count == 0 { Signature([0; 64]) } else { key_pair.sign_roots(&roots, self.sign_form) };
        Ok(Prepared {
            start,
            new_length: start + count,
            byte_length: tip.byte_length,
            new_byte_length,
            data,
            sizes,
            nodes,
            roots,
            signature,
        })
    }

    /// Writes prepared batches (in order, each built on the one before) and
    /// adopts the newest as the feed's state.
    ///
    /// The order is what the crash guarantees rest on (docs/semantics.md):
    /// data and tree first; under [`SyncPolicy::PerBatch`] both are synced
    /// before any signature is written, so a signature on disk always has its
    /// tree and data under it, even after a power loss (a signature without
    /// them would read as entries signed and lost, and stop the writer with
    /// `WouldFork`). Then the signatures, synced: once they are on disk the
    /// batches are, since recovery proves the length from the newest verifying
    /// signature. The bitfield and the head record follow, not synced: recovery
    /// rebuilds the bitfield from the tree when it lags, and the head record
    /// guards against damage, not crashes.
    fn commit(&mut self, batches: Vec<Prepared>) -> Result<(), LogError> {
        let (Some(first), Some(last)) = (batches.first(), batches.last()) else { return Ok(()) };
        let byte_length = first.byte_length;
        let (new_length, new_byte_length) = (last.new_length, last.new_byte_length);
        let roots = last.roots.clone();
        let signature = last.signature;
        let mut data = Vec::new();
        let mut nodes = Vec::new();
        let mut signatures: Vec<(u64, Vec<u8>)> = Vec::new();
        for b in &batches {
            if data.is_empty() {
                data = b.data.clone();
            } else {
                data.extend_from_slice(&b.data);
            }
            nodes.extend_from_slice(&b.nodes);
            let slot = b.new_length - 1;
            match signatures.last_mut() {
                Some((s, bytes)) if *s + (bytes.len() / 64) as u64 == slot => {
                    bytes.extend_from_slice(&b.signature.0)
                }
                _ => signatures.push((slot, b.signature.0.to_vec())),
            }
        }
        let tree_runs = node_runs(nodes, 2 * first.start);
        let start = first.start;
        self.guarded(|feed| {
            feed.files.data.write(byte_length, &data)?;
            for (first, bytes) in &tree_runs {
                feed.files.tree.write(HEADER_LEN + 40 * first, bytes)?;
            }
            let durable = feed.sync == SyncPolicy::PerBatch;
            if durable {
                sync_both(&mut feed.files.data, &mut feed.files.tree)?;
            }
            for (slot, bytes) in &signatures {
                feed.files.signatures.write(HEADER_LEN + 64 * slot, bytes)?;
            }
            if durable {
                feed.files.signatures.sync()?;
            }
            for i in start..new_length {
                feed.bitfield.set_block(i, true);
                feed.bitfield.set_node(2 * i);
            }
            if durable {
                feed.flush_bitfield()
            } else {
                feed.defer_bitfield();
                Ok(())
            }
        })?;

        let was_complete = self.contiguous == start;
        match self.offsets.end_at(start) {
            // Cached offsets that disagree with the signed roots: start over.
            Some(end) if end != byte_length => self.offsets.clear(),
            Some(_) => {
                let (mut acc, mut i) = (byte_length, start);
                for b in &batches {
                    for s in &b.sizes {
                        acc += s;
                        i += 1;
                        self.offsets.push(i, acc);
                    }
                }
            }
            None => {}
        }
        self.roots = roots;
        self.length = new_length;
        self.byte_length = new_byte_length;
        if was_complete {
            self.contiguous = new_length;
        }
        // The second copy of the newest signed state (see `head`); written after
        // the commit point, never synced on its own: it guards against damage,
        // not against crashes, which the order of the writes above covers.
        // Under `SyncPolicy::None` it waits, with the bitfield, for every
        // ENTRIES_PER_BITFIELD_WRITE-th entry or the next flush.
        if self.sync == SyncPolicy::PerBatch {
            self.guarded(|feed| feed.write_head(signature))?;
        } else {
            self.head_pending = Some((signature, new_length));
            self.appends_unflushed += new_length - start;
            if self.appends_unflushed >= ENTRIES_PER_BITFIELD_WRITE {
                self.flush_deferred()?;
            }
        }
        Ok(())
    }

    /// Writes the changed bytes of every changed bitfield page (a page the file
    /// does not hold yet, whole): the file's bytes are exactly those of
    /// hypercore 8, which writes whole pages.
    pub(crate) fn flush_bitfield(&mut self) -> Result<(), LogError> {
        for (p, at, bytes) in self.bitfield.take_dirty_ranges() {
            self.files.bitfield.write(HEADER_LEN + (PAGE_SIZE * p + at) as u64, &bytes)?;
        }
        Ok(())
    }

    /// Flushes all files to stable storage.
    pub fn sync_all(&mut self) -> Result<(), LogError> {
        self.flush_deferred()?;
        self.guarded(Feed::sync_files)
    }

    /// Syncs every file written since its last sync, all at once (one round of
    /// `fdatasync`s in flight together rather than one after the other; under
    /// `SyncPolicy::None` no order of them guards anything, the operating
    /// system writes back in any order anyway).
    pub(crate) fn sync_files(&mut self) -> Result<(), LogError> {
        let f = &mut self.files;
        let mut dirty: Vec<&mut BoxedStorage> = [
            &mut f.data,
            &mut f.tree,
            &mut f.signatures,
            &mut f.bitfield,
            &mut f.key,
            &mut f.secret_key,
            &mut f.head,
        ]
        .into_iter()
        .filter(|s| s.needs_sync())
        .collect();
        let Some(first) = dirty.pop() else { return Ok(()) };
        if dirty.is_empty() {
            return Ok(first.sync()?);
        }
        let (mine, others) = std::thread::scope(|s| {
            let handles: Vec<_> = dirty.into_iter().map(|d| s.spawn(move || d.sync())).collect();
            let mine = first.sync();
            (mine, handles.into_iter().map(|h| h.join()).collect::<Vec<_>>())
        });
        mine?;
        for r in others {
            match r {
                Ok(r) => r?,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        Ok(())
    }

    pub(crate) fn files_mut(&mut self) -> &mut Files {
        &mut self.files
    }

    pub(crate) fn bitfield_mut(&mut self) -> &mut Bitfield {
        &mut self.bitfield
    }

    /// Adopts a longer verified length with its roots.
    pub(crate) fn grow_to(&mut self, length: u64, roots: Vec<Node>) {
        if length > self.length {
            self.byte_length = roots.iter().map(|r| r.size).sum();
            self.roots = roots;
            self.length = length;
        }
    }

    pub(crate) fn advance_contiguous(&mut self) {
        let max = self.bitfield.data_bits();
        while self.contiguous < max && self.bitfield.has_block(self.contiguous) {
            // Keep the offset cache growing with an in-order download.
            if let Some(last) = self.offsets.end_at(self.contiguous) {
                if let Ok(Some(n)) = self.node(2 * self.contiguous) {
                    self.offsets.push(self.contiguous + 1, last.saturating_add(n.size));
                }
            }
            self.contiguous += 1;
        }
    }

    /// Writes bitfield pages left unwritten by [`put_deferred`](Self::put_deferred).
    ///
    /// Also writes what appends under [`SyncPolicy::None`] left for later: the
    /// changed bitfield bytes and the head record.
    pub fn flush_deferred(&mut self) -> Result<(), LogError> {
        if !self.bitfield_pending && self.pending.bytes == 0 && self.head_pending.is_none() {
            return Ok(());
        }
        self.bitfield_pending = false;
        self.appends_unflushed = 0;
        let pending = std::mem::take(&mut self.pending);
        let head = self.head_pending.take();
        self.guarded(|f| {
            f.write_pending(pending)?;
            if f.sync == SyncPolicy::PerBatch {
                f.files.data.sync()?;
                f.files.tree.sync()?;
                f.files.signatures.sync()?;
            }
            f.flush_bitfield()?;
            match head {
                // Only if nothing moved the feed since (a later state wrote
                // its own head record).
                Some((signature, length)) if length == f.length => f.write_head(signature),
                _ => Ok(()),
            }
        })
    }

    /// Writes deferred data and nodes, coalescing adjacent ones into single writes.
    fn write_pending(&mut self, pending: Pending) -> Result<(), LogError> {
        let mut run: Option<(u64, Vec<u8>)> = None;
        for (offset, bytes) in pending.data {
            match &mut run {
                Some((start, buf)) if *start + buf.len() as u64 == offset => buf.extend_from_slice(&bytes),
                _ => {
                    if let Some((start, buf)) = run.take() {
                        self.files.data.write(start, &buf)?;
                    }
                    run = Some((offset, bytes));
                }
            }
        }
        if let Some((start, buf)) = run.take() {
            self.files.data.write(start, &buf)?;
        }
        let mut run: Option<(u64, Vec<u8>)> = None;
        for (index, node) in pending.nodes {
            match &mut run {
                Some((first, buf)) if *first + (buf.len() / 40) as u64 == index => {
                    buf.extend_from_slice(&node.encode())
                }
                _ => {
                    if let Some((first, buf)) = run.take() {
                        self.files.tree.write(HEADER_LEN + 40 * first, &buf)?;
                    }
                    run = Some((index, node.encode().to_vec()));
                }
            }
        }
        if let Some((first, buf)) = run.take() {
            self.files.tree.write(HEADER_LEN + 40 * first, &buf)?;
        }
        for (slot, sig) in pending.signatures {
            self.files.signatures.write(HEADER_LEN + 64 * slot, &sig.0)?;
        }
        Ok(())
    }

    /// Holds a deferred put's writes until `flush_deferred` (flushing at once if
    /// too much is pending).
    pub(crate) fn hold_writes(
        &mut self,
        data: Option<(u64, &[u8])>,
        nodes: &[Node],
        signature: Option<(u64, Signature)>,
    ) -> Result<(), LogError> {
        // Empty blocks share their offset with the next block and write nothing.
        if let Some((offset, d)) = data.filter(|(_, d)| !d.is_empty()) {
            self.pending.bytes += d.len();
            self.pending.data.insert(offset, d.to_vec());
        }
        for n in nodes {
            self.pending.bytes += 40;
            self.pending.nodes.insert(n.index, *n);
        }
        if let Some(s) = signature {
            self.pending.bytes += 64;
            self.pending.signatures.push(s);
        }
        self.read_cache = None;
        if self.pending.bytes > MAX_PENDING {
            self.flush_deferred()?;
        }
        Ok(())
    }

    /// Forgets the read-ahead window (the data file changed under it).
    pub(crate) fn drop_read_cache(&mut self) {
        self.read_cache = None;
    }

    pub(crate) fn defer_bitfield(&mut self) {
        self.bitfield_pending = true;
    }

    // ----- verification ------------------------------------------------------

    /// Verifies the signature of the current state: the stored roots of
    /// [`len`](Self::len) against the signature in slot `len − 1`.
    pub fn verify(&mut self) -> Result<(), LogError> {
        if self.length == 0 {
            return Ok(());
        }
        let sig = self.signature()?.ok_or_else(|| CorruptError {
            file: "signatures",
            reason: format!("no signature for length {}", self.length),
        })?;
        if self.key.verify_roots(&self.roots, &sig).is_none() {
            return Err(
                CorruptError { file: "signatures", reason: "signature does not verify".into() }.into()
            );
        }
        Ok(())
    }

    /// Verifies everything stored: every present block hashes to its leaf, every
    /// stored parent to its children, and the roots to the signature. Returns the
    /// number of blocks checked.
    pub fn audit(&mut self) -> Result<u64, LogError> {
        self.verify()?;
        let mut checked = 0;
        for i in 0..self.length {
            if !self.has(i) {
                continue;
            }
            let data = self.try_get(i)?;
            let leaf = self.require_node(2 * i)?;
            if Node::leaf(i, &data) != leaf {
                return Err(CorruptError {
                    file: "data",
                    reason: format!("block {i} does not match its hash"),
                }
                .into());
            }
            checked += 1;
        }
        for x in (1..2 * self.length).step_by(2) {
            if !self.has_node(x) {
                continue;
            }
            let Some((l, r)) = flat::children(x) else { continue };
            if let (Some(l), Some(r)) = (self.node(l)?, self.node(r)?) {
                let want = Node::parent_of(&l, &r);
                if want.as_ref() != self.node(x)?.as_ref() {
                    return Err(CorruptError {
                        file: "tree",
                        reason: format!("node {x} does not match its children"),
                    }
                    .into());
                }
            }
        }
        Ok(checked)
    }
}
