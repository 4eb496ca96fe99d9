//! [`Offsets`]: where blocks start in the data file, a bounded cache over
//! what the tree file stores.
//!
//! A block's byte offset is the sum of the sizes of the full roots left of it
//! (hypercore's `fullRoots(2i)`), which the tree file holds; reading it that
//! way costs a node lookup per root. For the contiguous prefix of present
//! blocks we keep offsets instead, in aligned chunks of [`CHUNK`] blocks: a
//! chunk is filled from one read of its leaves' sizes (checked against the
//! parents above them), appends and in-order downloads extend the chunk at
//! the end, and at most [`MAX_CHUNKS`] chunks are kept, the least recently
//! used dropped first. Memory is bounded (about 512 KiB a feed) whatever the
//! history's length; it was 8 bytes per block, 800 MB for 100 million.

/// Blocks per chunk.
pub(crate) const CHUNK: u64 = 1024;
/// The most chunks kept.
pub(crate) const MAX_CHUNKS: usize = 64;

struct Chunk {
    /// The chunk's number: it holds the offsets of blocks `k·CHUNK ..=
    /// k·CHUNK + len − 1` (the last one, at most `(k + 1)·CHUNK`, being where
    /// the block before it ends).
    k: u64,
    offsets: Vec<u64>,
    used: u64,
}

impl Chunk {
    fn first(&self) -> u64 {
        self.k * CHUNK
    }

    /// The index of the last offset held.
    fn last(&self) -> u64 {
        self.first() + self.offsets.len() as u64 - 1
    }

    fn is_full(&self) -> bool {
        self.offsets.len() as u64 == CHUNK + 1
    }
}

/// The offset cache of one feed; see the [module docs](self).
#[derive(Default)]
pub(crate) struct Offsets {
    chunks: Vec<Chunk>,
    clock: u64,
    /// Where the chunk used last is in `chunks` (looked at first: appends and
    /// sequential reads use one chunk for a thousand blocks).
    hint: usize,
}

impl Offsets {
    /// An empty cache that knows block 0 starts at 0.
    pub(crate) fn new() -> Self {
        let mut o = Offsets::default();
        o.clear();
        o
    }

    /// Forgets everything but block 0's offset.
    pub(crate) fn clear(&mut self) {
        self.chunks = vec![Chunk { k: 0, offsets: vec![0], used: 0 }];
    }

    fn find(&self, k: u64) -> Option<usize> {
        match self.chunks.get(self.hint) {
            Some(c) if c.k == k => Some(self.hint),
            _ => self.chunks.iter().position(|c| c.k == k),
        }
    }

    fn touch(&mut self, at: usize) {
        self.clock += 1;
        self.chunks[at].used = self.clock;
        self.hint = at;
    }

    /// Where block `index` starts, if cached.
    pub(crate) fn get(&self, index: u64) -> Option<u64> {
        let k = index / CHUNK;
        let held = |k: u64| {
            let c = &self.chunks[self.find(k)?];
            c.offsets.get(usize::try_from(index - c.first()).ok()?).copied()
        };
        held(k).or_else(|| if index.is_multiple_of(CHUNK) && k > 0 { held(k - 1) } else { None })
    }

    /// Where block `index` starts and where it ends, if both are cached.
    pub(crate) fn range(&mut self, index: u64) -> Option<(u64, u64)> {
        let at = self.find(index / CHUNK)?;
        let c = &self.chunks[at];
        let i = usize::try_from(index - c.first()).ok()?;
        let (&start, &end) = (c.offsets.get(i)?, c.offsets.get(i + 1)?);
        self.touch(at);
        Some((start, end))
    }

    /// Whether block `index`'s range is cached.
    pub(crate) fn covers(&self, index: u64) -> bool {
        self.find(index / CHUNK).is_some_and(|at| {
            let c = &self.chunks[at];
            index - c.first() + 1 < c.offsets.len() as u64
        })
    }

    /// Caches chunk `k` (`offsets` from block `k·CHUNK` on, at most
    /// `CHUNK + 1` of them), replacing what was cached of it.
    pub(crate) fn insert(&mut self, k: u64, mut offsets: Vec<u64>) {
        offsets.truncate(CHUNK as usize + 1);
        if offsets.is_empty() {
            return;
        }
        match self.find(k) {
            Some(at) => self.chunks[at].offsets = offsets,
            None => {
                self.make_room();
                self.chunks.push(Chunk { k, offsets, used: 0 });
            }
        }
        if let Some(at) = self.find(k) {
            self.touch(at);
        }
    }

    fn make_room(&mut self) {
        while self.chunks.len() >= MAX_CHUNKS {
            let Some(oldest) = self.chunks.iter().enumerate().min_by_key(|(_, c)| c.used).map(|(i, _)| i)
            else {
                return;
            };
            self.chunks.swap_remove(oldest);
        }
    }

    /// The offset of block `index` when it is the last one a chunk holds:
    /// the end of a cached run that [`push`](Self::push) can extend.
    pub(crate) fn end_at(&self, index: u64) -> Option<u64> {
        let k = index / CHUNK;
        [Some(k), k.checked_sub(1)].into_iter().flatten().find_map(|k| {
            let c = &self.chunks[self.find(k)?];
            (c.last() == index).then(|| c.offsets.last().copied()).flatten()
        })
    }

    /// Caches where block `index` starts, right after a cached run that ends
    /// at block `index − 1` (see [`end_at`](Self::end_at)); does nothing
    /// otherwise.
    pub(crate) fn push(&mut self, index: u64, offset: u64) {
        let Some(prev) = index.checked_sub(1) else { return };
        let k = prev / CHUNK;
        let found = [Some(k), k.checked_sub(1)]
            .into_iter()
            .flatten()
            .find_map(|k| self.find(k).filter(|&at| self.chunks[at].last() == prev));
        let Some(at) = found else { return };
        if self.chunks[at].is_full() {
            let carried = self.chunks[at].offsets[CHUNK as usize];
            let next = self.chunks[at].k + 1;
            // A longer chunk `next` filled from the tree holds this already.
            if self.find(next).is_none() {
                self.insert(next, vec![carried, offset]);
            }
        } else {
            self.chunks[at].offsets.push(offset);
            self.touch(at);
        }
    }

    /// Forgets the offsets of blocks after `index` (a node under them changed).
    pub(crate) fn truncate_after(&mut self, index: u64) {
        self.chunks.retain(|c| c.first() <= index);
        for c in &mut self.chunks {
            if c.last() > index {
                c.offsets.truncate((index - c.first() + 1) as usize);
            }
        }
        if self.chunks.is_empty() {
            self.clear();
        }
    }

    /// The offsets kept (for tests of the bound).
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.chunks.iter().map(|c| c.offsets.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_extend_the_tail_and_the_cache_stays_bounded() {
        let mut o = Offsets::new();
        assert_eq!(o.get(0), Some(0));
        assert_eq!(o.end_at(0), Some(0));
        let n = CHUNK * (MAX_CHUNKS as u64 + 10);
        for i in 1..=n {
            o.push(i, 3 * i);
        }
        assert!(o.held() <= MAX_CHUNKS * (CHUNK as usize + 1));
        // The tail is held; the oldest chunks were dropped.
        assert_eq!(o.end_at(n), Some(3 * n));
        assert_eq!(o.range(n - 1), Some((3 * (n - 1), 3 * n)));
        assert_eq!(o.range(5), None);
        assert!(!o.covers(5) && o.covers(n - 1) && !o.covers(n));
        // A chunk filled from the tree comes back; the boundary offset is
        // found in either chunk.
        o.insert(0, (0..=CHUNK).map(|i| 3 * i).collect());
        assert_eq!(o.range(CHUNK - 1), Some((3 * (CHUNK - 1), 3 * CHUNK)));
        assert_eq!(o.get(CHUNK), Some(3 * CHUNK));
        assert!(o.held() <= MAX_CHUNKS * (CHUNK as usize + 1));
        // A push not at the end of a cached run does nothing.
        o.push(7, 1);
        assert_eq!(o.range(6), Some((18, 21)));
    }

    #[test]
    fn truncation_forgets_what_follows() {
        let mut o = Offsets::new();
        for i in 1..=3 * CHUNK {
            o.push(i, i);
        }
        o.truncate_after(CHUNK + 5);
        assert_eq!(o.get(CHUNK + 5), Some(CHUNK + 5));
        assert_eq!(o.get(CHUNK + 6), None);
        assert_eq!(o.end_at(CHUNK + 5), Some(CHUNK + 5));
        assert_eq!(o.range(3), Some((3, 4)));
        o.truncate_after(0);
        assert_eq!(o.end_at(0), Some(0));
        assert_eq!(o.range(0), None);
    }
}
