use crate::crypto::{parent_hash, Hash};
use crate::flat;

/// A merkle tree node: a leaf (one block) or a parent, with the byte size of
/// everything below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    /// Flat-tree index.
    pub index: u64,
    /// BLAKE2b-256 hash.
    pub hash: Hash,
    /// Bytes of data covered.
    pub size: u64,
}

impl Node {
    /// Bytes per node in the `tree` file: hash then `u64be(size)`.
    pub const ENCODED_LEN: usize = 40;

    /// A leaf node for block `block` holding `data`.
    pub fn leaf(block: u64, data: &[u8]) -> Node {
        Node { index: 2 * block, hash: crate::crypto::leaf_hash(data), size: data.len() as u64 }
    }

    /// The parent of two siblings, `left` having the smaller index. `None` if the
    /// sizes overflow.
    pub fn parent_of(left: &Node, right: &Node) -> Option<Node> {
        let size = left.size.checked_add(right.size)?;
        Some(Node { index: flat::parent(left.index), hash: parent_hash(&left.hash, &right.hash, size), size })
    }

    /// The 40-byte `tree` file form.
    pub fn encode(&self) -> [u8; 40] {
        let mut out = [0u8; 40];
        out[..32].copy_from_slice(&self.hash);
        out[32..].copy_from_slice(&self.size.to_be_bytes());
        out
    }

    /// Parses the 40-byte `tree` file form; `None` for the all-zero "missing" slot.
    pub fn decode(index: u64, bytes: &[u8; 40]) -> Option<Node> {
        if bytes.iter().all(|&b| b == 0) {
            return None;
        }
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&bytes[..32]);
        let mut size = [0u8; 8];
        size.copy_from_slice(&bytes[32..]);
        Some(Node { index, hash, size: u64::from_be_bytes(size) })
    }
}
