//! [`BlockCache`]: the blocks a feed read recently, verified, in memory; and
//! [`NodeCache`], the tree nodes it read.
//!
//! Direct-mapped by block index (a feed's blocks are numbered densely, so a
//! run of up to `slots` blocks never collides), growing with the blocks it
//! holds, bounded in bytes. It holds only blocks that matched their leaf hash
//! when read; a block that becomes a hole is dropped from it, and reads check
//! the bitfield before the cache, so it never serves a block the feed no
//! longer has.

/// Blocks larger than this are not cached (a cache of small entries is what
/// saves system calls; large blocks cost their copy anyway).
const MAX_BLOCK: usize = 64 * 1024;
/// The most slots (a power of two).
const MAX_SLOTS: usize = 1 << 18;

pub(crate) struct BlockCache {
    slots: Vec<Option<(u64, Box<[u8]>)>>,
    bytes: usize,
    max_bytes: usize,
    /// Where eviction goes on when the cache is over its bytes.
    hand: usize,
}

impl BlockCache {
    /// A cache of at most `max_bytes` of blocks (0: no cache).
    pub(crate) fn new(max_bytes: usize) -> Self {
        BlockCache { slots: Vec::new(), bytes: 0, max_bytes, hand: 0 }
    }

    fn slot(&self, index: u64) -> usize {
        (index as usize) & (self.slots.len().wrapping_sub(1))
    }

    /// Block `index`, if cached.
    pub(crate) fn get(&self, index: u64) -> Option<&[u8]> {
        if self.slots.is_empty() {
            return None;
        }
        match &self.slots[self.slot(index)] {
            Some((i, v)) if *i == index => Some(v),
            _ => None,
        }
    }

    /// Remembers verified block `index`.
    pub(crate) fn insert(&mut self, index: u64, block: &[u8]) {
        if block.len() > MAX_BLOCK || self.max_bytes == 0 || block.len() > self.max_bytes {
            return;
        }
        let want = usize::try_from(index).unwrap_or(usize::MAX).saturating_add(1).min(MAX_SLOTS);
        if self.slots.len() < want {
            self.grow(want.next_power_of_two().min(MAX_SLOTS));
        }
        let s = self.slot(index);
        if let Some((_, old)) = self.slots[s].take() {
            self.bytes -= old.len();
        }
        while self.bytes + block.len() > self.max_bytes {
            let h = self.hand & (self.slots.len() - 1);
            self.hand = self.hand.wrapping_add(1);
            if let Some((_, old)) = self.slots[h].take() {
                self.bytes -= old.len();
            }
        }
        self.bytes += block.len();
        self.slots[s] = Some((index, block.into()));
    }

    /// Forgets block `index`.
    pub(crate) fn remove(&mut self, index: u64) {
        if self.slots.is_empty() {
            return;
        }
        let s = self.slot(index);
        if matches!(&self.slots[s], Some((i, _)) if *i == index) {
            if let Some((_, old)) = self.slots[s].take() {
                self.bytes -= old.len();
            }
        }
    }

    /// Forgets everything.
    pub(crate) fn clear(&mut self) {
        self.slots = Vec::new();
        self.bytes = 0;
    }

    fn grow(&mut self, slots: usize) {
        let old = std::mem::replace(&mut self.slots, vec![None; slots]);
        for (i, v) in old.into_iter().flatten() {
            let s = self.slot(i);
            if let Some((_, dropped)) = self.slots[s].replace((i, v)) {
                self.bytes -= dropped.len();
            }
        }
    }
}

/// The most slots of a [`NodeCache`] (a power of two).
const NODE_SLOTS: usize = 1 << 13;
/// The fewest slots a node cache allocates.
const MIN_NODE_SLOTS: usize = 64;

/// Tree nodes read recently (nodes never change once written), direct-mapped
/// by node index. It grows with the highest index it was given, up to
/// [`NODE_SLOTS`]: a feed of ten entries costs 64 slots, not 8,192 (about 450
/// KiB), which matters for a database of thousands of small feeds.
pub(crate) struct NodeCache {
    slots: Vec<Option<crate::node::Node>>,
}

impl NodeCache {
    /// An empty cache (allocated at the first insert).
    pub(crate) fn new() -> Self {
        NodeCache { slots: Vec::new() }
    }

    fn slot(&self, index: u64) -> usize {
        (index as usize) & (self.slots.len().wrapping_sub(1))
    }

    /// Node `index`, if cached.
    pub(crate) fn get(&self, index: u64) -> Option<crate::node::Node> {
        match self.slots.get(self.slot(index)) {
            Some(Some(n)) if n.index == index => Some(*n),
            _ => None,
        }
    }

    /// Remembers node `n`.
    pub(crate) fn insert(&mut self, n: crate::node::Node) {
        let want = usize::try_from(n.index)
            .unwrap_or(usize::MAX)
            .saturating_add(1)
            .clamp(MIN_NODE_SLOTS, NODE_SLOTS)
            .next_power_of_two();
        if self.slots.len() < want {
            let old = std::mem::replace(&mut self.slots, vec![None; want]);
            for m in old.into_iter().flatten() {
                let s = self.slot(m.index);
                self.slots[s] = Some(m);
            }
        }
        let s = self.slot(n.index);
        self.slots[s] = Some(n);
    }

    /// Forgets node `index`.
    pub(crate) fn remove(&mut self, index: u64) {
        let s = self.slot(index);
        if let Some(slot) = self.slots.get_mut(s) {
            if slot.is_some_and(|n| n.index == index) {
                *slot = None;
            }
        }
    }

    /// The slots allocated.
    #[cfg(test)]
    pub(crate) fn slots(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_what_fits_and_forgets_on_request() {
        let mut c = BlockCache::new(100);
        for i in 0..10u64 {
            c.insert(i, &[i as u8; 10]);
        }
        assert!((0..10).all(|i| c.get(i) == Some(&[i as u8; 10][..])));
        // Over budget: older slots make room; the bytes stay bounded.
        c.insert(10, &[9; 30]);
        assert!(c.bytes <= 100);
        assert_eq!(c.get(10), Some(&[9; 30][..]));
        c.remove(10);
        assert_eq!(c.get(10), None);
        c.insert(3, &[0; 101]);
        assert!(c.bytes <= 100);
        c.clear();
        assert_eq!(c.get(1), None);
        let mut none = BlockCache::new(0);
        none.insert(0, b"x");
        assert_eq!(none.get(0), None);
    }

    #[test]
    fn node_cache_grows_with_the_feed() {
        use crate::node::Node;
        let node = |index: u64| Node { index, hash: [index as u8; 32], size: index };
        let mut c = NodeCache::new();
        assert_eq!(c.get(0), None);
        c.remove(3);
        c.insert(node(5));
        assert_eq!(c.slots(), MIN_NODE_SLOTS);
        c.insert(node(200));
        assert_eq!(c.slots(), 256);
        assert_eq!(c.get(5), Some(node(5)), "kept when growing");
        assert_eq!(c.get(200), Some(node(200)));
        c.insert(node(u64::MAX / 2));
        assert_eq!(c.slots(), NODE_SLOTS);
        assert_eq!(c.get(200), Some(node(200)));
        c.remove(200);
        assert_eq!(c.get(200), None);
        assert_eq!(c.get(5), Some(node(5)));
    }
}
