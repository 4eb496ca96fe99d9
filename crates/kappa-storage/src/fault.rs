use std::sync::{Arc, Mutex, MutexGuard};

use crate::{BoxedStorage, LockGuard, Provider, RandomAccess, StorageError};

/// A failure to inject. Counts are over all storages of one [`FaultyProvider`],
/// starting at 0, in the order the operations happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// The `n`th write fails and writes nothing.
    FailWrite(u64),
    /// The `n`th write stores only the first half of its bytes, then fails (a
    /// power loss in the middle of a write).
    TearWrite(u64),
    /// The `n`th sync fails.
    FailSync(u64),
    /// The `write`th write stores only its first `keep` bytes (all of them if
    /// it has fewer), then fails: a torn write cut at any byte.
    TearWriteAt {
        /// Which write.
        write: u64,
        /// How many of its bytes reach the disk.
        keep: usize,
    },
}

/// One operation a [`FaultyProvider`] saw, for tests that count what an
/// operation costs ([`FaultyProvider::ops`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Op {
    /// A positioned write of `len` bytes at `offset` to the storage `file`.
    Write {
        /// The storage's name.
        file: String,
        /// Where.
        offset: u64,
        /// How many bytes.
        len: usize,
    },
    /// A truncate of `file`.
    Truncate {
        /// The storage's name.
        file: String,
    },
    /// A sync of `file`.
    Sync {
        /// The storage's name.
        file: String,
    },
}

#[derive(Debug, Default)]
struct State {
    fault: Option<Fault>,
    writes: u64,
    syncs: u64,
    crashed: bool,
    /// The size of every write so far, in order.
    write_lens: Vec<usize>,
    /// Every write, truncate and sync so far, in order.
    ops: Vec<Op>,
}

/// Wraps a [`Provider`] and injects one [`Fault`]. After the fault fires, every
/// operation on every storage of the provider fails, as if the process had died;
/// the wrapped provider then holds exactly what reached "disk" before the crash.
///
/// ```
/// use kappa_storage::{Fault, FaultyProvider, MemoryProvider, Provider, RandomAccess};
/// let disk = MemoryProvider::new();
/// let faulty = FaultyProvider::new(disk.clone(), Some(Fault::TearWrite(1)));
/// let mut f = faulty.open("data")?;
/// f.write(0, b"abcd")?;              // write 0: fine
/// assert!(f.write(4, b"efgh").is_err()); // write 1: torn
/// assert!(f.read(0, 1).is_err());        // the "process" is dead
/// assert_eq!(disk.storage("data").to_vec(), b"abcdef");
/// # Ok::<(), kappa_storage::StorageError>(())
/// ```
#[derive(Debug, Clone)]
pub struct FaultyProvider<P> {
    inner: P,
    state: Arc<Mutex<State>>,
}

impl<P: Provider> FaultyProvider<P> {
    /// Wraps `inner`; `fault: None` injects nothing but still counts operations.
    pub fn new(inner: P, fault: Option<Fault>) -> Self {
        FaultyProvider { inner, state: Arc::new(Mutex::new(State { fault, ..State::default() })) }
    }

    /// Writes seen so far.
    pub fn writes(&self) -> u64 {
        self.state().writes
    }

    /// The size of every write seen so far, in order (to aim
    /// [`Fault::TearWriteAt`] at every byte of a write).
    pub fn write_lens(&self) -> Vec<usize> {
        self.state().write_lens.clone()
    }

    /// Syncs seen so far.
    pub fn syncs(&self) -> u64 {
        self.state().syncs
    }

    /// Every write, truncate and sync seen so far, in order, with the name of
    /// the storage it went to.
    pub fn ops(&self) -> Vec<Op> {
        self.state().ops.clone()
    }

    /// Whether the fault has fired.
    pub fn crashed(&self) -> bool {
        self.state().crashed
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<P: Provider> Provider for FaultyProvider<P> {
    fn open(&self, name: &str) -> Result<BoxedStorage, StorageError> {
        if self.state().crashed {
            return Err(StorageError::Injected("crashed"));
        }
        Ok(Box::new(FaultyStorage {
            inner: self.inner.open(name)?,
            state: self.state.clone(),
            name: name.to_owned(),
        }))
    }

    fn exists(&self, name: &str) -> Result<bool, StorageError> {
        if self.state().crashed {
            return Err(StorageError::Injected("crashed"));
        }
        self.inner.exists(name)
    }

    fn lock(&self, name: &str) -> Result<LockGuard, StorageError> {
        self.inner.lock(name)
    }
}

/// One storage of a [`FaultyProvider`].
pub struct FaultyStorage {
    inner: BoxedStorage,
    state: Arc<Mutex<State>>,
    name: String,
}

impl std::fmt::Debug for FaultyStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyStorage").finish_non_exhaustive()
    }
}

impl FaultyStorage {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn alive(&self) -> Result<(), StorageError> {
        if self.state().crashed {
            Err(StorageError::Injected("crashed"))
        } else {
            Ok(())
        }
    }
}

impl RandomAccess for FaultyStorage {
    fn read_into(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        self.alive()?;
        self.inner.read_into(offset, buf)
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        let keep = {
            let mut s = self.state();
            if s.crashed {
                return Err(StorageError::Injected("crashed"));
            }
            let n = s.writes;
            s.writes += 1;
            s.write_lens.push(data.len());
            s.ops.push(Op::Write { file: self.name.clone(), offset, len: data.len() });
            let keep = match s.fault {
                Some(Fault::FailWrite(k)) if k == n => Some((0, "write failed")),
                Some(Fault::TearWrite(k)) if k == n => Some((data.len() / 2, "torn write")),
                Some(Fault::TearWriteAt { write, keep }) if write == n => {
                    Some((keep.min(data.len()), "torn write"))
                }
                _ => None,
            };
            if keep.is_some() {
                s.crashed = true;
            }
            keep
        };
        match keep {
            None => self.inner.write(offset, data),
            Some((keep, what)) => {
                if keep > 0 {
                    self.inner.write(offset, &data[..keep])?;
                }
                Err(StorageError::Injected(what))
            }
        }
    }

    fn len(&mut self) -> Result<u64, StorageError> {
        self.alive()?;
        self.inner.len()
    }

    fn truncate(&mut self, len: u64) -> Result<(), StorageError> {
        {
            let mut s = self.state();
            if s.crashed {
                return Err(StorageError::Injected("crashed"));
            }
            let n = s.writes;
            s.writes += 1;
            s.write_lens.push(0);
            s.ops.push(Op::Truncate { file: self.name.clone() });
            if matches!(s.fault, Some(Fault::FailWrite(k) | Fault::TearWrite(k) | Fault::TearWriteAt { write: k, .. }) if k == n)
            {
                s.crashed = true;
                return Err(StorageError::Injected("truncate failed"));
            }
        }
        self.inner.truncate(len)
    }

    /// Counted as a write (and failed like one), then passed on, so a hole
    /// is punched in the storage underneath as it would be in a file.
    fn release(&mut self, offset: u64, len: u64) -> Result<bool, StorageError> {
        {
            let mut s = self.state();
            if s.crashed {
                return Err(StorageError::Injected("crashed"));
            }
            let n = s.writes;
            s.writes += 1;
            s.write_lens.push(0);
            s.ops.push(Op::Write { file: self.name.clone(), offset, len: 0 });
            if matches!(s.fault, Some(Fault::FailWrite(k) | Fault::TearWrite(k) | Fault::TearWriteAt { write: k, .. }) if k == n)
            {
                s.crashed = true;
                return Err(StorageError::Injected("release failed"));
            }
        }
        self.inner.release(offset, len)
    }

    fn allocated(&mut self) -> Result<Option<u64>, StorageError> {
        self.inner.allocated()
    }

    fn needs_sync(&self) -> bool {
        self.inner.needs_sync()
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        {
            let mut s = self.state();
            if s.crashed {
                return Err(StorageError::Injected("crashed"));
            }
            let n = s.syncs;
            s.syncs += 1;
            s.ops.push(Op::Sync { file: self.name.clone() });
            if s.fault == Some(Fault::FailSync(n)) {
                s.crashed = true;
                return Err(StorageError::Injected("sync failed"));
            }
        }
        self.inner.sync()
    }
}
