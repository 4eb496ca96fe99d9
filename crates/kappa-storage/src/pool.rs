//! [`FilePool`]: a bounded set of open files shared by many [`FileStorage`]s.
//!
//! Every feed has six or seven files; a database of thousands of feeds cannot
//! keep them all open (with the common limit of 1,024 descriptors, about 150
//! feeds was the ceiling). A pool holds at most [`capacity`](FilePool::capacity)
//! descriptors for all the storages that share it. A storage asks the pool for
//! its file before each operation; when the file was closed to make room, it is
//! reopened (in the mode it had: read-only until the first write) and the least
//! recently used open file of the pool is closed instead. To the storage's user
//! nothing changes: positioned I/O has no file position to lose, and a file's
//! length and bytes live in the inode, not the descriptor.
//!
//! Two things a descriptor does carry, and why closing one is still safe:
//!
//! - **Unsynced writes.** Dirty pages belong to the inode: an `fdatasync`
//!   through a new descriptor flushes what an evicted one wrote. A writeback
//!   error that happened while no descriptor was open is reported to the next
//!   `fdatasync` (Linux keeps an error that no descriptor has reported yet for
//!   the next descriptor opened on the file).
//! - **`flock` locks**, which belong to the open file description: closing the
//!   descriptor drops the lock. So locks never live in the pool:
//!   [`DirectoryProvider::lock`](crate::DirectoryProvider) opens its own
//!   descriptor, held by the [`LockGuard`](crate::LockGuard) until it drops.
//!
//! The pool's mutex is held only to look a file up or swap one in or out,
//! never during I/O (opening and closing happen outside it too). A storage
//! doing I/O holds its own reference to the descriptor, so a file evicted
//! while another thread reads it closes when that read ends: the process may
//! briefly hold `capacity` plus the number of threads inside a read or write.
//!
//! [`FileStorage`]: crate::FileStorage

use std::fs::File;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// "No slot" in the LRU list.
const NIL: usize = usize::MAX;

/// The fewest descriptors a pool holds (one feed's files, with room to spare).
pub const MIN_POOL_CAPACITY: usize = 16;
/// The most descriptors the default pool holds, whatever the limit.
pub const MAX_POOL_CAPACITY: usize = 65_536;

/// The capacity of the default pool for a process allowed `limit` open files
/// (its soft `RLIMIT_NOFILE`): the limit less a quarter of it, and less at
/// least 64, left to everything else a process opens (sockets of peers, the
/// views database, the lock files, standard streams, the async runtime's
/// descriptors); then at least [`MIN_POOL_CAPACITY`] and at most
/// [`MAX_POOL_CAPACITY`]. A limit of 256 gives 192, 1,024 gives 768.
pub fn pool_capacity_for(limit: u64) -> usize {
    let reserve = (limit / 4).max(64);
    let cap = limit.saturating_sub(reserve);
    usize::try_from(cap).unwrap_or(MAX_POOL_CAPACITY).clamp(MIN_POOL_CAPACITY, MAX_POOL_CAPACITY)
}

/// The soft limit on open files of this process (`RLIMIT_NOFILE`), read from
/// `/proc/self/limits`; `None` where that cannot be read.
pub fn open_file_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line.trim_start_matches("Max open files").split_whitespace().next()?;
    match soft {
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    }
}

/// What a pool did so far ([`FilePool::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Descriptors open now.
    pub open: usize,
    /// The most descriptors open at once.
    pub peak_open: usize,
    /// Storages registered now (open or closed).
    pub storages: usize,
    /// Files opened (first opens and reopens).
    pub opened: u64,
    /// Files closed to make room for others.
    pub evicted: u64,
}

struct Slot {
    file: Option<Arc<File>>,
    /// Neighbours in the LRU list of open slots (`prev` towards the most recent).
    prev: usize,
    next: usize,
}

struct State {
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// Most recently used open slot.
    head: usize,
    /// Least recently used open slot.
    tail: usize,
    stats: PoolStats,
}

/// A bounded pool of open files, least recently used closed first. Shared by
/// cloning the `Arc`.
///
/// Every feed has six or seven files; a database of thousands of feeds cannot
/// keep them all open (with the common limit of 1,024 descriptors, about 150
/// feeds was the ceiling). A pool holds at most [`capacity`](FilePool::capacity)
/// descriptors for all the storages that share it. A storage asks the pool for
/// its file before each operation; when the file was closed to make room, it is
/// reopened (in the mode it had: read-only until the first write) and the least
/// recently used open file of the pool is closed instead. To the storage's user
/// nothing changes: positioned I/O has no file position to lose, and a file's
/// length and bytes live in the inode, not the descriptor.
///
/// Two things a descriptor does carry, and why closing one is still safe:
///
/// - **Unsynced writes.** Dirty pages belong to the inode: an `fdatasync`
///   through a new descriptor flushes what an evicted one wrote. A writeback
///   error that happened while no descriptor was open is reported to the next
///   `fdatasync` (Linux keeps an error that no descriptor has reported yet for
///   the next descriptor opened on the file).
/// - **`flock` locks**, which belong to the open file description: closing the
///   descriptor drops the lock. So locks never live in the pool:
///   [`DirectoryProvider::lock`](crate::DirectoryProvider) opens its own
///   descriptor, held by the [`LockGuard`](crate::LockGuard) until it drops.
///
/// The pool's mutex is held only to look a file up or swap one in or out,
/// never during I/O (opening and closing happen outside it too). A storage
/// doing I/O holds its own reference to the descriptor, so a file evicted
/// while another thread reads it closes when that read ends: the process may
/// briefly hold `capacity` plus the number of threads inside a read or write.
///
/// [`FileStorage`]: crate::FileStorage
///
/// ```
/// use kappa_storage::{FilePool, FileStorage, RandomAccess};
/// let dir = tempfile::tempdir()?;
/// let pool = FilePool::new(16);
/// let mut files: Vec<FileStorage> =
///     (0..100).map(|i| FileStorage::with_pool(dir.path().join(i.to_string()), pool.clone())).collect();
/// for (i, f) in files.iter_mut().enumerate() {
///     f.write(0, &[i as u8; 3])?;
/// }
/// assert!(pool.stats().open <= 16);
/// assert_eq!(files[7].read(0, 3)?, [7; 3]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct FilePool {
    capacity: usize,
    state: Mutex<State>,
}

impl std::fmt::Debug for FilePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilePool").field("capacity", &self.capacity).field("stats", &self.stats()).finish()
    }
}

impl FilePool {
    /// A pool that keeps at most `capacity` files open (at least 1).
    pub fn new(capacity: usize) -> Arc<FilePool> {
        Arc::new(FilePool {
            capacity: capacity.max(1),
            state: Mutex::new(State {
                slots: Vec::new(),
                free: Vec::new(),
                head: NIL,
                tail: NIL,
                stats: PoolStats::default(),
            }),
        })
    }

    /// The pool of this process that [`DirectoryProvider::new`](crate::DirectoryProvider::new)
    /// and [`FileStorage::new`](crate::FileStorage::new) use: every database a
    /// process opens shares it, so together they stay within the limit. Sized
    /// at its first use by [`pool_capacity_for`] from [`open_file_limit`]
    /// (1,024 assumed where the limit cannot be read).
    pub fn global() -> Arc<FilePool> {
        static GLOBAL: OnceLock<Arc<FilePool>> = OnceLock::new();
        GLOBAL.get_or_init(|| FilePool::new(pool_capacity_for(open_file_limit().unwrap_or(1024)))).clone()
    }

    /// The most files this pool keeps open.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// What the pool holds and did so far.
    pub fn stats(&self) -> PoolStats {
        self.lock().stats
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new slot, with no file open.
    pub(crate) fn register(&self) -> usize {
        let mut s = self.lock();
        s.stats.storages += 1;
        let slot = Slot { file: None, prev: NIL, next: NIL };
        match s.free.pop() {
            Some(id) => {
                s.slots[id] = slot;
                id
            }
            None => {
                s.slots.push(slot);
                s.slots.len() - 1
            }
        }
    }

    /// The open file of slot `id`, if it is open (marking it most recently used).
    pub(crate) fn get(&self, id: usize) -> Option<Arc<File>> {
        let mut s = self.lock();
        let file = s.slots.get(id)?.file.clone()?;
        if s.head != id {
            s.unlink(id);
            s.push_front(id);
        }
        Some(file)
    }

    /// Makes `file` the open file of slot `id` (replacing the one it had),
    /// closing the least recently used files beyond the capacity.
    pub(crate) fn install(&self, id: usize, file: File) -> Arc<File> {
        let file = Arc::new(file);
        let mut closed = Vec::new();
        {
            let mut s = self.lock();
            if s.slots.get(id).is_none() {
                return file;
            }
            if let Some(old) = s.take(id) {
                closed.push(old);
            }
            while s.stats.open >= self.capacity && s.tail != NIL {
                let victim = s.tail;
                if let Some(old) = s.take(victim) {
                    closed.push(old);
                    s.stats.evicted += 1;
                }
            }
            s.slots[id].file = Some(file.clone());
            s.push_front(id);
            s.stats.open += 1;
            s.stats.opened += 1;
            s.stats.peak_open = s.stats.peak_open.max(s.stats.open);
        }
        // Closed outside the lock.
        drop(closed);
        file
    }

    /// Closes the least recently used open file; `false` if none is open.
    pub(crate) fn evict_one(&self) -> bool {
        let old = {
            let mut s = self.lock();
            let victim = s.tail;
            if victim == NIL {
                return false;
            }
            s.stats.evicted += 1;
            s.take(victim)
        };
        drop(old);
        true
    }

    /// Opens a file with `options`; when the process is out of descriptors
    /// (something outside the pool holds more than the headroom left to it),
    /// closes pooled files, least recently used first, until the open
    /// succeeds or the pool holds none.
    pub(crate) fn open(
        &self,
        options: &std::fs::OpenOptions,
        path: &std::path::Path,
    ) -> std::io::Result<File> {
        loop {
            match options.open(path) {
                // EMFILE, ENFILE
                Err(e) if cfg!(unix) && matches!(e.raw_os_error(), Some(23 | 24)) && self.evict_one() => {
                    continue
                }
                r => return r,
            }
        }
    }

    /// Forgets slot `id` (its storage dropped), closing its file.
    pub(crate) fn release(&self, id: usize) {
        let old = {
            let mut s = self.lock();
            if id >= s.slots.len() {
                return;
            }
            let old = s.take(id);
            s.free.push(id);
            s.stats.storages -= 1;
            old
        };
        drop(old);
    }
}

impl State {
    /// Takes the file out of slot `id` (and the slot out of the LRU list).
    fn take(&mut self, id: usize) -> Option<Arc<File>> {
        let file = self.slots[id].file.take()?;
        self.unlink(id);
        self.stats.open -= 1;
        Some(file)
    }

    fn unlink(&mut self, id: usize) {
        let (prev, next) = (self.slots[id].prev, self.slots[id].next);
        match prev {
            NIL => self.head = next,
            p => self.slots[p].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.slots[n].prev = prev,
        }
        self.slots[id].prev = NIL;
        self.slots[id].next = NIL;
    }

    fn push_front(&mut self, id: usize) {
        self.slots[id].prev = NIL;
        self.slots[id].next = self.head;
        match self.head {
            NIL => self.tail = id,
            h => self.slots[h].prev = id,
        }
        self.head = id;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_leaves_room_for_everything_else() {
        assert_eq!(pool_capacity_for(256), 192);
        assert_eq!(pool_capacity_for(1024), 768);
        assert_eq!(pool_capacity_for(100), 36);
        assert_eq!(pool_capacity_for(64), MIN_POOL_CAPACITY);
        assert_eq!(pool_capacity_for(0), MIN_POOL_CAPACITY);
        assert_eq!(pool_capacity_for(u64::MAX), MAX_POOL_CAPACITY);
        if cfg!(target_os = "linux") {
            assert!(open_file_limit().is_some());
        }
    }

    #[test]
    fn least_recently_used_is_closed_first() {
        let dir = tempfile::tempdir().unwrap();
        let pool = FilePool::new(3);
        let file = |n: &str| File::create(dir.path().join(n)).unwrap();
        let ids: Vec<usize> = (0..5).map(|_| pool.register()).collect();
        for (i, id) in ids.iter().take(3).enumerate() {
            pool.install(*id, file(&i.to_string()));
        }
        // Touch 0: 1 is now the least recently used.
        assert!(pool.get(ids[0]).is_some());
        pool.install(ids[3], file("3"));
        assert!(pool.get(ids[1]).is_none());
        assert!(pool.get(ids[0]).is_some() && pool.get(ids[2]).is_some());
        assert_eq!(pool.stats().open, 3);
        assert_eq!(pool.stats().evicted, 1);
        // Replacing a slot's file does not evict anybody.
        pool.install(ids[3], file("3"));
        assert_eq!(pool.stats().evicted, 1);
        pool.release(ids[0]);
        assert_eq!(pool.stats().open, 2);
        pool.install(ids[4], file("4"));
        assert_eq!(pool.stats().evicted, 1);
        let again = pool.register();
        assert_eq!(again, ids[0], "a released slot is reused");
        assert!(pool.get(again).is_none());
        assert_eq!(pool.stats().storages, 5);
        assert_eq!(pool.stats().peak_open, 3);
    }
}
