//! A feed's storage that can be cut off: once a feed is blocked, every handle
//! still held somewhere (a session, an indexer, an application) fails to read
//! or write its files instead of recreating what was just removed.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use kappa_storage::{BoxedStorage, LockGuard, Provider, RandomAccess, StorageError};

/// A provider whose storages stop working once [`revoke`](Revoker::revoke)d.
pub(crate) struct Revocable<P> {
    inner: P,
    revoked: Arc<AtomicBool>,
}

/// Cuts off the storages of one [`Revocable`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Revoker(Arc<AtomicBool>);

impl Revoker {
    /// From now on, every storage of the provider fails.
    pub(crate) fn revoke(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl<P: Provider> Revocable<P> {
    /// `inner`, cut off when `revoker` revokes.
    pub(crate) fn new(inner: P, revoker: &Revoker) -> Self {
        Revocable { inner, revoked: revoker.0.clone() }
    }
}

impl<P: Provider> Provider for Revocable<P> {
    fn open(&self, name: &str) -> Result<BoxedStorage, StorageError> {
        check(&self.revoked)?;
        Ok(Box::new(RevocableStorage { inner: self.inner.open(name)?, revoked: self.revoked.clone() }))
    }

    fn exists(&self, name: &str) -> Result<bool, StorageError> {
        check(&self.revoked)?;
        self.inner.exists(name)
    }

    fn lock(&self, name: &str) -> Result<LockGuard, StorageError> {
        check(&self.revoked)?;
        self.inner.lock(name)
    }
}

struct RevocableStorage {
    inner: BoxedStorage,
    revoked: Arc<AtomicBool>,
}

fn check(revoked: &AtomicBool) -> Result<(), StorageError> {
    if revoked.load(Ordering::Relaxed) {
        return Err(StorageError::Io {
            op: "use",
            path: "a blocked feed's files".into(),
            source: io::Error::new(io::ErrorKind::PermissionDenied, "the feed was blocked in this database"),
        });
    }
    Ok(())
}

impl RandomAccess for RevocableStorage {
    fn read_into(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        check(&self.revoked)?;
        self.inner.read_into(offset, buf)
    }
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        check(&self.revoked)?;
        self.inner.write(offset, data)
    }
    fn len(&mut self) -> Result<u64, StorageError> {
        check(&self.revoked)?;
        self.inner.len()
    }
    fn truncate(&mut self, len: u64) -> Result<(), StorageError> {
        check(&self.revoked)?;
        self.inner.truncate(len)
    }
    fn sync(&mut self) -> Result<(), StorageError> {
        check(&self.revoked)?;
        self.inner.sync()
    }
    fn needs_sync(&self) -> bool {
        self.inner.needs_sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kappa_storage::MemoryProvider;

    #[test]
    fn a_revoked_storage_neither_reads_nor_writes() {
        let root = MemoryProvider::new();
        let revoker = Revoker::default();
        let p = Revocable::new(root.clone(), &revoker);
        let mut s = p.open("data").unwrap();
        s.write(0, b"abc").unwrap();
        revoker.revoke();
        assert!(s.write(3, b"d").is_err());
        assert!(s.read(0, 1).is_err());
        assert!(p.open("tree").is_err());
        assert_eq!(root.storage("data").to_vec(), b"abc");
    }
}
