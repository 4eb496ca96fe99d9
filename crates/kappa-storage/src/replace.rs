//! Whole-file replacement and removal for [`crate::DirectoryProvider`], made
//! durable: what a crash leaves is the old state or the new one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use crate::StorageError;

fn io_error(op: &'static str, path: &Path, source: io::Error) -> StorageError {
    StorageError::Io { op, path: path.display().to_string(), source }
}

/// Syncs the directory `dir`, so that a rename or a removal in it survives a
/// power loss.
fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_error("sync directory", dir, e))
}

/// Replaces `path` with a file holding `bytes`: writes `<path>.tmp`, syncs it,
/// renames it over `path`, syncs the directory. A crash before the rename
/// leaves the old file (and a stray temporary file, replaced next time);
/// after it, the new one.
pub(crate) fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| io_error("create directory for", path, e))?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| io_error("create", &tmp, e))?;
    f.write_all(bytes).map_err(|e| io_error("write", &tmp, e))?;
    f.sync_all().map_err(|e| io_error("sync", &tmp, e))?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| io_error("rename into place", path, e))?;
    sync_dir(dir)
}

/// Removes `path` (nothing to do if it is not there) and syncs its directory.
pub(crate) fn remove_file(path: &Path) -> Result<(), StorageError> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(path.parent().unwrap_or(Path::new("."))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error("remove", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use crate::{DirectoryProvider, MemoryProvider, Provider, RandomAccess};

    #[test]
    fn replace_and_remove_on_files_and_in_memory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DirectoryProvider::new(tmp.path());
        let mem = MemoryProvider::new();
        let providers: [&dyn Provider; 2] = [&dir, &mem];
        for p in providers {
            p.replace("a/policy", b"first").unwrap();
            p.replace("a/policy", b"2nd").unwrap();
            let mut s = p.open("a/policy").unwrap();
            assert_eq!(s.read(0, 3).unwrap(), b"2nd");
            assert_eq!(s.len().unwrap(), 3);
            p.remove("a/policy").unwrap();
            assert!(!p.exists("a/policy").unwrap());
            p.remove("a/never").unwrap();
        }
        assert!(!tmp.path().join("a/policy").exists());
        assert!(!tmp.path().join("a/policy.tmp").exists());
        assert!(!tmp.path().join("a/never").exists());
    }
}
