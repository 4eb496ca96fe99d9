use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kappa_view::{StoreError, StoreErrorKind};

/// Where a view database lives, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A file.
    File(PathBuf),
    /// An in-memory database.
    Memory,
}

impl Location {
    /// The file, if there is one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Location::File(p) => Some(p),
            Location::Memory => None,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File(p) => write!(f, "{}", p.display()),
            Location::Memory => f.write_str("<in-memory view database>"),
        }
    }
}

/// What caused a [`RedbError`]: redb's own error (a `redb::DatabaseError`,
/// a `redb::Error`) or an `io::Error`, shared so that the error stays `Clone`.
/// It is the [`RedbError`]'s [`source`](std::error::Error::source), so a
/// caller can downcast to the concrete type.
pub(crate) type Cause = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Why a view database could not be opened. Converts into [`StoreError`].
///
/// The message (`Display`) includes the cause's message; the cause itself, if
/// there is one, is the [`source`](std::error::Error::source). Two errors are
/// equal when their variants and messages are (causes are not comparable in
/// general).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum RedbError {
    /// Another handle holds the file's lock: a `RedbViews` in another process, or
    /// an earlier one in this process that is still alive.
    Locked {
        /// The file.
        at: Location,
    },
    /// The file exists but is not a redb database.
    NotRedb {
        /// The file.
        at: Location,
        /// What redb said.
        reason: String,
        /// The error redb opened the file with (an `io::Error`).
        source: Option<Cause>,
    },
    /// The file is a redb database, but not one of view tables this crate can use
    /// (another application's tables, a newer format, an old redb file format).
    Incompatible {
        /// The file.
        at: Location,
        /// What does not fit.
        reason: String,
        /// redb's error, if one said so.
        source: Option<Cause>,
    },
    /// The file is damaged.
    Corrupt {
        /// The file.
        at: Location,
        /// What redb said.
        reason: String,
        /// redb's error, if one said so.
        source: Option<Cause>,
    },
    /// I/O or another backend failure.
    Backend {
        /// The file.
        at: Location,
        /// What failed.
        reason: String,
        /// redb's error or the `io::Error`.
        source: Option<Cause>,
    },
}

impl fmt::Display for RedbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedbError::Locked { at } => write!(
                f,
                "view database {at} is already open (locked by another process or another RedbViews in this one)"
            ),
            RedbError::NotRedb { at, reason, .. } => write!(f, "{at} is not a redb database: {reason}"),
            RedbError::Incompatible { at, reason, .. } => {
                write!(f, "{at} is a redb database this store cannot use: {reason}")
            }
            RedbError::Corrupt { at, reason, .. } => write!(f, "view database {at} is corrupt: {reason}"),
            RedbError::Backend { at, reason, .. } => write!(f, "view database {at}: {reason}"),
        }
    }
}

impl std::error::Error for RedbError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RedbError::Locked { .. } => None,
            RedbError::NotRedb { source, .. }
            | RedbError::Incompatible { source, .. }
            | RedbError::Corrupt { source, .. }
            | RedbError::Backend { source, .. } => {
                source.as_deref().map(|s| s as &(dyn std::error::Error + 'static))
            }
        }
    }
}

impl PartialEq for RedbError {
    fn eq(&self, other: &Self) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other) && self.to_string() == other.to_string()
    }
}

impl Eq for RedbError {}

/// The [`RedbError`] is kept as the [`StoreError`]'s source: a caller can
/// downcast to it (`StoreError::downcast_ref::<RedbError>()`) to tell a locked
/// file from a damaged one.
impl From<RedbError> for StoreError {
    fn from(e: RedbError) -> Self {
        let kind = match e {
            RedbError::NotRedb { .. } | RedbError::Incompatible { .. } | RedbError::Corrupt { .. } => {
                StoreErrorKind::Corrupt
            }
            RedbError::Locked { .. } | RedbError::Backend { .. } => StoreErrorKind::Backend,
        };
        StoreError::new(kind, e)
    }
}

impl RedbError {
    /// A [`RedbError::Backend`] for a failed file-system operation: `what`,
    /// then the I/O error's message; the I/O error is the source.
    pub(crate) fn io(at: Location, what: &str, e: std::io::Error) -> Self {
        RedbError::Backend { at, reason: format!("{what}: {e}"), source: Some(Arc::new(e)) }
    }

    /// Classifies an error from opening the database.
    pub(crate) fn from_open(at: Location, e: redb::DatabaseError) -> Self {
        use redb::{DatabaseError as D, StorageError as S};
        match e {
            D::DatabaseAlreadyOpen | D::LockProtocolMismatch => RedbError::Locked { at },
            D::UpgradeRequired(v) => RedbError::Incompatible {
                at,
                reason: format!("written in redb file format {v}, which needs an upgrade"),
                source: Some(Arc::new(e)),
            },
            D::Storage(S::Io(io)) if io.kind() == std::io::ErrorKind::InvalidData => {
                RedbError::NotRedb { at, reason: io.to_string(), source: Some(Arc::new(io)) }
            }
            D::Storage(S::Io(io)) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                RedbError::Corrupt { at, reason: format!("truncated ({io})"), source: Some(Arc::new(io)) }
            }
            D::Storage(S::Corrupted(reason)) => {
                let source: Cause = Arc::new(D::Storage(S::Corrupted(reason.clone())));
                RedbError::Corrupt { at, reason, source: Some(source) }
            }
            other => RedbError::Backend { at, reason: other.to_string(), source: Some(Arc::new(other)) },
        }
    }

    /// Classifies an error from a transaction made while opening the database.
    pub(crate) fn from_redb(at: Location, e: impl Into<redb::Error>) -> Self {
        let e = e.into();
        let reason = e.to_string();
        let corrupt = is_corruption(&e);
        let mismatch = is_schema_mismatch(&e);
        let source: Option<Cause> = Some(Arc::new(e));
        if corrupt {
            RedbError::Corrupt { at, reason, source }
        } else if mismatch {
            RedbError::Incompatible { at, reason, source }
        } else {
            RedbError::Backend { at, reason, source }
        }
    }
}

fn is_corruption(e: &redb::Error) -> bool {
    matches!(e, redb::Error::Corrupted(_))
}

fn is_schema_mismatch(e: &redb::Error) -> bool {
    matches!(
        e,
        redb::Error::TableTypeMismatch { .. }
            | redb::Error::TypeDefinitionChanged { .. }
            | redb::Error::TableIsMultimap(_)
            | redb::Error::TableIsNotMultimap(_)
    )
}

/// Maps any redb error met while using a store to a [`StoreError`] whose
/// source is the [`redb::Error`] (for I/O, `redb::Error::Io` holds the
/// `io::Error`).
pub(crate) fn store_err(e: impl Into<redb::Error>) -> StoreError {
    let e = e.into();
    let kind = if is_corruption(&e) || is_schema_mismatch(&e) {
        StoreErrorKind::Corrupt
    } else {
        StoreErrorKind::Backend
    };
    StoreError::new(kind, e).context("redb")
}

/// Runs `f`, turning a panic inside redb into a [`StoreErrorKind::Corrupt`]
/// error.
pub(crate) fn guarded<T>(f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        Err(StoreError::from_message(StoreErrorKind::Corrupt, panic_message(&*panic)))
    })
}

/// What a caught panic said.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let msg = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into());
    format!("redb panicked reading the database (damaged file?): {msg}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::error::Error as _;
    use std::io;

    use super::*;

    #[test]
    fn a_store_error_keeps_the_redb_error_and_its_io_kind() {
        let io = io::Error::new(io::ErrorKind::PermissionDenied, "read-only file system");
        let e = store_err(redb::StorageError::Io(io));
        assert_eq!(e.kind(), StoreErrorKind::Backend);
        // The message reads as before this error had a source.
        assert_eq!(e.to_string(), "view store: redb: I/O error: read-only file system");
        let source = e.source().expect("a source");
        let redb_err = source.downcast_ref::<redb::Error>().expect("the redb error");
        match redb_err {
            redb::Error::Io(io) => assert_eq!(io.kind(), io::ErrorKind::PermissionDenied),
            other => panic!("not the I/O error: {other:?}"),
        }
        assert!(e.downcast_ref::<redb::Error>().is_some());

        let e = store_err(redb::StorageError::Corrupted("bad page".into()));
        assert_eq!(e.kind(), StoreErrorKind::Corrupt);
        assert!(matches!(e.downcast_ref::<redb::Error>(), Some(redb::Error::Corrupted(_))));
    }

    #[test]
    fn an_open_error_is_the_store_errors_source() {
        let e = StoreError::from(RedbError::Locked { at: Location::Memory });
        assert_eq!(e.kind(), StoreErrorKind::Backend);
        assert!(e.to_string().contains("is already open"), "{e}");
        assert!(matches!(e.downcast_ref::<RedbError>(), Some(RedbError::Locked { .. })));
        let e =
            StoreError::from(RedbError::NotRedb { at: Location::Memory, reason: "x".into(), source: None });
        assert_eq!(e.kind(), StoreErrorKind::Corrupt);
        assert!(matches!(e.downcast_ref::<RedbError>(), Some(RedbError::NotRedb { .. })));
    }
}
