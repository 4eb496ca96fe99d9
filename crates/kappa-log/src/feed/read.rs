//! The read path: tree nodes, signatures and blocks, with their caches.

use super::*;

impl Feed {
    /// Tree node `index`, if stored.
    pub fn node(&mut self, index: u64) -> Result<Option<Node>, LogError> {
        if !self.has_node(index) {
            return Ok(None);
        }
        if let Some(n) = self.pending.node(index) {
            return Ok(Some(n));
        }
        if let Some(n) = self.node_cache.get(index) {
            return Ok(Some(n));
        }
        if let Some(n) = self.read_node_window(index)? {
            return Ok(Some(n));
        }
        let mut buf = [0u8; 40];
        self.files.tree.read_into(HEADER_LEN + 40 * index, &mut buf).map_err(|e| match e {
            kappa_storage::StorageError::OutOfBounds { .. } => LogError::Corrupt(CorruptError {
                file: "tree",
                reason: format!("node {index} is marked present but lies past the end"),
            }),
            e => e.into(),
        })?;
        let node = Node::decode(index, &buf);
        match node {
            Some(n) => self.cache_node(n),
            // The bitfield claims a node the tree file does not hold (damage):
            // it is missing.
            None => {
                self.bitfield.clear_node(index);
            }
        }
        Ok(node)
    }

    /// Reads the nodes of the aligned window of [`NODE_WINDOW`] around
    /// `index` in one read, as far as the last node there the bitfield marks
    /// present, and caches those present (a sequential reader, such as an
    /// indexer or `kappa log`, then reads the tree once per window, not once
    /// per block). `None` when there is nothing around `index` to read with it,
    /// or the read fails: the caller reads the one node (and reports what is
    /// wrong with it).
    fn read_node_window(&mut self, index: u64) -> Result<Option<Node>, LogError> {
        let start = index & !(NODE_WINDOW - 1);
        let Some(last) = (start..start + NODE_WINDOW).rev().find(|&i| self.has_node(i)) else {
            return Ok(None);
        };
        if last <= index {
            return Ok(None);
        }
        let mut buf = vec![0u8; 40 * (last - start + 1) as usize];
        if self.files.tree.read_into(HEADER_LEN + 40 * start, &mut buf).is_err() {
            return Ok(None);
        }
        let mut wanted = None;
        for (i, bytes) in (start..=last).zip(buf.chunks_exact(40)) {
            if !self.has_node(i) || self.pending.node(i).is_some() {
                continue;
            }
            let Ok(bytes) = <&[u8; 40]>::try_from(bytes) else { continue };
            if let Some(n) = Node::decode(i, bytes) {
                if i == index {
                    wanted = Some(n);
                }
                self.cache_node(n);
            }
        }
        // A node the window does not hold as marked is read alone, which
        // says what is wrong with it.
        Ok(wanted)
    }

    pub(crate) fn require_node(&mut self, index: u64) -> Result<Node, LogError> {
        self.node(index)?
            .ok_or_else(|| CorruptError { file: "tree", reason: format!("node {index} is missing") }.into())
    }

    /// The raw signature slot `slot` (`None` if blank or past the end).
    pub fn signature_slot(&mut self, slot: u64) -> Result<Option<Signature>, LogError> {
        if slot >= flat::MAX_NODE {
            return Ok(None);
        }
        if let Some((_, sig)) = self.pending.signatures.iter().rev().find(|(s, _)| *s == slot) {
            return Ok(Some(*sig));
        }
        let offset = HEADER_LEN + 64 * slot;
        if self.files.signatures.len()? < offset + 64 {
            return Ok(None);
        }
        let mut buf = [0u8; 64];
        self.files.signatures.read_into(offset, &mut buf)?;
        let sig = Signature(buf);
        Ok(if sig.is_blank() { None } else { Some(sig) })
    }

    /// The signature of the current state (slot `len() − 1`).
    pub fn signature(&mut self) -> Result<Option<Signature>, LogError> {
        if self.length == 0 {
            return Ok(None);
        }
        self.signature_slot(self.length - 1)
    }

    /// The form of the signature of the current state (slot `len − 1` over the
    /// roots of [`len`](Self::len)): `None` for an empty feed or one whose
    /// newest signature does not verify. A feed whose head is in the 40-byte
    /// form cannot be verified by a hypercore 8 (kappa-core 6) peer.
    pub fn signature_form(&mut self) -> Result<Option<SignatureForm>, LogError> {
        let Some(sig) = self.signature()? else { return Ok(None) };
        Ok(self.sig_memo.verify_roots(&self.key, &self.roots, &sig))
    }

    /// The form this feed signs its appends in ([`FeedBuilder::signature_form`]).
    pub fn signing_form(&self) -> SignatureForm {
        self.sign_form
    }

    // ----- reading -----------------------------------------------------------

    /// Block `index`, or `None` if it is not stored locally (past the end, or a
    /// block a sparse replica has not downloaded).
    ///
    /// Every block read from the data file is checked against its leaf hash: a
    /// block whose bytes were damaged on disk is not returned but becomes a hole
    /// (as if never downloaded; a peer that holds it can restore it).
    pub fn get(&mut self, index: u64) -> Result<Option<Vec<u8>>, LogError> {
        if !self.has(index) {
            return Ok(None);
        }
        if let Some(v) = self.blocks.get(index) {
            return Ok(Some(v.to_vec()));
        }
        let (offset, size) = match self.block_range(index) {
            Ok(r) => r,
            // A node needed to place the block is gone: it cannot be read
            // (a peer's proof brings the node back with the block).
            Err(LogError::Corrupt(_)) => return self.lose_block(index),
            Err(e) => return Err(e),
        };
        if self.pending.holds_data_at(offset) {
            // Verified when it was put, not yet written: write what is held
            // first, so nothing a reader saw (and, say, indexed into a view that
            // commits at once) is lost if the process dies before the
            // replication burst ends.
            self.flush_deferred()?;
        }
        let read = if size == 0 { Some(Vec::new()) } else { self.read_ahead(offset, size)? };
        let data = match read {
            Some(v) => v,
            None => match self.read_block(index, offset, size)? {
                Some(v) => v,
                // Past the end of the data file: the data or the leaf's size is
                // damaged.
                None => {
                    return match self.node(2 * index)? {
                        Some(leaf) => self.resolve_mismatch(index, leaf, offset),
                        None => self.lose_block(index),
                    }
                }
            },
        };
        match self.node(2 * index)? {
            Some(leaf) if leaf == Node::leaf(index, &data) => {
                self.blocks.insert(index, &data);
                Ok(Some(data))
            }
            Some(leaf) => self.resolve_mismatch(index, leaf, offset),
            None => self.lose_block(index),
        }
    }

    /// A block's data and its leaf node disagree: one of them is damaged. The
    /// parent and sibling decide. A leaf that hashes with its sibling to the
    /// parent is right, so the data is damaged: the block becomes a hole. A leaf
    /// that does not is damaged: rebuilt from the data if the data then fits the
    /// parent, dropped otherwise (a peer's proof restores it with the block).
    fn resolve_mismatch(&mut self, index: u64, leaf: Node, offset: u64) -> Result<Option<Vec<u8>>, LogError> {
        let x = 2 * index;
        let (p, s) = (flat::parent(x), flat::sibling(x));
        let (Some(parent), Some(sibling)) = (self.node(p)?, self.node(s)?) else {
            return self.lose_block(index);
        };
        let pair = |a: Node, b: Node| if x < s { Node::parent_of(&a, &b) } else { Node::parent_of(&b, &a) };
        if pair(leaf, sibling) == Some(parent) {
            return self.lose_block(index);
        }
        if let Some(size) = parent.size.checked_sub(sibling.size) {
            if let Some(data) = self.read_block(index, offset, size)? {
                let rebuilt = Node::leaf(index, &data);
                if pair(rebuilt, sibling) == Some(parent) {
                    self.guarded(|f| Ok(f.files.tree.write(HEADER_LEN + 40 * x, &rebuilt.encode())?))?;
                    self.forget_node(x);
                    self.recovery.repaired.push(format!("damaged leaf node of block {index} rebuilt"));
                    return Ok(Some(data));
                }
            }
        }
        self.guarded(|f| {
            f.bitfield.clear_node(x);
            Ok(())
        })?;
        self.forget_node(x);
        self.lose_block(index)
    }

    /// Puts a node just written into the node cache.
    pub(crate) fn cache_node(&mut self, n: Node) {
        self.node_cache.insert(n);
    }

    /// Drops what is cached from tree node `x` (it was rewritten or dropped).
    pub(crate) fn forget_node(&mut self, x: u64) {
        self.node_cache.remove(x);
        let first_block = flat::left_span(x) / 2;
        self.offsets.truncate_after(first_block);
    }

    /// The bytes of a block from the data file; `None` if they lie past its end.
    fn read_block(&mut self, index: u64, offset: u64, size: u64) -> Result<Option<Vec<u8>>, LogError> {
        // Sizes come from disk: bound large ones by the data file before allocating
        // (small reads past the end fail cleanly in the read itself).
        let data_len = if size > 64 * 1024 { self.files.data.len()? } else { u64::MAX };
        if offset.checked_add(size).is_none_or(|end| end > data_len) {
            return Ok(None);
        }
        let size = usize::try_from(size)
            .map_err(|_| CorruptError { file: "tree", reason: format!("block {index} too large") })?;
        let mut buf = vec![0u8; size];
        match self.files.data.read_into(offset, &mut buf) {
            Ok(()) => Ok(Some(buf)),
            Err(kappa_storage::StorageError::OutOfBounds { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// A stored block turned out damaged or gone: it becomes a hole.
    pub(crate) fn lose_block(&mut self, index: u64) -> Result<Option<Vec<u8>>, LogError> {
        self.blocks.remove(index);
        self.guarded(|f| {
            f.bitfield.set_block(index, false);
            f.flush_bitfield()
        })?;
        self.read_cache = None;
        self.contiguous = self.contiguous.min(index);
        if self.key_pair.is_some() || self.recovery.secret_key.is_some() {
            self.recovery.missing_blocks += 1;
        }
        Ok(None)
    }

    /// Serves small reads of complete feeds from a read-ahead window of the data
    /// file (sequential readers, uploaders); `None` when not applicable.
    fn read_ahead(&mut self, offset: u64, size: u64) -> Result<Option<Vec<u8>>, LogError> {
        if size > 4096 || !self.is_complete() || self.pending.has_data() {
            return Ok(None);
        }
        let end = offset + size;
        if let Some((start, buf)) = &self.read_cache {
            if offset >= *start && end <= start + buf.len() as u64 {
                let from = (offset - start) as usize;
                return Ok(Some(buf[from..from + size as usize].to_vec()));
            }
        }
        // Only sequential readers gain from a window; random ones would pay
        // 64 KiB per read.
        let sequential = self.last_read_end == offset;
        self.last_read_end = end;
        if !sequential {
            return Ok(None);
        }
        // A complete feed holds all of 0 .. byte_length in the data file.
        let window_end = (offset + READ_AHEAD).min(self.byte_length);
        if window_end < end {
            return Ok(None);
        }
        let buf = match self.files.data.read(offset, (window_end - offset) as usize) {
            Ok(buf) => buf,
            // The data file is shorter than the feed: the block-by-block path
            // tells which blocks are gone.
            Err(kappa_storage::StorageError::OutOfBounds { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let v = buf[..size as usize].to_vec();
        self.read_cache = Some((offset, buf));
        Ok(Some(v))
    }

    /// Block `index`, failing with [`LogError::BlockNotAvailable`] if it is not
    /// stored locally.
    pub fn try_get(&mut self, index: u64) -> Result<Vec<u8>, LogError> {
        self.get(index)?.ok_or(LogError::BlockNotAvailable { index, length: self.length })
    }

    /// Byte offset and size of a stored block.
    pub(crate) fn block_range(&mut self, index: u64) -> Result<(u64, u64), LogError> {
        if !self.offsets.covers(index) && index < self.contiguous {
            self.fill_offsets(index)?;
        }
        if let Some((start, end)) = self.offsets.range(index) {
            let size = end.checked_sub(start).ok_or_else(|| CorruptError {
                file: "tree",
                reason: format!("block {index} ends before it starts"),
            })?;
            return Ok((start, size));
        }
        let offset = self.data_offset(index, &[])?;
        let leaf = self.require_node(2 * index)?;
        Ok((offset, leaf.size))
    }

    /// Caches the offsets of the chunk of blocks around `index` (bounded by
    /// the contiguous prefix), from one read of their leaf sizes in the tree
    /// file.
    fn fill_offsets(&mut self, index: u64) -> Result<(), LogError> {
        // Leaf sizes are read from the tree file: write held-back nodes first.
        if self.pending.bytes > 0 {
            self.flush_deferred()?;
        }
        let k = index / CHUNK;
        let first = k * CHUNK;
        let end = (first + CHUNK).min(self.contiguous);
        if end <= first {
            return Ok(());
        }
        let start = match self.offsets.get(first) {
            Some(o) => o,
            None => match self.data_offset(first, &[]) {
                Ok(o) => o,
                // A node needed is missing or damaged: the slow path says which.
                Err(LogError::Corrupt(_)) => return Ok(()),
                Err(e) => return Err(e),
            },
        };
        // Leaves 2·first .. 2·(end−1), inclusive, with the parents between.
        let count = 2 * (end - first) - 1;
        let bytes = self.files.tree.read(HEADER_LEN + 40 * 2 * first, (40 * count) as usize)?;
        let mut acc = start;
        let mut chunk = Vec::with_capacity((end - first + 1) as usize);
        chunk.push(acc);
        for b in 0..(end - first) as usize {
            let at = 80 * b + 32;
            let mut size = [0u8; 8];
            size.copy_from_slice(&bytes[at..at + 8]);
            acc = acc
                .checked_add(u64::from_be_bytes(size))
                .ok_or_else(|| CorruptError { file: "tree", reason: "block sizes overflow".into() })?;
            chunk.push(acc);
        }
        // The leaf sizes must add up to what the parents above them say; a
        // damaged leaf size would shift every later block. Then the chunk is not
        // cached and its blocks take the slow path, which reads the parents.
        match self.data_offset(end, &[]) {
            Ok(expected) if expected != acc => Ok(()),
            _ => {
                self.offsets.insert(k, chunk);
                Ok(())
            }
        }
    }

    /// The byte offset of block `index`: the total size of `full_roots(2·index)`,
    /// looked up in `extra` first, then in the tree file.
    pub(crate) fn data_offset(&mut self, index: u64, extra: &[Node]) -> Result<u64, LogError> {
        if let Some(o) = self.offsets.get(index) {
            return Ok(o);
        }
        let mut offset = 0u64;
        for r in flat::full_roots(2 * index) {
            let size = match extra.iter().find(|n| n.index == r) {
                Some(n) => n.size,
                None => self.require_node(r)?.size,
            };
            offset = offset
                .checked_add(size)
                .ok_or_else(|| CorruptError { file: "tree", reason: "block sizes overflow".into() })?;
        }
        Ok(offset)
    }
}
