use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kappa_view::{StoreError, StoreErrorKind};
use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, TableError, TableHandle,
};

use crate::error::{guarded, panic_message, store_err, Location, RedbError};
use crate::handle::{is_sealed, Handle};
use crate::store::RedbStore;

/// Marks a file as ours: `FORMAT_KEY` → `FORMAT`.
pub(crate) const META: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("kappa-view-redb/meta");
/// Every view's indexing state, keyed by view name.
pub(crate) const STATE: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("kappa-view-redb/state");
/// The prefix of the table holding one view's rows.
pub(crate) const ROWS_PREFIX: &str = "rows/";
/// The rows tables of views' shadows (a rebuild in progress).
pub(crate) const SHADOW_PREFIX: &str = "shadow/";
/// The indexing state of views' shadows, by view name.
pub(crate) const SHADOW_STATE: TableDefinition<'static, &str, &[u8]> =
    TableDefinition::new("kappa-view-redb/shadow-state");

const FORMAT_KEY: &str = "format";
const FORMAT: &[u8] = b"kappa-view-redb/1";

/// One redb database holding every view of a kappa database: each view's rows in
/// a table of its own, and all the views' indexing states in a shared table.
///
/// Opening takes an exclusive lock on the file for as long as this value (or any
/// clone of it, or any [`RedbStore`] made from it) lives; a second open fails with
/// [`RedbError::Locked`] whether it comes from another process or this one.
/// Clones share the database.
#[derive(Debug, Clone)]
pub struct RedbViews {
    pub(crate) db: Arc<Handle>,
    at: Location,
}

/// The page cache [`RedbViews::open`] allows (64 MiB).
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

impl RedbViews {
    /// Opens the view database in the file at `path`, creating it if it does not
    /// exist (or is empty).
    ///
    /// A new file is built under a temporary name next to `path` (marker
    /// written, synced) and only then linked into place, so a crash while
    /// creating leaves either no file at `path` or a whole, empty view database;
    /// a leftover temporary file is removed by the next open.
    ///
    /// An existing file passes redb's integrity check first (every page's
    /// checksum, from the committed roots down): a file damaged from outside
    /// fails with [`RedbError::Corrupt`] instead of serving wrong rows. The check
    /// reads the whole file (see the crate README for what it costs).
    ///
    /// Fails with [`RedbError::Locked`] if the file is open elsewhere,
    /// [`RedbError::NotRedb`] if it holds something else,
    /// [`RedbError::Corrupt`] if it is damaged, and [`RedbError::Incompatible`]
    /// if it is a redb database of another application's tables. The file is
    /// left as it is; [`open_or_move_aside`](Self::open_or_move_aside) moves it
    /// aside and starts afresh instead.
    ///
    /// The page cache is bounded by [`DEFAULT_CACHE_BYTES`] (redb's own default
    /// lets it grow to 1 GiB); see [`open_with_cache`](Self::open_with_cache).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, RedbError> {
        Self::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// Like [`open`](Self::open), with a page cache of at most `cache_bytes`.
    /// Memory use then stays near that bound however many rows the views hold.
    pub fn open_with_cache(path: impl AsRef<Path>, cache_bytes: usize) -> Result<Self, RedbError> {
        let path = path.as_ref();
        let at = Location::File(path.to_path_buf());
        // redb panics on some damage (see `guarded`): make that an error too.
        std::panic::catch_unwind(AssertUnwindSafe(|| {
            crate::create::ensure_exists(path, cache_bytes)?;
            if is_sealed(path) {
                match Database::builder().set_cache_size(cache_bytes).open_read_only(path) {
                    Ok(db) => {
                        let tx = db.begin_read().map_err(|e| RedbError::from_redb(at.clone(), e))?;
                        if check_marker(&tx, &at)? == Marker::Ours {
                            drop(tx);
                            let db = Handle::read_only(db, path.to_path_buf(), cache_bytes);
                            return Ok(Self { db: Arc::new(db), at: at.clone() });
                        }
                    }
                    Err(e) => {
                        if let e @ RedbError::Locked { .. } = RedbError::from_open(at.clone(), e) {
                            return Err(e);
                        }
                        // Anything else: the full open below says what it is.
                    }
                }
            }
            let mut db = Database::builder()
                .set_cache_size(cache_bytes)
                .open(path)
                .map_err(|e| RedbError::from_open(at.clone(), e))?;
            check_integrity(&mut db, &at)?;
            Self::init(db, Some(path.to_path_buf()), cache_bytes, at.clone())
        }))
        .unwrap_or_else(|panic| Err(RedbError::Corrupt { at, reason: panic_message(&*panic), source: None }))
    }

    /// Like [`open`](Self::open), but a file that cannot be used as a view
    /// database ([`RedbError::NotRedb`], [`RedbError::Corrupt`] or
    /// [`RedbError::Incompatible`]) is renamed to
    /// `<name>.damaged-<unix time>` (kept for a bug report, as redb's attempt to
    /// open it left it: a redb file gets its header marked) and a new, empty
    /// view database is created in its place. The views then rebuild from their
    /// logs; [`Opened::moved_aside`] says whether that happened and why.
    ///
    /// Views are derived data: this is the open to use for a file that only ever
    /// holds views. A locked file or an I/O failure (a permission, a full disk)
    /// is still an error, and nothing is moved.
    pub fn open_or_move_aside(path: impl AsRef<Path>) -> Result<Opened, RedbError> {
        let path = path.as_ref();
        let cause = match Self::open(path) {
            Ok(views) => return Ok(Opened { views, moved_aside: None }),
            Err(
                e @ (RedbError::NotRedb { .. } | RedbError::Corrupt { .. } | RedbError::Incompatible { .. }),
            ) => e,
            Err(e) => return Err(e),
        };
        let to = crate::create::move_aside(path).map_err(|e| RedbError::Backend {
            at: Location::File(path.to_path_buf()),
            reason: format!("cannot move the unusable file aside ({e}) after: {cause}"),
            source: Some(Arc::new(e)),
        })?;
        let views = Self::open(path)?;
        Ok(Opened { views, moved_aside: Some(MovedAside { from: path.to_path_buf(), to, cause }) })
    }

    /// A view database in memory, gone when the last handle is dropped (for tests).
    pub fn in_memory() -> Result<Self, RedbError> {
        let at = Location::Memory;
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| RedbError::from_open(at.clone(), e))?;
        Self::init(db, None, DEFAULT_CACHE_BYTES, at)
    }

    /// Checks the format marker, writing it into a new database.
    pub(crate) fn init(
        db: Database,
        path: Option<PathBuf>,
        cache_bytes: usize,
        at: Location,
    ) -> Result<Self, RedbError> {
        let err = |e: redb::Error| RedbError::from_redb(at.clone(), e);
        let tx = db.begin_read().map_err(|e| err(e.into()))?;
        if check_marker(&tx, &at)? == Marker::Empty {
            drop(tx);
            let tx = db.begin_write().map_err(|e| err(e.into()))?;
            {
                let mut meta = tx.open_table(META).map_err(|e| err(e.into()))?;
                meta.insert(FORMAT_KEY, FORMAT).map_err(|e| err(e.into()))?;
                tx.open_table(STATE).map_err(|e| err(e.into()))?;
            }
            tx.commit().map_err(|e| err(e.into()))?;
        }
        Ok(Self { db: Arc::new(Handle::writable(db, path, cache_bytes)), at })
    }

    /// The store for the view called `view_name`: its rows and its indexing state.
    ///
    /// Any non-empty name is allowed; stores for the same name share their data.
    /// Nothing is written until the first commit.
    pub fn store(&self, view_name: &str) -> Result<RedbStore, StoreError> {
        if view_name.is_empty() {
            return Err(StoreError::from_message(StoreErrorKind::Backend, "a view needs a non-empty name"));
        }
        Ok(RedbStore::new(self.db.clone(), view_name))
    }

    /// Whether the file has been opened for writing. A file that a clean close
    /// sealed opens read-only (no write, no sync) and is reopened for writing
    /// by the first commit or clear of any of its stores; see the crate docs.
    pub fn is_open_for_writing(&self) -> bool {
        self.db.is_writable()
    }

    /// The names of the views that hold rows or an indexing state, in order.
    pub fn views(&self) -> Result<Vec<String>, StoreError> {
        guarded(|| self.views_())
    }

    fn views_(&self) -> Result<Vec<String>, StoreError> {
        self.db.read(|tx| Self::view_names(&tx))
    }

    fn view_names(tx: &ReadTransaction) -> Result<Vec<String>, StoreError> {
        let mut names: Vec<String> = tx
            .list_tables()
            .map_err(store_err)?
            .filter_map(|t| t.name().strip_prefix(ROWS_PREFIX).map(str::to_string))
            .collect();
        let state = tx.open_table(STATE).map_err(store_err)?;
        for entry in state.iter().map_err(store_err)? {
            let (k, _) = entry.map_err(store_err)?;
            names.push(k.value().to_string());
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Makes every commit so far durable, including non-durable ones made through
    /// any store of this database (a durable commit that writes nothing).
    pub fn sync(&self) -> Result<(), StoreError> {
        guarded(|| sync(&self.db))
    }

    /// Where the database lives.
    pub fn location(&self) -> &Location {
        &self.at
    }
}

/// Runs redb's integrity check: every page reachable from the committed roots
/// must match its checksum. A file that fails is an error, also one redb says it
/// repaired (fell back to an earlier commit): views are derived, a rebuild is
/// always right, a repair only probably.
fn check_integrity(db: &mut Database, at: &Location) -> Result<(), RedbError> {
    match db.check_integrity() {
        Ok(true) => Ok(()),
        Ok(false) => Err(RedbError::Corrupt {
            at: at.clone(),
            reason: "failed redb's integrity check (redb repaired it to an earlier state)".into(),
            source: None,
        }),
        // An I/O failure is what it is (classified as at open); anything else
        // redb's check fails with is damage.
        Err(e @ redb::DatabaseError::Storage(redb::StorageError::Io(_))) => {
            Err(RedbError::from_open(at.clone(), e))
        }
        Err(e) => match RedbError::from_open(at.clone(), e) {
            RedbError::Backend { at, reason, source } => Err(RedbError::Corrupt {
                at,
                reason: format!("failed redb's integrity check: {reason}"),
                source,
            }),
            other => Err(other),
        },
    }
}

/// What [`RedbViews::open_or_move_aside`] opened.
#[derive(Debug)]
#[non_exhaustive]
pub struct Opened {
    /// The view database.
    pub views: RedbViews,
    /// Set if the file at the path could not be used and was moved aside: the
    /// view database is new and empty.
    pub moved_aside: Option<MovedAside>,
}

/// A view database file that could not be used and was moved aside.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MovedAside {
    /// Where it was.
    pub from: PathBuf,
    /// Where it is now (`<name>.damaged-<unix time>`, next to `from`).
    pub to: PathBuf,
    /// Why it could not be used.
    pub cause: RedbError,
}

impl std::fmt::Display for MovedAside {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the view store could not be used ({}); it was moved to {} and a new one was created at {} (the views rebuild from the logs)",
            self.cause,
            self.to.display(),
            self.from.display()
        )
    }
}

/// A durable commit that writes nothing; nothing to do for a database that
/// nothing wrote since it was opened read-only.
pub(crate) fn sync(db: &Handle) -> Result<(), StoreError> {
    if !db.is_writable() {
        return Ok(());
    }
    let tx = db.begin_write()?;
    tx.commit().map_err(store_err)
}

/// What the format marker of a database says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    /// Ours.
    Ours,
    /// No marker and no tables: a new database, which may become ours.
    Empty,
}

/// Checks the format marker: ours, absent in an empty database, or an error.
fn check_marker(tx: &ReadTransaction, at: &Location) -> Result<Marker, RedbError> {
    let err = |e: redb::Error| RedbError::from_redb(at.clone(), e);
    match tx.open_table(META) {
        Ok(meta) => {
            let format = meta.get(FORMAT_KEY).map_err(|e| err(e.into()))?.map(|v| v.value().to_vec());
            return match format {
                Some(f) if f == FORMAT => Ok(Marker::Ours),
                Some(f) => Err(RedbError::Incompatible {
                    at: at.clone(),
                    reason: format!(
                        "format {:?}, this version reads {:?}",
                        String::from_utf8_lossy(&f),
                        String::from_utf8_lossy(FORMAT)
                    ),
                    source: None,
                }),
                None => Err(RedbError::Incompatible {
                    at: at.clone(),
                    reason: "no format marker".into(),
                    source: None,
                }),
            };
        }
        Err(TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(err(e.into())),
    }
    let tables: Vec<String> =
        tx.list_tables().map_err(|e| err(e.into()))?.map(|t| t.name().to_string()).collect();
    let multimaps = tx.list_multimap_tables().map_err(|e| err(e.into()))?.count();
    if !tables.is_empty() || multimaps > 0 {
        return Err(RedbError::Incompatible {
            at: at.clone(),
            reason: format!(
                "it holds {} table(s) ({}) but no kappa-view-redb format marker",
                tables.len() + multimaps,
                tables.join(", ")
            ),
            source: None,
        });
    }
    Ok(Marker::Empty)
}
