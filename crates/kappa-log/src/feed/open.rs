//! Opening a feed: the builder, and reading (or creating) its files.

use super::*;

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
        // A piece at a time: the pages of a complete stretch are shared in
        // memory, so the whole body (44 MB for 100 million entries) is never
        // held at once.
        let mut bitfield = Bitfield::new();
        let piece = 256 * PAGE_SIZE;
        let mut at = 0;
        while at < body_len {
            let n = piece.min(body_len - at);
            bitfield.load(at / PAGE_SIZE, &files.bitfield.read(HEADER_LEN + at as u64, n)?);
            at += n;
        }

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
            sig_memo: SignatureMemo::default(),
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
}
