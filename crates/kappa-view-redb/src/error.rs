use std::fmt;
use std::path::{Path, PathBuf};

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

/// Why a view database could not be opened. Converts into [`StoreError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RedbError {
    /// Another handle holds the file's lock: a `RedbViews` in another process, or
    /// an earlier one in this process that is still alive.
    #[error(
        "view database {at} is already open (locked by another process or another RedbViews in this one)"
    )]
    Locked {
        /// The file.
        at: Location,
    },
    /// The file exists but is not a redb database.
    #[error("{at} is not a redb database: {reason}")]
    NotRedb {
        /// The file.
        at: Location,
        /// What redb said.
        reason: String,
    },
    /// The file is a redb database, but not one of view tables this crate can use
    /// (another application's tables, a newer format, an old redb file format).
    #[error("{at} is a redb database this store cannot use: {reason}")]
    Incompatible {
        /// The file.
        at: Location,
        /// What does not fit.
        reason: String,
    },
    /// The file is damaged.
    #[error("view database {at} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        at: Location,
        /// What redb said.
        reason: String,
    },
    /// I/O or another backend failure.
    #[error("view database {at}: {reason}")]
    Backend {
        /// The file.
        at: Location,
        /// What failed.
        reason: String,
    },
}

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
    /// Classifies an error from opening the database.
    pub(crate) fn from_open(at: Location, e: redb::DatabaseError) -> Self {
        use redb::{DatabaseError as D, StorageError as S};
        match e {
            D::DatabaseAlreadyOpen | D::LockProtocolMismatch => RedbError::Locked { at },
            D::UpgradeRequired(v) => RedbError::Incompatible {
                at,
                reason: format!("written in redb file format {v}, which needs an upgrade"),
            },
            D::Storage(S::Io(io)) if io.kind() == std::io::ErrorKind::InvalidData => {
                RedbError::NotRedb { at, reason: io.to_string() }
            }
            D::Storage(S::Io(io)) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                RedbError::Corrupt { at, reason: format!("truncated ({io})") }
            }
            D::Storage(S::Corrupted(reason)) => RedbError::Corrupt { at, reason },
            other => RedbError::Backend { at, reason: other.to_string() },
        }
    }

    /// Classifies an error from a transaction made while opening the database.
    pub(crate) fn from_redb(at: Location, e: impl Into<redb::Error>) -> Self {
        let e = e.into();
        let reason = e.to_string();
        if is_corruption(&e) {
            RedbError::Corrupt { at, reason }
        } else if is_schema_mismatch(&e) {
            RedbError::Incompatible { at, reason }
        } else {
            RedbError::Backend { at, reason }
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
        let e = StoreError::from(RedbError::NotRedb { at: Location::Memory, reason: "x".into() });
        assert_eq!(e.kind(), StoreErrorKind::Corrupt);
        assert!(matches!(e.downcast_ref::<RedbError>(), Some(RedbError::NotRedb { .. })));
    }
}
