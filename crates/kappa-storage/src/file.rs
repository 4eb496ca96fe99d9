use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crate::dir::{create_in, DirState, Dirs, Known};
use crate::{end_of, BoxedStorage, FilePool, LockGuard, Provider, RandomAccess, StorageError};

static WRITES: AtomicU64 = AtomicU64::new(0);
static SYNCS: AtomicU64 = AtomicU64::new(0);
static OPENED_FOR_WRITING: AtomicU64 = AtomicU64::new(0);
static OPENED_FOR_READING: AtomicU64 = AtomicU64::new(0);

/// What every [`FileStorage`] of this process did so far (see [`io_counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoCounts {
    /// Positioned writes and truncates.
    pub writes: u64,
    /// `fdatasync` calls.
    pub syncs: u64,
    /// Files opened for writing.
    pub opened_for_writing: u64,
    /// Files opened for reading only.
    pub opened_for_reading: u64,
}

impl std::ops::Sub for IoCounts {
    type Output = IoCounts;
    fn sub(self, o: IoCounts) -> IoCounts {
        IoCounts {
            writes: self.writes - o.writes,
            syncs: self.syncs - o.syncs,
            opened_for_writing: self.opened_for_writing - o.opened_for_writing,
            opened_for_reading: self.opened_for_reading - o.opened_for_reading,
        }
    }
}

/// The writes, syncs and opens of every [`FileStorage`] in this process so far
/// (relaxed counters, for tests and for `KAPPA_IO_COUNTS` reports: what a
/// command costs must not creep up unnoticed).
pub fn io_counts() -> IoCounts {
    IoCounts {
        writes: WRITES.load(Relaxed),
        syncs: SYNCS.load(Relaxed),
        opened_for_writing: OPENED_FOR_WRITING.load(Relaxed),
        opened_for_reading: OPENED_FOR_READING.load(Relaxed),
    }
}

/// One flat file, accessed with positioned I/O. The file (and its parent
/// directories) is created at the first write or truncate; until then it reads as
/// empty.
///
/// Its descriptor lives in a [`FilePool`] (the process's
/// [`FilePool::global`] unless [`with_pool`](FileStorage::with_pool) names
/// another): the pool may close it to make room for other files, and it is
/// reopened, in the same mode, at the next operation.
///
/// ```
/// use kappa_storage::{FileStorage, RandomAccess};
/// let dir = tempfile::tempdir()?;
/// let mut f = FileStorage::new(dir.path().join("sub/data"));
/// assert_eq!(f.len()?, 0);
/// f.write(0, b"hello")?;
/// assert_eq!(f.read(1, 3)?, b"ell");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct FileStorage {
    path: PathBuf,
    pool: Arc<FilePool>,
    /// This storage's slot in `pool`.
    slot: usize,
    /// Whether the file was found (or made) to exist; `None` until first asked.
    exists: Option<bool>,
    /// Whether the file is opened for writing (it is opened read-only until the
    /// first write, so a process that only reads opens nothing for writing).
    writable: bool,
    /// Whether anything was written since the last sync (a sync with nothing
    /// to flush is skipped).
    unsynced: bool,
    /// What the provider knows of the file's directory (none for a storage
    /// made on its own): it spares the probe of a file in a directory known
    /// to be new, and the `mkdir` of one known to exist.
    dir: Option<Arc<DirState>>,
}

impl Drop for FileStorage {
    fn drop(&mut self) {
        self.pool.release(self.slot);
    }
}

impl FileStorage {
    /// A storage backed by the file at `path` (not touched until used), its
    /// descriptor in the process's [`FilePool::global`].
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self::with_pool(path, FilePool::global())
    }

    /// A storage backed by the file at `path`, its descriptor in `pool`.
    pub fn with_pool(path: impl Into<PathBuf>, pool: Arc<FilePool>) -> Self {
        let slot = pool.register();
        FileStorage {
            path: path.into(),
            pool,
            slot,
            exists: None,
            writable: false,
            unsynced: false,
            dir: None,
        }
    }

    /// A storage of a [`DirectoryProvider`], sharing what it knows of the
    /// file's directory.
    fn in_dir(path: PathBuf, pool: Arc<FilePool>, dir: Option<Arc<DirState>>) -> Self {
        let mut f = Self::with_pool(path, pool);
        f.dir = dir;
        f
    }

    /// The file's name in its directory.
    fn file_name(&self) -> &std::ffi::OsStr {
        self.path.file_name().unwrap_or_default()
    }

    /// The path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, op: &'static str, source: io::Error) -> StorageError {
        StorageError::Io { op, path: self.path.display().to_string(), source }
    }

    /// The file if it exists (opened read-only unless it was written), opened
    /// again if the pool closed it.
    fn existing(&mut self) -> Result<Option<Arc<File>>, StorageError> {
        if self.exists == Some(false) {
            return Ok(None);
        }
        if let Some(f) = self.pool.get(self.slot) {
            return Ok(Some(f));
        }
        let first = self.exists.is_none();
        if first {
            if let Some(d) = &self.dir {
                if d.known_missing(self.file_name()) {
                    // In a directory that was missing, and not made since.
                    self.exists = Some(false);
                    return Ok(None);
                }
            }
        }
        let mut options = OpenOptions::new();
        options.read(true).write(self.writable);
        match self.pool.open(&options, &self.path) {
            Ok(f) => {
                if self.writable {
                    OPENED_FOR_WRITING.fetch_add(1, Relaxed);
                } else {
                    OPENED_FOR_READING.fetch_add(1, Relaxed);
                }
                if let (true, Some(d)) = (first, &self.dir) {
                    d.found(&mut d.lock());
                }
                self.exists = Some(true);
                Ok(Some(self.pool.install(self.slot, f)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && first => {
                if let Some(d) = &self.dir {
                    d.missed(&mut d.lock(), self.file_name());
                }
                self.exists = Some(false);
                Ok(None)
            }
            // Opened before and closed by the pool: the file must still be there.
            Err(e) if self.exists == Some(true) => Err(self.io("reopen", e)),
            Err(e) => Err(self.io("open", e)),
        }
    }

    /// The file opened for writing, created if needed; and whether this call
    /// made it (then it is empty, and nobody else has it).
    fn created(&mut self) -> Result<(Arc<File>, bool), StorageError> {
        if !self.writable {
            let (f, made) = if self.exists == Some(true) {
                // Opened (read-only) before: it must still be there, and its
                // directory too.
                self.existing()?;
                let mut options = OpenOptions::new();
                options.read(true).write(true).create(true).truncate(false);
                (self.pool.open(&options, &self.path).map_err(|e| self.io("create", e))?, false)
            } else {
                // Missing, or never looked at: created with no probe first. The
                // directory is made when it is known to be missing, or when the
                // open finds it missing. A file found missing is made with
                // O_EXCL, so that we know it is new and empty; if somebody made
                // it since, it is opened as it is.
                let new = self.exists == Some(false);
                let mut options = OpenOptions::new();
                options.read(true).write(true).create(true).truncate(false);
                let mut exclusive = options.clone();
                exclusive.create_new(true);
                let open = || {
                    if new {
                        match self.pool.open(&exclusive, &self.path) {
                            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                            r => return r.map(|f| (f, true)),
                        }
                    }
                    self.pool.open(&options, &self.path).map(|f| (f, false))
                };
                match &self.dir {
                    Some(d) => d.create(self.file_name(), open),
                    None => create_in(self.path.parent(), open),
                }
                .map_err(|(op, e)| self.io(op, e))?
            };
            OPENED_FOR_WRITING.fetch_add(1, Relaxed);
            self.writable = true;
            self.exists = Some(true);
            self.unsynced = true;
            return Ok((self.pool.install(self.slot, f), made));
        }
        self.unsynced = true;
        match self.existing()? {
            Some(f) => Ok((f, false)),
            None => Err(self.io("open", io::Error::other("file vanished"))),
        }
    }
}

#[cfg(unix)]
fn allocated_bytes(m: &std::fs::Metadata) -> Option<u64> {
    Some(std::os::unix::fs::MetadataExt::blocks(m).saturating_mul(512))
}

#[cfg(not(unix))]
fn allocated_bytes(_: &std::fs::Metadata) -> Option<u64> {
    None
}

/// Punches a hole in `f`; `Ok(false)` where the file system or the system
/// cannot (the caller then writes zeros).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn punch_hole(f: &File, offset: u64, len: u64) -> io::Result<bool> {
    use rustix::fs::{fallocate, FallocateFlags};
    match fallocate(f, FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE, offset, len) {
        Ok(()) => Ok(true),
        Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn punch_hole(_: &File, _: u64, _: u64) -> io::Result<bool> {
    Ok(false)
}

#[cfg(unix)]
fn read_at(f: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(f, buf, offset)
}

#[cfg(unix)]
fn write_at(f: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(f, buf, offset)
}

#[cfg(not(unix))]
fn read_at(mut f: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    f.seek(SeekFrom::Start(offset))?;
    f.read_exact(buf)
}

#[cfg(not(unix))]
fn write_at(mut f: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    f.seek(SeekFrom::Start(offset))?;
    f.write_all(buf)
}

impl RandomAccess for FileStorage {
    fn read_into(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        let end = end_of(offset, buf.len())?;
        let Some(f) = self.existing()? else {
            if buf.is_empty() && offset == 0 {
                return Ok(());
            }
            return Err(StorageError::OutOfBounds { offset, len: buf.len() as u64, size: 0 });
        };
        match read_at(&f, buf, offset) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                let size = f.metadata().map(|m| m.len()).unwrap_or(0);
                debug_assert!(end > size);
                Err(StorageError::OutOfBounds { offset, len: buf.len() as u64, size })
            }
            Err(e) => Err(self.io("read", e)),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        end_of(offset, data.len())?;
        let (f, _) = self.created()?;
        WRITES.fetch_add(1, Relaxed);
        write_at(&f, data, offset).map_err(|e| self.io("write", e))
    }

    fn len(&mut self) -> Result<u64, StorageError> {
        match self.existing()? {
            None => Ok(0),
            Some(f) => f.metadata().map(|m| m.len()).map_err(|e| self.io("stat", e)),
        }
    }

    fn truncate(&mut self, len: u64) -> Result<(), StorageError> {
        let (f, made) = self.created()?;
        if made && len == 0 {
            // Just made, so already empty (a new feed truncates each file it makes).
            return Ok(());
        }
        WRITES.fetch_add(1, Relaxed);
        f.set_len(len).map_err(|e| self.io("truncate", e))
    }

    fn needs_sync(&self) -> bool {
        self.unsynced
    }

    /// The file's allocated blocks (`st_blocks`, in 512-byte units), on Unix.
    fn allocated(&mut self) -> Result<Option<u64>, StorageError> {
        match self.existing()? {
            None => Ok(Some(0)),
            Some(f) => {
                let m = f.metadata().map_err(|e| self.io("stat", e))?;
                Ok(allocated_bytes(&m))
            }
        }
    }

    /// Punches a hole (`fallocate(PUNCH_HOLE | KEEP_SIZE)`) where the file
    /// system supports it; elsewhere the bytes are overwritten with zeros
    /// and `false` returned.
    fn release(&mut self, offset: u64, len: u64) -> Result<bool, StorageError> {
        let size = self.len()?;
        let end = offset.saturating_add(len).min(size);
        if end <= offset {
            return Ok(false);
        }
        let (f, _) = self.created()?;
        WRITES.fetch_add(1, Relaxed);
        if punch_hole(&f, offset, end - offset).map_err(|e| self.io("punch a hole in", e))? {
            return Ok(true);
        }
        drop(f);
        let zeros = vec![0u8; 64 * 1024];
        let mut at = offset;
        while at < end {
            let n = (end - at).min(zeros.len() as u64) as usize;
            self.write(at, &zeros[..n])?;
            at += n as u64;
        }
        Ok(false)
    }

    /// Syncs what this storage wrote since its last sync; with nothing
    /// written, it does nothing (a reader syncs nothing).
    fn sync(&mut self) -> Result<(), StorageError> {
        if !self.unsynced {
            return Ok(());
        }
        // A file the pool closed since it was written is opened again: its
        // unsynced pages belong to the file, and a new descriptor flushes them.
        match self.existing()? {
            None => Ok(()),
            Some(f) => {
                SYNCS.fetch_add(1, Relaxed);
                f.sync_data().map_err(|e| self.io("sync", e))?;
                self.unsynced = false;
                Ok(())
            }
        }
    }
}

/// Hands out [`FileStorage`]s for names below a directory: `name` maps to
/// `<root>/<name>`, the layout of JS random-access-file with `{directory}`.
///
/// The storages' descriptors share one [`FilePool`] (the process's
/// [`FilePool::global`] unless [`with_pool`](DirectoryProvider::with_pool)
/// names another), so a provider serving thousands of feeds keeps a bounded
/// number of files open. Clones share the pool.
///
/// While a storage or a [`lock`](Provider::lock) of the provider in a
/// directory is alive, the provider remembers what it learnt of that
/// directory: that it exists (a file created in it needs no `mkdir`), or that
/// it was missing (a file in it that the provider has not made since does not
/// exist, with no probe of the disk). Creating a feed in a new directory
/// thus costs one probe, one `stat`, one `mkdir` and one `open` per file it
/// writes. This holds because an open feed is locked: nothing but the
/// provider's storages creates or removes its files (make them through one
/// provider, or its clones). Once the last storage of a directory drops, the
/// next open looks at the disk again.
///
/// ```
/// use kappa_storage::{DirectoryProvider, Provider, RandomAccess, StorageError};
/// let dir = tempfile::tempdir()?;
/// let p = DirectoryProvider::new(dir.path());
/// p.open("0/key")?.write(0, &[7; 32])?;
/// assert!(dir.path().join("0/key").exists());
/// let _held = p.lock("0/bitfield")?;
/// assert!(matches!(p.lock("0/bitfield"), Err(StorageError::Locked { .. })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct DirectoryProvider {
    root: PathBuf,
    pool: Arc<FilePool>,
    /// What is known of the directories with live storages.
    dirs: Arc<Dirs>,
}

impl DirectoryProvider {
    /// A provider rooted at `root` (created on the first write), its files in
    /// the process's [`FilePool::global`].
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self::with_pool(root, FilePool::global())
    }

    /// A provider rooted at `root` whose files share `pool`.
    pub fn with_pool(root: impl Into<PathBuf>, pool: Arc<FilePool>) -> Self {
        DirectoryProvider { root: root.into(), pool, dirs: Arc::default() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The pool the storages' descriptors live in.
    pub fn pool(&self) -> &Arc<FilePool> {
        &self.pool
    }

    /// The path that `name` maps to.
    pub fn path_of(&self, name: &str) -> Result<PathBuf, StorageError> {
        let rel = Path::new(name);
        let ok = !name.is_empty() && rel.components().all(|c| matches!(c, Component::Normal(_)));
        if !ok {
            return Err(StorageError::InvalidName(name.to_owned()));
        }
        Ok(self.root.join(rel))
    }
}

/// The directory and the file name of `path` (a path from
/// [`DirectoryProvider::path_of`] has both).
fn split(path: &Path) -> Option<(&Path, &std::ffi::OsStr)> {
    Some((path.parent()?, path.file_name()?))
}

impl Provider for DirectoryProvider {
    fn open(&self, name: &str) -> Result<BoxedStorage, StorageError> {
        let path = self.path_of(name)?;
        let dir = split(&path).map(|(dir, _)| self.dirs.get_or_insert(dir));
        Ok(Box::new(FileStorage::in_dir(path, self.pool.clone(), dir)))
    }

    fn exists(&self, name: &str) -> Result<bool, StorageError> {
        let path = self.path_of(name)?;
        if let Some((dir, file)) = split(&path) {
            if self.dirs.live(dir).is_some_and(|d| d.known_missing(file)) {
                return Ok(false);
            }
        }
        match fs::metadata(&path) {
            Ok(m) => Ok(m.is_file() && m.len() > 0),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StorageError::Io { op: "stat", path: path.display().to_string(), source: e }),
        }
    }

    fn replace(&self, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
        let path = self.path_of(name)?;
        match split(&path).and_then(|(dir, file)| Some((self.dirs.live(dir)?, file))) {
            Some((d, file)) => {
                let mut known = d.lock();
                crate::replace::replace_file(&path, bytes)?;
                d.made(&mut known, file);
                Ok(())
            }
            None => crate::replace::replace_file(&path, bytes),
        }
    }

    fn remove(&self, name: &str) -> Result<(), StorageError> {
        let path = self.path_of(name)?;
        match split(&path).and_then(|(dir, file)| Some((self.dirs.live(dir)?, file))) {
            Some((d, file)) => {
                let mut known = d.lock();
                if !matches!(&*known, Known::Fresh { files, .. } if !files.contains(file)) {
                    crate::replace::remove_file(&path)?;
                    d.removed(&mut known, file);
                }
                Ok(())
            }
            None => crate::replace::remove_file(&path),
        }
    }

    /// Takes an exclusive `flock` on the file `name` (created if missing).
    /// The lock lives on a descriptor of its own, outside the pool: a lock is
    /// held by an open file description, and the pool closes descriptors.
    /// The guard also keeps what the provider knows of the file's directory
    /// (the lock keeps everybody else out of it).
    fn lock(&self, name: &str) -> Result<LockGuard, StorageError> {
        let path = self.path_of(name)?;
        let display = path.display().to_string();
        let io = |op, source| StorageError::Io { op, path: display.clone(), source };
        let (dir, file) = split(&path).ok_or_else(|| StorageError::InvalidName(name.to_owned()))?;
        let d = self.dirs.get_or_insert(dir);
        let file = {
            let mut known = d.lock();
            d.prepare(&mut known).map_err(|e| io("create directory for", e))?;
            // flock needs no write access: an existing file is opened read-only.
            match OpenOptions::new().read(true).open(&path) {
                Ok(f) => {
                    d.found(&mut known);
                    f
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if matches!(*known, Known::Unknown) {
                        d.made_dir(&mut known).map_err(|e| io("create directory for", e))?;
                    }
                    let create =
                        || OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path);
                    let f = crate::dir::create_in(Some(dir), create)
                        .map_err(|(op, e)| io(if op == "create" { "open lock" } else { op }, e))?;
                    OPENED_FOR_WRITING.fetch_add(1, Relaxed);
                    d.made(&mut known, file);
                    f
                }
                Err(e) => return Err(io("open lock", e)),
            }
        };
        match file.try_lock() {
            Ok(()) => Ok(LockGuard::file(file, d)),
            Err(fs::TryLockError::WouldBlock) => Err(StorageError::Locked { path: display }),
            Err(fs::TryLockError::Error(source)) => Err(io("lock", source)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_reads_empty_and_is_created_on_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/c");
        let mut f = FileStorage::new(&path);
        assert_eq!(f.len().unwrap(), 0);
        assert!(f.read(0, 1).is_err());
        f.sync().unwrap();
        assert!(!path.exists());
        f.write(10, b"x").unwrap();
        assert_eq!(f.len().unwrap(), 11);
        assert_eq!(f.read(9, 2).unwrap(), b"\0x");
        assert!(matches!(f.read(10, 2), Err(StorageError::OutOfBounds { size: 11, .. })));
        f.truncate(3).unwrap();
        assert_eq!(f.len().unwrap(), 3);
        f.sync().unwrap();
    }

    #[test]
    fn reading_opens_read_only_and_a_clean_sync_does_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        let mut f = FileStorage::new(&path);
        assert_eq!(f.read(0, 3).unwrap(), b"abc");
        assert!(!f.writable);
        f.sync().unwrap();
        assert!(!f.unsynced);
        f.write(3, b"d").unwrap();
        assert!(f.writable && f.unsynced);
        assert_eq!(f.read(0, 4).unwrap(), b"abcd");
        f.sync().unwrap();
        assert!(!f.unsynced);
        f.truncate(1).unwrap();
        assert!(f.unsynced);
        assert_eq!(std::fs::read(&path).unwrap(), b"a");
    }

    #[test]
    fn names_cannot_escape_the_root() {
        let p = DirectoryProvider::new("/tmp/x");
        for bad in ["", "../a", "/etc/passwd", "a/../../b"] {
            assert!(matches!(p.path_of(bad), Err(StorageError::InvalidName(_))), "{bad}");
        }
        assert!(p.path_of("0/key").is_ok());
    }

    #[test]
    fn a_small_pool_serves_many_files_transparently() {
        let dir = tempfile::tempdir().unwrap();
        let pool = FilePool::new(4);
        let p = DirectoryProvider::with_pool(dir.path(), pool.clone());
        std::fs::write(dir.path().join("ro"), b"read only").unwrap();
        let mut ro = p.open("ro").unwrap();
        let mut files: Vec<BoxedStorage> =
            (0..40).map(|i| p.open(&format!("{}/f", i % 7 * 10 + i)).unwrap()).collect();
        // Interleaved writes, reads, lengths and syncs over ten times more
        // files than the pool holds.
        for round in 0..5u8 {
            for (i, f) in files.iter_mut().enumerate() {
                f.write(u64::from(round) * 3, &[round, i as u8, 0xAA]).unwrap();
                if i % 3 == 0 {
                    f.sync().unwrap();
                }
            }
            assert_eq!(ro.read(5, 4).unwrap(), b"only");
            assert!(pool.stats().open <= 4);
        }
        for (i, f) in files.iter_mut().enumerate() {
            assert_eq!(f.len().unwrap(), 15);
            for round in 0..5u8 {
                assert_eq!(f.read(u64::from(round) * 3, 3).unwrap(), [round, i as u8, 0xAA]);
            }
            assert!(f.needs_sync() == (i % 3 != 0));
            f.sync().unwrap();
            assert!(!f.needs_sync());
            f.truncate(2).unwrap();
            assert!(matches!(f.read(0, 3), Err(StorageError::OutOfBounds { size: 2, .. })));
        }
        let s = pool.stats();
        assert!(s.open <= 4 && s.peak_open <= 4, "{s:?}");
        assert!(s.evicted > 100, "{s:?}");
        assert_eq!(s.storages, 41);
        drop(files);
        assert_eq!(pool.stats().storages, 1);
        // The read-only file was never opened for writing.
        assert_eq!(std::fs::read(dir.path().join("ro")).unwrap(), b"read only");
    }

    #[test]
    fn threads_share_a_small_pool() {
        let dir = tempfile::tempdir().unwrap();
        let pool = FilePool::new(6);
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let p = DirectoryProvider::with_pool(dir.path().join(t.to_string()), pool.clone());
                s.spawn(move || {
                    let mut files: Vec<BoxedStorage> =
                        (0..12).map(|i| p.open(&i.to_string()).unwrap()).collect();
                    for round in 0..50u64 {
                        for (i, f) in files.iter_mut().enumerate() {
                            let at = (round * 7 + i as u64) % 64;
                            f.write(at * 4, &[t, i as u8, round as u8, 1]).unwrap();
                            assert_eq!(f.read(at * 4, 4).unwrap(), [t, i as u8, round as u8, 1]);
                        }
                    }
                    for f in &mut files {
                        f.sync().unwrap();
                    }
                });
            }
        });
        let st = pool.stats();
        // At most one descriptor beyond the capacity per thread inside a read
        // or write; none once they are done.
        assert!(st.peak_open <= 6 && st.open <= 6, "{st:?}");
        assert_eq!(st.storages, 0);
    }

    #[test]
    fn a_file_deleted_while_closed_by_the_pool_is_an_error_with_its_cause() {
        let dir = tempfile::tempdir().unwrap();
        let pool = FilePool::new(1);
        let mut a = FileStorage::with_pool(dir.path().join("a"), pool.clone());
        let mut b = FileStorage::with_pool(dir.path().join("b"), pool.clone());
        a.write(0, b"a").unwrap();
        b.write(0, b"b").unwrap();
        std::fs::remove_file(dir.path().join("a")).unwrap();
        let err = a.read(0, 1).unwrap_err();
        assert!(
            matches!(&err, StorageError::Io { op: "reopen", source, .. } if source.kind() == io::ErrorKind::NotFound),
            "{err:?}"
        );
        assert_eq!(b.read(0, 1).unwrap(), b"b");
    }

    fn known(p: &DirectoryProvider, dir: &str) -> String {
        let d = p.dirs.live(&p.root.join(dir)).expect("a live record");
        let k = d.lock();
        match &*k {
            Known::Fresh { on_disk, files } => {
                let mut names: Vec<_> = files.iter().map(|f| f.to_string_lossy().into_owned()).collect();
                names.sort();
                format!("fresh on_disk={on_disk} {names:?}")
            }
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn a_new_directory_is_looked_at_once_and_made_once() {
        let tmp = tempfile::tempdir().unwrap();
        let p = DirectoryProvider::with_pool(tmp.path(), FilePool::new(64));
        let names = ["kappa-head", "bitfield", "tree", "signatures", "data", "key", "secret_key"];
        let mut files: Vec<BoxedStorage> = names.iter().map(|n| p.open(&format!("0/{n}")).unwrap()).collect();
        assert_eq!(known(&p, "0"), "Unknown");
        assert_eq!(files[0].len().unwrap(), 0);
        // One probe and one look at the directory: it is missing.
        assert_eq!(known(&p, "0"), "fresh on_disk=false []");
        // The other files are known missing: not probed. (A file made behind
        // the provider's back, which a lock rules out, shows it.)
        std::fs::create_dir(tmp.path().join("0")).unwrap();
        std::fs::write(tmp.path().join("0/tree"), b"not seen").unwrap();
        for f in &mut files[1..] {
            assert_eq!(f.len().unwrap(), 0);
        }
        assert!(!p.exists("0/tree").unwrap());
        std::fs::remove_dir_all(tmp.path().join("0")).unwrap();
        for f in &mut files[1..6] {
            f.truncate(0).unwrap();
        }
        files[5].write(0, &[7; 32]).unwrap();
        assert_eq!(known(&p, "0"), r#"fresh on_disk=true ["bitfield", "data", "key", "signatures", "tree"]"#);
        assert!(p.exists("0/key").unwrap());
        assert!(!p.exists("0/tree").unwrap(), "made, but empty");
        assert!(!p.exists("0/secret_key").unwrap());
        // A second storage of a file made here finds it.
        assert_eq!(p.open("0/key").unwrap().read(0, 32).unwrap(), [7; 32]);
        // Replace and remove keep the record right.
        p.replace("0/policy", b"p").unwrap();
        assert!(p.exists("0/policy").unwrap());
        assert_eq!(p.open("0/policy").unwrap().read(0, 1).unwrap(), b"p");
        p.remove("0/policy").unwrap();
        assert!(!p.exists("0/policy").unwrap());
        assert_eq!(known(&p, "0"), r#"fresh on_disk=true ["bitfield", "data", "key", "signatures", "tree"]"#);
        // When the last storage drops, so does the record.
        drop(files);
        assert!(p.dirs.live(&tmp.path().join("0")).is_none());
        assert_eq!(p.open("0/key").unwrap().read(0, 32).unwrap(), [7; 32]);
    }

    #[test]
    fn an_existing_directory_is_probed_file_by_file_and_not_made_again() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("0")).unwrap();
        std::fs::write(tmp.path().join("0/key"), [1; 32]).unwrap();
        let p = DirectoryProvider::with_pool(tmp.path(), FilePool::new(64));
        let mut head = p.open("0/kappa-head").unwrap();
        let mut key = p.open("0/key").unwrap();
        assert_eq!(head.len().unwrap(), 0);
        assert_eq!(known(&p, "0"), "Exists");
        assert_eq!(key.read(0, 32).unwrap(), [1; 32]);
        head.write(0, b"h").unwrap();
        assert_eq!(known(&p, "0"), "Exists");
        assert!(p.exists("0/kappa-head").unwrap());
    }

    #[test]
    fn a_lock_in_a_new_directory_knows_it_is_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let p = DirectoryProvider::with_pool(tmp.path(), FilePool::new(64));
        let guard = p.lock("f/bitfield").unwrap();
        assert_eq!(known(&p, "f"), r#"fresh on_disk=true ["bitfield"]"#);
        let mut bitfield = p.open("f/bitfield").unwrap();
        assert_eq!(bitfield.len().unwrap(), 0);
        bitfield.write(0, b"b").unwrap();
        assert_eq!(p.open("f/tree").unwrap().len().unwrap(), 0);
        drop(bitfield);
        // The guard keeps the record.
        assert_eq!(known(&p, "f"), r#"fresh on_disk=true ["bitfield"]"#);
        drop(guard);
        assert!(p.dirs.live(&tmp.path().join("f")).is_none());
        // In an existing directory, a lock learns only that it exists.
        let _g = p.lock("f/bitfield").unwrap();
        assert_eq!(known(&p, "f"), "Exists");
        let _g2 = p.lock("f/other").unwrap();
        assert_eq!(known(&p, "f"), "Exists");
    }

    #[test]
    fn records_of_dropped_directories_are_swept() {
        let tmp = tempfile::tempdir().unwrap();
        let p = DirectoryProvider::with_pool(tmp.path(), FilePool::new(16));
        let keep = p.open("kept/key").unwrap();
        for i in 0..1000 {
            p.open(&format!("{i}/key")).unwrap().write(0, b"k").unwrap();
        }
        assert!(p.dirs.len() <= 130, "{}", p.dirs.len());
        assert!(p.dirs.live(&tmp.path().join("kept")).is_some());
        drop(keep);
    }

    #[test]
    fn truncating_a_file_it_just_made_costs_no_truncate() {
        let tmp = tempfile::tempdir().unwrap();
        let p = DirectoryProvider::with_pool(tmp.path(), FilePool::new(64));
        let mut a = p.open("0/a").unwrap();
        let mut b = p.open("0/b").unwrap();
        let mut c = p.open("0/c").unwrap();
        assert_eq!(a.len().unwrap(), 0);
        a.truncate(0).unwrap();
        assert_eq!(std::fs::metadata(tmp.path().join("0/a")).unwrap().len(), 0);
        // Made and grown: a real truncate.
        assert_eq!(b.len().unwrap(), 0);
        b.truncate(5).unwrap();
        assert_eq!(std::fs::read(tmp.path().join("0/b")).unwrap(), [0; 5]);
        // Found missing, then made by somebody else: opened as it is, and
        // truncated for real.
        assert_eq!(c.len().unwrap(), 0);
        std::fs::write(tmp.path().join("0/c"), b"abcdef").unwrap();
        c.truncate(0).unwrap();
        assert_eq!(std::fs::read(tmp.path().join("0/c")).unwrap(), b"");
        let mut d = FileStorage::new(tmp.path().join("1/d"));
        assert_eq!(d.len().unwrap(), 0);
        std::fs::create_dir(tmp.path().join("1")).unwrap();
        std::fs::write(tmp.path().join("1/d"), b"abcdef").unwrap();
        d.write(0, b"xy").unwrap();
        assert_eq!(std::fs::read(tmp.path().join("1/d")).unwrap(), b"xycdef");
        // A storage never looked at opens what is there.
        let mut e = FileStorage::new(tmp.path().join("1/d"));
        e.truncate(0).unwrap();
        assert_eq!(std::fs::read(tmp.path().join("1/d")).unwrap(), b"");
    }

    #[test]
    fn lock_is_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let p = DirectoryProvider::new(dir.path());
        let g = p.lock("bitfield").unwrap();
        assert!(p.lock("bitfield").is_err());
        drop(g);
        let _again = p.lock("bitfield").unwrap();
    }
}
