use crate::{BoxedStorage, LockGuard, Provider, StorageError};

/// A provider whose names all live below `prefix/`: how a set of feeds shares one
/// root (multifeed's feed `3` asks for `3/key`, `3/tree`, ...).
///
/// ```
/// use kappa_storage::{MemoryProvider, Prefixed, Provider, RandomAccess};
/// let root = MemoryProvider::new();
/// let feed3 = Prefixed::new(root.clone(), "3");
/// feed3.open("key")?.write(0, b"k")?;
/// assert!(root.exists("3/key")?);
/// # Ok::<(), kappa_storage::StorageError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Prefixed<P> {
    inner: P,
    prefix: String,
}

impl<P: Provider> Prefixed<P> {
    /// Names `name` become `prefix/name` in `inner`.
    pub fn new(inner: P, prefix: impl Into<String>) -> Self {
        Prefixed { inner, prefix: prefix.into() }
    }

    fn name(&self, name: &str) -> String {
        format!("{}/{}", self.prefix, name)
    }
}

impl<P: Provider> Provider for Prefixed<P> {
    fn open(&self, name: &str) -> Result<BoxedStorage, StorageError> {
        self.inner.open(&self.name(name))
    }

    fn exists(&self, name: &str) -> Result<bool, StorageError> {
        self.inner.exists(&self.name(name))
    }

    fn lock(&self, name: &str) -> Result<LockGuard, StorageError> {
        self.inner.lock(&self.name(name))
    }

    fn replace(&self, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
        self.inner.replace(&self.name(name), bytes)
    }

    fn remove(&self, name: &str) -> Result<(), StorageError> {
        self.inner.remove(&self.name(name))
    }
}
