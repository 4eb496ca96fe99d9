//! The redb database behind a [`RedbViews`](crate::RedbViews): read-only until
//! something writes, and sealed when it is closed cleanly.
//!
//! Opening a redb file for writing writes and syncs its header, and closing it
//! writes again (about eight `fdatasync`s between them), and redb verifies its
//! page checksums only in a full integrity check. A command that only reads
//! views should not pay for either. So:
//!
//! - **The seal.** When a writable database closes cleanly, the length and a
//!   128-bit xxh3 hash of the whole file are written next to it
//!   (`<name>.seal`). A file whose bytes hash to its seal is exactly the file
//!   a clean close left, whose integrity was checked when it was opened, so it
//!   needs no check again. The seal protects itself: any later change of the
//!   file (a write, a crash in the middle of one, damage from outside) makes it
//!   stop matching, and the next open is a full one. It is never synced and
//!   never removed: a lost or stale seal only costs a full open.
//! - **Read-only until the first write.** A sealed file opens as a redb
//!   `ReadOnlyDatabase`: no write, no sync, not even of the header. The first
//!   commit (or clear) closes it and reopens the file for writing, waiting for
//!   reads in flight; from then on it is an ordinary writable database, and
//!   dropping it seals the file again.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use kappa_view::{StoreError, StoreErrorKind};
use redb::{Database, ReadOnlyDatabase, ReadTransaction, ReadableDatabase, WriteTransaction};

use crate::error::{store_err, Location, RedbError};

/// What a seal file starts with.
const SEAL_MAGIC: &str = "kappa-view-redb seal 1";
/// The suffix of the seal file: `<name>.seal`.
const SEAL_SUFFIX: &str = ".seal";

/// How the database is open now.
enum State {
    /// Opened from a sealed file; nothing written yet.
    ReadOnly(ReadOnlyDatabase),
    /// Open for writing.
    Writable(Database),
    /// Reopening for writing failed; the error said why.
    Closed,
}

/// One redb database, shared by every store of a `RedbViews`.
pub(crate) struct Handle {
    /// The file (`None` for an in-memory database, which is always writable).
    path: Option<PathBuf>,
    cache_bytes: usize,
    state: RwLock<State>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").field("path", &self.path).field("writable", &self.is_writable()).finish()
    }
}

impl Handle {
    /// A database open for writing (the file at `path`, or in memory).
    pub(crate) fn writable(db: Database, path: Option<PathBuf>, cache_bytes: usize) -> Self {
        Self { path, cache_bytes, state: RwLock::new(State::Writable(db)) }
    }

    /// A sealed file opened read-only.
    pub(crate) fn read_only(db: ReadOnlyDatabase, path: PathBuf, cache_bytes: usize) -> Self {
        Self { path: Some(path), cache_bytes, state: RwLock::new(State::ReadOnly(db)) }
    }

    fn read_state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the file has been opened for writing (always, in memory).
    pub(crate) fn is_writable(&self) -> bool {
        matches!(*self.read_state(), State::Writable(_))
    }

    /// Runs `f` on a read transaction. The database is not reopened while
    /// `f` runs (a reopen would cut the transaction short).
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(ReadTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let state = self.read_state();
        let tx = match &*state {
            State::ReadOnly(db) => db.begin_read().map_err(store_err)?,
            State::Writable(db) => db.begin_read().map_err(store_err)?,
            State::Closed => return Err(closed()),
        };
        f(tx)
    }

    /// A write transaction, reopening the file for writing first if it was
    /// opened read-only.
    pub(crate) fn begin_write(&self) -> Result<WriteTransaction, StoreError> {
        {
            let state = self.read_state();
            match &*state {
                State::Writable(db) => return db.begin_write().map_err(store_err),
                State::Closed => return Err(closed()),
                State::ReadOnly(_) => {}
            }
        }
        let mut state = self.write_state();
        if let State::ReadOnly(_) = &*state {
            let State::ReadOnly(ro) = std::mem::replace(&mut *state, State::Closed) else {
                unreachable!("matched just above")
            };
            match self.reopen_writable(ro) {
                Ok(db) => *state = State::Writable(db),
                Err(e) => {
                    // Another handle has the file open, say: go on reading.
                    if let Some(ro) = self.reopen_read_only() {
                        *state = State::ReadOnly(ro);
                    }
                    return Err(e);
                }
            }
        }
        match &*state {
            State::Writable(db) => db.begin_write().map_err(store_err),
            _ => Err(closed()),
        }
    }

    /// Closes the read-only database and opens the file for writing, without
    /// an integrity check: the file is the sealed one, verified at open and
    /// unchanged since (nothing wrote it).
    fn reopen_writable(&self, ro: ReadOnlyDatabase) -> Result<Database, StoreError> {
        let Some(path) = &self.path else { return Err(closed()) };
        let at = Location::File(path.clone());
        ro.close().map_err(|e| StoreError::from(RedbError::from_open(at.clone(), e)))?;
        Database::builder()
            .set_cache_size(self.cache_bytes)
            .open(path)
            .map_err(|e| StoreError::from(RedbError::from_open(at, e)))
    }

    /// The file opened read-only again, after a failed reopen for writing.
    fn reopen_read_only(&self) -> Option<ReadOnlyDatabase> {
        let path = self.path.as_ref()?;
        Database::builder().set_cache_size(self.cache_bytes).open_read_only(path).ok()
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let state = std::mem::replace(&mut *self.write_state(), State::Closed);
        if let (State::Writable(db), Some(path)) = (state, &self.path) {
            // Only a clean close is sealed; a seal that cannot be written
            // costs the next open its integrity check, nothing else.
            if db.close().is_ok() {
                let _ = write_seal(path);
            }
        }
    }
}

fn closed() -> StoreError {
    StoreError::from_message(
        StoreErrorKind::Backend,
        "the view database is closed: reopening it for writing failed",
    )
}

/// `<path>.seal`.
fn seal_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(std::ffi::OsString::from).unwrap_or_default();
    name.push(SEAL_SUFFIX);
    path.with_file_name(name)
}

/// The length and xxh3-128 hash of the file at `path`.
fn fingerprint(path: &Path) -> std::io::Result<(u64, u128)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok((len, hasher.digest128()));
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
}

fn seal_text(len: u64, hash: u128) -> String {
    format!("{SEAL_MAGIC}\n{len}\n{hash:032x}\n")
}

/// Writes the seal of the file at `path` as it is now (under a temporary name,
/// then renamed, so a torn seal is never read).
fn write_seal(path: &Path) -> std::io::Result<()> {
    let (len, hash) = fingerprint(path)?;
    let seal = seal_path(path);
    let mut tmp = seal.clone().into_os_string();
    tmp.push(format!(".{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, seal_text(len, hash))?;
    std::fs::rename(&tmp, &seal).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Whether the file at `path` is exactly as its seal says: a clean close left
/// it, and nothing changed it since.
pub(crate) fn is_sealed(path: &Path) -> bool {
    let Ok(seal) = std::fs::read_to_string(seal_path(path)) else { return false };
    // The length first: a file that grew or shrank is not read at all.
    let mut lines = seal.lines();
    let (Some(SEAL_MAGIC), Some(len)) = (lines.next(), lines.next().and_then(|l| l.parse::<u64>().ok()))
    else {
        return false;
    };
    if std::fs::metadata(path).map(|m| m.len()).ok() != Some(len) {
        return false;
    }
    matches!(fingerprint(path), Ok((l, h)) if seal == seal_text(l, h))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_seal_matches_only_the_bytes_it_was_made_of() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; 3 << 20]).unwrap();
        assert!(!is_sealed(&path), "no seal yet");
        write_seal(&path).unwrap();
        assert!(is_sealed(&path));
        // One byte changed, the length kept.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[2 << 20] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(!is_sealed(&path));
        bytes[2 << 20] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(is_sealed(&path));
        // Longer, or a garbled seal.
        bytes.push(0);
        std::fs::write(&path, &bytes).unwrap();
        assert!(!is_sealed(&path));
        write_seal(&path).unwrap();
        std::fs::write(seal_path(&path), "kappa-view-redb seal 1\nx\n").unwrap();
        assert!(!is_sealed(&path));
    }
}
