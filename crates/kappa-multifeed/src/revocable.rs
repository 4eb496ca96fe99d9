//! A feed's storage that can be cut off: once a feed is blocked, every handle
//! still held somewhere (a live session, an indexer, an application) can no
//! longer write its files, so nothing recreates what the block removed. Its
//! writes are dropped rather than failed: a session that still holds the
//! feed for a moment (a block arriving while its blocks are on their way)
//! goes on instead of failing; its reads see what the removed files held
//! while they stay open (an open file outlives its deletion).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use kappa_storage::{BoxedStorage, LockGuard, Provider, RandomAccess, StorageError};

/// A provider whose storages stop writing once [`revoke`](Revoker::revoke)d.
pub(crate) struct Revocable<P> {
    inner: P,
    revoked: Arc<AtomicBool>,
}

/// Cuts off the storages of one [`Revocable`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Revoker(Arc<AtomicBool>);

impl Revoker {
    /// From now on, every write to a storage of the provider is dropped.
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
        Ok(Box::new(RevocableStorage { inner: self.inner.open(name)?, revoked: self.revoked.clone() }))
    }

    fn exists(&self, name: &str) -> Result<bool, StorageError> {
        self.inner.exists(name)
    }

    fn lock(&self, name: &str) -> Result<LockGuard, StorageError> {
        self.inner.lock(name)
    }
}

struct RevocableStorage {
    inner: BoxedStorage,
    revoked: Arc<AtomicBool>,
}

impl RevocableStorage {
    fn revoked(&self) -> bool {
        self.revoked.load(Ordering::Relaxed)
    }
}

impl RandomAccess for RevocableStorage {
    fn read_into(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        self.inner.read_into(offset, buf)
    }
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        if self.revoked() {
            return Ok(());
        }
        self.inner.write(offset, data)
    }
    fn len(&mut self) -> Result<u64, StorageError> {
        self.inner.len()
    }
    fn truncate(&mut self, len: u64) -> Result<(), StorageError> {
        if self.revoked() {
            return Ok(());
        }
        self.inner.truncate(len)
    }
    fn sync(&mut self) -> Result<(), StorageError> {
        if self.revoked() {
            return Ok(());
        }
        self.inner.sync()
    }
    fn needs_sync(&self) -> bool {
        !self.revoked() && self.inner.needs_sync()
    }
    fn allocated(&mut self) -> Result<Option<u64>, StorageError> {
        self.inner.allocated()
    }
    fn release(&mut self, offset: u64, len: u64) -> Result<bool, StorageError> {
        if self.revoked() {
            return Ok(false);
        }
        self.inner.release(offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kappa_storage::MemoryProvider;

    #[test]
    fn a_revoked_storage_writes_nothing() {
        let root = MemoryProvider::new();
        let revoker = Revoker::default();
        let p = Revocable::new(root.clone(), &revoker);
        let mut s = p.open("data").unwrap();
        s.write(0, b"abc").unwrap();
        revoker.revoke();
        s.write(3, b"d").unwrap();
        s.truncate(0).unwrap();
        p.open("tree").unwrap().write(0, b"x").unwrap();
        assert_eq!(s.read(0, 3).unwrap(), b"abc");
        assert_eq!(root.storage("data").to_vec(), b"abc");
        assert!(!root.exists("tree").unwrap());
    }
}
