//! Writing out and syncing: the bitfield, deferred writes, `sync_all`.

use super::*;

/// Syncs two files at once: two `fdatasync`s in flight share the disk's
/// flush rather than waiting one after the other.
pub(super) fn sync_both(a: &mut BoxedStorage, b: &mut BoxedStorage) -> Result<(), LogError> {
    if !a.needs_sync() || !b.needs_sync() {
        a.sync()?;
        return Ok(b.sync()?);
    }
    let (ra, rb) = std::thread::scope(|s| {
        let other = s.spawn(|| b.sync());
        let ra = a.sync();
        (ra, other.join())
    });
    ra?;
    match rb {
        Ok(r) => Ok(r?),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

impl Feed {
    /// Writes the changed bytes of every changed bitfield page (a page the file
    /// does not hold yet, whole): the file's bytes are exactly those of
    /// hypercore 8, which writes whole pages.
    pub(crate) fn flush_bitfield(&mut self) -> Result<(), LogError> {
        for (p, at, bytes) in self.bitfield.take_dirty_ranges() {
            self.files.bitfield.write(HEADER_LEN + (PAGE_SIZE * p + at) as u64, &bytes)?;
        }
        Ok(())
    }

    /// Flushes all files to stable storage.
    pub fn sync_all(&mut self) -> Result<(), LogError> {
        self.flush_deferred()?;
        self.guarded(Feed::sync_files)
    }

    /// Syncs every file written since its last sync, all at once (one round of
    /// `fdatasync`s in flight together rather than one after the other; under
    /// `SyncPolicy::None` no order of them guards anything, the operating
    /// system writes back in any order anyway).
    pub(crate) fn sync_files(&mut self) -> Result<(), LogError> {
        let f = &mut self.files;
        let mut dirty: Vec<&mut BoxedStorage> = [
            &mut f.data,
            &mut f.tree,
            &mut f.signatures,
            &mut f.bitfield,
            &mut f.key,
            &mut f.secret_key,
            &mut f.head,
        ]
        .into_iter()
        .filter(|s| s.needs_sync())
        .collect();
        let Some(first) = dirty.pop() else { return Ok(()) };
        if dirty.is_empty() {
            return Ok(first.sync()?);
        }
        let (mine, others) = std::thread::scope(|s| {
            let handles: Vec<_> = dirty.into_iter().map(|d| s.spawn(move || d.sync())).collect();
            let mine = first.sync();
            (mine, handles.into_iter().map(|h| h.join()).collect::<Vec<_>>())
        });
        mine?;
        for r in others {
            match r {
                Ok(r) => r?,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        Ok(())
    }

    /// Writes bitfield pages left unwritten by [`put_deferred`](Self::put_deferred).
    ///
    /// Also writes what appends under [`SyncPolicy::None`] left for later: the
    /// changed bitfield bytes and the head record.
    pub fn flush_deferred(&mut self) -> Result<(), LogError> {
        if !self.bitfield_pending && self.pending.bytes == 0 && self.head_pending.is_none() {
            return Ok(());
        }
        self.bitfield_pending = false;
        self.appends_unflushed = 0;
        let pending = std::mem::take(&mut self.pending);
        let head = self.head_pending.take();
        self.guarded(|f| {
            f.write_pending(pending)?;
            if f.sync == SyncPolicy::PerBatch {
                f.files.data.sync()?;
                f.files.tree.sync()?;
                f.files.signatures.sync()?;
            }
            f.flush_bitfield()?;
            match head {
                // Only if nothing moved the feed since (a later state wrote
                // its own head record).
                Some((signature, length)) if length == f.length => f.write_head(signature),
                _ => Ok(()),
            }
        })
    }

    /// Writes deferred data and nodes, coalescing adjacent ones into single writes.
    fn write_pending(&mut self, pending: Pending) -> Result<(), LogError> {
        let (data, nodes, signatures) = pending.into_parts();
        for (start, buf) in data {
            self.files.data.write(start, &buf)?;
        }
        let mut run: Option<(u64, Vec<u8>)> = None;
        for node in nodes {
            let index = node.index;
            match &mut run {
                Some((first, buf)) if *first + (buf.len() / 40) as u64 == index => {
                    buf.extend_from_slice(&node.encode())
                }
                _ => {
                    if let Some((first, buf)) = run.take() {
                        self.files.tree.write(HEADER_LEN + 40 * first, &buf)?;
                    }
                    run = Some((index, node.encode().to_vec()));
                }
            }
        }
        if let Some((first, buf)) = run.take() {
            self.files.tree.write(HEADER_LEN + 40 * first, &buf)?;
        }
        for (slot, sig) in signatures {
            self.files.signatures.write(HEADER_LEN + 64 * slot, &sig.0)?;
        }
        Ok(())
    }
}
