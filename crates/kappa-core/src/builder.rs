//! Opening a database: [`KappaBuilder`], [`ViewStorage`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kappa_log::encoding::ValueEncoding;
use kappa_log::SyncPolicy;
use kappa_multifeed::{Multifeed, MultifeedOptions};
use kappa_storage::{DirectoryProvider, MemoryProvider};
use kappa_view::{MemoryViews, StoreError, ViewBackend};
use kappa_view_redb::RedbViews;

use crate::{Inner, Kappa, KappaError};

/// The file, in a database directory, that holds the views.
pub const VIEWS_FILE: &str = "views.redb";

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
    /// [`view_postgres::Config::from_url`](crate::view_postgres::Config::from_url);
    /// `?schema=` picks the schema, one per kappa database). This process
    /// indexes and holds the schema's writer lock; other processes read with
    /// [`view_postgres::PgViews::open_reader`](crate::view_postgres::PgViews::open_reader).
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
}
