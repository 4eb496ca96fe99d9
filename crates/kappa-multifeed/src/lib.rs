#![doc = include_str!("../README.md")]
#![warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::channel::mpsc;

mod replicate;

/// Entry points for the cargo-fuzz targets and corpus replay; not public API.
#[doc(hidden)]
pub mod fuzzing {
    /// Arbitrary multifeed extension messages (handshake, manifest, request,
    /// replicate) fed to a session's feed-exchange logic after a real handshake.
    /// Input: repeated `name selector byte, length byte, payload`.
    pub fn extensions(data: &[u8]) {
        crate::replicate::fuzz_extensions(data);
    }
}
use kappa_log::{Feed, KeyPair, LogError, PublicKey, SharedFeed, SyncPolicy};
use kappa_storage::{
    DirectoryProvider, LockGuard, MemoryProvider, Prefixed, Provider, RandomAccess, StorageError,
};
pub use replicate::{
    Exchange, KeyFilter, ReplicateOptions, SyncReport, DEFAULT_SHARED_KEY, PROTOCOL_VERSION,
};

/// The name of the lock file in the storage root.
pub const LOCK_FILE: &str = "LOCK";

/// The builder of feed folder `dir` with the set's options. The feeds of a
/// set take no `bitfield` lock each: the set's [`LOCK_FILE`] keeps other
/// processes out of all of them with one descriptor (JS multifeed 5 and 6 lock
/// no file of their feeds, so per-feed locks never excluded them), and a
/// lock per feed would cost a descriptor per feed for as long as the set is
/// open, outside the storage's file pool.
fn feed_builder(
    provider: &Arc<dyn Provider>,
    dir: u64,
    options: &MultifeedOptions,
) -> kappa_log::FeedBuilder {
    Feed::builder(Prefixed::new(provider.clone(), dir.to_string()))
        .sync(options.sync)
        .signature_form(options.signature_form)
        .bitfield_lock(false)
}

/// What can go wrong with a feed set.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum MultifeedError {
    /// A feed failed to open or write.
    #[error("feed {dir}: {source}")]
    Feed {
        /// The feed's folder number.
        dir: u64,
        /// The cause.
        #[source]
        source: LogError,
    },
    /// The storage root failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Replication with a peer failed (wrong shared key, incompatible peer,
    /// timeout, misbehaviour, transport).
    #[error("replication: {0}")]
    Replication(#[from] kappa_protocol::ProtocolError),
    /// The set was closed.
    #[error("the feed set is closed")]
    Closed,
    /// A key given as text was malformed.
    #[error(transparent)]
    Key(#[from] kappa_log::KeyError),
    /// `writer(name, key_pair)` named an existing writer with another key.
    #[error("writer {name:?} exists with another key ({existing})")]
    WriterKeyMismatch {
        /// The writer's name.
        name: String,
        /// Its existing public key.
        existing: String,
    },
    /// A key pair was given for a feed that already exists under another name or
    /// as a remote feed.
    #[error("feed {0} already exists")]
    FeedExists(String),
    /// Creating a writer was refused: a feed folder that holds a secret key has
    /// no readable local name, or is damaged, so it may be this writer. Creating
    /// a second feed would silently leave the first one behind.
    #[error(
        "feed {dir} holds a secret key but {why}; it may be the writer {name:?}, so no second one is created \
         (name it with set_local_name, or repair the feed)"
    )]
    UnnamedWriter {
        /// The folder.
        dir: u64,
        /// The name asked for.
        name: String,
        /// What is wrong with it.
        why: String,
    },
}

/// A feed folder that could not be opened (see [`Multifeed::damaged_feeds`]).
/// Its files are left as they are, and its folder number is not reused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedFeed {
    /// The folder number.
    pub dir: u64,
    /// Its local name, if readable.
    pub name: Option<String>,
    /// Whether it holds a secret key (it may be a local writer).
    pub has_secret_key: bool,
    /// Why it could not be opened.
    pub error: kappa_log::CorruptError,
}

/// How a feed came to be in the set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Found on disk at open.
    Loaded,
    /// Created locally by [`Multifeed::writer`].
    Created,
    /// Learned from a peer ([`Multifeed::add_remote`]).
    Remote,
}

/// A feed joined the set.
#[derive(Debug, Clone)]
pub struct FeedAdded {
    /// The feed.
    pub feed: SharedFeed,
    /// Its folder number.
    pub dir: u64,
    /// The local writer name, if it has one.
    pub name: Option<String>,
    /// How it was added.
    pub origin: Origin,
}

/// Options for opening a feed set.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct MultifeedOptions {
    /// Sync policy of every feed (default: none).
    pub sync: SyncPolicy,
    /// The form our writers sign appends in (default the 32-byte hypercore 8
    /// form, which kappa-core 6 and 7 peers both verify; see
    /// [`kappa_log::SignatureForm`]). Received blocks are verified in both forms.
    pub signature_form: kappa_log::SignatureForm,
}

struct Entry {
    dir: u64,
    feed: SharedFeed,
    name: Option<String>,
    origin: Origin,
}

struct State {
    entries: Vec<Entry>,
    damaged: Vec<DamagedFeed>,
    /// The folder number the next new feed gets.
    next_dir: u64,
    by_key: HashMap<PublicKey, usize>,
    by_name: HashMap<String, usize>,
    subscribers: Vec<mpsc::UnboundedSender<FeedAdded>>,
    watchers: Vec<std::sync::Weak<event_listener::Event>>,
    sessions: Vec<(u64, kappa_protocol::SessionHandle)>,
    next_session: u64,
    closed: bool,
}

struct Inner {
    provider: Arc<dyn Provider>,
    options: MultifeedOptions,
    state: Mutex<State>,
    _lock: LockGuard,
}

/// A set of feeds in one storage root. Cheap to clone; clones share the set.
#[derive(Clone)]
pub struct Multifeed {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Multifeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Multifeed").field("feeds", &self.state().entries.len()).finish_non_exhaustive()
    }
}

impl Multifeed {
    /// Opens (or creates) the feed set stored in directory `dir`.
    ///
    /// Fails with [`StorageError::Locked`] if another process has it open.
    pub fn open_dir(dir: impl AsRef<Path>) -> Result<Multifeed, MultifeedError> {
        Self::open(DirectoryProvider::new(dir.as_ref()), MultifeedOptions::default())
    }

    /// A feed set in memory.
    pub fn in_memory() -> Result<Multifeed, MultifeedError> {
        Self::open(MemoryProvider::new(), MultifeedOptions::default())
    }

    /// Opens the feed set stored in `provider`: loads feeds `0, 1, 2, …` until the
    /// first number without a key.
    pub fn open(
        provider: impl Provider + 'static,
        options: MultifeedOptions,
    ) -> Result<Multifeed, MultifeedError> {
        let provider: Arc<dyn Provider> = Arc::new(provider);
        let lock = provider.lock(LOCK_FILE)?;
        let mut state = State {
            entries: Vec::new(),
            damaged: Vec::new(),
            next_dir: 0,
            by_key: HashMap::new(),
            by_name: HashMap::new(),
            subscribers: Vec::new(),
            watchers: Vec::new(),
            sessions: Vec::new(),
            next_session: 0,
            closed: false,
        };
        // A folder is a feed if any of its files is there: a lost `key` file must
        // not hide a feed (its folder would then be created anew over its
        // entries). A few missing numbers in a row end the scan, so one deleted
        // folder does not hide the ones after it.
        let mut empty_run = 0;
        for dir in 0u64.. {
            if !folder_exists(&*provider, dir)? {
                empty_run += 1;
                if empty_run >= FOLDER_GAP {
                    break;
                }
                continue;
            }
            let name = read_localname(&*provider, dir)?;
            let opened = feed_builder(&provider, dir, &options).create(false).open();
            if matches!(opened, Err(LogError::NotFound)) {
                // A creation cut short (a name written, no key yet, no entries):
                // nothing to keep; the folder is free for the next feed.
                empty_run += 1;
                if empty_run >= FOLDER_GAP {
                    break;
                }
                continue;
            }
            empty_run = 0;
            state.next_dir = dir + 1;
            let feed = match opened {
                Ok(feed) => feed,
                Err(LogError::Corrupt(error)) => {
                    let has_secret_key = provider.exists(&format!("{dir}/secret_key"))?;
                    state.damaged.push(DamagedFeed {
                        dir,
                        name: name.map(|n| n.name),
                        has_secret_key,
                        error,
                    });
                    continue;
                }
                Err(source) => return Err(MultifeedError::Feed { dir, source }),
            };
            let feed = SharedFeed::new(feed);
            if state.by_key.contains_key(feed.public_key()) {
                // Two folders with one key (JS can do this under a race): the first
                // one wins, as a lookup by key in JS would find it.
                continue;
            }
            let name = match name {
                Some(n) => {
                    if n.restore && feed.is_writable() {
                        write_localname(&*provider, dir, &n.name)?;
                    }
                    Some(n.name)
                }
                None => None,
            };
            let idx = state.entries.len();
            state.by_key.insert(*feed.public_key(), idx);
            if let Some(n) = &name {
                state.by_name.entry(n.clone()).or_insert(idx);
            }
            state.entries.push(Entry { dir, feed, name, origin: Origin::Loaded });
        }
        Ok(Multifeed { inner: Arc::new(Inner { provider, options, state: Mutex::new(state), _lock: lock }) })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The local writer called `name`, created (with a fresh key pair) if it does
    /// not exist. Concurrent calls with one name get one feed.
    pub fn writer(&self, name: &str) -> Result<SharedFeed, MultifeedError> {
        self.writer_inner(name, None)
    }

    /// The local writer called `name`, created from `key_pair` if it does not
    /// exist. Fails if the writer exists with another key.
    pub fn writer_with_key_pair(&self, name: &str, key_pair: KeyPair) -> Result<SharedFeed, MultifeedError> {
        self.writer_inner(name, Some(key_pair))
    }

    fn writer_inner(&self, name: &str, key_pair: Option<KeyPair>) -> Result<SharedFeed, MultifeedError> {
        let mut st = self.state();
        if st.closed {
            return Err(MultifeedError::Closed);
        }
        if let Some(&i) = st.by_name.get(name) {
            let feed = st.entries[i].feed.clone();
            if let Some(kp) = &key_pair {
                if kp.public_key() != *feed.public_key() {
                    return Err(MultifeedError::WriterKeyMismatch {
                        name: name.into(),
                        existing: feed.public_key().to_hex(),
                    });
                }
            }
            return Ok(feed);
        }
        if let Some(kp) = &key_pair {
            if st.by_key.contains_key(&kp.public_key()) {
                return Err(MultifeedError::FeedExists(kp.public_key().to_hex()));
            }
        }
        if let Some((dir, why)) = Self::possible_writer(&st) {
            return Err(MultifeedError::UnnamedWriter { dir, name: name.into(), why });
        }
        let dir = st.next_dir;
        // As multifeed does: the name first, then the feed.
        write_localname(&*self.inner.provider, dir, name)?;
        let kp = key_pair.unwrap_or_else(KeyPair::generate);
        let feed = self.create_feed(dir, |b| b.key_pair(kp))?;
        Self::push(&mut st, feed.clone(), Some(name.to_owned()), Origin::Created);
        Ok(feed)
    }

    /// A folder that may hold a local writer whose name cannot be read: a
    /// writable feed without a name, or a damaged folder with a secret key.
    fn possible_writer(st: &State) -> Option<(u64, String)> {
        for e in &st.entries {
            let has_secret = e.feed.is_writable() || e.feed.lock().recovery().secret_key.is_some();
            if e.name.is_none() && has_secret {
                return Some((e.dir, "its localname file is missing or damaged".into()));
            }
        }
        st.damaged.iter().find(|d| d.has_secret_key).map(|d| (d.dir, format!("it is damaged ({})", d.error)))
    }

    fn push(st: &mut State, feed: SharedFeed, name: Option<String>, origin: Origin) {
        let idx = st.entries.len();
        let dir = st.next_dir;
        st.next_dir += 1;
        st.by_key.insert(*feed.public_key(), idx);
        if let Some(n) = &name {
            st.by_name.insert(n.clone(), idx);
        }
        let event = FeedAdded { feed: feed.clone(), dir, name: name.clone(), origin };
        st.subscribers.retain(|s| s.unbounded_send(event.clone()).is_ok());
        st.entries.push(Entry { dir, feed, name, origin });
        st.watchers.retain(|w| w.strong_count() > 0);
        for w in st.watchers.iter().filter_map(std::sync::Weak::upgrade) {
            w.notify(usize::MAX);
        }
    }

    /// Creates the feed of folder `dir`, keyed as `key` says.
    fn create_feed(
        &self,
        dir: u64,
        key: impl FnOnce(kappa_log::FeedBuilder) -> kappa_log::FeedBuilder,
    ) -> Result<SharedFeed, MultifeedError> {
        let builder = feed_builder(&self.inner.provider, dir, &self.inner.options);
        let feed = key(builder).open().map_err(|source| MultifeedError::Feed { dir, source })?;
        Ok(SharedFeed::new(feed))
    }

    /// The feed with public key `key`, adding an empty read-only replica of it if
    /// the set does not have it yet (what replication does for a feed a peer
    /// offers).
    pub fn add_remote(&self, key: PublicKey) -> Result<SharedFeed, MultifeedError> {
        let mut st = self.state();
        if st.closed {
            return Err(MultifeedError::Closed);
        }
        if let Some(&i) = st.by_key.get(&key) {
            return Ok(st.entries[i].feed.clone());
        }
        let dir = st.next_dir;
        let feed = self.create_feed(dir, |b| b.public_key(key))?;
        Self::push(&mut st, feed.clone(), None, Origin::Remote);
        Ok(feed)
    }

    /// The local writer called `name`, if the set has one (never creates it).
    pub fn writer_exists(&self, name: &str) -> Option<SharedFeed> {
        let st = self.state();
        st.by_name.get(name).map(|&i| st.entries[i].feed.clone())
    }

    /// The feed with public key `key`, if the set has it.
    pub fn feed(&self, key: &PublicKey) -> Option<SharedFeed> {
        let st = self.state();
        st.by_key.get(key).map(|&i| st.entries[i].feed.clone())
    }

    /// The feed whose key is the 64-character hex string `key`. Malformed keys are
    /// an error; unknown ones `None`.
    pub fn feed_by_hex(&self, key: &str) -> Result<Option<SharedFeed>, MultifeedError> {
        Ok(self.feed(&PublicKey::from_hex(key)?))
    }

    /// Every feed, in folder (creation) order.
    pub fn feeds(&self) -> Vec<SharedFeed> {
        self.state().entries.iter().map(|e| e.feed.clone()).collect()
    }

    /// Every feed with its folder number and local name.
    pub fn feed_infos(&self) -> Vec<(u64, Option<String>, SharedFeed)> {
        self.state().entries.iter().map(|e| (e.dir, e.name.clone(), e.feed.clone())).collect()
    }

    /// The feed folders that could not be opened (their files are kept as they
    /// are; `kappa check` reports them).
    pub fn damaged_feeds(&self) -> Vec<DamagedFeed> {
        self.state().damaged.clone()
    }

    /// Opens the folders that failed to open again, rewriting damaged headers
    /// (the one repair that needs asking: a header is a constant, but a foreign
    /// file is better reported than overwritten). Those that open join the set;
    /// returns the folders still damaged.
    pub fn reopen_damaged(&self) -> Result<Vec<DamagedFeed>, MultifeedError> {
        let mut st = self.state();
        let damaged = std::mem::take(&mut st.damaged);
        for d in damaged {
            let opened = feed_builder(&self.inner.provider, d.dir, &self.inner.options)
                .create(false)
                .repair_headers(true)
                .open();
            match opened {
                Ok(feed) => {
                    let feed = SharedFeed::new(feed);
                    if st.by_key.contains_key(feed.public_key()) {
                        continue;
                    }
                    let idx = st.entries.len();
                    st.by_key.insert(*feed.public_key(), idx);
                    if let Some(n) = &d.name {
                        st.by_name.entry(n.clone()).or_insert(idx);
                    }
                    st.entries.push(Entry { dir: d.dir, feed, name: d.name, origin: Origin::Loaded });
                }
                Err(LogError::Corrupt(error)) => st.damaged.push(DamagedFeed { error, ..d }),
                Err(source) => return Err(MultifeedError::Feed { dir: d.dir, source }),
            }
        }
        st.entries.sort_by_key(|e| e.dir);
        let by_key = st.entries.iter().enumerate().map(|(i, e)| (*e.feed.public_key(), i)).collect();
        let by_name =
            st.entries.iter().enumerate().filter_map(|(i, e)| e.name.clone().map(|n| (n, i))).collect();
        st.by_key = by_key;
        st.by_name = by_name;
        Ok(st.damaged.clone())
    }

    /// Gives the writable feed in folder `dir` the local name `name` (to repair a
    /// lost `localname` file). Fails if the name belongs to another feed.
    pub fn set_local_name(&self, dir: u64, name: &str) -> Result<(), MultifeedError> {
        let mut st = self.state();
        if st.by_name.get(name).is_some_and(|&i| st.entries[i].dir != dir) {
            return Err(MultifeedError::FeedExists(format!("named {name:?}")));
        }
        let Some(idx) = st.entries.iter().position(|e| e.dir == dir) else {
            return Err(MultifeedError::Feed { dir, source: LogError::NotFound });
        };
        write_localname(&*self.inner.provider, dir, name)?;
        if let Some(old) = st.entries[idx].name.replace(name.to_owned()) {
            st.by_name.remove(&old);
        }
        st.by_name.insert(name.to_owned(), idx);
        Ok(())
    }

    /// The local name of a feed (`None` for feeds learned from peers).
    pub fn name_of(&self, key: &PublicKey) -> Option<String> {
        let st = self.state();
        st.by_key.get(key).and_then(|&i| st.entries[i].name.clone())
    }

    /// A stream of [`FeedAdded`] events: first one for every feed already in the
    /// set (with the origin it had), then one for each feed added later.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<FeedAdded> {
        let (tx, rx) = mpsc::unbounded();
        let mut st = self.state();
        for e in &st.entries {
            let _ = tx.unbounded_send(FeedAdded {
                feed: e.feed.clone(),
                dir: e.dir,
                name: e.name.clone(),
                origin: e.origin,
            });
        }
        if !st.closed {
            st.subscribers.push(tx);
        }
        st.subscribers.retain(|s| !s.is_closed());
        rx
    }

    /// Also notifies `event` whenever a feed joins the set, for as long as the
    /// caller keeps it alive (indexers watch the set and its feeds with one event).
    pub fn watch(&self, event: &std::sync::Arc<event_listener::Event>) {
        let mut st = self.state();
        st.watchers.retain(|w| w.strong_count() > 0);
        st.watchers.push(std::sync::Arc::downgrade(event));
    }

    /// Asks every connected peer for block `index` of feed `key` now (an
    /// on-demand get of a sparse feed). Returns how many sessions were asked.
    pub fn want_block(&self, key: &PublicKey, index: u64) -> usize {
        let st = self.state();
        let dkey = key.discovery_key();
        for (_, h) in &st.sessions {
            h.want_block(dkey, index);
        }
        st.sessions.len()
    }

    pub(crate) fn register_session(&self, handle: kappa_protocol::SessionHandle) -> u64 {
        let mut st = self.state();
        let id = st.next_session;
        st.next_session += 1;
        st.sessions.push((id, handle));
        id
    }

    pub(crate) fn unregister_session(&self, id: u64) {
        self.state().sessions.retain(|(i, _)| *i != id);
    }

    /// Syncs every feed to stable storage.
    pub fn sync_all(&self) -> Result<(), MultifeedError> {
        for (dir, _, feed) in self.feed_infos() {
            feed.lock().sync_all().map_err(|source| MultifeedError::Feed { dir, source })?;
        }
        Ok(())
    }

    /// Closes the set: syncs every feed, ends event streams, and refuses new
    /// feeds. Closing twice (or while closing) is fine. The directory lock is
    /// released when the last clone of the set is dropped.
    pub fn close(&self) -> Result<(), MultifeedError> {
        let first = {
            let mut st = self.state();
            let first = !st.closed;
            st.closed = true;
            st.subscribers.clear();
            first
        };
        // Sync before letting go of the feeds; other handles (sessions, indexers)
        // may keep their clones, and the locks go with the last of them.
        if first {
            self.sync_all()?;
            let mut st = self.state();
            st.entries.clear();
            st.by_key.clear();
            st.by_name.clear();
        }
        Ok(())
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.state().closed
    }
}

/// Missing folder numbers in a row that end the scan for feeds.
const FOLDER_GAP: u64 = 8;

/// The files of a feed folder, any of which makes it a feed.
const FEED_FILES: [&str; 8] =
    ["key", "secret_key", "tree", "data", "signatures", "bitfield", "kappa-head", "localname"];

fn folder_exists(provider: &dyn Provider, dir: u64) -> Result<bool, MultifeedError> {
    for f in FEED_FILES {
        if provider.exists(&format!("{dir}/{f}"))? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The name of a local writer's backup copy of its `localname` (ours; JS reads
/// only `localname`): `b"KLN1"`, `u16le` length, the name, then the first 16
/// bytes of a BLAKE2b-256 of everything before.
const LOCALNAME_BACKUP: &str = "kappa-localname";

fn backup_bytes(name: &str) -> Vec<u8> {
    let mut out = b"KLN1".to_vec();
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    let sum = kappa_log::leaf_hash(&out);
    out.extend_from_slice(&sum[..16]);
    out
}

fn parse_backup(bytes: &[u8]) -> Option<String> {
    let len = u16::from_le_bytes(bytes.get(4..6)?.try_into().ok()?) as usize;
    let body = bytes.get(..6 + len)?;
    let sum = bytes.get(6 + len..6 + len + 16)?;
    if bytes.get(..4)? != b"KLN1" || kappa_log::leaf_hash(body)[..16] != *sum {
        return None;
    }
    String::from_utf8(body[6..].to_vec()).ok()
}

fn write_localname(provider: &dyn Provider, dir: u64, name: &str) -> Result<(), MultifeedError> {
    if name.len() > 4096 {
        return Err(MultifeedError::FeedExists(format!("a name of {} bytes (4096 at most)", name.len())));
    }
    let mut localname = provider.open(&format!("{dir}/localname"))?;
    localname.truncate(0)?;
    localname.write(0, name.as_bytes())?;
    let mut backup = provider.open(&format!("{dir}/{LOCALNAME_BACKUP}"))?;
    backup.truncate(0)?;
    backup.write(0, &backup_bytes(name))?;
    Ok(())
}

struct LocalName {
    name: String,
    /// The `localname` file disagrees with its checksummed backup (the backup
    /// wins and the file should be rewritten).
    restore: bool,
}

fn read_file(provider: &dyn Provider, name: &str) -> Result<Option<Vec<u8>>, MultifeedError> {
    if !provider.exists(name)? {
        return Ok(None);
    }
    let mut f = provider.open(name)?;
    let len = f.len()?.min(8192) as usize;
    Ok(Some(f.read(0, len)?))
}

fn read_localname(provider: &dyn Provider, dir: u64) -> Result<Option<LocalName>, MultifeedError> {
    let file = read_file(provider, &format!("{dir}/localname"))?;
    let backup = read_file(provider, &format!("{dir}/{LOCALNAME_BACKUP}"))?.and_then(|b| parse_backup(&b));
    if let Some(name) = backup {
        let restore = file.as_deref() != Some(name.as_bytes());
        return Ok(Some(LocalName { name, restore }));
    }
    let Some(bytes) = file else { return Ok(None) };
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]).into_owned();
    Ok(if s.is_empty() { None } else { Some(LocalName { name: s, restore: false }) })
}
