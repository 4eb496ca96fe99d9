#![doc = include_str!("../README.md")]
#![warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::any::Any;
use std::collections::HashMap;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::io::{AsyncRead, AsyncWrite};
use futures::stream::{BoxStream, StreamExt};
use serde::Serialize;

pub use kappa_index as index;
pub use kappa_log as log;
pub use kappa_multifeed as multifeed;
pub use kappa_protocol as protocol;
pub use kappa_storage as storage;
pub use kappa_view as view;
#[cfg(feature = "postgres")]
pub use kappa_view_postgres as view_postgres;
pub use kappa_view_redb as view_redb;

pub use join::{JoinEvent, JoinOptions};
pub use kappa_discovery as discovery;
pub use kappa_index::{IndexError, IndexEvent, IndexState, Status};
pub use kappa_log::encoding::ValueEncoding;
pub use kappa_log::{PublicKey, SharedFeed, SyncPolicy};
pub use kappa_multifeed::{
    Blocked, FeedPolicy, FeedUsage, Policy, PolicyError, ReplicateOptions, SyncReport, DEFAULT_SHARED_KEY,
};
pub use kappa_view::{Entry, View, ViewBackend, ViewStore};
pub use serve::{ConnectionGate, GenerationMemory, Permit, Refusal, ServeOptions, GENERATION_MEMORY_SIZE};
pub use status::{
    FeedSyncStatus, FeedsStatus, FilesStatus, KappaStatus, MemoryStatus, PeerStatus, ViewStatus,
};

mod join;
mod serve;
mod status;

use kappa_index::Indexer;
use kappa_multifeed::{FeedAdded, Multifeed, MultifeedError, MultifeedOptions};
use kappa_protocol::SessionHandle;
use kappa_storage::{DirectoryProvider, MemoryProvider};
use kappa_view::{MemoryViews, StoreError, Tx, ViewError};
use kappa_view_redb::RedbViews;

pub use kappa_view_redb::MovedAside;

/// The file, in a database directory, that holds the views.
pub const VIEWS_FILE: &str = "views.redb";

/// Everything the database can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KappaError {
    /// The feed set failed (storage, replication).
    #[error(transparent)]
    Multifeed(#[from] MultifeedError),
    /// A view's indexer failed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// A view failed.
    #[error(transparent)]
    View(#[from] ViewError),
    /// The view store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A log operation failed.
    #[error(transparent)]
    Log(#[from] kappa_log::LogError),
    /// No view of that name is in use.
    #[error("no view named {0:?}")]
    UnknownView(String),
    /// A view of that name is already in use.
    #[error("a view named {0:?} is already in use")]
    ViewExists(String),
    /// The directory holds files, but not a kappa database.
    #[error("{0} is not a kappa database (it holds other files)")]
    NotADatabase(PathBuf),
    /// A value does not fit the database's value encoding.
    #[error("value encoding: {0}")]
    Encoding(String),
    /// The database was closed.
    #[error("the database is closed")]
    Closed,
    /// The view storage could not be opened (a database server that cannot be
    /// reached, a schema that belongs to something else, another indexer).
    #[error("opening the view storage: {0}")]
    Views(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Accepting a connection failed ([`Kappa::serve`] goes on).
    #[error("accepting a connection failed: {0}")]
    Accept(#[source] std::io::Error),
    /// Discovery could not start, announce or look up ([`Kappa::join`]).
    #[error("discovery: {0}")]
    Discovery(#[source] kappa_discovery::DiscoveryError),
    /// [`Kappa::serve_with`] closed a connection at once: a cap of
    /// [`ServeOptions`] was reached (it goes on).
    #[error("refused a connection: {0}")]
    Refused(#[source] Refusal),
    /// The database was opened in seed mode ([`KappaBuilder::seed_mode`]):
    /// it replicates and indexes nothing, so it has no views.
    #[error("the database is open in seed mode (views off): open it without seed mode to use views")]
    SeedMode,
}

/// Where the views keep their rows.
///
/// Equality compares [`Custom`](Self::Custom) backends by identity (the same
/// `Arc`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ViewStorage {
    /// In memory: views are rebuilt at every start.
    Memory,
    /// In a redb file (the default for a directory: `<dir>/views.redb`).
    Redb(PathBuf),
    /// In PostgreSQL, at a `postgres://` URL (see
    /// [`view_postgres::Config::from_url`]; `?schema=` picks the schema, one per
    /// kappa database). This process indexes and holds the schema's writer lock;
    /// other processes read with [`view_postgres::PgViews::open_reader`].
    #[cfg(feature = "postgres")]
    Postgres(String),
    /// In a backend of your own (a crate implementing [`ViewBackend`]), opened
    /// already; each view asks it for its store.
    ///
    /// ```
    /// use std::sync::{Arc, atomic::{AtomicUsize, Ordering}};
    /// use kappa_core::{Kappa, ViewStorage, view::{sum::SumView, MemoryViews, StoreError, ViewBackend, ViewStore}};
    ///
    /// /// Views in memory, counting the stores opened.
    /// #[derive(Debug, Default)]
    /// struct Counting(AtomicUsize);
    ///
    /// impl ViewBackend for Counting {
    ///     fn open_store(&self, name: &str) -> Result<Arc<dyn ViewStore>, StoreError> {
    ///         self.0.fetch_add(1, Ordering::Relaxed);
    ///         MemoryViews.open_store(name)
    ///     }
    /// }
    ///
    /// let backend = Arc::new(Counting::default());
    /// let core = Kappa::builder().view_storage(ViewStorage::Custom(backend.clone())).open()?;
    /// let sum = core.use_view("sum", 1, SumView::new)?;
    /// core.writer("local")?.append(&5)?;
    /// futures::executor::block_on(sum.ready())?;
    /// assert_eq!(sum.get()?, 5.0);
    /// assert_eq!(backend.0.load(Ordering::Relaxed), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    Custom(Arc<dyn ViewBackend>),
}

impl PartialEq for ViewStorage {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (ViewStorage::Memory, ViewStorage::Memory) => true,
            (ViewStorage::Redb(a), ViewStorage::Redb(b)) => a == b,
            #[cfg(feature = "postgres")]
            (ViewStorage::Postgres(a), ViewStorage::Postgres(b)) => a == b,
            (ViewStorage::Custom(a), ViewStorage::Custom(b)) => {
                std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
            }
            _ => false,
        }
    }
}

impl Eq for ViewStorage {}

/// How to open a database; see [`Kappa::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `open` is called"]
pub struct KappaBuilder {
    dir: Option<PathBuf>,
    encoding: ValueEncoding,
    shared_key: Option<[u8; 32]>,
    views: Option<ViewStorage>,
    sync: SyncPolicy,
    signature_form: kappa_log::SignatureForm,
    seed: bool,
}

impl KappaBuilder {
    /// Store the logs (and, by default, the views) in `dir`, a multifeed-5
    /// directory that JS kappa-core 6 can also open.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// How entries are encoded (default JSON, as kappa-core apps use).
    pub fn value_encoding(mut self, encoding: ValueEncoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// The shared key peers must know to replicate (multifeed's `encryptionKey`).
    pub fn shared_key(mut self, key: [u8; 32]) -> Self {
        self.shared_key = Some(key);
        self
    }

    /// Where the views keep their rows.
    pub fn view_storage(mut self, views: ViewStorage) -> Self {
        self.views = Some(views);
        self
    }

    /// The sync policy of every feed.
    pub fn sync(mut self, sync: SyncPolicy) -> Self {
        self.sync = sync;
        self
    }

    /// The form our writers sign appends in: the 32-byte hypercore 8 form by
    /// default, which kappa-core 6 and 7 peers both verify, so one database
    /// serves both generations; [`SignatureForm::TreeHashAndLength`](kappa_log::SignatureForm)
    /// is what JS kappa-core 7 writes, and kappa-core 6 peers cannot verify it
    /// (such feeds are not offered to them). Both forms are always verified.
    pub fn signature_form(mut self, form: kappa_log::SignatureForm) -> Self {
        self.signature_form = form;
        self
    }

    /// Seed mode (default off): the database replicates everything and
    /// indexes nothing, for a node that keeps a community's data available
    /// and needs no views (`kappa serve --no-views`). The view storage is not
    /// opened at all (no `views.redb` is created, read or written), and
    /// [`use_view`](Kappa::use_view) fails with [`KappaError::SeedMode`].
    ///
    /// Views are turned back on by opening the database without seed mode:
    /// each view then catches up from the progress it had stored, indexing
    /// every entry that arrived meanwhile exactly once (progress and rows
    /// commit together, see kappa-index).
    pub fn seed_mode(mut self, seed: bool) -> Self {
        self.seed = seed;
        self
    }

    /// Opens (or creates) the database.
    pub fn open(self) -> Result<Kappa, KappaError> {
        let mut mf_opts = MultifeedOptions::default();
        mf_opts.sync = self.sync;
        mf_opts.signature_form = self.signature_form;
        let (mf, default_views) = match &self.dir {
            Some(dir) => {
                check_database_dir(dir)?;
                let mf = Multifeed::open(DirectoryProvider::new(dir), mf_opts)?;
                (mf, ViewStorage::Redb(dir.join(VIEWS_FILE)))
            }
            None => (Multifeed::open(MemoryProvider::new(), mf_opts)?, ViewStorage::Memory),
        };
        let mut views_moved_aside = None;
        let views: Option<Arc<dyn ViewBackend>> = match self.views.unwrap_or(default_views) {
            _ if self.seed => None,
            ViewStorage::Memory => Some(Arc::new(MemoryViews)),
            ViewStorage::Redb(path) => {
                // Views are derived: a file that cannot be used is moved aside
                // and the views rebuild from the logs.
                let opened = RedbViews::open_or_move_aside(&path).map_err(StoreError::from)?;
                views_moved_aside = opened.moved_aside;
                Some(Arc::new(opened.views))
            }
            #[cfg(feature = "postgres")]
            ViewStorage::Postgres(url) => Some(Arc::new(
                kappa_view_postgres::PgViews::open(&url).map_err(|e| KappaError::Views(Box::new(e)))?,
            )),
            ViewStorage::Custom(backend) => Some(backend),
        };
        Ok(Kappa {
            inner: Arc::new(Inner {
                mf,
                encoding: self.encoding,
                shared_key: self.shared_key,
                views,
                views_moved_aside,
                used: Mutex::new(HashMap::new()),
                closed: Mutex::new(false),
            }),
        })
    }
}

/// A directory is a kappa (multifeed) database, or empty, or absent.
fn check_database_dir(dir: &Path) -> Result<(), KappaError> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    let mut any = false;
    for e in entries.flatten() {
        any = true;
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name == "0" || name == VIEWS_FILE || name == kappa_multifeed::LOCK_FILE {
            return Ok(());
        }
    }
    if any {
        Err(KappaError::NotADatabase(dir.to_path_buf()))
    } else {
        Ok(())
    }
}

struct UsedView {
    indexer: Arc<Indexer>,
    view: Arc<dyn Any + Send + Sync>,
}

struct Inner {
    mf: Multifeed,
    encoding: ValueEncoding,
    shared_key: Option<[u8; 32]>,
    /// Where the views keep their rows; `None` in seed mode (no views).
    views: Option<Arc<dyn ViewBackend>>,
    views_moved_aside: Option<MovedAside>,
    used: Mutex<HashMap<String, UsedView>>,
    closed: Mutex<bool>,
}

/// A kappa database: logs (one per writer, one per peer met), views over them,
/// and replication with Rust and JS kappa-core 6 peers. Cheap to clone.
///
/// See the crate docs for a walk-through.
#[derive(Clone)]
pub struct Kappa {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Kappa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kappa").field("feeds", &self.inner.mf.feeds().len()).finish_non_exhaustive()
    }
}

/// A local writer: a feed of this database that this process can append to.
#[derive(Clone, Debug)]
pub struct Writer {
    feed: SharedFeed,
    encoding: ValueEncoding,
}

impl Writer {
    /// Appends one value, encoded with the database's value encoding (JSON:
    /// compact `JSON.stringify` form plus a newline, as JS writes it). Returns
    /// its sequence number.
    pub fn append<T: Serialize + ?Sized>(&self, value: &T) -> Result<u64, KappaError> {
        let bytes = encode(self.encoding, value)?;
        Ok(self.feed.append(bytes)?)
    }

    /// Appends several values in one signed batch.
    pub fn append_batch<T: Serialize>(&self, values: &[T]) -> Result<std::ops::Range<u64>, KappaError> {
        let encoded: Result<Vec<Vec<u8>>, KappaError> =
            values.iter().map(|v| encode(self.encoding, v)).collect();
        Ok(self.feed.append_batch(encoded?)?)
    }

    /// Appends raw bytes, as they are.
    pub fn append_raw(&self, bytes: impl AsRef<[u8]>) -> Result<u64, KappaError> {
        Ok(self.feed.append(bytes)?)
    }

    /// The feed.
    pub fn feed(&self) -> &SharedFeed {
        &self.feed
    }

    /// The public key.
    pub fn key(&self) -> PublicKey {
        *self.feed.public_key()
    }
}

/// `value` as block bytes under `encoding` (see [`ValueEncoding::encode`]).
fn encode<T: Serialize + ?Sized>(encoding: ValueEncoding, value: &T) -> Result<Vec<u8>, KappaError> {
    encoding.encode(value).map_err(|e| match e {
        kappa_log::LogError::Encoding(reason) => KappaError::Encoding(reason),
        other => KappaError::Log(other),
    })
}

/// A view in use: derefs to the view, so its query methods are at hand (the Rust
/// form of `core.api.<name>`).
pub struct ViewHandle<V> {
    view: Arc<Versioned<V>>,
    indexer: Arc<Indexer>,
    name: String,
}

impl<V> Clone for ViewHandle<V> {
    fn clone(&self) -> Self {
        ViewHandle { view: self.view.clone(), indexer: self.indexer.clone(), name: self.name.clone() }
    }
}

impl<V> std::fmt::Debug for ViewHandle<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewHandle").field("name", &self.name).field("state", &self.indexer.state()).finish()
    }
}

impl<V> Deref for ViewHandle<V> {
    type Target = V;
    fn deref(&self) -> &V {
        &self.view.view
    }
}

impl<V> ViewHandle<V> {
    /// The view's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Resolves when this view has indexed everything stored locally.
    pub async fn ready(&self) -> Result<(), KappaError> {
        Ok(self.indexer.ready().await?)
    }

    /// The view's indexing state (for progress bars).
    pub fn state(&self) -> IndexState {
        self.indexer.state()
    }

    /// Why the view was cleared at start and is being rebuilt from the logs
    /// although its version matched: it held entries the logs do not (after a
    /// crash of the machine, or a feed's files lost). `None` if it was not.
    pub fn rebuilt_because(&self) -> Option<&str> {
        self.indexer.rebuilt_because()
    }
}

/// A view with the version it was used with.
struct Versioned<V> {
    view: V,
    version: u64,
}

impl<V: View> View for Versioned<V> {
    fn store(&self) -> &dyn ViewStore {
        self.view.store()
    }
    fn map(&self, entries: &[Entry], tx: &mut Tx<'_>) -> Result<(), ViewError> {
        self.view.map(entries, tx)
    }
    fn map_batches(&self, batches: &[&[Entry]], tx: &mut Tx<'_>) -> Result<(), ViewError> {
        self.view.map_batches(batches, tx)
    }
    fn version(&self) -> u64 {
        self.version
    }
    fn max_batch(&self) -> usize {
        self.view.max_batch()
    }
    fn indexed(&self, entries: &[Entry]) {
        self.view.indexed(entries)
    }
    fn newest_first(&self) -> bool {
        self.view.newest_first()
    }
}

/// Something the database did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum KappaEvent {
    /// A feed joined the database (loaded, created, or learned from a peer).
    FeedAdded(FeedAdded),
    /// A view indexed a batch, changed state, or failed.
    View {
        /// The view's name.
        name: String,
        /// What happened.
        event: IndexEvent,
    },
}

impl Kappa {
    /// Starts opening a database.
    pub fn builder() -> KappaBuilder {
        KappaBuilder {
            dir: None,
            encoding: ValueEncoding::Json,
            shared_key: None,
            views: None,
            sync: SyncPolicy::None,
            signature_form: kappa_log::SignatureForm::TreeHash,
            seed: false,
        }
    }

    /// Opens (or creates) the database in `dir`: logs as multifeed 5 lays them out,
    /// views in `<dir>/views.redb`. JSON entries.
    ///
    /// Fails if another process has it open, or if `dir` holds files that are not
    /// a kappa database. A `views.redb` that cannot be used (damaged, or fails
    /// redb's integrity check) is no failure: it is moved aside and the views
    /// rebuild from the logs (see [`views_moved_aside`](Self::views_moved_aside)).
    pub fn open(dir: impl AsRef<Path>) -> Result<Kappa, KappaError> {
        Self::builder().dir(dir.as_ref()).open()
    }

    /// A database in memory (logs and views). JSON entries.
    pub fn in_memory() -> Result<Kappa, KappaError> {
        Self::builder().open()
    }

    /// Set if the redb view file could not be used when the database opened
    /// (damaged, cut short, not a view database): it was moved aside (kept, as
    /// `views.redb.damaged-<unix time>`, for a bug report) and a new, empty one
    /// took its place, so every view rebuilds from the logs. Worth telling the
    /// user; nothing is lost (the logs are the truth).
    pub fn views_moved_aside(&self) -> Option<&MovedAside> {
        self.inner.views_moved_aside.as_ref()
    }

    /// Whether the database was opened in seed mode
    /// ([`KappaBuilder::seed_mode`]): replicating, with no views.
    pub fn is_seed(&self) -> bool {
        self.inner.views.is_none()
    }

    /// Whether the view file has been opened for writing. A `views.redb` that
    /// a clean close sealed opens read-only, and stays so until a view commits
    /// (see `kappa_view_redb`): a command that only reads current views writes
    /// and syncs nothing. `false` for views that are not in a redb file (what
    /// [`ViewBackend::is_open_for_writing`] says, for a custom backend).
    pub fn views_open_for_writing(&self) -> bool {
        self.inner.views.as_ref().is_some_and(|v| v.is_open_for_writing())
    }

    /// The feed set.
    pub fn multifeed(&self) -> &Multifeed {
        &self.inner.mf
    }

    /// The shared key this database replicates with (multifeed's public default
    /// if none was set).
    pub fn shared_key(&self) -> [u8; 32] {
        self.inner.shared_key.unwrap_or(DEFAULT_SHARED_KEY)
    }

    /// The local writer called `name`, created if needed (the same feed for the
    /// same name, also across restarts and concurrent calls).
    pub fn writer(&self, name: &str) -> Result<Writer, KappaError> {
        self.check_open()?;
        Ok(Writer { feed: self.inner.mf.writer(name)?, encoding: self.inner.encoding })
    }

    /// The feed with public key `key`.
    pub fn feed(&self, key: &PublicKey) -> Option<SharedFeed> {
        self.inner.mf.feed(key)
    }

    /// Entry `seq` of feed `key`: from local storage if it is there, else asked of
    /// every connected peer (an on-demand get of a sparse feed; the block is
    /// verified against a signed root and stored before it is returned). `None`
    /// if the feed is unknown or no peer delivered it within `timeout`.
    pub async fn get(
        &self,
        key: &PublicKey,
        seq: u64,
        timeout: std::time::Duration,
    ) -> Result<Option<Vec<u8>>, KappaError> {
        let Some(feed) = self.feed(key) else { return Ok(None) };
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let listener = feed.changed();
            if let Some(v) = feed.get(seq)? {
                return Ok(Some(v));
            }
            // Ask the sessions connected now; asked again on every wake-up, so
            // sessions that connect meanwhile are asked too.
            self.inner.mf.want_block(key, seq);
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let tick = futures_timer::Delay::new(left.min(std::time::Duration::from_millis(100)));
            futures::pin_mut!(listener, tick);
            futures::future::select(listener, tick).await;
        }
    }

    /// Every feed, in creation order (blocked feeds are not among them;
    /// hidden ones are).
    pub fn feeds(&self) -> Vec<SharedFeed> {
        self.inner.mf.feeds()
    }

    /// Blocks feed `key` in this database: it is never offered to a peer,
    /// never accepted from one, never indexed; its files are removed (its
    /// key is kept, so it stays blocked), and every view in use drops its
    /// rows (for now by a full rebuild: [`ready`](Self::ready) resolves once
    /// the views have caught up without it). Peers keep their copies; see
    /// docs/semantics.md ("Blocking and hiding feeds") for what this does and
    /// cannot do. Fails with [`PolicyError::LocalWriter`] for a feed this
    /// database writes.
    pub fn block(&self, key: &PublicKey) -> Result<Blocked, KappaError> {
        self.check_open()?;
        Ok(self.inner.mf.block(key)?)
    }

    /// Unblocks feed `key`: the next sync with a peer that holds it brings
    /// it back, and views index it again. Returns whether it was blocked.
    pub fn unblock(&self, key: &PublicKey) -> Result<bool, KappaError> {
        self.check_open()?;
        Ok(self.inner.mf.unblock(key)?)
    }

    /// Hides feed `key` from the views (they drop its rows, by a rebuild);
    /// it is still kept and replicated. Returns whether it was visible.
    pub fn hide(&self, key: &PublicKey) -> Result<bool, KappaError> {
        self.check_open()?;
        Ok(self.inner.mf.hide(key)?)
    }

    /// Shows a hidden feed to the views again (they index its entries).
    /// Returns whether it was hidden.
    pub fn unhide(&self, key: &PublicKey) -> Result<bool, KappaError> {
        self.check_open()?;
        Ok(self.inner.mf.unhide(key)?)
    }

    /// The feed policy: blocked and hidden feeds.
    pub fn policy(&self) -> Policy {
        self.inner.mf.policy()
    }

    fn check_open(&self) -> Result<(), KappaError> {
        if *lock(&self.inner.closed) {
            Err(KappaError::Closed)
        } else {
            Ok(())
        }
    }

    /// The store a view called `name` should keep its rows in (in the database's
    /// view storage).
    pub fn view_store(&self, name: &str) -> Result<Arc<dyn ViewStore>, KappaError> {
        let views = self.inner.views.as_ref().ok_or(KappaError::SeedMode)?;
        Ok(views.open_store(name)?)
    }

    /// Starts using a view: `make` builds it over its store; it is indexed in the
    /// background from then on, rebuilt if `version` differs from the one its rows
    /// were made with.
    ///
    /// ```
    /// use kappa_core::{Kappa, view::sum::SumView};
    /// let core = Kappa::in_memory()?;
    /// let sum = core.use_view("sum", 1, SumView::new)?;
    /// core.writer("local")?.append(&5)?;
    /// futures::executor::block_on(sum.ready())?;
    /// assert_eq!(sum.get()?, 5.0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn use_view<V: View>(
        &self,
        name: &str,
        version: u64,
        make: impl FnOnce(Arc<dyn ViewStore>) -> V,
    ) -> Result<ViewHandle<V>, KappaError> {
        self.check_open()?;
        if lock(&self.inner.used).contains_key(name) {
            return Err(KappaError::ViewExists(name.to_owned()));
        }
        let view = Arc::new(Versioned { view: make(self.view_store(name)?), version });
        let indexer = Arc::new(Indexer::start(name, view.clone(), &self.inner.mf)?);
        lock(&self.inner.used)
            .insert(name.to_owned(), UsedView { indexer: indexer.clone(), view: view.clone() });
        Ok(ViewHandle { view, indexer, name: name.to_owned() })
    }

    /// The view called `name`, if it is in use with type `V`.
    pub fn view<V: View>(&self, name: &str) -> Option<ViewHandle<V>> {
        let used = lock(&self.inner.used);
        let u = used.get(name)?;
        let view = u.view.clone().downcast::<Versioned<V>>().ok()?;
        Some(ViewHandle { view, indexer: u.indexer.clone(), name: name.to_owned() })
    }

    /// The names of the views in use, sorted.
    pub fn view_names(&self) -> Vec<String> {
        let mut names: Vec<String> = lock(&self.inner.used).keys().cloned().collect();
        names.sort();
        names
    }

    /// What the database is doing now: its feeds, every running session
    /// (its peer, what is being synced and how far), every view (entries
    /// indexed against entries available; views the view storage holds that
    /// are not in use are read from their stored progress, with status
    /// `"stopped"`, and nothing is indexed), and the process's open files and
    /// memory. Cheap enough to call every second: it locks each feed and
    /// session briefly and reads `/proc/self/status`.
    pub fn status(&self) -> Result<KappaStatus, KappaError> {
        let feeds = self.inner.mf.feeds();
        let feeds_status = FeedsStatus {
            count: feeds.len(),
            writable: feeds.iter().filter(|f| f.is_writable()).count(),
            entries: feeds.iter().map(|f| f.lock().downloaded(0..u64::MAX)).sum(),
        };
        let peers = self.inner.mf.sessions().into_iter().map(status::PeerStatus::from_session).collect();
        let mut views: Vec<ViewStatus> = self
            .view_states()
            .into_iter()
            .map(|(name, st)| ViewStatus {
                name,
                status: status::status_name(st.status).to_owned(),
                indexed: st.indexed,
                available: st.total,
                error: st.error.map(|e| e.to_string()),
            })
            .collect();
        let stored = match &self.inner.views {
            Some(views) => views.stored_views()?,
            None => Vec::new(),
        };
        let mut available = None;
        for name in stored {
            if views.iter().any(|v| v.name == name) {
                continue;
            }
            let state = self.view_store(&name)?.state()?;
            let indexed = state.and_then(|b| kappa_index::Progress::decode(&b)).map_or(0, |p| p.count());
            let available = *available.get_or_insert_with(|| {
                self.inner.mf.visible_feeds().iter().map(|f| f.lock().downloaded(0..u64::MAX)).sum()
            });
            views.push(ViewStatus { name, status: "stopped".to_owned(), indexed, available, error: None });
        }
        Ok(KappaStatus {
            seed: self.is_seed(),
            feeds: feeds_status,
            peers,
            views,
            files: FilesStatus::now(),
            memory: MemoryStatus::now(),
        })
    }

    /// The state of every view in use.
    pub fn view_states(&self) -> Vec<(String, IndexState)> {
        let used = lock(&self.inner.used);
        let mut v: Vec<(String, IndexState)> =
            used.iter().map(|(n, u)| (n.clone(), u.indexer.state())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn indexers(&self, names: &[&str]) -> Result<Vec<Arc<Indexer>>, KappaError> {
        let used = lock(&self.inner.used);
        if names.is_empty() {
            return Ok(used.values().map(|u| u.indexer.clone()).collect());
        }
        names
            .iter()
            .map(|n| {
                used.get(*n)
                    .map(|u| u.indexer.clone())
                    .ok_or_else(|| KappaError::UnknownView((*n).to_owned()))
            })
            .collect()
    }

    /// Resolves when the named views (all, if none named) have indexed every
    /// entry stored locally. A view in the error state returns its error.
    pub async fn ready(&self, views: &[&str]) -> Result<(), KappaError> {
        for ix in self.indexers(views)? {
            ix.ready().await?;
        }
        Ok(())
    }

    /// Pauses the named views (all, if none named): resolves once no `map` runs.
    pub async fn pause(&self, views: &[&str]) -> Result<(), KappaError> {
        for ix in self.indexers(views)? {
            ix.pause().await;
        }
        Ok(())
    }

    /// Resumes the named views (all, if none named), also after an error.
    pub fn resume(&self, views: &[&str]) -> Result<(), KappaError> {
        for ix in self.indexers(views)? {
            ix.resume();
        }
        Ok(())
    }

    /// Events: feeds added (each feed already in the database first) and what the
    /// views in use at the time of the call do.
    pub fn events(&self) -> BoxStream<'static, KappaEvent> {
        let feeds = self.inner.mf.subscribe().map(KappaEvent::FeedAdded).boxed();
        let mut streams = vec![feeds];
        for (name, u) in lock(&self.inner.used).iter() {
            let name = name.clone();
            streams.push(
                u.indexer
                    .subscribe()
                    .map(move |event| KappaEvent::View { name: name.clone(), event })
                    .boxed(),
            );
        }
        futures::stream::select_all(streams).boxed()
    }

    fn options(&self, mut opts: ReplicateOptions) -> ReplicateOptions {
        if opts.shared_key.is_none() {
            opts.shared_key = self.inner.shared_key;
        }
        opts
    }

    /// Replicates with a peer over any byte stream (non-live: returns when both
    /// sides have everything; live: until closed). Uses the database's shared key
    /// unless `opts` sets one.
    pub async fn replicate<S>(&self, stream: S, opts: ReplicateOptions) -> Result<SyncReport, KappaError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.check_open()?;
        tracing::debug!(
            initiator = opts.initiator,
            live = opts.live,
            peer = opts.peer.as_deref(),
            "replicate: start"
        );
        let r = self.inner.mf.replicate(stream, self.options(opts)).await;
        trace_replicate_end(&r);
        Ok(r?)
    }

    /// Like [`replicate`](Self::replicate), also returning a handle to close a
    /// live session.
    #[allow(clippy::type_complexity)]
    pub fn replicate_session<S>(
        &self,
        stream: S,
        opts: ReplicateOptions,
    ) -> Result<
        (impl std::future::Future<Output = Result<SyncReport, KappaError>> + Send + 'static, SessionHandle),
        KappaError,
    >
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.check_open()?;
        tracing::debug!(
            initiator = opts.initiator,
            live = opts.live,
            peer = opts.peer.as_deref(),
            "replicate: start"
        );
        let (fut, handle) = self.inner.mf.session(stream, self.options(opts))?;
        Ok((
            async move {
                let r = fut.await;
                trace_replicate_end(&r);
                Ok(r?)
            },
            handle,
        ))
    }

    /// Serves: replicates live with every connection `incoming` yields (such as
    /// `TcpListener::incoming()` of async-std or smol), until `incoming` ends,
    /// then until the sessions still open end. Each session's end, and each
    /// failed accept, is handed to `on_end`. The sessions run inside this one
    /// future (nothing is spawned), so it works on any executor.
    ///
    /// A peer syncs with a served database by connecting and calling
    /// [`replicate`](Self::replicate) (non-live: it returns once both sides have
    /// everything, even though the server is live).
    ///
    /// ```
    /// use async_std::net::{TcpListener, TcpStream};
    /// use futures::StreamExt;
    /// use kappa_core::{Kappa, ReplicateOptions};
    /// # async_std::task::block_on(async {
    /// let server = Kappa::builder().shared_key([7; 32]).open()?;
    /// server.writer("local")?.append(&"hello")?;
    /// let listener = TcpListener::bind("127.0.0.1:0").await?;
    /// let addr = listener.local_addr()?;
    ///
    /// let client = Kappa::builder().shared_key([7; 32]).open()?;
    /// let mut ended = 0;
    /// let serving = server.serve(listener.incoming().take(1), |r| {
    ///     r.unwrap();
    ///     ended += 1;
    /// });
    /// let syncing = async {
    ///     let stream = TcpStream::connect(addr).await.unwrap();
    ///     client.replicate(stream, ReplicateOptions::new(true)).await
    /// };
    /// let (served, synced) = futures::join!(serving, syncing);
    /// served?;
    /// assert_eq!(synced?.blocks_received(), 1);
    /// assert_eq!(ended, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    ///
    /// At most [`ServeOptions::default`]'s 128 sessions run at once; a
    /// connection beyond that is closed at once and reported to `on_end` as
    /// [`KappaError::Refused`]. [`serve_with`](Self::serve_with) sets the caps
    /// and also caps sessions per peer address.
    pub async fn serve<I, S>(
        &self,
        incoming: I,
        on_end: impl FnMut(Result<SyncReport, KappaError>),
    ) -> Result<(), KappaError>
    where
        I: futures::Stream<Item = std::io::Result<S>>,
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let incoming = incoming.map(|r| r.map(|s| (s, None)));
        self.serve_with(incoming, ServeOptions::default(), on_end).await
    }

    /// Like [`serve`](Self::serve), with caps on the sessions held at once:
    /// `incoming` yields each connection with its peer's IP address, if known
    /// (for the per-address cap). A connection over a cap is dropped (closed)
    /// before its handshake and reported to `on_end` as
    /// [`KappaError::Refused`]. What one session may cost before the peer
    /// proves the shared key is bounded by the protocol (see
    /// [`protocol::PeerLimits`]); docs/semantics.md gives the numbers.
    pub async fn serve_with<I, S>(
        &self,
        incoming: I,
        opts: ServeOptions,
        mut on_end: impl FnMut(Result<SyncReport, KappaError>),
    ) -> Result<(), KappaError>
    where
        I: futures::Stream<Item = std::io::Result<(S, Option<std::net::IpAddr>)>>,
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let memory = GenerationMemory::for_options(&opts);
        let gate = ConnectionGate::new(opts.clone());
        let mut sessions = futures::stream::FuturesUnordered::new();
        let mut incoming = std::pin::pin!(incoming.fuse());
        loop {
            futures::select! {
                conn = incoming.next() => match conn {
                    Some(Ok((stream, peer))) => match gate.admit(peer) {
                        Ok(permit) => {
                            tracing::debug!(peer = ?peer, open = gate.open(), "serve: connection accepted");
                            let mut ropts = ReplicateOptions::new(false)
                                .live(true)
                                .wire(opts.wire)
                                .responder_generation(memory.answer_for(peer));
                            ropts.peer = peer.map(|ip| ip.to_string());
                            let (fut, _handle) = self.replicate_session(stream, ropts)?;
                            let memory = memory.clone();
                            sessions.push(async move {
                                let r = fut.await;
                                drop(permit);
                                memory.record(peer, &r);
                                r
                            });
                        }
                        Err(refusal) => {
                            tracing::info!(
                                peer = ?refusal.peer,
                                per_address = refusal.per_address,
                                limit = refusal.limit,
                                "serve: connection refused (at the cap)"
                            );
                            drop(stream);
                            on_end(Err(KappaError::Refused(refusal)));
                        }
                    },
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "serve: accept failed");
                        on_end(Err(KappaError::Accept(e)))
                    }
                    None => break,
                },
                r = sessions.select_next_some() => on_end(r),
            }
        }
        while let Some(r) = sessions.next().await {
            on_end(r);
        }
        Ok(())
    }

    /// Closes the database: stops the views' indexers, ends the feed set's
    /// replication announcements and syncs every feed. Closing twice is fine.
    pub fn close(&self) -> Result<(), KappaError> {
        {
            let mut closed = lock(&self.inner.closed);
            if *closed {
                return Ok(());
            }
            *closed = true;
        }
        lock(&self.inner.used).clear();
        self.inner.mf.close()?;
        Ok(())
    }
}

/// Records how a replication ended (the session's and the feed exchange's
/// own events say more, inside their spans).
fn trace_replicate_end(r: &Result<SyncReport, MultifeedError>) {
    match r {
        Ok(report) => tracing::debug!(
            blocks_received = report.blocks_received(),
            blocks_sent = report.blocks_sent(),
            complete = report.is_complete(),
            "replicate: end"
        ),
        Err(e) => tracing::debug!(error = %e, cause = ?e, "replicate: failed"),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
