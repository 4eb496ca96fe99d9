//! Proofs: what an uploader sends with a block, and how a downloader checks it
//! (spec §3.11).

use std::collections::HashSet;

use crate::crypto::{tree_hash, Signature};
use crate::error::{LogError, ProofError};
use crate::feed::{Feed, SyncPolicy};
use crate::files::HEADER_LEN;
use crate::flat;
use crate::node::Node;
use kappa_storage::RandomAccess;

/// The nodes and signature that let a replica verify one block.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Proof {
    /// Tree nodes: siblings bottom-up, then the other roots left to right, minus
    /// what the requester said it has.
    pub nodes: Vec<Node>,
    /// The signature over the roots, when the proof reaches them.
    pub signature: Option<Signature>,
}

/// What [`Feed::put`] did with a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The block was verified and stored.
    Stored,
    /// The block was already stored; nothing changed.
    AlreadyPresent,
}

fn reject(index: u64, source: ProofError) -> LogError {
    LogError::Proof { index, source }
}

impl Feed {
    /// The `Request.nodes` digest for block `index`: a compact statement of which
    /// nodes on the block's path we already hold, so the uploader can leave them
    /// out. `1` means "I have the block's own leaf".
    pub fn digest(&self, index: u64) -> u64 {
        if index >= flat::MAX_NODE / 2 {
            return 0;
        }
        let x = 2 * index;
        if self.has_node(x) {
            return 1;
        }
        let bits = self.bitfield().page_count() as u64 * 2048 * 8;
        let mut digest = 0u64;
        let mut next = flat::sibling(x);
        let max = (next + 2).max(bits);
        let mut bit = 2u64;
        let mut parent = flat::parent(next);
        while (flat::right_span(next) < max || flat::left_span(parent) > 0) && bit < (1 << 62) {
            if self.has_node(next) {
                digest |= bit;
            }
            if self.has_node(parent) {
                digest |= (bit << 1) + 1;
                if digest + 1 == bit << 2 {
                    return 1;
                }
                return digest;
            }
            next = flat::sibling(parent);
            parent = flat::parent(next);
            bit <<= 1;
        }
        digest
    }

    /// The proof for block `index` for a requester whose digest is `digest` (use 0
    /// for a full proof). With `hash_only`, the block's own leaf node comes first
    /// (the reply to a `hash: true` request, which carries no data).
    ///
    /// Fails with [`LogError::BlockNotAvailable`] if the block is not stored here.
    pub fn proof(&mut self, index: u64, digest: u64, hash_only: bool) -> Result<Proof, LogError> {
        if !self.has(index) {
            return Err(LogError::BlockNotAvailable { index, length: self.len() });
        }
        let x = 2 * index;
        let mut wanted: Vec<u64> = Vec::new();
        if hash_only {
            wanted.push(x);
        }
        if digest == 1 {
            return self.load_proof(wanted, None);
        }
        // Nodes the requester says it has.
        let mut remote: HashSet<u64> = HashSet::new();
        let has_root = digest & 1 == 1;
        let mut d = digest >> 1;
        let mut next = x;
        while d != 0 && next < flat::MAX_NODE {
            if d == 1 && has_root {
                if self.has_node(next) {
                    remote.insert(next);
                }
                if flat::sibling(next) < next {
                    next = flat::sibling(next);
                }
                for r in flat::full_roots(flat::right_span(next) + 2) {
                    if self.has_node(r) {
                        remote.insert(r);
                    }
                }
                break;
            }
            let sib = flat::sibling(next);
            if d & 1 == 1 && self.has_node(sib) {
                remote.insert(sib);
            }
            next = flat::parent(next);
            d >>= 1;
        }

        let mut next = x;
        while !remote.contains(&next) && next < flat::MAX_NODE {
            let sib = flat::sibling(next);
            if !self.has_node(sib) {
                // `next` is a local root: add the other roots and the signature.
                let verified_by = self.verified_by(next);
                let mut slot = (verified_by / 2).saturating_sub(1);
                let mut signature = self.signature_slot(slot)?;
                let mut end = verified_by;
                if signature.is_none() {
                    // hypercore looks forward for the next signature; it covers a
                    // longer tree whose roots we then also need to send.
                    while slot + 1 < self.len() && signature.is_none() {
                        slot += 1;
                        signature = self.signature_slot(slot)?;
                    }
                    end = 2 * (slot + 1);
                }
                for r in flat::full_roots(end) {
                    if r != next && !remote.contains(&r) && !wanted.contains(&r) {
                        wanted.push(r);
                    }
                }
                return self.load_proof(wanted, signature);
            }
            if !remote.contains(&sib) {
                wanted.push(sib);
            }
            next = flat::parent(next);
        }
        self.load_proof(wanted, None)
    }

    fn load_proof(&mut self, indexes: Vec<u64>, signature: Option<Signature>) -> Result<Proof, LogError> {
        let mut nodes = Vec::with_capacity(indexes.len());
        for i in indexes {
            nodes.push(self.require_node(i)?);
        }
        Ok(Proof { nodes, signature })
    }

    /// hypercore's `verifiedBy`: from a stored node, climb to the top of its
    /// complete tree, then walk down the right edge of what is stored. Returns the
    /// leaf end (twice the length) this node's tree proves.
    fn verified_by(&self, index: u64) -> u64 {
        if !self.has_node(index) {
            return 0;
        }
        let mut top = index;
        while top < flat::MAX_NODE && self.has_node(flat::parent(top)) && self.has_node(flat::sibling(top)) {
            top = flat::parent(top);
        }
        let mut end = flat::right_span(top) + 2;
        let mut d = flat::depth(top);
        while d > 0 {
            d -= 1;
            let candidate = flat::index(d, end >> (d + 1));
            if self.has_node(candidate) {
                end = flat::right_span(candidate) + 2;
            }
        }
        end
    }

    /// Verifies block `index` with `data` and `proof` against what we trust (stored
    /// nodes, or the signature over the roots) and stores it.
    ///
    /// Nothing is stored unless everything verifies. Sparse replicas may put blocks
    /// in any order.
    pub fn put(&mut self, index: u64, data: &[u8], proof: &Proof) -> Result<PutOutcome, LogError> {
        self.put_inner(index, Some(data), proof)
    }

    /// Verifies a hash-only reply (the leaf node first in the proof, no data) and
    /// stores the nodes it proves.
    pub fn put_hash(&mut self, index: u64, proof: &Proof) -> Result<PutOutcome, LogError> {
        self.put_inner(index, None, proof)
    }

    fn put_inner(&mut self, index: u64, data: Option<&[u8]>, proof: &Proof) -> Result<PutOutcome, LogError> {
        if index >= flat::MAX_NODE / 2 {
            return Err(reject(index, ProofError::OutOfRange("block index")));
        }
        if proof.nodes.iter().any(|n| n.index >= flat::MAX_NODE) {
            return Err(reject(index, ProofError::OutOfRange("node index")));
        }
        if self.has(index) {
            return Ok(PutOutcome::AlreadyPresent);
        }
        let mut proof_nodes = proof.nodes.iter().peekable();
        let mut top = match data {
            Some(d) => Node::leaf(index, d),
            None => match proof_nodes.next() {
                Some(n) if n.index == 2 * index => *n,
                _ => return Err(reject(index, ProofError::MissingNode { node: 2 * index })),
            },
        };
        // Nodes that become trusted if verification succeeds.
        let mut new_nodes: Vec<Node> = vec![top];
        let mut trusted = false;
        loop {
            if let Some(local) = self.node(top.index)? {
                if local != top {
                    return Err(reject(index, ProofError::ChecksumMismatch { node: top.index }));
                }
                new_nodes.retain(|n| n.index != top.index);
                trusted = true;
                break;
            }
            let sib_index = flat::sibling(top.index);
            let sib = match proof_nodes.peek() {
                Some(n) if n.index == sib_index => {
                    let n = **n;
                    proof_nodes.next();
                    new_nodes.push(n);
                    n
                }
                _ => match self.node(sib_index)? {
                    Some(n) => n,
                    None => break,
                },
            };
            let (l, r) = if sib_index < top.index { (sib, top) } else { (top, sib) };
            top =
                Node::parent_of(&l, &r).ok_or_else(|| reject(index, ProofError::OutOfRange("node size")))?;
            new_nodes.push(top);
        }

        let mut verified_length = None;
        let mut signature = None;
        if !trusted {
            let last = proof.nodes.last().map_or(0, |n| flat::right_span(n.index));
            let verified_by = flat::right_span(top.index).max(last) + 2;
            let remaining: Vec<Node> = proof_nodes.copied().collect();
            let mut roots = Vec::new();
            for r in flat::full_roots(verified_by) {
                if r == top.index {
                    roots.push(top);
                } else if let Some(n) = remaining.iter().find(|n| n.index == r) {
                    roots.push(*n);
                    new_nodes.push(*n);
                } else if let Some(n) = self.node(r)? {
                    roots.push(n);
                } else {
                    return Err(reject(index, ProofError::MissingNode { node: r }));
                }
            }
            let sig = proof.signature.ok_or_else(|| reject(index, ProofError::MissingSignature))?;
            if !self.public_key().verify(&tree_hash(&roots), &sig) {
                return Err(reject(index, ProofError::BadSignature));
            }
            verified_length = Some((verified_by / 2, roots));
            signature = Some(sig);
        }

        // Everything verified: store.
        let offset = match data {
            Some(_) => Some(self.data_offset(index, &new_nodes)?),
            None => None,
        };
        let sync = self.sync_policy();
        self.guarded(|feed| {
            if let (Some(d), Some(off)) = (data, offset) {
                feed.files_mut().data.write(off, d)?;
            }
            for n in &new_nodes {
                feed.files_mut().tree.write(HEADER_LEN + 40 * n.index, &n.encode())?;
            }
            if let (Some(sig), Some((len, _))) = (&signature, &verified_length) {
                feed.files_mut().signatures.write(HEADER_LEN + 64 * (len - 1), &sig.0)?;
            }
            if sync == SyncPolicy::PerBatch {
                feed.files_mut().data.sync()?;
                feed.files_mut().tree.sync()?;
                feed.files_mut().signatures.sync()?;
            }
            for n in &new_nodes {
                feed.bitfield_mut().set_node(n.index);
            }
            if data.is_some() {
                feed.bitfield_mut().set_block(index, true);
            }
            feed.flush_bitfield()?;
            if sync == SyncPolicy::PerBatch {
                feed.files_mut().bitfield.sync()?;
            }
            Ok(())
        })?;
        if let Some((len, roots)) = verified_length {
            self.grow_to(len, roots);
        }
        self.advance_contiguous();
        Ok(PutOutcome::Stored)
    }
}
