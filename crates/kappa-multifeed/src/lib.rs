#![doc = include_str!("../README.md")]
#![warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::channel::mpsc;

mod policy;
mod replicate;
mod revocable;

/// Entry points for the cargo-fuzz targets and corpus replay; not public API.
/// Built with the `fuzzing` feature only.
#[cfg(feature = "fuzzing")]
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
pub use policy::{FeedPolicy, Policy, PolicyError, BLOCKED_MARKER, POLICY_FILE};
pub use replicate::{
    Exchange, KeyFilter, ReplicateOptions, SessionInfo, SyncReport, DEFAULT_SHARED_KEY, PROTOCOL_VERSION,
};
use revocable::{Revocable, Revoker};

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
    revoker: &Revoker,
) -> kappa_log::FeedBuilder {
    Feed::builder(Revocable::new(Prefixed::new(provider.clone(), dir.to_string()), revoker))
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
    /// The feed policy refused an operation, or its file is damaged.
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// What [`Multifeed::block`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Blocked {
    /// Whether the policy changed (`false`: the feed was blocked already).
    pub changed: bool,
    /// The feed's folder, if the set held the feed.
    pub dir: Option<u64>,
    /// Bytes of its files removed.
    pub freed: u64,
}

/// The bytes a feed folder takes ([`Multifeed::disk_usage`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FeedUsage {
    /// The folder.
    pub dir: u64,
    /// The feed's key (`None` for a folder that could not be opened).
    pub key: Option<PublicKey>,
    /// Its local name, if it has one.
    pub name: Option<String>,
    /// What the policy says of it.
    pub policy: Option<FeedPolicy>,
    /// The sum of its files' lengths.
    pub bytes: u64,
    /// What its files take on disk, holes left out (`None` where the
    /// storage cannot tell).
    pub allocated: Option<u64>,
    /// What its data file takes on disk: about what clearing the whole feed
    /// ([`Multifeed::clear`]) would free (`None` where unknown).
    pub data_allocated: Option<u64>,
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
    /// Cuts off the feed's storage when it is blocked.
    revoker: Revoker,
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
    sessions: Vec<(u64, kappa_protocol::SessionHandle, replicate::SessionMeta)>,
    next_session: u64,
    closed: bool,
    policy: Policy,
    /// Bumped on every change of the policy (indexers look at it).
    policy_version: u64,
    /// The folders of blocked feeds: their key is all they keep. Never
    /// given to another feed; an unblocked feed takes its folder back.
    blocked_dirs: HashMap<PublicKey, u64>,
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
        let (policy, policy_file) = match read_file(&*provider, POLICY_FILE)? {
            Some(bytes) => (Policy::decode(&bytes)?, true),
            None => (Policy::default(), false),
        };
        // Folders marked blocked whose feed the policy does not block.
        let mut marked = Vec::new();
        let any_blocked = !policy.blocked().is_empty();
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
            policy,
            policy_version: 0,
            blocked_dirs: HashMap::new(),
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
            // A blocked feed's folder keeps its key only: nothing to open
            // (and whatever else is there, a block cut short left).
            let key = if any_blocked { read_key(&*provider, dir)? } else { None };
            if let Some(key) = key.filter(|k| state.policy.is_blocked(k)) {
                empty_run = 0;
                state.next_dir = dir + 1;
                purge(&*provider, dir, &key)?;
                state.blocked_dirs.insert(key, dir);
                continue;
            }
            if provider.exists(&format!("{dir}/{BLOCKED_MARKER}"))? {
                marked.push(dir);
            }
            let name = read_localname(&*provider, dir)?;
            let revoker = Revoker::default();
            let opened = feed_builder(&provider, dir, &options, &revoker).create(false).open();
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
            if state.policy.is_blocked(feed.public_key()) {
                // Its key file was damaged (the feed rebuilt it): blocked all the same.
                let key = *feed.public_key();
                revoker.revoke();
                drop(feed);
                purge(&*provider, dir, &key)?;
                state.blocked_dirs.insert(key, dir);
                continue;
            }
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
            state.entries.push(Entry { dir, feed, name, origin: Origin::Loaded, revoker });
        }
        if !marked.is_empty() {
            if !policy_file {
                // Blocked feeds, and no policy to say so: never guessed.
                return Err(PolicyError::Missing { dirs: marked }.into());
            }
            // An unblock cut short after the policy changed: the policy is
            // the truth.
            for dir in marked {
                provider.remove(&format!("{dir}/{BLOCKED_MARKER}"))?;
            }
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
            if st.policy.is_blocked(&kp.public_key()) {
                return Err(PolicyError::Blocked { key: kp.public_key().to_hex() }.into());
            }
        }
        if let Some((dir, why)) = Self::possible_writer(&st) {
            return Err(MultifeedError::UnnamedWriter { dir, name: name.into(), why });
        }
        let dir = st.next_dir;
        // As multifeed does: the name first, then the feed.
        write_localname(&*self.inner.provider, dir, name)?;
        let kp = key_pair.unwrap_or_else(KeyPair::generate);
        let (feed, revoker) = self.create_feed(dir, |b| b.key_pair(kp))?;
        Self::push(&mut st, feed.clone(), Some(name.to_owned()), Origin::Created, revoker);
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

    fn push(st: &mut State, feed: SharedFeed, name: Option<String>, origin: Origin, revoker: Revoker) {
        let dir = st.next_dir;
        st.next_dir += 1;
        Self::push_at(st, dir, feed, name, origin, revoker);
    }

    /// Adds a feed in folder `dir` (in folder order) and tells subscribers
    /// and watchers.
    fn push_at(
        st: &mut State,
        dir: u64,
        feed: SharedFeed,
        name: Option<String>,
        origin: Origin,
        revoker: Revoker,
    ) {
        let event = FeedAdded { feed: feed.clone(), dir, name: name.clone(), origin };
        st.subscribers.retain(|s| s.unbounded_send(event.clone()).is_ok());
        let at = st.entries.partition_point(|e| e.dir < dir);
        if at == st.entries.len() {
            let idx = st.entries.len();
            st.by_key.insert(*feed.public_key(), idx);
            if let Some(n) = &name {
                st.by_name.insert(n.clone(), idx);
            }
            st.entries.push(Entry { dir, feed, name, origin, revoker });
        } else {
            st.entries.insert(at, Entry { dir, feed, name, origin, revoker });
            Self::reindex(st);
        }
        Self::notify_watchers(st);
    }

    fn notify_watchers(st: &mut State) {
        st.watchers.retain(|w| w.strong_count() > 0);
        for w in st.watchers.iter().filter_map(std::sync::Weak::upgrade) {
            w.notify(usize::MAX);
        }
    }

    /// Rebuilds the lookups by key and name from the entries (the first
    /// folder of a name wins, as at open).
    fn reindex(st: &mut State) {
        st.by_key.clear();
        st.by_name.clear();
        for (i, e) in st.entries.iter().enumerate() {
            st.by_key.entry(*e.feed.public_key()).or_insert(i);
            if let Some(n) = &e.name {
                st.by_name.entry(n.clone()).or_insert(i);
            }
        }
    }

    /// Creates the feed of folder `dir`, keyed as `key` says.
    fn create_feed(
        &self,
        dir: u64,
        key: impl FnOnce(kappa_log::FeedBuilder) -> kappa_log::FeedBuilder,
    ) -> Result<(SharedFeed, Revoker), MultifeedError> {
        let revoker = Revoker::default();
        let builder = feed_builder(&self.inner.provider, dir, &self.inner.options, &revoker);
        let feed = key(builder).open().map_err(|source| MultifeedError::Feed { dir, source })?;
        Ok((SharedFeed::new(feed), revoker))
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
        if st.policy.is_blocked(&key) {
            return Err(PolicyError::Blocked { key: key.to_hex() }.into());
        }
        let dir = st.next_dir;
        let (feed, revoker) = self.create_feed(dir, |b| b.public_key(key))?;
        Self::push(&mut st, feed.clone(), None, Origin::Remote, revoker);
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
            let revoker = Revoker::default();
            let opened = feed_builder(&self.inner.provider, d.dir, &self.inner.options, &revoker)
                .create(false)
                .repair_headers(true)
                .open();
            match opened {
                Ok(feed) => {
                    let feed = SharedFeed::new(feed);
                    if st.by_key.contains_key(feed.public_key()) {
                        continue;
                    }
                    if st.policy.is_blocked(feed.public_key()) {
                        let key = *feed.public_key();
                        revoker.revoke();
                        drop(feed);
                        purge(&*self.inner.provider, d.dir, &key)?;
                        st.blocked_dirs.insert(key, d.dir);
                        continue;
                    }
                    let idx = st.entries.len();
                    st.by_key.insert(*feed.public_key(), idx);
                    if let Some(n) = &d.name {
                        st.by_name.entry(n.clone()).or_insert(idx);
                    }
                    st.entries.push(Entry {
                        dir: d.dir,
                        feed,
                        name: d.name,
                        origin: Origin::Loaded,
                        revoker,
                    });
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
        if st.policy.is_blocked(key) {
            return 0;
        }
        let dkey = key.discovery_key();
        for (_, h, _) in &st.sessions {
            h.want_block(dkey, index);
        }
        st.sessions.len()
    }

    pub(crate) fn register_session(
        &self,
        handle: kappa_protocol::SessionHandle,
        meta: replicate::SessionMeta,
    ) -> u64 {
        let mut st = self.state();
        let id = st.next_session;
        st.next_session += 1;
        st.sessions.push((id, handle, meta));
        id
    }

    pub(crate) fn unregister_session(&self, id: u64) {
        self.state().sessions.retain(|(i, _, _)| *i != id);
    }

    /// The sessions running now, in the order they started, with how far
    /// each got (for status displays). The set's lock is not held while the
    /// sessions are looked at.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        let sessions: Vec<_> = self.state().sessions.iter().map(|(_, h, m)| (h.clone(), m.clone())).collect();
        sessions
            .into_iter()
            .map(|(h, m)| SessionInfo {
                peer: m.peer,
                initiator: m.initiator,
                live: m.live,
                progress: h.progress(),
            })
            .collect()
    }

    /// The feed policy: which feeds this set blocks and which it hides (see
    /// [`Policy`]).
    pub fn policy(&self) -> Policy {
        self.state().policy.clone()
    }

    /// What the policy says of feed `key` (`None`: an ordinary feed).
    pub fn policy_of(&self, key: &PublicKey) -> Option<FeedPolicy> {
        self.state().policy.get(key)
    }

    /// Whether feed `key` is blocked.
    pub fn is_blocked(&self, key: &PublicKey) -> bool {
        self.state().policy.is_blocked(key)
    }

    /// A number that changes whenever the policy does (watchers of the set,
    /// see [`watch`](Self::watch), are notified too).
    pub fn policy_version(&self) -> u64 {
        self.state().policy_version
    }

    /// The feeds views index: every feed of the set but the hidden ones
    /// (blocked feeds are not in the set), in folder order.
    pub fn visible_feeds(&self) -> Vec<SharedFeed> {
        let st = self.state();
        st.entries
            .iter()
            .filter(|e| !st.policy.is_excluded(e.feed.public_key()))
            .map(|e| e.feed.clone())
            .collect()
    }

    /// The blocked feeds with the folder each keeps (`None`: blocked before
    /// this set ever held it), in key order.
    pub fn blocked_feeds(&self) -> Vec<(PublicKey, Option<u64>)> {
        let st = self.state();
        st.policy.blocked().into_iter().map(|k| (k, st.blocked_dirs.get(&k).copied())).collect()
    }

    /// Blocks feed `key`: from now on it is never offered to a peer, never
    /// requested or accepted from one, and never indexed; its files are
    /// removed but for its `key` (JS multifeed stops loading at the first
    /// folder without one) and a `kappa-blocked` marker, its handle leaves the
    /// set (handles still held elsewhere can no longer write its files:
    /// their writes are dropped), and every live
    /// session closes its channel. The key stays in the policy, so the feed
    /// stays blocked however often peers offer it; it may be a key the set
    /// has never held. Blocking a blocked feed changes nothing.
    ///
    /// The policy is written first (atomically): a crash during a block
    /// leaves the feed either not blocked, or blocked with its files removed
    /// at the next open. Fails with [`PolicyError::LocalWriter`] for a feed
    /// this set writes (hide it instead).
    pub fn block(&self, key: &PublicKey) -> Result<Blocked, MultifeedError> {
        let mut st = self.state();
        if st.closed {
            return Err(MultifeedError::Closed);
        }
        if st.policy.is_blocked(key) {
            return Ok(Blocked { changed: false, dir: st.blocked_dirs.get(key).copied(), freed: 0 });
        }
        let at = st.by_key.get(key).copied();
        if let Some(i) = at {
            let e = &st.entries[i];
            let has_secret =
                e.feed.is_writable() || self.inner.provider.exists(&format!("{}/secret_key", e.dir))?;
            if has_secret || e.name.is_some() {
                return Err(PolicyError::LocalWriter { key: key.to_hex() }.into());
            }
        }
        self.write_policy(&mut st, key, Some(FeedPolicy::Blocked))?;
        let mut blocked = Blocked { changed: true, dir: None, freed: 0 };
        if let Some(i) = at {
            let e = st.entries.remove(i);
            Self::reindex(&mut st);
            e.revoker.revoke();
            for (_, h, _) in &st.sessions {
                h.close_channel(*key);
            }
            let dir = e.dir;
            drop(e);
            st.blocked_dirs.insert(*key, dir);
            blocked.dir = Some(dir);
            blocked.freed = purge(&*self.inner.provider, dir, key)?;
        }
        Ok(blocked)
    }

    /// Unblocks feed `key`: it may be offered, accepted and indexed again,
    /// and takes its folder back as an empty replica (the next sync with a
    /// peer that holds it brings its entries back). Returns whether it was
    /// blocked.
    pub fn unblock(&self, key: &PublicKey) -> Result<bool, MultifeedError> {
        let mut st = self.state();
        if st.closed {
            return Err(MultifeedError::Closed);
        }
        if !st.policy.is_blocked(key) {
            return Ok(false);
        }
        self.write_policy(&mut st, key, None)?;
        if let Some(dir) = st.blocked_dirs.remove(key) {
            self.inner.provider.remove(&format!("{dir}/{BLOCKED_MARKER}"))?;
            let (feed, revoker) = self.create_feed(dir, |b| b.public_key(*key))?;
            Self::push_at(&mut st, dir, feed, None, Origin::Remote, revoker);
        }
        Ok(true)
    }

    /// Clears the blocks `range` of feed `key` ([`Feed::clear`](kappa_log::Feed::clear)):
    /// their bits go and their bytes are released from the data file (a
    /// hole punched where the file system can). Views drop the cleared
    /// entries (indexers see a changed feed set and rebuild beside the live
    /// view), and a sync may download the range again. Fails with
    /// [`PolicyError::UnknownFeed`] for a feed the set does not hold.
    pub fn clear(
        &self,
        key: &PublicKey,
        range: std::ops::Range<u64>,
    ) -> Result<kappa_log::Cleared, MultifeedError> {
        let (dir, feed) = self
            .feed_infos()
            .into_iter()
            .find(|(_, _, f)| f.public_key() == key)
            .map(|(dir, _, f)| (dir, f))
            .ok_or_else(|| PolicyError::UnknownFeed { key: key.to_hex() })?;
        let cleared = feed.lock().clear(range).map_err(|source| MultifeedError::Feed { dir, source })?;
        feed.notify();
        if cleared.blocks > 0 {
            let mut st = self.state();
            // Views look again at what they indexed.
            st.policy_version += 1;
            Self::notify_watchers(&mut st);
        }
        Ok(cleared)
    }

    /// Hides feed `key`: it is kept and replicated as before, and views
    /// leave it out ([`visible_feeds`](Self::visible_feeds)). It may be a
    /// key the set does not hold yet. Returns whether the policy changed;
    /// fails with [`PolicyError::Blocked`] for a blocked feed.
    pub fn hide(&self, key: &PublicKey) -> Result<bool, MultifeedError> {
        let mut st = self.state();
        match st.policy.get(key) {
            Some(FeedPolicy::Blocked) => Err(PolicyError::Blocked { key: key.to_hex() }.into()),
            Some(FeedPolicy::Hidden) => Ok(false),
            None => self.write_policy(&mut st, key, Some(FeedPolicy::Hidden)).map(|()| true),
        }
    }

    /// Shows a hidden feed to views again. Returns whether it was hidden.
    pub fn unhide(&self, key: &PublicKey) -> Result<bool, MultifeedError> {
        let mut st = self.state();
        if st.policy.get(key) != Some(FeedPolicy::Hidden) {
            return Ok(false);
        }
        self.write_policy(&mut st, key, None).map(|()| true)
    }

    /// Sets the policy of `key` to `to`: the file first (atomically), then
    /// the set's copy, then the watchers are told.
    fn write_policy(
        &self,
        st: &mut State,
        key: &PublicKey,
        to: Option<FeedPolicy>,
    ) -> Result<(), MultifeedError> {
        if st.closed {
            return Err(MultifeedError::Closed);
        }
        let mut policy = st.policy.clone();
        policy.set(*key, to);
        self.inner.provider.replace(POLICY_FILE, &policy.encode())?;
        st.policy = policy;
        st.policy_version += 1;
        Self::notify_watchers(st);
        Ok(())
    }

    /// The bytes each feed folder takes (the sum of its files' lengths), in
    /// folder order: the feeds of the set, the folders of blocked feeds (what
    /// is left: the key and the marker) and damaged folders.
    pub fn disk_usage(&self) -> Result<Vec<FeedUsage>, MultifeedError> {
        let (mut folders, policy) = {
            let st = self.state();
            let mut folders: Vec<(u64, Option<PublicKey>, Option<String>)> =
                st.entries.iter().map(|e| (e.dir, Some(*e.feed.public_key()), e.name.clone())).collect();
            folders.extend(st.blocked_dirs.iter().map(|(k, d)| (*d, Some(*k), None)));
            folders.extend(st.damaged.iter().map(|d| (d.dir, None, d.name.clone())));
            (folders, st.policy.clone())
        };
        folders.sort_by_key(|f| f.0);
        let mut out = Vec::with_capacity(folders.len());
        for (dir, key, name) in folders {
            let (mut bytes, mut allocated, mut data_allocated) = (0, Some(0u64), Some(0));
            for f in ALL_FOLDER_FILES {
                let (len, alloc) = file_size(&*self.inner.provider, &format!("{dir}/{f}"))?;
                bytes += len;
                allocated = allocated.zip(alloc).map(|(a, b)| a + b);
                if f == "data" {
                    data_allocated = alloc;
                }
            }
            let policy = key.and_then(|k| policy.get(&k));
            out.push(FeedUsage { dir, key, name, policy, bytes, allocated, data_allocated });
        }
        Ok(out)
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

/// Every file a feed folder may hold (for [`Multifeed::disk_usage`]).
const ALL_FOLDER_FILES: [&str; 10] = [
    "key",
    "secret_key",
    "tree",
    "data",
    "signatures",
    "bitfield",
    "kappa-head",
    "localname",
    LOCALNAME_BACKUP,
    BLOCKED_MARKER,
];

/// The files a block removes: all but `key` (and `secret_key`, which a
/// blockable feed does not have; a secret key is never deleted).
const PURGED_FILES: [&str; 7] =
    ["data", "tree", "signatures", "bitfield", "kappa-head", "localname", LOCALNAME_BACKUP];

/// The length of storage `name` (0 if it does not exist).
/// A file's length and what it takes on disk (`(0, Some(0))` if missing).
fn file_size(provider: &dyn Provider, name: &str) -> Result<(u64, Option<u64>), MultifeedError> {
    if !provider.exists(name)? {
        return Ok((0, Some(0)));
    }
    let mut s = provider.open(name)?;
    Ok((s.len()?, s.allocated()?))
}

/// The key in folder `dir`'s `key` file, if it holds one.
fn read_key(provider: &dyn Provider, dir: u64) -> Result<Option<PublicKey>, MultifeedError> {
    let bytes = read_file(provider, &format!("{dir}/key"))?;
    Ok(bytes.and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok()).map(PublicKey::from_bytes))
}

/// Removes the files of blocked feed `key` in folder `dir` but its key, and
/// marks the folder blocked (the marker goes first: a folder whose files are
/// half removed is always marked). Returns the bytes removed. Run again at
/// every open (removing what is not there costs no write), so a block cut
/// short is finished.
fn purge(provider: &dyn Provider, dir: u64, key: &PublicKey) -> Result<u64, MultifeedError> {
    let marker = format!("{dir}/{BLOCKED_MARKER}");
    if !provider.exists(&marker)? {
        provider.replace(&marker, format!("{}\n", key.to_hex()).as_bytes())?;
    }
    let mut freed = 0;
    for f in PURGED_FILES {
        let name = format!("{dir}/{f}");
        freed += file_size(provider, &name)?.0;
        provider.remove(&name)?;
    }
    Ok(freed)
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
