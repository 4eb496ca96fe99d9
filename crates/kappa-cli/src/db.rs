//! Opening a database directory: its shared key, availability errors, and the
//! kv view every command shares.

use std::io::Write;
use std::path::{Path, PathBuf};

use kappa_core::multifeed::MultifeedError;
use kappa_core::storage::StorageError;
use kappa_core::view::kv::KvView;
use kappa_core::view_redb::RedbError;
use kappa_core::{Kappa, KappaError, ViewHandle, ViewStorage, DEFAULT_SHARED_KEY};
use rand::RngCore;

use crate::error::{CliError, Result};

/// The local writer's name (as kappa-core apps use).
pub(crate) const WRITER: &str = "local";
/// The kv view's name.
pub(crate) const KV_VIEW: &str = "kv";
/// The kv view's version.
pub(crate) const KV_VERSION: u64 = 1;
/// The file, in a database directory, that keeps its shared key (64 hex chars).
pub(crate) const KEY_FILE: &str = "kappa-shared-key";

/// Parses a shared key: 64 hex characters (clap value parser).
pub(crate) fn parse_key(s: &str) -> std::result::Result<[u8; 32], String> {
    let s = s.trim();
    let bytes = hex::decode(s)
        .map_err(|e| format!("not hex ({e}); expected 64 hex characters, as `kappa key` prints"))?;
    bytes.try_into().map_err(|b: Vec<u8>| {
        format!("{} bytes; expected 32 (64 hex characters), as `kappa key` prints", b.len())
    })
}

/// An open database with the shared key it uses.
pub(crate) struct Db {
    /// The database.
    pub(crate) kappa: Kappa,
    /// Its directory.
    pub(crate) dir: PathBuf,
}

impl Db {
    /// The kv view, in use under its usual name and version.
    pub(crate) fn kv(&self) -> Result<ViewHandle<KvView>> {
        match self.kappa.view::<KvView>(KV_VIEW) {
            Some(v) => Ok(v),
            None => {
                let kv = self.kappa.use_view(KV_VIEW, KV_VERSION, KvView::new)?;
                if let Some(why) = kv.rebuilt_because() {
                    eprintln!(
                        "kappa: warning: the {KV_VIEW} view is rebuilt from the logs: {}",
                        crate::output::escape(why)
                    );
                }
                Ok(kv)
            }
        }
    }

    /// Closes the database (syncing every feed).
    pub(crate) fn close(self) -> Result<()> {
        self.kappa.close().map_err(|e| CliError::Runtime(format!("closing {}: {e}", self.dir.display())))
    }
}

/// Reads the key file of `dir`, if there is one.
fn read_key_file(dir: &Path) -> Result<Option<[u8; 32]>> {
    let path = dir.join(KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_key(&text)
            .map(Some)
            .map_err(|e| CliError::Unavailable(format!("{} is damaged: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CliError::Unavailable(format!("cannot read {}: {e}", path.display()))),
    }
}

/// Writes the key file of `dir` (readable by its owner only), atomically, and
/// only if there is none: `false` if another process wrote one first.
fn write_key_file(dir: &Path, key: &[u8; 32]) -> Result<bool> {
    let path = dir.join(KEY_FILE);
    let tmp = dir.join(format!("{KEY_FILE}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<bool> {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        writeln!(f, "{}", hex::encode(key))?;
        f.sync_all()?;
        // A link fails if the key file exists: the first key written sticks.
        let linked = match std::fs::hard_link(&tmp, &path) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        std::fs::remove_file(&tmp)?;
        Ok(linked)
    };
    write().map_err(|e| CliError::Runtime(format!("cannot write {}: {e}", path.display())))
}

/// A fresh random shared key (never multifeed's public default).
pub(crate) fn random_key() -> [u8; 32] {
    loop {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        if key != DEFAULT_SHARED_KEY {
            return key;
        }
    }
}

/// The one message for a directory another process uses (exit 3).
pub(crate) fn in_use(dir: &Path) -> CliError {
    CliError::Unavailable(format!(
        "the database {} is in use by another process (e.g. `kappa serve`); stop it or use another --dir",
        dir.display()
    ))
}

/// Whether opening failed because another process holds the directory: its
/// feed-set lock, or the view file's lock (a process that is exiting releases
/// the first before the second, so both are seen).
fn is_locked(e: &KappaError) -> bool {
    match e {
        KappaError::Multifeed(MultifeedError::Storage(StorageError::Locked { .. })) => true,
        // kappa-view-redb's lock error is the store error's source.
        KappaError::Store(e) => {
            matches!(e.downcast_ref::<RedbError>(), Some(RedbError::Locked { .. }))
        }
        _ => false,
    }
}

/// Maps an error of opening `dir` to the CLI's error kinds.
fn open_error(dir: &Path, e: KappaError) -> CliError {
    if is_locked(&e) {
        return in_use(dir);
    }
    match e {
        KappaError::NotADatabase(_) => CliError::Unavailable(format!(
            "{} is not a kappa database (it holds other files); choose another directory with --dir",
            dir.display()
        )),
        KappaError::Views(e) => CliError::Unavailable(format!("cannot open the views: {e}")),
        other => CliError::Runtime(format!("cannot open {}: {other}", dir.display())),
    }
}

/// Checks a `--views` URL (without connecting).
pub(crate) fn parse_views_url(url: &str) -> std::result::Result<String, String> {
    kappa_core::view_postgres::Config::from_url(url).map(|_| url.to_owned()).map_err(|e| e.to_string())
}

/// Which commands need the views (kept in `DIR/views.redb`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Views {
    /// Open the view file.
    Stored,
    /// Leave it alone (commands that only read or append logs): views, if any
    /// are used, live in memory.
    None,
    /// Seed mode (`serve --no-views`): no views at all, nothing indexed; the
    /// view file is left as it is, and views catch up when a command uses them.
    Off,
}

/// Opens (or creates) the database in `dir`.
///
/// Its shared key is `key` if given, else the one in its key file, else a new
/// random one. The key file is written (once the database is open) if it did
/// not exist, so the first key a directory is used with sticks.
pub(crate) fn open(dir: &Path, key: Option<[u8; 32]>, views: Views) -> Result<Db> {
    open_with(dir, key, views, None)
}

/// Like [`open`], with the views at `views_url` (PostgreSQL) instead of
/// `DIR/views.redb` when given.
pub(crate) fn open_with(
    dir: &Path,
    key: Option<[u8; 32]>,
    views: Views,
    views_url: Option<&str>,
) -> Result<Db> {
    if dir.exists() && !dir.is_dir() {
        return Err(CliError::Unavailable(format!(
            "{} is not a kappa database (it is not a directory)",
            dir.display()
        )));
    }
    let existing = if dir.is_dir() { read_key_file(dir)? } else { None };
    let shared = key.or(existing).unwrap_or_else(random_key);
    if !dir.exists() {
        std::fs::create_dir_all(dir)
            .map_err(|e| CliError::Runtime(format!("cannot create {}: {e}", dir.display())))?;
    }
    let mut builder = Kappa::builder().dir(dir).shared_key(shared);
    match (views, views_url) {
        (Views::None, _) => builder = builder.view_storage(ViewStorage::Memory),
        (Views::Off, _) => builder = builder.seed_mode(true),
        (Views::Stored, Some(url)) => builder = builder.view_storage(ViewStorage::Postgres(url.to_owned())),
        (Views::Stored, None) => {}
    }
    let kappa = builder.open().map_err(|e| open_error(dir, e))?;
    if let Some(moved) = kappa.views_moved_aside() {
        eprintln!("kappa: warning: {}", crate::output::escape(&moved.to_string()));
    }
    if existing.is_none() && !write_key_file(dir, &shared)? {
        // Another process created the directory's key between our look and
        // our lock (it has exited since: we hold the lock). Its key is the
        // directory's; open again with it unless one was given.
        if key.is_none() {
            let _ = kappa.close();
            drop(kappa);
            let Some(theirs) = read_key_file(dir)? else { return Err(in_use(dir)) };
            return open_with(dir, Some(theirs), views, views_url);
        }
    }
    Ok(Db { kappa, dir: dir.to_path_buf() })
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_from_64_hex_chars_only() {
        assert_eq!(parse_key(&"0a".repeat(32)), Ok([10u8; 32]));
        assert_eq!(parse_key(&format!(" {}\n", "0A".repeat(32))), Ok([10u8; 32]));
        assert!(parse_key("zz").is_err());
        assert!(parse_key(&"0a".repeat(31)).unwrap_err().contains("31 bytes"));
        assert!(parse_key("").is_err());
    }

    #[test]
    fn new_directories_get_a_random_key_that_sticks() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = tmp.path().join("db");
        let key = match open(&dir, None, Views::None) {
            Ok(db) => {
                let k = db.kappa.shared_key();
                db.close().unwrap_or_else(|e| panic!("{e}"));
                k
            }
            Err(e) => panic!("{e}"),
        };
        assert_ne!(key, DEFAULT_SHARED_KEY);
        assert_eq!(read_key_file(&dir).ok().flatten(), Some(key));
        let again = open(&dir, None, Views::None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.kappa.shared_key(), key);
    }
}
