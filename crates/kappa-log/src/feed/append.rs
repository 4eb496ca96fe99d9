//! The append path: a batch hashed, signed and written.

use super::*;
use crate::crypto::Hash;

/// A batch's new tree nodes, encoded at their places in the tree file from
/// node `lo` (`2·start − 1`) on, as they are made: its leaves and the parents
/// above them fill those places, less one per block at most. The few parents
/// that join an old root to new nodes sit left of `lo` (at most one per old
/// root) and are kept aside. No list of nodes to sort, which took a tenth of
/// `kappa append -` of a million lines, and no second copy of them.
struct Placed {
    lo: u64,
    bytes: Vec<u8>,
    present: Vec<bool>,
    /// Nodes left of `lo`, sorted by index.
    left: Vec<Node>,
}

impl Placed {
    fn new(lo: u64, nodes: usize) -> Self {
        Placed {
            lo,
            bytes: Vec::with_capacity(nodes * 40),
            present: Vec::with_capacity(nodes),
            left: Vec::new(),
        }
    }

    fn put(&mut self, n: &Node) {
        if n.index < self.lo {
            match self.left.binary_search_by_key(&n.index, |m| m.index) {
                Ok(at) => self.left[at] = *n,
                Err(at) => self.left.insert(at, *n),
            }
            return;
        }
        let k = (n.index - self.lo) as usize;
        if self.present.len() <= k {
            self.present.resize(k + 1, false);
            self.bytes.resize((k + 1) * 40, 0);
        }
        self.bytes[k * 40..k * 40 + 40].copy_from_slice(&n.encode());
        self.present[k] = true;
    }

    fn is_empty(&self) -> bool {
        self.left.is_empty() && !self.present.contains(&true)
    }

    /// Adds the nodes of the next batch.
    fn extend(&mut self, next: Placed) {
        if self.is_empty() {
            *self = next;
            return;
        }
        for n in &next.left {
            self.put(n);
        }
        for (k, _) in next.present.iter().enumerate().filter(|(_, p)| **p) {
            let chunk = &next.bytes[k * 40..k * 40 + 40];
            let mut hash = [0u8; 32];
            hash.copy_from_slice(&chunk[..32]);
            let mut size = [0u8; 8];
            size.copy_from_slice(&chunk[32..40]);
            self.put(&Node { index: next.lo + k as u64, hash, size: u64::from_be_bytes(size) });
        }
    }

    /// The encoded node at place `i`, if one was put there.
    fn node_bytes(&self, i: u64) -> Option<Vec<u8>> {
        if i < self.lo {
            let at = self.left.binary_search_by_key(&i, |m| m.index).ok()?;
            return Some(self.left[at].encode().to_vec());
        }
        let k = usize::try_from(i - self.lo).ok()?;
        self.present.get(k).copied().unwrap_or(false).then(|| self.bytes[k * 40..k * 40 + 40].to_vec())
    }

    /// The tree writes: runs of adjacent nodes, one write each. From `fresh`
    /// on (the nodes of the new blocks) a run goes on over the places of
    /// nodes not complete yet, as zeros, which is what the file holds there
    /// anyway.
    fn runs(self, fresh: u64) -> Vec<(u64, Vec<u8>)> {
        let lo = self.lo;
        // Runs as [first, end) of places, in index order; a gap is bridged
        // when it starts at or after `fresh`.
        let mut bounds: Vec<(u64, u64)> = Vec::new();
        let placed = self.present.iter().enumerate().filter(|(_, p)| **p).map(|(k, _)| lo + k as u64);
        for i in self.left.iter().map(|n| n.index).chain(placed) {
            match bounds.last_mut() {
                Some((_, end)) if *end == i || *end >= fresh => *end = i + 1,
                _ => bounds.push((i, i + 1)),
            }
        }
        // The common case, a run of the placed nodes only: their buffer as it is.
        if let [(first, end)] = bounds[..] {
            if first == lo && end == lo + self.present.len() as u64 {
                return vec![(lo, self.bytes)];
            }
        }
        bounds
            .into_iter()
            .map(|(first, end)| {
                let bytes = if first >= lo {
                    self.bytes[((first - lo) * 40) as usize..((end - lo) * 40) as usize].to_vec()
                } else {
                    let mut bytes = Vec::with_capacity(((end - first) * 40) as usize);
                    for i in first..end {
                        match self.node_bytes(i) {
                            Some(b) => bytes.extend_from_slice(&b),
                            None => bytes.resize(bytes.len() + 40, 0),
                        }
                    }
                    bytes
                };
                (first, bytes)
            })
            .collect()
    }
}

/// [`Placed::runs`] by sorting a list of the nodes: what the tree writes
/// were, for the tests.
#[cfg(test)]
fn sorted_node_runs(mut nodes: Vec<Node>, fresh: u64) -> Vec<(u64, Vec<u8>)> {
    nodes.sort_unstable_by_key(|n| n.index);
    nodes.dedup_by_key(|n| n.index);
    let mut runs: Vec<(u64, Vec<u8>)> = Vec::new();
    for n in nodes {
        match runs.last_mut() {
            Some((first, bytes)) if *first + (bytes.len() / 40) as u64 == n.index => {
                bytes.extend_from_slice(&n.encode())
            }
            Some((first, bytes)) if *first + (bytes.len() / 40) as u64 >= fresh => {
                bytes.resize(((n.index - *first) * 40) as usize, 0);
                bytes.extend_from_slice(&n.encode())
            }
            _ => runs.push((n.index, n.encode().to_vec())),
        }
    }
    runs
}

/// What a batch is prepared from: blocks to copy into the data written, or
/// (for [`PackedBlocks`](crate::PackedBlocks)) a buffer that already is it.
pub(crate) trait BatchSource {
    fn prepare_on(self, feed: &Feed, tip: &Tip) -> Result<Prepared, LogError>;
}

impl<B, V> BatchSource for B
where
    B: IntoIterator<Item = V>,
    V: AsRef<[u8]>,
{
    fn prepare_on(self, feed: &Feed, tip: &Tip) -> Result<Prepared, LogError> {
        feed.prepare(tip, self, true, None)
    }
}

impl BatchSource for crate::PackedBlocks {
    fn prepare_on(self, feed: &Feed, tip: &Tip) -> Result<Prepared, LogError> {
        let leaves = self.leaf_hashes_in_parallel();
        let mut p = feed.prepare(tip, self.iter(), false, leaves.as_deref())?;
        p.data = self.into_data();
        Ok(p)
    }
}

/// The state an append builds on.
pub(crate) struct Tip {
    length: u64,
    byte_length: u64,
    roots: Vec<Node>,
}

/// One batch hashed and signed, not yet written.
pub(crate) struct Prepared {
    start: u64,
    new_length: u64,
    byte_length: u64,
    new_byte_length: u64,
    data: Vec<u8>,
    sizes: Vec<u64>,
    nodes: Placed,
    roots: Vec<Node>,
    signature: Signature,
}

impl Prepared {
    fn count(&self) -> u64 {
        self.new_length - self.start
    }

    fn range(&self) -> Range<u64> {
        self.start..self.new_length
    }
}

impl Feed {
    /// Appends one block; returns its index. One signature per call.
    pub fn append(&mut self, value: impl AsRef<[u8]>) -> Result<u64, LogError> {
        Ok(self.append_batch([value])?.start)
    }

    /// Appends blocks as one batch, signed once (the signature lands in the slot of
    /// the last block, as in hypercore). Returns the indices given to them. An empty
    /// batch changes nothing.
    pub fn append_batch<I, V>(&mut self, values: I) -> Result<Range<u64>, LogError>
    where
        I: IntoIterator<Item = V>,
        V: AsRef<[u8]>,
    {
        self.append_source(values)
    }

    /// [`append_batch`](Self::append_batch) for any [`BatchSource`].
    pub(crate) fn append_source<S: BatchSource>(&mut self, values: S) -> Result<Range<u64>, LogError> {
        self.check_poisoned()?;
        let tip = self.tip();
        let prepared = values.prepare_on(self, &tip)?;
        if prepared.count() == 0 {
            return Ok(tip.length..tip.length);
        }
        let range = prepared.range();
        self.commit(vec![prepared])?;
        Ok(range)
    }

    /// Appends several batches, each signed once as by
    /// [`append_batch`](Self::append_batch), with the writes and syncs of all of
    /// them shared: one write per file (per run of adjacent bytes) and, under
    /// [`SyncPolicy::PerBatch`], one round of syncs for all (group commit, used
    /// by [`SharedFeed`](crate::SharedFeed) for concurrent appenders).
    ///
    /// Returns one result per batch. A batch that cannot be appended (a block too
    /// large, a read-only feed) fails alone; when a write fails, the first batch
    /// of the group gets the error and the others [`LogError::Poisoned`].
    pub fn append_batches<B, V>(
        &mut self,
        batches: impl IntoIterator<Item = B>,
    ) -> Vec<Result<Range<u64>, LogError>>
    where
        B: IntoIterator<Item = V>,
        V: AsRef<[u8]>,
    {
        self.append_sources(batches)
    }

    /// [`append_batches`](Self::append_batches) for any [`BatchSource`].
    pub(crate) fn append_sources<S: BatchSource>(
        &mut self,
        batches: impl IntoIterator<Item = S>,
    ) -> Vec<Result<Range<u64>, LogError>> {
        let mut results: Vec<Result<Range<u64>, LogError>> = Vec::new();
        let mut prepared = Vec::new();
        let mut owners = Vec::new();
        let mut tip = self.tip();
        for values in batches {
            let r = self.check_poisoned().and_then(|()| values.prepare_on(self, &tip));
            match r {
                Ok(p) if p.count() == 0 => results.push(Ok(tip.length..tip.length)),
                Ok(p) => {
                    results.push(Ok(p.range()));
                    tip =
                        Tip { length: p.new_length, byte_length: p.new_byte_length, roots: p.roots.clone() };
                    owners.push(results.len() - 1);
                    prepared.push(p);
                }
                Err(e) => results.push(Err(e)),
            }
        }
        if prepared.is_empty() {
            return results;
        }
        if let Err(e) = self.commit(prepared) {
            let mut e = Some(e);
            for i in owners {
                results[i] = Err(e.take().unwrap_or(LogError::Poisoned));
            }
        }
        results
    }

    /// The state appends build on.
    fn tip(&self) -> Tip {
        Tip { length: self.length, byte_length: self.byte_length, roots: self.roots.clone() }
    }

    /// Hashes and signs one batch on top of `tip`, writing nothing.
    /// With `copy` false the data is left empty for the caller to give
    /// (the blocks laid end to end).
    /// `leaves`, when given, holds the blocks' leaf hashes, made beforehand.
    fn prepare<I, V>(
        &self,
        tip: &Tip,
        values: I,
        copy: bool,
        leaves: Option<&[Hash]>,
    ) -> Result<Prepared, LogError>
    where
        I: IntoIterator<Item = V>,
        V: AsRef<[u8]>,
    {
        if let Some(e) = would_fork(&self.recovery, tip.length) {
            return Err(e);
        }
        let Some(key_pair) = self.key_pair.as_ref() else { return Err(LogError::NotWritable) };
        let start = tip.length;
        // A writer may have holes (blocks whose data was lost, which a peer can
        // restore): the new roots need only the old roots, not the data.
        let values = values.into_iter();
        let n = values.size_hint().0.min(MAX_BATCH_ENTRIES);
        let mut data = Vec::new();
        let mut bytes = 0u64;
        let mut roots = tip.roots.clone();
        let mut sizes = Vec::with_capacity(n);
        let mut nodes = Placed::new((2 * start).saturating_sub(1), 2 * n + 64);
        for (k, v) in values.enumerate() {
            if k >= MAX_BATCH_ENTRIES {
                return Err(LogError::TooLarge("more than 2^24 entries in one batch"));
            }
            let v = v.as_ref();
            if v.len() > MAX_BLOCK_SIZE {
                return Err(LogError::BlockTooLarge { size: v.len(), max: MAX_BLOCK_SIZE });
            }
            let leaf = match leaves.and_then(|h| h.get(k)) {
                Some(hash) => Node { index: 2 * (start + k as u64), hash: *hash, size: v.len() as u64 },
                None => Node::leaf(start + k as u64, v),
            };
            nodes.put(&leaf);
            roots.push(leaf);
            while roots.len() >= 2 {
                let (a, b) = (roots[roots.len() - 2], roots[roots.len() - 1]);
                if flat::parent(a.index) != flat::parent(b.index) {
                    break;
                }
                let p = Node::parent_of(&a, &b).ok_or(LogError::TooLarge("feed byte length overflows"))?;
                roots.truncate(roots.len() - 2);
                nodes.put(&p);
                roots.push(p);
            }
            if copy {
                data.extend_from_slice(v);
            }
            bytes += v.len() as u64;
            sizes.push(v.len() as u64);
        }
        let count = sizes.len() as u64;
        let new_byte_length =
            tip.byte_length.checked_add(bytes).ok_or(LogError::TooLarge("feed byte length overflows"))?;
        let signature =
            if count == 0 { Signature([0; 64]) } else { key_pair.sign_roots(&roots, self.sign_form) };
        Ok(Prepared {
            start,
            new_length: start + count,
            byte_length: tip.byte_length,
            new_byte_length,
            data,
            sizes,
            nodes,
            roots,
            signature,
        })
    }

    /// Writes prepared batches (in order, each built on the one before) and
    /// adopts the newest as the feed's state.
    ///
    /// The order is what the crash guarantees rest on (docs/semantics.md):
    /// data and tree first; under [`SyncPolicy::PerBatch`] both are synced
    /// before any signature is written, so a signature on disk always has its
    /// tree and data under it, even after a power loss (a signature without
    /// them would read as entries signed and lost, and stop the writer with
    /// `WouldFork`). Then the signatures, synced: once they are on disk the
    /// batches are, since recovery proves the length from the newest verifying
    /// signature. The bitfield and the head record follow, not synced: recovery
    /// rebuilds the bitfield from the tree when it lags, and the head record
    /// guards against damage, not crashes.
    fn commit(&mut self, mut batches: Vec<Prepared>) -> Result<(), LogError> {
        let (Some(first), Some(last)) = (batches.first(), batches.last()) else { return Ok(()) };
        let (byte_length, start) = (first.byte_length, first.start);
        let (new_length, new_byte_length) = (last.new_length, last.new_byte_length);
        let roots = last.roots.clone();
        let signature = last.signature;
        let mut data = Vec::new();
        let mut nodes = Placed::new(0, 0);
        let mut signatures: Vec<(u64, Vec<u8>)> = Vec::new();
        for b in &mut batches {
            // The first batch's bytes and nodes are moved, not copied (a
            // large batch is most of the process's memory).
            if data.is_empty() {
                data = std::mem::take(&mut b.data);
            } else {
                data.extend_from_slice(&b.data);
            }
            nodes.extend(std::mem::replace(&mut b.nodes, Placed::new(0, 0)));
            let slot = b.new_length - 1;
            match signatures.last_mut() {
                Some((s, bytes)) if *s + (bytes.len() / 64) as u64 == slot => {
                    bytes.extend_from_slice(&b.signature.0)
                }
                _ => signatures.push((slot, b.signature.0.to_vec())),
            }
        }
        let tree_runs = nodes.runs(2 * start);
        self.guarded(|feed| {
            feed.files.data.write(byte_length, &data)?;
            for (first, bytes) in &tree_runs {
                feed.files.tree.write(HEADER_LEN + 40 * first, bytes)?;
            }
            let durable = feed.sync == SyncPolicy::PerBatch;
            if durable {
                sync_both(&mut feed.files.data, &mut feed.files.tree)?;
            }
            for (slot, bytes) in &signatures {
                feed.files.signatures.write(HEADER_LEN + 64 * slot, bytes)?;
            }
            if durable {
                feed.files.signatures.sync()?;
            }
            for i in start..new_length {
                feed.bitfield.set_block(i, true);
                feed.bitfield.set_node(2 * i);
            }
            if durable {
                feed.flush_bitfield()
            } else {
                feed.defer_bitfield();
                Ok(())
            }
        })?;

        let was_complete = self.contiguous == start;
        match self.offsets.end_at(start) {
            // Cached offsets that disagree with the signed roots: start over.
            Some(end) if end != byte_length => self.offsets.clear(),
            Some(_) => {
                let (mut acc, mut i) = (byte_length, start);
                for b in &batches {
                    for s in &b.sizes {
                        acc += s;
                        i += 1;
                        self.offsets.push(i, acc);
                    }
                }
            }
            None => {}
        }
        self.roots = roots;
        self.length = new_length;
        self.byte_length = new_byte_length;
        if was_complete {
            self.contiguous = new_length;
        }
        // The second copy of the newest signed state (see `head`); written after
        // the commit point, never synced on its own: it guards against damage,
        // not against crashes, which the order of the writes above covers.
        // Under `SyncPolicy::None` it waits, with the bitfield, for every
        // ENTRIES_PER_BITFIELD_WRITE-th entry or the next flush.
        if self.sync == SyncPolicy::PerBatch {
            self.guarded(|feed| feed.write_head(signature))?;
        } else {
            self.head_pending = Some((signature, new_length));
            self.appends_unflushed += new_length - start;
            if self.appends_unflushed >= ENTRIES_PER_BITFIELD_WRITE {
                self.flush_deferred()?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Placed or sorted, the same writes.
        #[test]
        fn node_runs_place_what_sorting_would(
            indices in proptest::collection::btree_set(0u64..300, 1..200),
            fresh in 0u64..450,
            lo in 0u64..300,
            shuffle in any::<u64>(),
        ) {
            let mut nodes: Vec<Node> = indices
                .iter()
                .map(|&i| Node { index: i, hash: [(i % 251) as u8; 32], size: i * 7 })
                .collect();
            // Any order in, as prepare pushes parents after their leaves.
            let len = nodes.len();
            for k in 0..len {
                nodes.swap(k, (shuffle.rotate_left(k as u32) as usize) % len);
            }
            // Placed as prepare does (in any order), and across two batches
            // as a group commit does.
            let mut placed = Placed::new(lo, 0);
            let cut = indices.iter().nth(indices.len() / 2).copied().unwrap_or(0);
            let (mut left, mut right) = (Placed::new(0, 0), Placed::new(cut, 0));
            for n in &nodes {
                placed.put(n);
                if n.index < cut { left.put(n) } else { right.put(n) }
            }
            left.extend(right);
            let sorted = sorted_node_runs(nodes, fresh);
            prop_assert_eq!(placed.runs(fresh), sorted.clone());
            prop_assert_eq!(left.runs(fresh), sorted);
        }
    }
}
