#![doc = include_str!("../README.md")]
#![warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod dir;
mod error;
mod fault;
mod file;
mod memory;
mod pool;
mod prefixed;
mod replace;

pub use error::StorageError;
pub use fault::{Fault, FaultyProvider, FaultyStorage, Op};
pub use file::{io_counts, DirectoryProvider, FileStorage, IoCounts};
pub use memory::{MemoryProvider, MemoryStorage};
pub use pool::{
    open_file_limit, pool_capacity_for, FilePool, PoolStats, MAX_POOL_CAPACITY, MIN_POOL_CAPACITY,
};
pub use prefixed::Prefixed;

/// A byte store addressed by offset: one file of a log.
///
/// All methods take `&mut self`: a storage is owned by one feed, which serialises
/// access. Implementations must be `Send` so feeds can move between threads.
///
/// Implement [`read_into`](RandomAccess::read_into), [`write`](RandomAccess::write),
/// [`len`](RandomAccess::len), [`truncate`](RandomAccess::truncate) and
/// [`sync`](RandomAccess::sync); [`read`](RandomAccess::read) and
/// [`is_empty`](RandomAccess::is_empty) have defaults.
pub trait RandomAccess: Send {
    /// Fills `buf` with the bytes at `offset .. offset + buf.len()`.
    ///
    /// Fails with [`StorageError::OutOfBounds`] if that range is not inside the
    /// storage. Holes left by writes past the end read as zeros.
    fn read_into(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError>;

    /// Writes `data` at `offset`, growing the storage (zero-filled) if needed.
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError>;

    /// The current length in bytes.
    fn len(&mut self) -> Result<u64, StorageError>;

    /// Shrinks or grows (zero-filled) the storage to `len` bytes.
    fn truncate(&mut self, len: u64) -> Result<(), StorageError>;

    /// Flushes everything written so far to stable storage.
    fn sync(&mut self) -> Result<(), StorageError>;

    /// Reads `len` bytes at `offset` into a new vector.
    fn read(&mut self, offset: u64, len: usize) -> Result<Vec<u8>, StorageError> {
        let mut buf = vec![0; len];
        self.read_into(offset, &mut buf)?;
        Ok(buf)
    }

    /// Whether the storage holds no bytes.
    fn is_empty(&mut self) -> Result<bool, StorageError> {
        Ok(self.len()? == 0)
    }

    /// Whether a [`sync`](RandomAccess::sync) would have anything to do: `false`
    /// only when nothing was written since the last sync. The default says
    /// `true` (a sync is then always made).
    fn needs_sync(&self) -> bool {
        true
    }

    /// Gives up the bytes at `offset .. offset + len` (hypercore's `del`):
    /// they read as zeros from then on and the length is unchanged. Returns
    /// whether their space went back to the file system (a hole punched);
    /// the default zeroes the part inside the storage and says no. Bytes past
    /// the end are left alone.
    fn release(&mut self, offset: u64, len: u64) -> Result<bool, StorageError> {
        let size = self.len()?;
        let end = offset.saturating_add(len).min(size);
        let mut at = offset;
        let zeros = vec![0u8; 64 * 1024];
        while at < end {
            let n = (end - at).min(zeros.len() as u64) as usize;
            self.write(at, &zeros[..n])?;
            at += n as u64;
        }
        Ok(false)
    }

    /// The bytes the storage takes on its medium, holes left out (a file's
    /// allocated blocks); `None` where that is not known (the default).
    fn allocated(&mut self) -> Result<Option<u64>, StorageError> {
        Ok(None)
    }
}

impl<S: RandomAccess + ?Sized> RandomAccess for Box<S> {
    fn read_into(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        (**self).read_into(offset, buf)
    }
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        (**self).write(offset, data)
    }
    fn len(&mut self) -> Result<u64, StorageError> {
        (**self).len()
    }
    fn truncate(&mut self, len: u64) -> Result<(), StorageError> {
        (**self).truncate(len)
    }
    fn sync(&mut self) -> Result<(), StorageError> {
        (**self).sync()
    }
    fn needs_sync(&self) -> bool {
        (**self).needs_sync()
    }
    fn release(&mut self, offset: u64, len: u64) -> Result<bool, StorageError> {
        (**self).release(offset, len)
    }
    fn allocated(&mut self) -> Result<Option<u64>, StorageError> {
        (**self).allocated()
    }
}

/// A boxed storage, what [`Provider`]s hand out.
pub type BoxedStorage = Box<dyn RandomAccess>;

/// Opens named storages: the "storage function" of JS random-access-storage.
///
/// A feed asks for `key`, `secret_key`, `tree`, `data`, `signatures` and `bitfield`.
/// Names may contain `/` (a multifeed asks for `0/key`, `1/tree`, ...).
pub trait Provider: Send + Sync {
    /// Opens (or prepares to create) the storage called `name`.
    fn open(&self, name: &str) -> Result<BoxedStorage, StorageError>;

    /// Whether a storage called `name` exists and holds at least one byte.
    ///
    /// The default opens it and asks for its length.
    fn exists(&self, name: &str) -> Result<bool, StorageError> {
        Ok(!self.open(name)?.is_empty()?)
    }

    /// Takes an exclusive, process-wide lock named `name`, released when the guard
    /// drops. The default grants every lock (in-memory storage has nobody to share
    /// with); [`DirectoryProvider`] locks the file with `flock`, which is what JS
    /// hypercore does on its `bitfield` file.
    fn lock(&self, name: &str) -> Result<LockGuard, StorageError> {
        let _ = name;
        Ok(LockGuard::none())
    }

    /// Replaces the whole content of `name` with `bytes`, atomically where
    /// the backend can: after a crash at any point the storage holds either
    /// its old content or `bytes`, never a mix. [`DirectoryProvider`] writes
    /// a temporary file beside it, syncs it, renames it over `name` and syncs
    /// the directory. The default truncates, writes and syncs in place (not
    /// atomic: for storages a crash cannot leave half written, such as memory).
    fn replace(&self, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
        let mut s = self.open(name)?;
        s.truncate(0)?;
        s.write(0, bytes)?;
        s.sync()
    }

    /// Removes the storage `name`, durably where the backend can
    /// ([`DirectoryProvider`] deletes the file and syncs its directory); a
    /// name that does not exist is no error. Storages opened earlier keep
    /// what they hold (as an open file outlives its deletion). The default
    /// truncates it to nothing, so that [`exists`](Provider::exists) says
    /// `false`.
    fn remove(&self, name: &str) -> Result<(), StorageError> {
        let mut s = self.open(name)?;
        if !s.is_empty()? {
            s.truncate(0)?;
            s.sync()?;
        }
        Ok(())
    }
}

impl<P: Provider + ?Sized> Provider for std::sync::Arc<P> {
    fn open(&self, name: &str) -> Result<BoxedStorage, StorageError> {
        (**self).open(name)
    }
    fn exists(&self, name: &str) -> Result<bool, StorageError> {
        (**self).exists(name)
    }
    fn lock(&self, name: &str) -> Result<LockGuard, StorageError> {
        (**self).lock(name)
    }
    fn replace(&self, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
        (**self).replace(name, bytes)
    }
    fn remove(&self, name: &str) -> Result<(), StorageError> {
        (**self).remove(name)
    }
}

/// Holds a lock taken with [`Provider::lock`] until dropped.
#[derive(Debug)]
#[must_use = "the lock is released when the guard is dropped"]
pub struct LockGuard {
    _file: Option<std::fs::File>,
    /// What the provider knows of the locked file's directory, kept while the
    /// lock keeps others out of it.
    _dir: Option<std::sync::Arc<dir::DirState>>,
}

impl LockGuard {
    /// A guard that holds nothing.
    pub fn none() -> Self {
        LockGuard { _file: None, _dir: None }
    }

    pub(crate) fn file(file: std::fs::File, dir: std::sync::Arc<dir::DirState>) -> Self {
        LockGuard { _file: Some(file), _dir: Some(dir) }
    }
}

/// Checks that `offset + len` fits in a `u64` and returns the end offset.
pub(crate) fn end_of(offset: u64, len: usize) -> Result<u64, StorageError> {
    offset.checked_add(len as u64).ok_or(StorageError::OutOfBounds {
        offset,
        len: len as u64,
        size: u64::MAX,
    })
}
