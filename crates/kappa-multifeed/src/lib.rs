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
}

struct Entry {
    feed: SharedFeed,
    name: Option<String>,
    origin: Origin,
}

struct State {
    entries: Vec<Entry>,
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
            by_key: HashMap::new(),
            by_name: HashMap::new(),
            subscribers: Vec::new(),
            watchers: Vec::new(),
            sessions: Vec::new(),
            next_session: 0,
            closed: false,
        };
        for dir in 0u64.. {
            if !provider.exists(&format!("{dir}/key"))? {
                break;
            }
            let feed = Feed::builder(Prefixed::new(provider.clone(), dir.to_string()))
                .create(false)
                .sync(options.sync)
                .open()
                .map_err(|source| MultifeedError::Feed { dir, source })?;
            let name = read_localname(&*provider, dir)?;
            let feed = SharedFeed::new(feed);
            if state.by_key.contains_key(feed.public_key()) {
                // Two folders with one key (JS can do this under a race): the first
                // one wins, as a lookup by key in JS would find it.
                continue;
            }
            let idx = state.entries.len();
            state.by_key.insert(*feed.public_key(), idx);
            if let Some(n) = &name {
                state.by_name.entry(n.clone()).or_insert(idx);
            }
            state.entries.push(Entry { feed, name, origin: Origin::Loaded });
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
        let dir = st.entries.len() as u64;
        // As multifeed does: the name first, then the feed.
        let mut localname = self.inner.provider.open(&format!("{dir}/localname"))?;
        localname.truncate(0)?;
        localname.write(0, name.as_bytes())?;
        let kp = key_pair.unwrap_or_else(KeyPair::generate);
        let feed = self.create_feed(dir, |b| b.key_pair(kp))?;
        Self::push(&mut st, feed.clone(), Some(name.to_owned()), Origin::Created);
        Ok(feed)
    }

    fn push(st: &mut State, feed: SharedFeed, name: Option<String>, origin: Origin) {
        let idx = st.entries.len();
        st.by_key.insert(*feed.public_key(), idx);
        if let Some(n) = &name {
            st.by_name.insert(n.clone(), idx);
        }
        let event = FeedAdded { feed: feed.clone(), dir: idx as u64, name: name.clone(), origin };
        st.subscribers.retain(|s| s.unbounded_send(event.clone()).is_ok());
        st.entries.push(Entry { feed, name, origin });
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
        let builder = Feed::builder(Prefixed::new(self.inner.provider.clone(), dir.to_string()));
        let feed = key(builder)
            .sync(self.inner.options.sync)
            .open()
            .map_err(|source| MultifeedError::Feed { dir, source })?;
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
        let dir = st.entries.len() as u64;
        let feed = self.create_feed(dir, |b| b.public_key(key))?;
        Self::push(&mut st, feed.clone(), None, Origin::Remote);
        Ok(feed)
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
        self.state()
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (i as u64, e.name.clone(), e.feed.clone()))
            .collect()
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
        for (i, e) in st.entries.iter().enumerate() {
            let _ = tx.unbounded_send(FeedAdded {
                feed: e.feed.clone(),
                dir: i as u64,
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

fn read_localname(provider: &dyn Provider, dir: u64) -> Result<Option<String>, MultifeedError> {
    let name = format!("{dir}/localname");
    if !provider.exists(&name)? {
        return Ok(None);
    }
    let mut f = provider.open(&name)?;
    let len = f.len()?.min(4096) as usize;
    let bytes = f.read(0, len)?;
    let s = String::from_utf8_lossy(&bytes).into_owned();
    Ok(if s.is_empty() { None } else { Some(s) })
}
