//! Proofs: what an uploader sends with a block, and how a downloader checks it
//! (spec §3.11).

use crate::crypto::{Signature, SignatureForm};
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

/// What an uploader knows a peer has: the tree nodes the peer claimed in digests
/// or was sent in proofs (hypercore's per-peer `remoteTree`). Proofs for that peer
/// then leave those nodes out, so most proofs are a node or two and need no
/// signature. Keep one per peer per feed, and use it only on an ordered stream
/// whose receiver stores every proof node it is sent (as [`Feed::put`] does).
#[derive(Debug, Clone, Default)]
pub struct RemoteTree {
    bits: Vec<u64>,
    /// Bits set since [`begin`](RemoteTree::begin), while one is open.
    journal: Option<Vec<u64>>,
}

/// Nodes past this index are not remembered (they are simply sent again).
const REMOTE_TREE_MAX: u64 = 1 << 34;

impl RemoteTree {
    /// Knows nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the peer has node `x`.
    pub fn has(&self, x: u64) -> bool {
        let (w, b) = ((x / 64) as usize, x % 64);
        self.bits.get(w).is_some_and(|word| word & (1 << b) != 0)
    }

    fn set_bit(&mut self, x: u64) -> bool {
        if x >= REMOTE_TREE_MAX {
            return false;
        }
        let (w, b) = ((x / 64) as usize, x % 64);
        if self.bits.len() <= w {
            self.bits.resize(w + 1, 0);
        }
        let was = self.bits[w] & (1 << b) != 0;
        self.bits[w] |= 1 << b;
        if !was {
            if let Some(j) = &mut self.journal {
                j.push(x);
            }
        }
        !was
    }

    /// Starts remembering what is recorded from now on, so that a proof made
    /// and then not sent can be taken back ([`rollback`](Self::rollback));
    /// [`commit`](Self::commit) keeps it.
    pub fn begin(&mut self) {
        self.journal = Some(Vec::new());
    }

    /// Keeps what was recorded since [`begin`](Self::begin).
    pub fn commit(&mut self) {
        self.journal = None;
    }

    /// Forgets what was recorded since [`begin`](Self::begin) (the proof was
    /// not sent).
    pub fn rollback(&mut self) {
        for x in self.journal.take().unwrap_or_default() {
            let (w, b) = ((x / 64) as usize, x % 64);
            if let Some(word) = self.bits.get_mut(w) {
                *word &= !(1 << b);
            }
        }
    }

    /// Records that the peer has node `x`, and every parent whose two children
    /// it then has.
    pub fn set(&mut self, x: u64) {
        if !self.set_bit(x) {
            return;
        }
        let mut i = x;
        while self.has(flat::sibling(i)) {
            i = flat::parent(i);
            if !self.set_bit(i) {
                break;
            }
        }
    }
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
        // A writer's own missing block was lost to damage, and so may be the
        // nodes around it: ask for a full proof, checked against the signature.
        let own = self.is_writable() || self.recovery().secret_key.is_some();
        if own && !self.has(index) {
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
        self.proof_for(index, digest, hash_only, &mut RemoteTree::new())
    }

    /// Like [`proof`](Self::proof), but also leaves out the nodes `remote` says the
    /// peer has, and records in `remote` what this proof gives it.
    pub fn proof_for(
        &mut self,
        index: u64,
        digest: u64,
        hash_only: bool,
        remote: &mut RemoteTree,
    ) -> Result<Proof, LogError> {
        self.proof_and_slot(index, digest, hash_only, remote).map(|(p, _)| p)
    }

    /// Like [`proof_for`](Self::proof_for), and the signature slot the proof's
    /// signature comes from (`None` when it carries none): the signature is
    /// over the roots of length `slot + 1` (see
    /// [`signature_form_at`](Self::signature_form_at)).
    pub fn proof_and_slot(
        &mut self,
        index: u64,
        digest: u64,
        hash_only: bool,
        remote: &mut RemoteTree,
    ) -> Result<(Proof, Option<u64>), LogError> {
        if !self.has(index) {
            return Err(LogError::BlockNotAvailable { index, length: self.len() });
        }
        let x = 2 * index;
        let mut wanted: Vec<u64> = Vec::new();
        if hash_only {
            wanted.push(x);
        }
        if digest == 1 {
            return Ok((self.load_proof(wanted, None)?, None));
        }
        self.note_digest(x, digest, remote);

        let mut next = x;
        let mut used_slot = None;
        let result = loop {
            if remote.has(next) || next >= flat::MAX_NODE {
                break self.load_proof(wanted, None);
            }
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
                used_slot = signature.is_some().then_some(slot);
                for r in flat::full_roots(end) {
                    if r != next && !remote.has(r) && !wanted.contains(&r) {
                        wanted.push(r);
                    }
                }
                break self.load_proof(wanted, signature);
            }
            if !remote.has(sib) {
                wanted.push(sib);
            }
            next = flat::parent(next);
        };
        // The peer will hold the leaf and everything this proof carries.
        if let Ok(p) = &result {
            remote.set(x);
            for n in &p.nodes {
                remote.set(n.index);
            }
        }
        Ok((result?, used_slot))
    }

    /// Records in `remote` the nodes a requester's `digest` for leaf `x` says
    /// it has.
    fn note_digest(&self, x: u64, digest: u64, remote: &mut RemoteTree) {
        let has_root = digest & 1 == 1;
        let mut d = digest >> 1;
        let mut next = x;
        while d != 0 && next < flat::MAX_NODE {
            if d == 1 && has_root {
                if self.has_node(next) {
                    remote.set(next);
                }
                if flat::sibling(next) < next {
                    next = flat::sibling(next);
                }
                for r in flat::full_roots(flat::right_span(next) + 2) {
                    if self.has_node(r) {
                        remote.set(r);
                    }
                }
                break;
            }
            let sib = flat::sibling(next);
            if d & 1 == 1 && self.has_node(sib) {
                remote.set(sib);
            }
            next = flat::parent(next);
            d >>= 1;
        }
    }

    /// The form of the signature in slot `length − 1` over the roots of the
    /// state of length `length`: `None` if that slot is blank, a root of that
    /// state is not stored here, or the signature does not verify.
    pub fn signature_form_at(&mut self, length: u64) -> Result<Option<SignatureForm>, LogError> {
        if length == 0 || length > self.len() {
            return Ok(None);
        }
        let Some(sig) = self.signature_slot(length - 1)? else { return Ok(None) };
        let mut roots = Vec::new();
        for r in flat::full_roots(2 * length) {
            if !self.has_node(r) {
                return Ok(None);
            }
            roots.push(self.require_node(r)?);
        }
        Ok(self.sig_memo.verify_roots(&self.key, &roots, &sig))
    }

    /// The newest length in `above + 1 ..= len()` whose state is signed in
    /// `form` (see [`signature_form_at`](Self::signature_form_at)), looked at
    /// newest first. A hypercore 8 peer can verify the states signed in
    /// [`SignatureForm::TreeHash`] only.
    pub fn newest_length_signed_in(
        &mut self,
        form: SignatureForm,
        above: u64,
    ) -> Result<Option<u64>, LogError> {
        let mut n = self.len();
        while n > above {
            if self.signature_form_at(n)? == Some(form) {
                return Ok(Some(n));
            }
            n -= 1;
        }
        Ok(None)
    }

    /// A proof of block `index` against the older (or current) state of
    /// length `length`, with that state's signature (slot `length − 1`),
    /// leaving out what `remote` and the requester's `digest` say it has: what
    /// a peer that can verify only that state's signature can check (a
    /// hypercore 8 peer, when newer states are signed in the 40-byte form).
    /// `None` when this feed cannot make it: `index` is not below `length`,
    /// the slot is blank, or a node of the way is not stored (a sparse
    /// replica).
    pub fn proof_at(
        &mut self,
        index: u64,
        digest: u64,
        hash_only: bool,
        remote: &mut RemoteTree,
        length: u64,
    ) -> Result<Option<Proof>, LogError> {
        if !self.has(index) {
            return Err(LogError::BlockNotAvailable { index, length: self.len() });
        }
        if index >= length || length > self.len() {
            return Ok(None);
        }
        let x = 2 * index;
        let mut wanted: Vec<u64> = Vec::new();
        if hash_only {
            wanted.push(x);
        }
        let end = 2 * length;
        let mut signature = None;
        if digest == 1 {
            return Ok(Some(self.load_proof(wanted, None)?));
        }
        self.note_digest(x, digest, remote);
        let mut next = x;
        while !remote.has(next) && next < flat::MAX_NODE {
            let sib = flat::sibling(next);
            if flat::right_span(sib) >= end {
                // `next` is a root of that state: add its other roots and the
                // state's signature.
                let Some(sig) = self.signature_slot(length - 1)? else { return Ok(None) };
                for r in flat::full_roots(end) {
                    if r != next && !remote.has(r) && !wanted.contains(&r) {
                        if !self.has_node(r) {
                            return Ok(None);
                        }
                        wanted.push(r);
                    }
                }
                signature = Some(sig);
                break;
            }
            if !self.has_node(sib) {
                return Ok(None);
            }
            if !remote.has(sib) {
                wanted.push(sib);
            }
            next = flat::parent(next);
        }
        let proof = self.load_proof(wanted, signature)?;
        remote.set(x);
        for n in &proof.nodes {
            remote.set(n.index);
        }
        Ok(Some(proof))
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
        self.put_inner(index, Some(data), proof, false)
    }

    /// Like [`put`](Self::put), but without [`SyncPolicy::PerBatch`] leaves the
    /// bitfield pages to [`flush_deferred`](Self::flush_deferred), so a burst of
    /// downloads writes each page once. Until then, a crash forgets those blocks
    /// (the bitfield is the commit point), which is what `SyncPolicy::None`
    /// allows anyway.
    pub fn put_deferred(&mut self, index: u64, data: &[u8], proof: &Proof) -> Result<PutOutcome, LogError> {
        self.put_inner(index, Some(data), proof, self.sync_policy() == SyncPolicy::None)
    }

    /// Verifies a hash-only reply (the leaf node first in the proof, no data) and
    /// stores the nodes it proves.
    pub fn put_hash(&mut self, index: u64, proof: &Proof) -> Result<PutOutcome, LogError> {
        self.put_inner(index, None, proof, false)
    }

    fn put_inner(
        &mut self,
        index: u64,
        data: Option<&[u8]>,
        proof: &Proof,
        defer: bool,
    ) -> Result<PutOutcome, LogError> {
        if index >= flat::MAX_NODE / 2 {
            return Err(reject(index, ProofError::OutOfRange("block index")));
        }
        if proof.nodes.iter().any(|n| n.index >= flat::MAX_NODE) {
            return Err(reject(index, ProofError::OutOfRange("node index")));
        }
        let present = self.has(index);
        let mut proof_nodes = proof.nodes.iter().peekable();
        let mut top = match data {
            Some(d) => Node::leaf(index, d),
            None => match proof_nodes.next() {
                Some(n) if n.index == 2 * index => *n,
                _ => return Err(reject(index, ProofError::MissingNode { node: 2 * index })),
            },
        };
        // Walk up from the leaf. Nodes computed from proof input are `pending`
        // until they meet a node we already trust (then they are `proven`) or the
        // signed roots. We keep walking past a trusted node while the proof offers
        // more siblings, so a proof's nodes are stored even for a block we hold
        // (uploaders leave out nodes they sent before, expecting us to keep them).
        let mut proven: Vec<Node> = Vec::new();
        let mut pending: Vec<Node> = vec![top];
        let mut trusted_any = false;
        // Local nodes that disagreed with what the data computes, for a block we
        // do not hold: our copy may be the damaged one. The walk goes on above
        // them and they are replaced only if the block then verifies against a
        // trusted node higher up or the signature; otherwise the block is
        // rejected as before.
        let mut mismatched: Vec<u64> = Vec::new();
        loop {
            if let Some(local) = self.node(top.index)? {
                if local != top && !present {
                    mismatched.push(top.index);
                } else if local != top {
                    return Err(reject(index, ProofError::ChecksumMismatch { node: top.index }));
                } else {
                    pending.retain(|n| n.index != top.index);
                    proven.append(&mut pending);
                    trusted_any = true;
                    let offers_sibling =
                        matches!(proof_nodes.peek(), Some(n) if n.index == flat::sibling(top.index));
                    if !offers_sibling {
                        break;
                    }
                }
            }
            let sib_index = flat::sibling(top.index);
            let sib = match proof_nodes.peek() {
                Some(n) if n.index == sib_index => {
                    let n = **n;
                    proof_nodes.next();
                    pending.push(n);
                    n
                }
                _ => match self.node(sib_index)? {
                    Some(n) => n,
                    None if mismatched.is_empty() => break,
                    // Our own nodes disagreed below: only a complete path to the
                    // signature can settle it.
                    None => return Err(reject(index, ProofError::MissingNode { node: sib_index })),
                },
            };
            let (l, r) = if sib_index < top.index { (sib, top) } else { (top, sib) };
            top =
                Node::parent_of(&l, &r).ok_or_else(|| reject(index, ProofError::OutOfRange("node size")))?;
            pending.push(top);
        }

        let mut verified_length = None;
        let mut signature = None;
        if !pending.is_empty() {
            match proof.signature {
                None if trusted_any => {
                    // The block itself is proven; the proof's extra nodes above are
                    // not, so they are not stored.
                    pending.clear();
                }
                None => return Err(reject(index, ProofError::MissingSignature)),
                Some(sig) => {
                    let last = proof.nodes.last().map_or(0, |n| flat::right_span(n.index));
                    let verified_by = flat::right_span(top.index).max(last) + 2;
                    let remaining: Vec<Node> = proof_nodes.copied().collect();
                    let mut roots = Vec::new();
                    for r in flat::full_roots(verified_by) {
                        if r == top.index {
                            roots.push(top);
                        } else if let Some(n) = remaining.iter().find(|n| n.index == r) {
                            roots.push(*n);
                            pending.push(*n);
                        } else if let Some(n) = self.node(r)? {
                            roots.push(n);
                        } else {
                            return Err(reject(index, ProofError::MissingNode { node: r }));
                        }
                    }
                    if self.sig_memo.verify_roots(&self.key, &roots, &sig).is_none() {
                        return Err(reject(index, ProofError::BadSignature));
                    }
                    proven.append(&mut pending);
                    verified_length = Some((verified_by / 2, roots));
                    signature = Some(sig);
                }
            }
        }
        if !trusted_any && verified_length.is_none() {
            if let Some(&node) = mismatched.first() {
                return Err(reject(index, ProofError::ChecksumMismatch { node }));
            }
            return Err(reject(index, ProofError::MissingSignature));
        }
        if !mismatched.iter().all(|m| proven.iter().any(|n| n.index == *m)) {
            return Err(reject(index, ProofError::ChecksumMismatch { node: mismatched[0] }));
        }
        // Everything the proof established places the block too (a local node
        // it would otherwise read may be the one that is lost).
        // What a proof establishes is one path and the roots, about 130 nodes
        // at most: a linear check for repeats costs less than a set.
        let mut new_nodes: Vec<Node> = Vec::with_capacity(proven.len());
        for n in &proven {
            let fresh = !self.has_node(n.index) || mismatched.contains(&n.index);
            if fresh && !new_nodes.iter().any(|m| m.index == n.index) {
                new_nodes.push(*n);
            }
        }
        let established = proven;
        if present && new_nodes.is_empty() && verified_length.is_none() {
            return Ok(PutOutcome::AlreadyPresent);
        }
        let data = if present { None } else { data };

        // Everything verified: store.
        let offset = match data {
            Some(_) => Some(self.data_offset(index, &established)?),
            None => None,
        };
        let sync = self.sync_policy();
        self.guarded(|feed| {
            let sig_slot = match (&signature, &verified_length) {
                (Some(sig), Some((len, _))) => Some((len - 1, *sig)),
                _ => None,
            };
            if defer {
                // Written (coalesced) by flush_deferred, before the bitfield.
                feed.hold_writes(data.zip(offset).map(|(d, o)| (o, d)), &new_nodes, sig_slot)?;
            } else {
                feed.drop_read_cache();
                if let (Some(d), Some(off)) = (data, offset) {
                    feed.files_mut().data.write(off, d)?;
                }
                for n in &new_nodes {
                    feed.files_mut().tree.write(HEADER_LEN + 40 * n.index, &n.encode())?;
                }
                if let Some((slot, sig)) = sig_slot {
                    feed.files_mut().signatures.write(HEADER_LEN + 64 * slot, &sig.0)?;
                }
            }
            if sync == SyncPolicy::PerBatch && !defer {
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
            if defer {
                feed.defer_bitfield();
            } else {
                feed.flush_bitfield()?;
                if sync == SyncPolicy::PerBatch {
                    feed.files_mut().bitfield.sync()?;
                }
            }
            Ok(())
        })?;
        for &m in &mismatched {
            self.forget_node(m);
        }
        for n in &new_nodes {
            // A node dropped earlier may still sit in the cache.
            self.cache_node(*n);
        }
        if let Some((len, roots)) = verified_length {
            self.grow_to(len, roots);
            if let Some(sig) = signature {
                self.guarded(|f| f.after_growth(sig))?;
            }
        }
        self.advance_contiguous();
        Ok(if present { PutOutcome::AlreadyPresent } else { PutOutcome::Stored })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_tree_shortens_sequential_proofs() {
        let mut w = Feed::in_memory().unwrap();
        w.append_batch((0..100u32).map(|i| i.to_be_bytes())).unwrap();
        let mut remote = RemoteTree::new();
        let first = w.proof_for(0, 0, false, &mut remote).unwrap();
        assert!(first.signature.is_some());
        let mut total = 0;
        for i in 1..100 {
            let p = w.proof_for(i, 0, false, &mut remote).unwrap();
            assert!(p.signature.is_none(), "block {i} needed a signature");
            total += p.nodes.len();
        }
        assert!(total < 120, "{total} nodes for 99 sequential proofs");
    }
}
