//! The `bitfield` file (spec §2.6): pages of 3584 bytes, each holding a slice of
//! three bit arrays: which blocks are present (data), which tree nodes are present
//! (tree), and an index over the data view that lets a searcher skip full regions.
//!
//! The in-memory form keeps every allocated page and remembers which pages changed,
//! so a caller can write exactly those pages back, whole, as hypercore does. Pages
//! whose bits are all set (every block of a complete stretch of a feed, its tree
//! nodes and index entries) share one copy, taken apart again on a write: memory
//! grows with the pages of holes and of the feed's last stretch, not with its
//! length (a complete feed of 100 million entries held 44 MB of pages). The
//! index view is maintained with hypercore's incremental algorithm, so the files a
//! writer produces are byte-identical to JS.

use std::sync::Arc;

use crate::flat;

/// Bytes per page.
pub const PAGE_SIZE: usize = 3584;
const DATA_BYTES: usize = 1024;
const TREE_BYTES: usize = 2048;
const INDEX_BYTES: usize = 512;
const TREE_OFFSET: usize = DATA_BYTES;
const INDEX_OFFSET: usize = DATA_BYTES + TREE_BYTES;

/// The most pages we accept (2^40 blocks): a bound so that a corrupt or hostile
/// index can never make us allocate without limit.
const MAX_PAGES: u64 = 1 << 27;

#[derive(Clone, Copy)]
enum View {
    Data,
    Tree,
    Index,
}

impl View {
    const fn offset_and_size(self) -> (usize, usize) {
        match self {
            View::Data => (0, DATA_BYTES),
            View::Tree => (TREE_OFFSET, TREE_BYTES),
            View::Index => (INDEX_OFFSET, INDEX_BYTES),
        }
    }
}

/// Parent summary of a child index byte: each nibble becomes one 2-bit entry
/// (`11` all ones, `00` all zeros, `01` mixed).
const fn parent_bits(byte: u8) -> u8 {
    const fn class(n: u8) -> u8 {
        match n {
            15 => 3,
            0 => 0,
            _ => 1,
        }
    }
    (class(byte >> 4) << 2) | class(byte & 15)
}

const fn index_class(data_byte: u8) -> u8 {
    match data_byte {
        255 => 0b11,
        0 => 0b00,
        _ => 0b01,
    }
}

type Page = [u8; PAGE_SIZE];

/// The three-view bitfield of one feed.
#[derive(Clone, Default)]
pub struct Bitfield {
    /// Shared when the same (all ones) page appears many times: see
    /// [`share_if_full`](Self::share_if_full).
    pages: Vec<Option<Arc<Page>>>,
    /// The one copy of the page of all ones, once one was seen.
    ones: Option<Arc<Page>>,
    dirty: Vec<usize>,
    is_dirty: Vec<bool>,
    /// Per page: the first and one past the last byte changed since it was
    /// last taken (meaningful while the page is dirty).
    changed: Vec<(u16, u16)>,
    /// Per page: whether the file holds the whole page, equal to memory outside
    /// its changed bytes (then only those need writing).
    on_file: Vec<bool>,
}

impl std::fmt::Debug for Bitfield {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bitfield").field("pages", &self.pages.len()).field("dirty", &self.dirty).finish()
    }
}

impl Bitfield {
    /// An empty bitfield.
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads the pages of a bitfield file body (everything after the 32-byte header).
    /// A trailing partial page is zero-padded; all-zero pages stay unallocated.
    pub fn from_bytes(body: &[u8]) -> Self {
        let mut bf = Bitfield::new();
        bf.load(0, body);
        bf
    }

    /// Loads a run of the file body's pages, the first being page `first` (so a
    /// large bitfield can be read a piece at a time: `bytes` holds whole pages,
    /// except at the end of the body, where a partial page is zero-padded and
    /// not taken as held whole by the file). All-zero pages stay unallocated.
    pub fn load(&mut self, first: usize, bytes: &[u8]) {
        for (k, chunk) in bytes.chunks(PAGE_SIZE).enumerate() {
            let p = first + k;
            if chunk.len() == PAGE_SIZE {
                self.ensure_len(p + 1);
                self.on_file[p] = true;
            }
            if chunk.iter().all(|&b| b == 0) {
                continue;
            }
            let mut page = [0u8; PAGE_SIZE];
            page[..chunk.len()].copy_from_slice(chunk);
            self.ensure_len(p + 1);
            self.pages[p] = Some(Arc::new(page));
            self.share_if_full(p);
        }
    }

    /// Makes page `p` the shared page of all ones if it is one (the pages of a
    /// complete stretch of the feed).
    fn share_if_full(&mut self, p: usize) {
        let Some(Some(page)) = self.pages.get(p) else { return };
        if page.iter().any(|&b| b != 0xFF) {
            return;
        }
        if let Some(ones) = &self.ones {
            if !Arc::ptr_eq(ones, page) {
                self.pages[p] = Some(ones.clone());
            }
        } else {
            self.ones = Some(page.clone());
        }
    }

    /// How many distinct pages are held in memory (shared pages count once).
    pub fn pages_in_memory(&self) -> usize {
        let full = self
            .pages
            .iter()
            .flatten()
            .filter(|pg| self.ones.as_ref().is_some_and(|o| Arc::ptr_eq(o, pg)))
            .count();
        self.pages.iter().flatten().count() - full + usize::from(full > 0)
    }

    /// Number of page slots (highest allocated page + 1).
    pub fn page_count(&self) -> usize {
        self.pages.len()
    }

    /// The pages changed since the last call, with their bytes, in the order they
    /// first changed. Clears the dirty set.
    pub fn take_dirty(&mut self) -> Vec<(usize, [u8; PAGE_SIZE])> {
        let mut out = Vec::with_capacity(self.dirty.len());
        for p in std::mem::take(&mut self.dirty) {
            self.is_dirty[p] = false;
            if let Some(Some(page)) = self.pages.get(p) {
                out.push((p, **page));
            }
            self.share_if_full(p);
        }
        out
    }

    /// The changes since the last call, per changed page: its number, the byte
    /// offset in the page where the bytes to write start, and those bytes. Only
    /// the changed bytes of a page the file holds whole are given (the file's
    /// bytes end up exactly as if the whole page were written); a page the file
    /// does not hold yet, or whose file bytes may differ from memory, is given
    /// whole. Clears the dirty set.
    pub fn take_dirty_ranges(&mut self) -> Vec<(usize, usize, Vec<u8>)> {
        let mut out = Vec::with_capacity(self.dirty.len());
        for p in std::mem::take(&mut self.dirty) {
            self.is_dirty[p] = false;
            let (start, end) = if self.on_file[p] {
                (self.changed[p].0 as usize, self.changed[p].1 as usize)
            } else {
                (0, PAGE_SIZE)
            };
            if let Some(Some(page)) = self.pages.get(p) {
                out.push((p, start, page[start..end].to_vec()));
                self.on_file[p] = true;
            }
            self.share_if_full(p);
        }
        out
    }

    /// Forgets the changes without writing them: the file keeps its own bytes
    /// for those pages, so their next write is whole.
    pub fn discard_dirty(&mut self) {
        for p in self.dirty.drain(..) {
            self.is_dirty[p] = false;
            self.on_file[p] = false;
        }
    }

    /// Records that the file now holds exactly the allocated pages of memory
    /// and no more (after the whole bitfield was written anew, each allocated
    /// page at its place).
    pub fn set_all_written(&mut self) {
        let end = self.pages.iter().rposition(Option::is_some).map_or(0, |p| p + 1);
        for (p, on) in self.on_file.iter_mut().enumerate() {
            *on = p < end;
        }
    }

    /// Every allocated page with its bytes (to write the whole bitfield anew).
    pub fn all_pages(&self) -> Vec<(usize, [u8; PAGE_SIZE])> {
        self.pages.iter().enumerate().filter_map(|(p, page)| page.as_ref().map(|pg| (p, **pg))).collect()
    }

    /// Whether any page changed since the last [`take_dirty`](Self::take_dirty).
    pub fn has_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    fn ensure_len(&mut self, n: usize) {
        if self.pages.len() < n {
            self.pages.resize_with(n, || None);
            self.is_dirty.resize(n, false);
            self.changed.resize(n, (0, 0));
            self.on_file.resize(n, false);
        }
    }

    fn locate(view: View, byte: u64) -> Option<(usize, usize)> {
        let (off, size) = view.offset_and_size();
        let page = byte / size as u64;
        if page >= MAX_PAGES {
            return None;
        }
        Some((page as usize, off + (byte % size as u64) as usize))
    }

    fn get_byte(&self, view: View, byte: u64) -> u8 {
        match Self::locate(view, byte) {
            Some((p, o)) => match self.pages.get(p) {
                Some(Some(page)) => page[o],
                _ => 0,
            },
            None => 0,
        }
    }

    /// Sets a byte, allocating its page. Returns whether the byte changed.
    fn set_byte(&mut self, view: View, byte: u64, value: u8) -> bool {
        let Some((p, o)) = Self::locate(view, byte) else { return false };
        self.ensure_len(p + 1);
        let page = self.pages[p].get_or_insert_with(|| Arc::new([0u8; PAGE_SIZE]));
        if page[o] == value {
            return false;
        }
        // A shared page is copied before it changes.
        Arc::make_mut(page)[o] = value;
        let o = o as u16;
        if !self.is_dirty[p] {
            self.is_dirty[p] = true;
            self.dirty.push(p);
            self.changed[p] = (o, o + 1);
        } else {
            let c = &mut self.changed[p];
            *c = (c.0.min(o), c.1.max(o + 1));
        }
        true
    }

    fn get_bit(&self, view: View, bit: u64) -> bool {
        self.get_byte(view, bit >> 3) & (0x80 >> (bit & 7)) != 0
    }

    fn set_bit(&mut self, view: View, bit: u64, value: bool) -> bool {
        let byte = self.get_byte(view, bit >> 3);
        let mask = 0x80u8 >> (bit & 7);
        let new = if value { byte | mask } else { byte & !mask };
        self.set_byte(view, bit >> 3, new)
    }

    /// Whether block `i` is present.
    pub fn has_block(&self, i: u64) -> bool {
        self.get_bit(View::Data, i)
    }

    /// The data-view byte `b` (blocks `8b .. 8b+8`, MSB first).
    pub fn data_byte(&self, b: u64) -> u8 {
        self.get_byte(View::Data, b)
    }

    /// Marks block `i` present or missing, keeping the index view up to date.
    /// Returns whether anything changed.
    pub fn set_block(&mut self, i: u64, present: bool) -> bool {
        let b = i >> 3;
        let old = self.get_byte(View::Data, b);
        let mask = 0x80u8 >> (i & 7);
        let new = if present { old | mask } else { old & !mask };
        if !self.set_byte(View::Data, b, new) {
            return false;
        }
        self.update_index(b, new);
        true
    }

    /// The incremental index update of hypercore 8 for data byte `b` now `value`.
    fn update_index(&mut self, b: u64, value: u8) {
        let o = (b & 3) as u32;
        let mut pos = 2 * (b >> 2);
        let shift = 6 - 2 * o;
        let mut byte = (self.get_byte(View::Index, pos) & !(0b11 << shift)) | (index_class(value) << shift);
        let max = self.pages.len() as u64 * INDEX_BYTES as u64;
        while pos < max && self.set_byte(View::Index, pos, byte) {
            let sib = self.get_byte(View::Index, flat::sibling(pos));
            byte = if flat::is_left(pos) {
                (parent_bits(byte) << 4) | parent_bits(sib)
            } else {
                parent_bits(byte) | (parent_bits(sib) << 4)
            };
            pos = flat::parent(pos);
        }
    }

    /// Recomputes the whole index view from the data view (used after repairing a
    /// damaged bitfield, where incremental updates cannot be trusted). Only the
    /// bytes that differ are written, so shared pages stay shared.
    pub fn rebuild_index(&mut self) {
        let index = self.computed_index();
        for (pos, &byte) in index.iter().enumerate() {
            if self.get_byte(View::Index, pos as u64) != byte {
                self.set_byte(View::Index, pos as u64, byte);
            }
        }
    }

    /// The index view the data view implies, as hypercore's incremental
    /// updates build it from nothing, in a buffer of its own (512 bytes a
    /// page: checking a large bitfield copies none of its pages).
    fn computed_index(&self) -> Vec<u8> {
        let pages = self.pages.len();
        let mut index = vec![0u8; pages * INDEX_BYTES];
        let at = |index: &[u8], pos: u64| {
            usize::try_from(pos).ok().and_then(|p| index.get(p).copied()).unwrap_or(0)
        };
        for (p, page) in self.pages.iter().enumerate() {
            let Some(page) = page else { continue };
            for (k, &value) in page[..DATA_BYTES].iter().enumerate() {
                if value == 0 {
                    continue;
                }
                let b = (p * DATA_BYTES + k) as u64;
                let o = (b & 3) as u32;
                let mut pos = 2 * (b >> 2);
                let shift = 6 - 2 * o;
                let mut byte = (at(&index, pos) & !(0b11 << shift)) | (index_class(value) << shift);
                while (pos as usize) < index.len() && index[pos as usize] != byte {
                    index[pos as usize] = byte;
                    let sib = at(&index, flat::sibling(pos));
                    byte = if flat::is_left(pos) {
                        (parent_bits(byte) << 4) | parent_bits(sib)
                    } else {
                        parent_bits(byte) | (parent_bits(sib) << 4)
                    };
                    pos = flat::parent(pos);
                }
            }
        }
        index
    }

    /// Whether the index view is exactly what the data view implies (a damaged
    /// index byte would make searches skip or invent blocks).
    pub fn index_matches_data(&self) -> bool {
        let index = self.computed_index();
        index.iter().enumerate().all(|(pos, &byte)| self.get_byte(View::Index, pos as u64) == byte)
    }

    /// For every data byte covered by allocated pages: whether the index view's leaf
    /// entry claims it full (`11`). For consistency checks.
    pub fn index_leaf_claims(&self) -> impl Iterator<Item = (u64, bool)> + '_ {
        (0..self.data_bits() / 8).map(move |b| {
            let entry = (self.get_byte(View::Index, 2 * (b >> 2)) >> (6 - 2 * (b & 3))) & 0b11;
            (b, entry == 0b11)
        })
    }

    /// Whether tree node `x` is present.
    pub fn has_node(&self, x: u64) -> bool {
        self.get_bit(View::Tree, x)
    }

    /// Marks tree node `x` present, then its ancestors while their other child is
    /// present too (hypercore's "set with propagation"). Returns whether `x` was new.
    pub fn set_node(&mut self, x: u64) -> bool {
        if !self.set_bit(View::Tree, x, true) {
            return false;
        }
        let mut i = x;
        while i < flat::MAX_NODE && self.has_node(flat::sibling(i)) {
            i = flat::parent(i);
            if !self.set_bit(View::Tree, i, true) {
                break;
            }
        }
        true
    }

    /// Clears tree node `x` (no propagation).
    pub fn clear_node(&mut self, x: u64) -> bool {
        self.set_bit(View::Tree, x, false)
    }

    /// Capacity of the tree view in bits.
    fn tree_bits(&self) -> u64 {
        self.pages.len() as u64 * TREE_BYTES as u64 * 8
    }

    /// Capacity of the data view in bits.
    pub fn data_bits(&self) -> u64 {
        self.pages.len() as u64 * DATA_BYTES as u64 * 8
    }

    /// The length the tree view proves: hypercore's `TreeIndex.blocks()`. Find the
    /// highest present node on the left spine, then walk down the right edge of
    /// what is present.
    pub fn verified_length(&self) -> u64 {
        let max = self.tree_bits();
        let mut top = 0u64;
        let mut next = 0u64;
        while flat::right_span(next) < max && next < flat::MAX_NODE {
            next = flat::parent(next);
            if self.has_node(next) {
                top = next;
            }
        }
        if !self.has_node(top) {
            return 0;
        }
        // Everything under `top` is covered; extend to the right with the largest
        // present subtree starting where the covered range ends, at ever smaller
        // depths.
        let mut end = flat::right_span(top) + 2;
        let mut d = flat::depth(top);
        while d > 0 {
            d -= 1;
            // The node of depth `d` whose leftmost leaf is `end`.
            let candidate = flat::index(d, end >> (d + 1));
            if self.has_node(candidate) {
                end = flat::right_span(candidate) + 2;
            }
        }
        end / 2
    }

    /// Number of present blocks in `start .. end`.
    pub fn count_blocks(&self, start: u64, end: u64) -> u64 {
        let mut n = 0;
        let mut i = start;
        while i < end {
            if i & 7 == 0 && i + 8 <= end {
                n += self.data_byte(i >> 3).count_ones() as u64;
                i += 8;
            } else {
                n += self.has_block(i) as u64;
                i += 1;
            }
        }
        n
    }

    /// The first present block in `from .. end`, skipping empty bytes and pages.
    pub fn next_block(&self, from: u64, end: u64) -> Option<u64> {
        let end = end.min(self.data_bits());
        let mut i = from;
        while i < end {
            let page = (i / (DATA_BYTES as u64 * 8)) as usize;
            if !matches!(self.pages.get(page), Some(Some(_))) {
                i = (page as u64 + 1) * DATA_BYTES as u64 * 8;
                continue;
            }
            let byte = self.data_byte(i >> 3);
            if byte == 0 {
                i = (i | 7) + 1;
                continue;
            }
            if byte & (0x80 >> (i & 7)) != 0 {
                return Some(i);
            }
            i += 1;
        }
        None
    }

    /// The last present block in `start .. before`.
    pub fn prev_block(&self, start: u64, before: u64) -> Option<u64> {
        let mut i = before.min(self.data_bits());
        while i > start {
            let j = i - 1;
            let page = (j / (DATA_BYTES as u64 * 8)) as usize;
            if !matches!(self.pages.get(page), Some(Some(_))) {
                i = page as u64 * DATA_BYTES as u64 * 8;
                continue;
            }
            let byte = self.data_byte(j >> 3);
            if byte == 0 {
                i = j & !7;
                continue;
            }
            if byte & (0x80 >> (j & 7)) != 0 {
                return Some(j);
            }
            i = j;
        }
        None
    }

    /// The length of the run of present blocks starting at block 0.
    pub fn contiguous_length(&self) -> u64 {
        let mut b = 0u64;
        let bytes = self.data_bits() / 8;
        while b < bytes && self.data_byte(b) == 0xff {
            b += 1;
        }
        let byte = self.data_byte(b);
        b * 8 + byte.leading_ones() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The index rebuild as it was: every index byte zeroed in place, then
    /// hypercore's incremental update for every data byte.
    fn index_rebuilt_in_place(bf: &Bitfield) -> Vec<u8> {
        let mut r = bf.clone();
        let pages = r.pages.len() as u64;
        for pos in 0..pages * INDEX_BYTES as u64 {
            r.set_byte(View::Index, pos, 0);
        }
        for b in 0..pages * DATA_BYTES as u64 {
            let v = r.get_byte(View::Data, b);
            if v != 0 {
                r.update_index(b, v);
            }
        }
        (0..pages * INDEX_BYTES as u64).map(|pos| r.get_byte(View::Index, pos)).collect()
    }

    proptest! {
        /// Blocks present in runs (whole pages among them) and scattered: the
        /// index computed in its own buffer is the in-place rebuild's, and
        /// `rebuild_index` after damage gives it back.
        #[test]
        fn computed_index_is_the_incremental_one(
            runs in proptest::collection::vec((0u64..40_000, 0u64..20_000), 0..6),
            damage in proptest::collection::vec((0u64..4 * INDEX_BYTES as u64, any::<u8>()), 0..4),
        ) {
            let mut bf = Bitfield::new();
            for (start, len) in runs {
                for i in start..start + len {
                    bf.set_block(i, true);
                }
            }
            let _ = bf.take_dirty();
            let expected = index_rebuilt_in_place(&bf);
            prop_assert_eq!(bf.computed_index(), expected.clone());
            // Built out of order, the live index may differ (hypercore's
            // incremental rule stops at the pages allocated so far): the
            // rebuild is what a check compares with.
            bf.rebuild_index();
            let now: Vec<u8> = (0..expected.len() as u64).map(|pos| bf.get_byte(View::Index, pos)).collect();
            prop_assert_eq!(&now, &expected);
            prop_assert!(bf.index_matches_data());
            let mut damaged = false;
            for (pos, v) in damage {
                if pos < expected.len() as u64 && expected[pos as usize] != v {
                    bf.set_byte(View::Index, pos, v);
                    damaged = true;
                }
            }
            prop_assert_eq!(bf.index_matches_data(), !damaged);
            bf.rebuild_index();
            prop_assert!(bf.index_matches_data());
            let now: Vec<u8> = (0..expected.len() as u64).map(|pos| bf.get_byte(View::Index, pos)).collect();
            prop_assert_eq!(now, expected);
        }
    }

    #[test]
    fn full_pages_share_one_copy_until_one_changes() {
        let blocks = 10 * (DATA_BYTES as u64 * 8) + 100;
        let mut bf = Bitfield::new();
        for i in 0..blocks {
            bf.set_block(i, true);
            bf.set_node(2 * i);
        }
        // Written back page by page, as a feed's flushes do.
        let _ = bf.take_dirty_ranges();
        let before_reload = bf.all_pages();
        // Ten full pages and the partial last one; a page whose highest
        // tree nodes wait for the next page is not full.
        assert!(bf.pages_in_memory() <= 4, "{} pages in memory", bf.pages_in_memory());
        // Loaded from the file, a piece at a time, the same.
        let mut body = Vec::new();
        for (p, page) in &before_reload {
            body.resize(p * PAGE_SIZE, 0);
            body.extend_from_slice(page);
        }
        let mut loaded = Bitfield::new();
        for (k, piece) in body.chunks(3 * PAGE_SIZE).enumerate() {
            loaded.load(3 * k, piece);
        }
        assert_eq!(loaded.all_pages(), before_reload);
        assert!(loaded.pages_in_memory() <= 4, "{} pages in memory", loaded.pages_in_memory());
        assert!(loaded.index_matches_data());
        // A change to one shared page leaves the others as they were.
        let hole = 3 * DATA_BYTES as u64 * 8 + 5;
        assert!(loaded.set_block(hole, false));
        for i in 0..blocks {
            assert_eq!(loaded.has_block(i), i != hole, "block {i}");
        }
        assert!(loaded.index_matches_data());
        let dirty: Vec<usize> = loaded.take_dirty_ranges().into_iter().map(|(p, _, _)| p).collect();
        assert!(dirty.contains(&3), "{dirty:?}");
    }

    #[test]
    fn node_propagation() {
        let mut bf = Bitfield::new();
        bf.set_node(0);
        assert!(!bf.has_node(1));
        bf.set_node(2);
        assert!(bf.has_node(1));
        bf.set_node(4);
        bf.set_node(6);
        assert!(bf.has_node(5) && bf.has_node(3));
        assert_eq!(bf.verified_length(), 4);
        bf.set_node(8);
        assert_eq!(bf.verified_length(), 5);
    }

    #[test]
    fn next_and_prev_block_skip_holes() {
        let mut bf = Bitfield::new();
        for i in [3u64, 9, 20_000, 20_001] {
            bf.set_block(i, true);
        }
        assert_eq!(bf.next_block(0, u64::MAX), Some(3));
        assert_eq!(bf.next_block(4, u64::MAX), Some(9));
        assert_eq!(bf.next_block(10, u64::MAX), Some(20_000));
        assert_eq!(bf.next_block(10, 20_000), None);
        assert_eq!(bf.next_block(20_002, u64::MAX), None);
        assert_eq!(bf.prev_block(0, u64::MAX), Some(20_001));
        assert_eq!(bf.prev_block(0, 20_000), Some(9));
        assert_eq!(bf.prev_block(4, 9), None);
        assert_eq!(bf.prev_block(0, 4), Some(3));
    }

    #[test]
    fn contiguous_and_counts() {
        let mut bf = Bitfield::new();
        for i in 0..13 {
            bf.set_block(i, true);
        }
        bf.set_block(20, true);
        assert_eq!(bf.contiguous_length(), 13);
        assert_eq!(bf.count_blocks(0, 100), 14);
        assert_eq!(bf.count_blocks(5, 21), 9);
    }
}
