//! Creating a view database file crash-safely, and moving an unusable one aside.
//!
//! redb writes a new file in several steps (header, regions, the first commit);
//! a process killed in between leaves a file at the path that is not a redb
//! database, and every later open fails on it. So a new file is built under a
//! temporary name, synced, and only then linked to its path: the path holds
//! either nothing or a whole view database.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::Database;

use crate::error::{Location, RedbError};
use crate::views::RedbViews;

/// The infix of temporary files: `<name>.new-<pid>-<nanos>`.
const NEW_INFIX: &str = ".new-";
/// The infix of moved-aside files: `<name>.damaged-<unix seconds>[-<n>]`.
const DAMAGED_INFIX: &str = ".damaged-";

/// Makes sure a view database is at `path`: creates one if there is no file
/// there or an empty one.
pub(crate) fn ensure_exists(path: &Path, cache_bytes: usize) -> Result<(), RedbError> {
    let at = || Location::File(path.to_path_buf());
    let backend = |what: &str, e: io::Error| RedbError::io(at(), what, e);
    let empty = match std::fs::metadata(path) {
        Ok(m) if m.len() > 0 => {
            remove_leftovers(path);
            return Ok(());
        }
        Ok(_) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(backend("cannot read its metadata", e)),
    };
    remove_leftovers(path);
    let tmp = sibling(path, &format!("{NEW_INFIX}{}-{}", std::process::id(), nanos()));
    let built = build(&tmp, cache_bytes);
    let placed = built.and_then(|()| {
        if empty {
            // Only an empty file to replace (nothing of ours ever leaves one).
            std::fs::rename(&tmp, path).map_err(|e| backend("cannot move the new file into place", e))
        } else {
            place(&tmp, path).map_err(|e| backend("cannot move the new file into place", e))
        }
    });
    let _ = std::fs::remove_file(&tmp);
    placed?;
    sync_dir(path).map_err(|e| backend("cannot sync its directory", e))
}

/// Writes a new view database (with its format marker, durably) at `tmp`.
fn build(tmp: &Path, cache_bytes: usize) -> Result<(), RedbError> {
    let at = Location::File(tmp.to_path_buf());
    let db = Database::builder()
        .set_cache_size(cache_bytes)
        .create(tmp)
        .map_err(|e| RedbError::from_open(at.clone(), e))?;
    // The marker commit is durable (fsync'd); dropping closes the file cleanly.
    drop(RedbViews::init(db, None, cache_bytes, at.clone())?);
    std::fs::File::open(tmp).and_then(|f| f.sync_all()).map_err(|e| RedbError::io(at, "cannot sync", e))
}

/// Links `tmp` to `path` unless a file appeared there meanwhile.
fn place(tmp: &Path, path: &Path) -> io::Result<()> {
    match std::fs::hard_link(tmp, path) {
        Ok(()) => Ok(()),
        // Another process created it meanwhile: that one is used.
        Err(_) if path.exists() => Ok(()),
        // A file system without hard links: a plain rename.
        Err(_) => std::fs::rename(tmp, path),
    }
}

/// Removes temporary files that creators killed part way left next to `path`.
fn remove_leftovers(path: &Path) {
    let (Some(dir), Some(name)) = (parent(path), path.file_name()) else { return };
    let prefix = format!("{}{NEW_INFIX}", name.to_string_lossy());
    let own = format!("{prefix}{}-", std::process::id());
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let n = e.file_name();
        let n = n.to_string_lossy();
        // Not this process's: a creator racing in this process is not killed.
        if n.starts_with(&prefix) && !n.starts_with(&own) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Renames the file at `path` to `<name>.damaged-<unix time>` (with `-<n>` if
/// that is taken) and returns the new path.
pub(crate) fn move_aside(path: &Path) -> io::Result<PathBuf> {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    for n in 0..1000u32 {
        let suffix =
            if n == 0 { format!("{DAMAGED_INFIX}{secs}") } else { format!("{DAMAGED_INFIX}{secs}-{n}") };
        let to = sibling(path, &suffix);
        if to.exists() {
            continue;
        }
        std::fs::rename(path, &to)?;
        sync_dir(path)?;
        return Ok(to);
    }
    Err(io::Error::other("1000 moved-aside files of this second already"))
}

/// `path` with `suffix` appended to its file name.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name: OsString = path.file_name().map(OsString::from).unwrap_or_default();
    name.push(suffix);
    path.with_file_name(name)
}

fn parent(path: &Path) -> Option<&Path> {
    match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Some(Path::new(".")),
        other => other,
    }
}

fn nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// Makes a rename or link in `path`'s directory durable (Unix; elsewhere the
/// file system's own ordering is trusted).
fn sync_dir(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    if let Some(dir) = parent(path) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}
