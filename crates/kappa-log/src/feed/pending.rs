//! Verified puts held back for one write (a replication burst).
//!
//! Blocks arrive mostly in order and their tree nodes mostly to the right of
//! what is held, so both are kept sorted in plain vectors: a block adjacent to
//! the last run of data extends it (no allocation per block), and a node is
//! placed by a binary search that, in the common case, lands at or near the
//! end. A map of one allocation per block or per node cost a tenth of a
//! thousand-feed sync.

use crate::crypto::Signature;
use crate::node::Node;

/// A run of adjacent held data: its offset in the data file and its bytes.
pub(crate) type Run = (u64, Vec<u8>);

/// Deferred data, tree nodes and signatures, in the order they are written.
#[derive(Default)]
pub(crate) struct Pending {
    /// Runs of adjacent data, `(offset, bytes)`, sorted and not overlapping.
    data: Vec<Run>,
    /// Nodes sorted by index, no index twice.
    nodes: Vec<Node>,
    /// Signatures by slot, in the order they were put (a later one for the
    /// same slot wins).
    pub(crate) signatures: Vec<(u64, Signature)>,
    /// What all of it adds up to on disk, for the flush threshold.
    pub(crate) bytes: usize,
}

impl Pending {
    /// Holds the block `bytes` at `offset` of the data file. Blocks do not
    /// overlap; an empty block writes nothing.
    pub(crate) fn put_data(&mut self, offset: u64, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.bytes += bytes.len();
        // The run that starts at or before `offset`, if any.
        let at = self.data.partition_point(|(start, _)| *start <= offset);
        if let Some((start, run)) = at.checked_sub(1).map(|i| &mut self.data[i]) {
            let end = *start + run.len() as u64;
            if end == offset {
                run.extend_from_slice(bytes);
                // It may now touch the next run: join them.
                if self.data.get(at).is_some_and(|(next, _)| *next == offset + bytes.len() as u64) {
                    let (_, next) = self.data.remove(at);
                    self.data[at - 1].1.extend_from_slice(&next);
                }
                return;
            }
            if offset < end {
                // Already held (the same verified bytes): nothing to add.
                self.bytes -= bytes.len();
                return;
            }
        }
        match self.data.get_mut(at) {
            Some((next, run)) if *next == offset + bytes.len() as u64 => {
                let mut joined = Vec::with_capacity(bytes.len() + run.len());
                joined.extend_from_slice(bytes);
                joined.extend_from_slice(run);
                *run = joined;
                *next = offset;
            }
            _ => self.data.insert(at, (offset, bytes.to_vec())),
        }
    }

    /// Whether held data covers byte `offset` of the data file.
    pub(crate) fn holds_data_at(&self, offset: u64) -> bool {
        let at = self.data.partition_point(|(start, _)| *start <= offset);
        at.checked_sub(1).is_some_and(|i| offset < self.data[i].0 + self.data[i].1.len() as u64)
    }

    /// Whether any data is held.
    pub(crate) fn has_data(&self) -> bool {
        !self.data.is_empty()
    }

    /// Holds tree node `node` (replacing a held node of the same index).
    pub(crate) fn put_node(&mut self, node: Node) {
        match self.nodes.last() {
            Some(last) if last.index < node.index => self.nodes.push(node),
            None => self.nodes.push(node),
            Some(_) => match self.nodes.binary_search_by_key(&node.index, |n| n.index) {
                Ok(i) => {
                    self.nodes[i] = node;
                    return;
                }
                Err(i) => self.nodes.insert(i, node),
            },
        }
        self.bytes += 40;
    }

    /// Held node `index`.
    pub(crate) fn node(&self, index: u64) -> Option<Node> {
        self.nodes.binary_search_by_key(&index, |n| n.index).ok().map(|i| self.nodes[i])
    }

    /// The held data runs, `(offset, bytes)`, in file order, and the held
    /// nodes in index order.
    pub(crate) fn into_parts(self) -> (Vec<Run>, Vec<Node>, Vec<(u64, Signature)>) {
        (self.data, self.nodes, self.signatures)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn node(index: u64, size: u64) -> Node {
        Node { index, size, hash: [index as u8; 32] }
    }

    proptest! {
        /// Whatever the order blocks and nodes come in, what is held, looked
        /// up and finally written is what a map of each would give.
        #[test]
        fn pending_is_a_sorted_map(
            sizes in proptest::collection::vec(0usize..40, 1..60),
            order in proptest::collection::vec(any::<prop::sample::Index>(), 1..60),
            nodes in proptest::collection::vec((0u64..200, 0u64..1000), 0..80),
        ) {
            // Blocks laid end to end, put in a shuffled order, some twice.
            let mut offsets = Vec::new();
            let mut at = 0u64;
            for (i, s) in sizes.iter().enumerate() {
                offsets.push((at, vec![i as u8; *s]));
                at += *s as u64;
            }
            let mut p = Pending::default();
            let mut model: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
            for ix in &order {
                let (offset, bytes) = &offsets[ix.index(offsets.len())];
                p.put_data(*offset, bytes);
                if !bytes.is_empty() {
                    model.insert(*offset, bytes.clone());
                }
            }
            let mut node_model = BTreeMap::new();
            for (index, size) in &nodes {
                p.put_node(node(*index, *size));
                node_model.insert(*index, node(*index, *size));
            }
            let data_bytes: usize = model.values().map(Vec::len).sum();
            prop_assert_eq!(p.bytes, data_bytes + 40 * node_model.len());
            prop_assert_eq!(p.has_data(), !model.is_empty());
            for b in 0..at + 2 {
                let held = model.range(..=b).next_back().is_some_and(|(o, v)| b < o + v.len() as u64);
                prop_assert_eq!(p.holds_data_at(b), held, "byte {}", b);
            }
            for i in 0..201 {
                prop_assert_eq!(p.node(i), node_model.get(&i).copied());
            }
            let (runs, held_nodes, _) = p.into_parts();
            // Runs are sorted, apart (adjacent ones were joined) and hold
            // exactly the model's bytes.
            for w in runs.windows(2) {
                prop_assert!(w[0].0 + (w[0].1.len() as u64) < w[1].0);
            }
            let mut flat_runs = Vec::new();
            for (o, v) in &runs {
                for (k, b) in v.iter().enumerate() {
                    flat_runs.push((o + k as u64, *b));
                }
            }
            let mut flat_model = Vec::new();
            for (o, v) in &model {
                for (k, b) in v.iter().enumerate() {
                    flat_model.push((o + k as u64, *b));
                }
            }
            prop_assert_eq!(flat_runs, flat_model);
            prop_assert_eq!(held_nodes, node_model.into_values().collect::<Vec<_>>());
        }
    }
}
