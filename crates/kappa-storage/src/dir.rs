//! What a [`DirectoryProvider`](crate::DirectoryProvider) knows about the
//! directories its storages live in, so that creating a feed costs one
//! `mkdir` and one `open` per file instead of a probe, a `mkdir` and a
//! `stat` per file.
//!
//! A directory's record ([`DirState`]) lives as long as a storage or a lock
//! of the provider in that directory does: while a feed is open, it is locked
//! (the feed's `bitfield` lock, or the feed set's `LOCK`), so nothing but the
//! feed itself creates or removes its files, and everything the provider
//! learnt stays true. When the last storage of a directory drops, the record
//! goes with it and the next open probes the disk again.
//!
//! A record says one of three things:
//!
//! - nothing yet ([`Known::Unknown`]): every file is probed, as without a record;
//! - the directory exists ([`Known::Exists`]): files are still probed, but
//!   creating one needs no `mkdir`;
//! - the directory was missing when we first looked, and every file in it
//!   since was made through this record ([`Known::Fresh`]): a name that is
//!   not in its list does not exist, with no probe. A crash between the
//!   `mkdir` and the files leaves an empty directory, which the next open
//!   (with no record) probes and finds empty, as before.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// What is known of one directory (see the module docs).
#[derive(Debug)]
pub(crate) enum Known {
    /// Nothing: probe everything.
    Unknown,
    /// The directory exists; what is in it is not known.
    Exists,
    /// The directory was missing when first looked at; `files` are the files
    /// made in it since, and the only ones there.
    Fresh {
        /// Whether the directory has been created since.
        on_disk: bool,
        /// The file names made in it.
        files: HashSet<OsString>,
    },
}

/// The record of one directory, shared by the storages in it.
#[derive(Debug)]
pub(crate) struct DirState {
    path: PathBuf,
    known: Mutex<Known>,
}

impl DirState {
    fn new(path: PathBuf) -> Self {
        DirState { path, known: Mutex::new(Known::Unknown) }
    }

    /// Locks the record (a poisoned lock still holds a consistent state: every
    /// change is a single assignment).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `name` is known not to exist (so it needs no probe).
    pub(crate) fn known_missing(&self, name: &OsStr) -> bool {
        matches!(&*self.lock(), Known::Fresh { files, .. } if !files.contains(name))
    }

    /// A probe found `name`.
    pub(crate) fn found(&self, known: &mut Known) {
        if matches!(known, Known::Unknown) {
            *known = Known::Exists;
        }
    }

    /// A probe did not find `name`: the first such miss in a directory of
    /// unknown state looks at the directory once; if it is missing too, no
    /// other file in it needs a probe.
    pub(crate) fn missed(&self, known: &mut Known, name: &OsStr) {
        match known {
            Known::Unknown => match fs::metadata(&self.path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    *known = Known::Fresh { on_disk: false, files: HashSet::new() };
                }
                Ok(m) if m.is_dir() => *known = Known::Exists,
                // Something else (not a directory, no permission): keep probing,
                // and let the open report it.
                _ => {}
            },
            Known::Exists => {}
            Known::Fresh { files, .. } => {
                // Made here and removed behind our back.
                files.remove(name);
            }
        }
    }

    /// Makes the directory if it is known to be missing (one `mkdir`; its
    /// parents too if they are missing).
    pub(crate) fn prepare(&self, known: &mut Known) -> io::Result<()> {
        if let Known::Fresh { on_disk: on_disk @ false, .. } = known {
            match fs::create_dir(&self.path) {
                Ok(()) => *on_disk = true,
                // Made by somebody else since we looked: what is in it is not known.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => *known = Known::Exists,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir_all(&self.path)?;
                    *on_disk = true;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Makes the directory of unknown state (one `mkdir`, its parents too if
    /// they are missing): if it was missing, it is known to be empty.
    pub(crate) fn made_dir(&self, known: &mut Known) -> io::Result<()> {
        match fs::create_dir(&self.path) {
            Ok(()) => *known = Known::Fresh { on_disk: true, files: HashSet::new() },
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => *known = Known::Exists,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&self.path)?;
                *known = Known::Fresh { on_disk: true, files: HashSet::new() };
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// `name` was made in the directory (which therefore exists).
    pub(crate) fn made(&self, known: &mut Known, name: &OsStr) {
        match known {
            Known::Unknown => *known = Known::Exists,
            Known::Exists => {}
            Known::Fresh { on_disk, files } => {
                *on_disk = true;
                files.insert(name.to_owned());
            }
        }
    }

    /// `name` was removed from the directory.
    pub(crate) fn removed(&self, known: &mut Known, name: &OsStr) {
        if let Known::Fresh { files, .. } = known {
            files.remove(name);
        }
    }

    /// Runs `open` (which creates `name` in the directory), making the
    /// directory first if it is known to be missing, and again if `open`
    /// finds it missing (deleted behind our back, or never looked at).
    pub(crate) fn create<T>(
        &self,
        name: &OsStr,
        open: impl Fn() -> io::Result<T>,
    ) -> Result<T, (&'static str, io::Error)> {
        let mut known = self.lock();
        self.prepare(&mut known).map_err(|e| ("create directory for", e))?;
        let file = create_in(Some(&self.path), open)?;
        self.made(&mut known, name);
        Ok(file)
    }
}

/// Runs `open` (which creates a file in `dir`); if it finds `dir` missing,
/// makes it (and its parents) and runs `open` again.
pub(crate) fn create_in<T>(
    dir: Option<&Path>,
    open: impl Fn() -> io::Result<T>,
) -> Result<T, (&'static str, io::Error)> {
    match (open(), dir) {
        (Err(e), Some(dir)) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).map_err(|e| ("create directory for", e))?;
            open().map_err(|e| ("create", e))
        }
        (r, _) => r.map_err(|e| ("create", e)),
    }
}

/// The records of the directories that have live storages, shared by the
/// clones of a provider.
#[derive(Debug, Default)]
pub(crate) struct Dirs {
    map: Mutex<DirMap>,
}

#[derive(Debug, Default)]
struct DirMap {
    live: HashMap<PathBuf, Weak<DirState>>,
    /// The number of entries at which the dead ones are next swept out.
    sweep_at: usize,
}

impl Dirs {
    fn map(&self) -> MutexGuard<'_, DirMap> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The record of directory `path`, made (knowing nothing) if no storage in
    /// it is alive.
    pub(crate) fn get_or_insert(&self, path: &Path) -> Arc<DirState> {
        let mut m = self.map();
        if let Some(d) = m.live.get(path).and_then(Weak::upgrade) {
            return d;
        }
        let d = Arc::new(DirState::new(path.to_owned()));
        m.live.insert(path.to_owned(), Arc::downgrade(&d));
        if m.live.len() >= m.sweep_at {
            // Amortised: a sweep at least doubles the room before the next.
            m.live.retain(|_, w| w.strong_count() > 0);
            m.sweep_at = (m.live.len() * 2).max(64);
        }
        d
    }

    /// The record of directory `path` if a storage in it is alive.
    pub(crate) fn live(&self, path: &Path) -> Option<Arc<DirState>> {
        self.map().live.get(path).and_then(Weak::upgrade)
    }

    /// How many records the map holds (live or not yet swept), for tests.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map().live.len()
    }
}
