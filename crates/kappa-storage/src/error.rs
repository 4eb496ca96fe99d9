use std::io;

/// What can go wrong with a storage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// A read asked for bytes past the end.
    #[error("read of {len} bytes at offset {offset} is out of bounds (size {size})")]
    OutOfBounds {
        /// Start of the read.
        offset: u64,
        /// Bytes asked for.
        len: u64,
        /// Size of the storage.
        size: u64,
    },
    /// The operating system reported an error.
    #[error("{op} {path}: {source}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// The file involved (empty for in-memory storage).
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Another process (or another open handle in this one) holds the lock.
    #[error("{path} is locked by another process (only one may open it at a time)")]
    Locked {
        /// The locked file.
        path: String,
    },
    /// An injected fault (from [`FaultyProvider`](crate::FaultyProvider)).
    #[error("injected fault: {0}")]
    Injected(&'static str),
    /// The storage name is not acceptable (empty, absolute, or with `..`).
    #[error("invalid storage name {0:?}")]
    InvalidName(String),
}

impl PartialEq for StorageError {
    fn eq(&self, other: &Self) -> bool {
        use StorageError::*;
        match (self, other) {
            (OutOfBounds { offset: a, len: b, size: c }, OutOfBounds { offset: x, len: y, size: z }) => {
                (a, b, c) == (x, y, z)
            }
            (Io { op: a, path: b, source: c }, Io { op: x, path: y, source: z }) => {
                a == x && b == y && c.kind() == z.kind()
            }
            (Locked { path: a }, Locked { path: b }) => a == b,
            (Injected(a), Injected(b)) => a == b,
            (InvalidName(a), InvalidName(b)) => a == b,
            _ => false,
        }
    }
}

/// Equal errors are the same failure (I/O errors compare by kind): an
/// equivalence, so errors that hold a `StorageError` can be `Eq`.
impl Eq for StorageError {}
