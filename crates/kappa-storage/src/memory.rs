use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::{end_of, BoxedStorage, Provider, RandomAccess, StorageError};

/// Storage in memory, shareable: clones see the same bytes.
///
/// ```
/// use kappa_storage::{MemoryStorage, RandomAccess};
/// let mut a = MemoryStorage::new();
/// let mut b = a.clone();
/// a.write(0, b"hi")?;
/// assert_eq!(b.read(0, 2)?, b"hi");
/// # Ok::<(), kappa_storage::StorageError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryStorage {
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl MemoryStorage {
    /// An empty storage.
    pub fn new() -> Self {
        Self::default()
    }

    /// A storage holding `bytes`.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        MemoryStorage { bytes: Arc::new(Mutex::new(bytes)) }
    }

    /// A copy of the current contents.
    pub fn to_vec(&self) -> Vec<u8> {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        // A poisoned lock only means another thread panicked mid-write; the bytes
        // are still a valid Vec, so keep going.
        self.bytes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl RandomAccess for MemoryStorage {
    fn read_into(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        let bytes = self.lock();
        let end = end_of(offset, buf.len())?;
        if end > bytes.len() as u64 {
            return Err(StorageError::OutOfBounds {
                offset,
                len: buf.len() as u64,
                size: bytes.len() as u64,
            });
        }
        buf.copy_from_slice(&bytes[offset as usize..end as usize]);
        Ok(())
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        let mut bytes = self.lock();
        let end = end_of(offset, data.len())?;
        let end = usize::try_from(end).map_err(|_| StorageError::OutOfBounds {
            offset,
            len: data.len() as u64,
            size: bytes.len() as u64,
        })?;
        if end > bytes.len() {
            bytes.resize(end, 0);
        }
        bytes[end - data.len()..end].copy_from_slice(data);
        Ok(())
    }

    fn len(&mut self) -> Result<u64, StorageError> {
        Ok(self.lock().len() as u64)
    }

    fn truncate(&mut self, len: u64) -> Result<(), StorageError> {
        let mut bytes = self.lock();
        let len = usize::try_from(len).map_err(|_| StorageError::OutOfBounds {
            offset: len,
            len: 0,
            size: bytes.len() as u64,
        })?;
        bytes.resize(len, 0);
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        Ok(())
    }
}

/// Hands out [`MemoryStorage`]s by name. Clones share the same files, so a feed
/// closed and reopened on a clone sees what was written.
///
/// ```
/// use kappa_storage::{MemoryProvider, Provider, RandomAccess};
/// let p = MemoryProvider::new();
/// p.open("0/key")?.write(0, &[1; 32])?;
/// assert!(p.exists("0/key")?);
/// assert!(!p.exists("1/key")?);
/// # Ok::<(), kappa_storage::StorageError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryProvider {
    files: Arc<Mutex<HashMap<String, MemoryStorage>>>,
}

impl MemoryProvider {
    /// A provider with no files.
    pub fn new() -> Self {
        Self::default()
    }

    /// The storage called `name`, created empty if it does not exist.
    pub fn storage(&self, name: &str) -> MemoryStorage {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        files.entry(name.to_owned()).or_default().clone()
    }

    /// The names of all storages opened so far, sorted.
    pub fn names(&self) -> Vec<String> {
        let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<String> = files.keys().cloned().collect();
        names.sort();
        names
    }

    /// A deep copy: a new provider whose files start with the same bytes but no
    /// longer share them.
    pub fn snapshot(&self) -> MemoryProvider {
        let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let copy = files.iter().map(|(k, v)| (k.clone(), MemoryStorage::from_bytes(v.to_vec()))).collect();
        MemoryProvider { files: Arc::new(Mutex::new(copy)) }
    }
}

impl Provider for MemoryProvider {
    fn open(&self, name: &str) -> Result<BoxedStorage, StorageError> {
        Ok(Box::new(self.storage(name)))
    }

    fn exists(&self, name: &str) -> Result<bool, StorageError> {
        let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        Ok(files.get(name).is_some_and(|f| !f.lock().is_empty()))
    }

    fn remove(&self, name: &str) -> Result<(), StorageError> {
        // Clones handed out earlier keep their bytes, as an open file does.
        self.files.lock().unwrap_or_else(|e| e.into_inner()).remove(name);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_write_truncate() {
        let mut s = MemoryStorage::new();
        s.write(3, b"abc").unwrap();
        assert_eq!(s.read(0, 6).unwrap(), b"\0\0\0abc");
        assert!(matches!(s.read(4, 3), Err(StorageError::OutOfBounds { .. })));
        s.truncate(2).unwrap();
        assert_eq!(s.len().unwrap(), 2);
        s.truncate(5).unwrap();
        assert_eq!(s.read(0, 5).unwrap(), vec![0; 5]);
    }

    #[test]
    fn huge_offsets_are_errors_not_panics() {
        let mut s = MemoryStorage::new();
        assert!(s.read(u64::MAX, 2).is_err());
        assert!(s.write(u64::MAX, b"ab").is_err());
    }
}
