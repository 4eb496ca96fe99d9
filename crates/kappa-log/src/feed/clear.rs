//! `Feed::clear`: hypercore 8's `clear(start, end)`.

use std::ops::Range;

use super::Feed;
use crate::error::LogError;

/// What [`Feed::clear`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cleared {
    /// Blocks that were stored and are not any more.
    pub blocks: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Whether the data file gave the space back (a hole punched); `false`
    /// where the file system cannot (the bytes were zeroed instead) or
    /// nothing was cleared.
    pub released: bool,
}

impl Feed {
    /// Clears the blocks in `range` (hypercore 8's `clear(start, end)`):
    /// their bitfield bits go and their bytes in the data file are released
    /// (a hole punched where the file system supports it, zeros written
    /// where not). The tree and signatures stay, so the feed still verifies
    /// every block it keeps, and the range can be downloaded again from a
    /// peer. Blocks past the feed's length are ignored; clearing a range
    /// again releases its bytes again (a clear cut short by a crash is
    /// finished so).
    ///
    /// ```
    /// use kappa_log::Feed;
    /// let mut feed = Feed::in_memory()?;
    /// feed.append_batch(["a", "b", "c", "d"])?;
    /// let cleared = feed.clear(1..3)?;
    /// assert_eq!((cleared.blocks, cleared.bytes), (2, 2));
    /// assert_eq!(feed.get(1)?, None);
    /// assert_eq!(feed.get(3)?, Some(b"d".to_vec()));
    /// assert_eq!(feed.downloaded(0..4), 2);
    /// feed.verify()?;
    /// # Ok::<(), kappa_log::LogError>(())
    /// ```
    pub fn clear(&mut self, range: Range<u64>) -> Result<Cleared, LogError> {
        let (start, end) = (range.start, range.end.min(self.length));
        if start >= end {
            return Ok(Cleared::default());
        }
        // Held-back writes land first: the offsets come from the tree file.
        self.flush_deferred()?;
        let mut cleared = Cleared::default();
        // The bytes of each stored block, before its bit goes.
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for i in start..end {
            if !self.bitfield.has_block(i) {
                continue;
            }
            let (offset, size) = self.block_range(i)?;
            cleared.blocks += 1;
            cleared.bytes += size;
            match runs.last_mut() {
                Some((o, l)) if *o + *l == offset => *l += size,
                _ => runs.push((offset, size)),
            }
        }
        // The whole range's bytes, if the tree knows where they are: so a
        // clear that a crash cut short (bits gone, bytes kept) is finished.
        let span = match (self.data_offset(start, &[]), self.data_offset(end, &[])) {
            (Ok(a), Ok(b)) if b > a => Some((a, b - a)),
            _ => None,
        };
        self.guarded(|f| {
            for i in start..end {
                if f.bitfield.has_block(i) {
                    f.blocks.remove(i);
                    f.bitfield.set_block(i, false);
                }
            }
            f.flush_bitfield()?;
            // The bits reach the disk before the bytes go: a crash in between
            // leaves blocks the feed no longer claims, never claimed blocks
            // without their bytes.
            f.files.bitfield.sync()?;
            let mut released = false;
            match span {
                Some((o, l)) => released |= f.files.data.release(o, l)?,
                None => {
                    for (o, l) in &runs {
                        released |= f.files.data.release(*o, *l)?;
                    }
                }
            }
            f.files.data.sync()?;
            cleared.released = released;
            Ok(())
        })?;
        self.read_cache = None;
        self.contiguous = self.contiguous.min(start);
        Ok(cleared)
    }
}
