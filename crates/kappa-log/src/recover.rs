//! Opening a feed: its identity and its newest signed state, from whatever its
//! files still hold.
//!
//! The rules (docs/semantics.md, "Logs"):
//! - No open path destroys a feed. A missing or damaged `key` is rebuilt from the
//!   head record or the `secret_key`; files that hold entries are never reset.
//! - The length is the highest one the files can *prove*: roots (from `tree` or
//!   the head record) whose signature (from `signatures` or the head record)
//!   verifies. A block under it whose data or nodes are gone is a hole, as in a
//!   sparse replica: served by nobody, fetched back from any peer.
//! - A writer never signs a sequence number twice. When the files say a longer
//!   length was signed than they can prove, the feed refuses appends
//!   ([`LogError::WouldFork`]) until a peer restores the rest
//!   or the loss is accepted ([`Feed::accept_loss`]).

use kappa_storage::RandomAccess;

use crate::crypto::{KeyPair, PublicKey, Signature};
use crate::error::{CorruptError, LogError};
use crate::feed::Feed;
use crate::files::{Files, HEADER_LEN};
use crate::flat;
use crate::head::{Head, SLOT_LEN};
use crate::node::Node;

/// What opening a feed found wrong with its files, and what it did about it.
///
/// A healthy feed has an empty report. See [`Feed::recovery`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovery {
    /// What was rebuilt from a redundant copy (nothing was lost by these), in
    /// words, for a log or a `check` report.
    pub repaired: Vec<String>,
    /// Blocks below the length that this writer no longer holds (their data or
    /// tree nodes are gone or damaged). A peer that holds them can restore them.
    pub missing_blocks: u64,
    /// The highest length the files say this writer signed, when it is more than
    /// they can prove. While set, appends are refused: they would fork the feed.
    pub unproven_length: Option<u64>,
    /// Why this writer cannot sign, when its `secret_key` is missing or damaged.
    /// The feed opens read-only.
    pub secret_key: Option<CorruptError>,
}

impl Recovery {
    /// Whether open found nothing wrong.
    pub fn is_clean(&self) -> bool {
        self.repaired.is_empty()
            && self.missing_blocks == 0
            && self.unproven_length.is_none()
            && self.secret_key.is_none()
    }
}

/// The `secret_key` file, read.
pub(crate) enum Secret {
    Missing,
    /// A complete key pair (its public half matches its seed).
    Valid(KeyPair),
    /// 64 bytes whose public half does not match the seed: the key pair the seed
    /// gives (the public half may be the damaged part).
    SeedOnly(KeyPair),
    Unusable(String),
}

pub(crate) fn read_secret(files: &mut Files) -> Result<Secret, LogError> {
    Ok(match files.secret_key.len()? {
        0 => Secret::Missing,
        64 => {
            let bytes = files.secret_key.read(0, 64)?;
            let mut seed = [0u8; 32];
            seed.copy_from_slice(&bytes[..32]);
            let kp = KeyPair::from_seed(&seed);
            if kp.public_key().as_bytes()[..] == bytes[32..] {
                Secret::Valid(kp)
            } else {
                Secret::SeedOnly(kp)
            }
        }
        n => Secret::Unusable(format!("{n} bytes, expected 64")),
    })
}

/// The newest valid head record and the slot it is in, and whether a slot
/// holds bytes that are not a valid record (then the newest may be lost).
pub(crate) fn read_head(files: &mut Files) -> Result<(Option<(Head, u64)>, bool), LogError> {
    let len = files.head.len()?;
    let mut best: Option<(Head, u64)> = None;
    let mut damaged = false;
    for slot in 0..2u64 {
        let start = slot * SLOT_LEN;
        if len <= start {
            break;
        }
        let n = (len - start).min(SLOT_LEN) as usize;
        let bytes = files.head.read(start, n)?;
        match Head::decode(&bytes) {
            Some(h) => {
                if best.as_ref().is_none_or(|(b, _)| (h.length, h.signed) > (b.length, b.signed)) {
                    best = Some((h, slot));
                }
            }
            None => damaged = true,
        }
    }
    Ok((best, damaged))
}

/// The public key the files agree on. Four copies vote: the key file, the head
/// record, the key the secret key's seed gives and the secret key's public half.
/// A key with more votes than any other wins; with a tie the checksummed head
/// record decides. `Err` when the copies disagree with no way to tell.
pub(crate) fn choose_key(
    key_file: Option<PublicKey>,
    head: Option<&Head>,
    secret: &Secret,
    secret_public_half: Option<PublicKey>,
) -> Result<Option<PublicKey>, ()> {
    let seed_key = match secret {
        Secret::Valid(kp) | Secret::SeedOnly(kp) => Some(kp.public_key()),
        _ => None,
    };
    let head_key = head.map(|h| h.key);
    let sources = [key_file, head_key, seed_key, secret_public_half];
    let votes = |k: PublicKey| sources.iter().filter(|s| **s == Some(k)).count();
    let mut best: Option<(PublicKey, usize)> = None;
    let mut tied = false;
    for k in sources.iter().flatten() {
        let v = votes(*k);
        match best {
            Some((b, bv)) if b == *k || v < bv => {}
            Some((_, bv)) if v == bv => tied = true,
            _ => {
                best = Some((*k, v));
                tied = false;
            }
        }
    }
    match best {
        None => Ok(None),
        Some((k, _)) if !tied => Ok(Some(k)),
        Some(_) => head_key.map(Some).ok_or(()),
    }
}

/// A proven signed state.
struct Proven {
    length: u64,
    roots: Vec<Node>,
    signature: Signature,
}

impl Feed {
    /// A node read straight from the tree file, whatever the bitfield says.
    pub(crate) fn raw_node(&mut self, index: u64) -> Result<Option<Node>, LogError> {
        let at = HEADER_LEN + 40 * index;
        if index >= flat::MAX_NODE || self.files.tree.len()? < at + 40 {
            return Ok(None);
        }
        let mut buf = [0u8; 40];
        self.files.tree.read_into(at, &mut buf)?;
        Ok(Node::decode(index, &buf))
    }

    /// The roots of `length` as the tree file holds them, if it holds them all.
    fn raw_roots(&mut self, length: u64) -> Result<Option<Vec<Node>>, LogError> {
        if length == 0 || length > flat::MAX_NODE / 2 {
            return Ok(None);
        }
        let mut roots = Vec::new();
        for r in flat::full_roots(2 * length) {
            match self.raw_node(r)? {
                Some(n) => roots.push(n),
                None => return Ok(None),
            }
        }
        Ok(Some(roots))
    }

    fn raw_signature(&mut self, slot: u64) -> Result<Option<Signature>, LogError> {
        let at = HEADER_LEN + 64 * slot;
        if slot >= flat::MAX_NODE || self.files.signatures.len()? < at + 64 {
            return Ok(None);
        }
        let mut buf = [0u8; 64];
        self.files.signatures.read_into(at, &mut buf)?;
        let sig = Signature(buf);
        Ok((!sig.is_blank()).then_some(sig))
    }

    /// The state of `length` if the tree file holds its roots and `signature` (or
    /// the one in slot `length − 1`) verifies them.
    fn prove_from_tree(
        &mut self,
        length: u64,
        signature: Option<Signature>,
    ) -> Result<Option<Proven>, LogError> {
        let Some(roots) = self.raw_roots(length)? else { return Ok(None) };
        if roots.iter().try_fold(0u64, |acc, r| acc.checked_add(r.size)).is_none() {
            return Ok(None);
        }
        let candidates = [signature, self.raw_signature(length - 1)?];
        for sig in candidates.into_iter().flatten() {
            if self.key.verify_roots(&roots, &sig).is_some() {
                return Ok(Some(Proven { length, roots, signature: sig }));
            }
        }
        Ok(None)
    }

    fn prove_from_head(&self, head: &Head) -> Option<Proven> {
        let want: Vec<u64> = flat::full_roots(2 * head.length);
        let indices: Vec<u64> = head.roots.iter().map(|r| r.index).collect();
        if head.length == 0 || head.length > flat::MAX_NODE / 2 || want != indices {
            return None;
        }
        head.roots.iter().try_fold(0u64, |acc, r| acc.checked_add(r.size))?;
        self.key.verify_roots(&head.roots, &head.signature).is_some().then(|| Proven {
            length: head.length,
            roots: head.roots.clone(),
            signature: head.signature,
        })
    }

    /// Establishes the length (the highest one the files prove), repairs what a
    /// redundant copy can restore, turns lost blocks into holes, and notes what
    /// it found in [`Feed::recovery`].
    pub(crate) fn recover(&mut self, head: Option<Head>, head_damaged: bool) -> Result<(), LogError> {
        // (`head_slot` was set by open to the slot beside the newest record.)
        let head = head.filter(|h| h.key == self.key);
        let claimed = self.bitfield.verified_length();
        let sig_slots = self.files.signatures.len()?.saturating_sub(HEADER_LEN) / 64;
        let tree_nodes = self.files.tree.len()?.saturating_sub(HEADER_LEN) / 40;

        // The newest provable state.
        let mut best: Option<Proven> = head.as_ref().and_then(|h| self.prove_from_head(h));
        let best_len = |b: &Option<Proven>| b.as_ref().map_or(0, |p| p.length);
        if claimed > best_len(&best) {
            if let Some(p) = self.prove_from_tree(claimed, None)? {
                best = Some(p);
            }
        }
        // A newer signature than both (a crash after the signature, before the
        // bitfield), or, when nothing newer proves, the newest older one.
        let mut slot = sig_slots;
        while slot > best_len(&best) {
            slot -= 1;
            if self.raw_signature(slot)?.is_some() {
                if let Some(p) = self.prove_from_tree(slot + 1, None)? {
                    best = Some(p);
                    break;
                }
            }
        }

        // The highest length the files say was signed: the head record, the
        // bitfield when a signature slot backs it, and what was proven.
        let mut length = best_len(&best);
        let mut signed = length;
        if let Some(h) = &head {
            signed = signed.max(h.length).max(h.signed);
        }
        // The bitfield is written after the tree and the signature, so a claim
        // the other files do not reach is either a power loss without syncs or
        // a damaged bitfield. Without a head record to tell, assume it was
        // signed (refusing appends is safe; a fork is not); with one, a claim
        // past it counts only where the tree or signatures reach it too.
        let reached = sig_slots >= claimed || tree_nodes >= (2 * claimed).saturating_sub(1);
        // The head is current if the data file holds no more than it covers
        // (appends write their data first) and no slot of it is damaged.
        let data_len = self.files.data.len()?;
        let head_current = head.as_ref().is_some_and(|h| {
            let covered: u64 = h.roots.iter().map(|r| r.size).fold(0, u64::saturating_add);
            !head_damaged && data_len <= covered
        });
        if !head_current || reached {
            signed = signed.max(claimed);
        }
        // The newest complete signature is evidence too when it fails only
        // because the tree under it is damaged: an append writes its tree
        // nodes before its signature, so in a crash a complete signature
        // always verifies, and one that tore leaves the tree intact.
        if let Some(last) = self.last_signature_slot(sig_slots)? {
            if last + 1 > signed && !self.tree_consistent(last + 1)? {
                signed = last + 1;
            }
        }
        // A writer whose newest signature is lost but whose tree and data are
        // whole signs the same roots again: Ed25519 is deterministic, so this
        // writes the very bytes it lost, and nothing is signed twice.
        if signed > length {
            if let Some(kp) = self.key_pair.clone() {
                if let Some(roots) = self.whole_tree_consistent(signed)? {
                    let signature = kp.sign_roots(&roots, self.sign_form);
                    best = Some(Proven { length: signed, roots, signature });
                    length = signed;
                    self.recovery.repaired.push(format!(
                        "signature of length {signed} signed again from the intact tree and data"
                    ));
                }
            }
        }
        if signed > length && self.key_pair.is_some() {
            self.recovery.unproven_length = Some(signed);
        }

        let mut repaired = false;
        let mut roots_restored = false;
        if let Some(p) = &best {
            // Restore the signature and roots of the proven state where the files
            // lost them (they are what a peer needs to verify anything).
            if self.raw_signature(p.length - 1)? != Some(p.signature) {
                self.files.signatures.write(HEADER_LEN + 64 * (p.length - 1), &p.signature.0)?;
                self.recovery.repaired.push(format!("signature of length {} restored", p.length));
            }
            let mut restored = 0;
            for r in &p.roots {
                if self.raw_node(r.index)? != Some(*r) {
                    self.files.tree.write(HEADER_LEN + 40 * r.index, &r.encode())?;
                    self.cache_node(*r);
                    restored += 1;
                }
                repaired |= self.bitfield.set_node(r.index);
            }
            if restored > 0 {
                roots_restored = true;
                self.recovery.repaired.push(format!("{restored} root node(s) of length {length} restored"));
            }
        }

        // Nothing beyond the proven length.
        let limit = 2 * length;
        let bits = self.bitfield.data_bits();
        for i in length..bits {
            repaired |= self.bitfield.set_block(i, false);
        }
        for x in 0..2 * bits {
            if self.bitfield.has_node(x) && flat::right_span(x) >= limit {
                repaired |= self.bitfield.clear_node(x);
            }
        }
        // Where the files disagree (the tree file is short, entries were lost,
        // or the bitfield claims less than is proven), the tree bits are set
        // anew from what the tree file holds, trusting a node only if it hashes
        // with its sibling to a trusted parent, down from the proven roots.
        // (A replica's tree is sparse by nature and it can fetch anything
        // again: this is for a writer's own feed.)
        let mut tree_cut = false;
        let own = self.key_pair.is_some() || self.recovery.secret_key.is_some();
        if let Some(p) = best.as_ref().filter(|_| own) {
            // (Lost roots, or a record of lost entries, mean the tree file lost
            // nodes anywhere, even where its length looks whole.)
            let head_lost = head.as_ref().is_some_and(|h| h.signed > h.length);
            let whole = tree_nodes < limit.saturating_sub(1)
                || self.recovery.unproven_length.is_some()
                || roots_restored
                || head_lost;
            // (A torn bitfield page can leave tree bits missing below what the
            // bitfield's own length claims, so any disagreement means all.)
            let from = if whole || claimed != length { Some(0) } else { None };
            if let Some(from) = from {
                let (found, dropped) = self.trust_tree_nodes(&p.roots.clone(), from)?;
                repaired |= found + dropped > 0;
                tree_cut |= dropped > 0;
            }
        }
        // Nodes the bitfield claims past the end of the tree file are gone.
        let root_set: Vec<u64> =
            best.as_ref().map(|p| p.roots.iter().map(|r| r.index).collect()).unwrap_or_default();
        if tree_nodes < limit {
            for x in tree_nodes..limit {
                if !root_set.contains(&x) && self.bitfield.has_node(x) {
                    repaired |= self.bitfield.clear_node(x);
                    tree_cut = true;
                }
            }
        }
        // A data bit without its leaf node was torn apart from its tree bits, or
        // its node is gone.
        for b in 0..self.bitfield.data_bits() / 8 {
            if self.bitfield.data_byte(b) == 0 {
                continue;
            }
            for i in 8 * b..8 * b + 8 {
                if self.bitfield.has_block(i) && !self.bitfield.has_node(2 * i) {
                    repaired |= self.bitfield.set_block(i, false);
                }
            }
        }
        if !repaired && !self.bitfield.index_matches_data() {
            repaired = true;
            self.recovery.repaired.push("bitfield index rebuilt".into());
        }
        self.length = length;
        self.roots = best.as_ref().map(|p| p.roots.clone()).unwrap_or_default();
        self.byte_length = self.roots.iter().map(|r| r.size).sum();

        if self.key_pair.is_some() || self.recovery.secret_key.is_some() {
            repaired |= self.recover_writer_blocks(tree_cut)?;
        }
        if repaired && self.recovery.unproven_length.is_some() {
            // Entries were lost: the bitfield on disk is one of the two records
            // (with the head) of what was signed. Correct it in memory only.
            self.bitfield.rebuild_index();
            self.bitfield.discard_dirty();
        } else if repaired {
            self.recovery.repaired.push("bitfield corrected from the tree and data files".into());
            self.bitfield.rebuild_index();
            self.flush_bitfield()?;
            self.files.bitfield.sync()?;
        } else {
            // Loading only reads; nothing needs writing back.
            self.bitfield.discard_dirty();
        }
        self.contiguous = self.bitfield.contiguous_length();
        if self.key_pair.is_some() || self.recovery.secret_key.is_some() {
            self.recovery.missing_blocks = length - self.bitfield.count_blocks(0, length);
        }

        // Keep the head record current for a writer (it is written with every
        // append; a feed written by JS, or an older kappa-rs, has none yet).
        // When entries were lost, the record is what keeps the refusal to append
        // (the bitfield was just corrected and no longer shows them).
        if self.key_pair.is_some() || self.recovery.secret_key.is_some() {
            let signature = best.as_ref().map_or(Signature([0; 64]), |p| p.signature);
            let current = head.as_ref().is_some_and(|h| {
                h.length == length && h.signature == signature && h.signed == signed.max(length) && h.writer
            });
            // A new writer records that it is one before its first append, so a
            // lost secret key is reported, not mistaken for a replica.
            let first = head.is_none() && self.key_pair.is_some();
            if !current && (best.is_some() || self.recovery.unproven_length.is_some() || first) {
                self.write_head(signature)?;
            }
        }
        Ok(())
    }

    /// The highest signature slot that is not blank.
    fn last_signature_slot(&mut self, slots: u64) -> Result<Option<u64>, LogError> {
        let mut slot = slots;
        while slot > 0 {
            slot -= 1;
            if self.raw_signature(slot)?.is_some() {
                return Ok(Some(slot));
            }
        }
        Ok(None)
    }

    /// Whether the tree file holds the roots of `length` and each agrees with
    /// what is under it (its two children, or for a leaf the data).
    fn tree_consistent(&mut self, length: u64) -> Result<bool, LogError> {
        if length > flat::MAX_NODE / 2 {
            return Ok(false);
        }
        let mut offset = 0u64;
        for r in flat::full_roots(2 * length) {
            let Some(root) = self.raw_node(r)? else { return Ok(false) };
            let fits = match flat::children(r) {
                Some((l, rr)) => match (self.raw_node(l)?, self.raw_node(rr)?) {
                    (Some(a), Some(b)) => Node::parent_of(&a, &b) == Some(root),
                    _ => false,
                },
                None => {
                    let len = self.files.data.len()?;
                    offset.checked_add(root.size).is_some_and(|end| end <= len)
                        && root.size <= 1 << 32
                        && Node::leaf(r / 2, &self.files.data.read(offset, root.size as usize)?) == root
                }
            };
            if !fits {
                return Ok(false);
            }
            offset = offset.saturating_add(root.size);
        }
        Ok(true)
    }

    /// Sets the tree bits of nodes at index `from` and beyond, under `roots`, to
    /// whether the tree file holds a node there that can be trusted: one that
    /// hashes with its sibling to a trusted parent (the roots are trusted).
    /// Returns how many bits were set and cleared.
    fn trust_tree_nodes(&mut self, roots: &[Node], from: u64) -> Result<(u64, u64), LogError> {
        let (mut found, mut dropped) = (0u64, 0u64);
        let mut stack: Vec<(Node, u64)> = Vec::new();
        let mut offset = 0u64;
        for r in roots {
            stack.push((*r, offset));
            offset = offset.saturating_add(r.size);
        }
        while let Some((x, at)) = stack.pop() {
            if flat::right_span(x.index) < from {
                continue;
            }
            found += u64::from(self.bitfield.set_node(x.index));
            let Some((l, r)) = flat::children(x.index) else { continue };
            let (left, right) = (self.raw_node(l)?, self.raw_node(r)?);
            let pair = match (left, right) {
                (Some(a), Some(b)) if Node::parent_of(&a, &b) == Some(x) => Some((a, b)),
                // Two leaves: one lost or damaged is rebuilt from the data when
                // the other one and the parent pin its size and hash.
                _ if flat::depth(x.index) == 1 => self.rebuild_leaf_pair(x, at, left, right)?,
                _ => None,
            };
            match pair {
                Some((a, b)) => {
                    stack.push((a, at));
                    stack.push((b, at.saturating_add(a.size)));
                }
                None => {
                    // Nothing below x can be trusted.
                    for y in flat::left_span(x.index).max(from)..=flat::right_span(x.index) {
                        if y != x.index && self.bitfield.has_node(y) {
                            dropped += u64::from(self.bitfield.clear_node(y));
                        }
                    }
                }
            }
        }
        Ok((found, dropped))
    }

    /// The two leaves under `parent` (whose data starts at `at`), keeping one
    /// stored leaf and rebuilding the other from the data, if that fits the
    /// parent. The rebuilt leaf is written to the tree file.
    fn rebuild_leaf_pair(
        &mut self,
        parent: Node,
        at: u64,
        left: Option<Node>,
        right: Option<Node>,
    ) -> Result<Option<(Node, Node)>, LogError> {
        let data_len = self.files.data.len()?;
        let (l, r) = (
            flat::children(parent.index).map_or(0, |c| c.0),
            flat::children(parent.index).map_or(0, |c| c.1),
        );
        let read_leaf =
            |feed: &mut Feed, index: u64, offset: u64, size: u64| -> Result<Option<Node>, LogError> {
                if offset.checked_add(size).is_none_or(|end| end > data_len) || size > 1 << 32 {
                    return Ok(None);
                }
                Ok(Some(Node::leaf(index / 2, &feed.files.data.read(offset, size as usize)?)))
            };
        if let Some(a) = left {
            if let Some(size) = parent.size.checked_sub(a.size) {
                if let Some(b) = read_leaf(self, r, at.saturating_add(a.size), size)? {
                    if Node::parent_of(&a, &b) == Some(parent) {
                        self.files.tree.write(HEADER_LEN + 40 * r, &b.encode())?;
                        self.cache_node(b);
                        self.recovery.repaired.push(format!("leaf node {r} rebuilt from the data file"));
                        return Ok(Some((a, b)));
                    }
                }
            }
        }
        if let Some(b) = right {
            if let Some(size) = parent.size.checked_sub(b.size) {
                if let Some(a) = read_leaf(self, l, at, size)? {
                    if Node::parent_of(&a, &b) == Some(parent) {
                        self.files.tree.write(HEADER_LEN + 40 * l, &a.encode())?;
                        self.cache_node(a);
                        self.recovery.repaired.push(format!("leaf node {l} rebuilt from the data file"));
                        return Ok(Some((a, b)));
                    }
                }
            }
        }
        Ok(None)
    }

    /// The roots of `length` if the whole tree under them agrees with itself and
    /// with the data file: then they are exactly what was signed.
    fn whole_tree_consistent(&mut self, length: u64) -> Result<Option<Vec<Node>>, LogError> {
        let Some(roots) = self.raw_roots(length)? else { return Ok(None) };
        let data_len = self.files.data.len()?;
        let mut stack = Vec::new();
        let mut offset = 0u64;
        for r in &roots {
            stack.push((*r, offset));
            offset = offset.saturating_add(r.size);
        }
        while let Some((x, at)) = stack.pop() {
            match flat::children(x.index) {
                Some((l, r)) => match (self.raw_node(l)?, self.raw_node(r)?) {
                    (Some(a), Some(b)) if Node::parent_of(&a, &b) == Some(x) => {
                        stack.push((a, at));
                        stack.push((b, at.saturating_add(a.size)));
                    }
                    _ => return Ok(None),
                },
                None => {
                    if at.checked_add(x.size).is_none_or(|end| end > data_len) || x.size > 1 << 32 {
                        return Ok(None);
                    }
                    if Node::leaf(x.index / 2, &self.files.data.read(at, x.size as usize)?) != x {
                        return Ok(None);
                    }
                }
            }
        }
        Ok(Some(roots))
    }

    /// A writer's own blocks: take back those the bitfield lost whose data and
    /// leaf are intact, and make holes of those whose data lies past the end of
    /// the data file or whose proof needs a node that is gone.
    fn recover_writer_blocks(&mut self, tree_cut: bool) -> Result<bool, LogError> {
        let length = self.length;
        let data_len = self.files.data.len()?;
        let mut repaired = false;
        let present = self.bitfield.count_blocks(0, length);
        if present < length {
            let mut restored = 0u64;
            for i in 0..length {
                if self.bitfield.has_block(i) || !self.bitfield.has_node(2 * i) {
                    continue;
                }
                let Ok(offset) = self.data_offset(i, &[]) else { continue };
                let Some(leaf) = self.node(2 * i)? else { continue };
                if offset.checked_add(leaf.size).is_none_or(|end| end > data_len) || leaf.size > 1 << 32 {
                    continue;
                }
                let data = self.files.data.read(offset, leaf.size as usize)?;
                if Node::leaf(i, &data) == leaf {
                    self.bitfield.set_block(i, true);
                    restored += 1;
                }
            }
            if restored > 0 {
                repaired = true;
                self.recovery
                    .repaired
                    .push(format!("{restored} block(s) missing from the bitfield restored"));
            }
        }
        if data_len < self.byte_length {
            // Blocks whose bytes lie past the end of the data file.
            let mut lost = 0u64;
            let mut i = length;
            while i > 0 {
                i -= 1;
                if !self.bitfield.has_block(i) {
                    continue;
                }
                let Ok(offset) = self.data_offset(i, &[]) else { break };
                let size = self.node(2 * i)?.map_or(0, |n| n.size);
                if offset.saturating_add(size) <= data_len {
                    break;
                }
                self.bitfield.set_block(i, false);
                lost += 1;
            }
            repaired |= lost > 0;
        }
        if tree_cut {
            repaired |= self.rebuild_leaves(data_len)?;
            // The tree file lost nodes: a block whose proof needs one of them
            // cannot be served.
            for i in 0..length {
                if self.bitfield.has_block(i) && !self.proof_path_present(i) {
                    self.bitfield.set_block(i, false);
                    repaired = true;
                }
            }
        }
        Ok(repaired)
    }

    /// Rebuilds lost leaf nodes from the data file where the parent and the
    /// sibling are still stored: the leaf's size is the parent's less the
    /// sibling's, its hash that of the bytes there, and the rebuilt leaf must
    /// hash with its sibling to the stored parent.
    fn rebuild_leaves(&mut self, data_len: u64) -> Result<bool, LogError> {
        let mut rebuilt = 0u64;
        for i in 0..self.length {
            let x = 2 * i;
            if self.bitfield.has_node(x) {
                continue;
            }
            let (p, s) = (flat::parent(x), flat::sibling(x));
            let (Some(parent), Some(sibling)) = (self.node(p)?, self.node(s)?) else { continue };
            let Some(size) = parent.size.checked_sub(sibling.size) else { continue };
            let Ok(offset) = self.data_offset(i, &[]) else { continue };
            if offset.checked_add(size).is_none_or(|end| end > data_len) || size > 1 << 32 {
                continue;
            }
            let leaf = Node::leaf(i, &self.files.data.read(offset, size as usize)?);
            let (l, r) = if x < s { (leaf, sibling) } else { (sibling, leaf) };
            if Node::parent_of(&l, &r) == Some(parent) {
                self.files.tree.write(HEADER_LEN + 40 * x, &leaf.encode())?;
                self.cache_node(leaf);
                self.bitfield.set_node(x);
                self.bitfield.set_block(i, true);
                rebuilt += 1;
            }
        }
        if rebuilt > 0 {
            self.recovery.repaired.push(format!("{rebuilt} lost leaf node(s) rebuilt from the data file"));
        }
        Ok(rebuilt > 0)
    }

    /// Whether every node from block `index`'s leaf up to its root, and every
    /// sibling on the way, is stored.
    fn proof_path_present(&self, index: u64) -> bool {
        let roots = flat::full_roots(2 * self.length);
        let mut x = 2 * index;
        loop {
            if !self.bitfield.has_node(x) {
                return false;
            }
            if roots.contains(&x) {
                return true;
            }
            if !self.bitfield.has_node(flat::sibling(x)) {
                return false;
            }
            x = flat::parent(x);
            if x >= flat::MAX_NODE {
                return false;
            }
        }
    }

    /// Writes the head record of the current state (signed by `signature`) into
    /// the slot not holding the newest one, so a torn write keeps the previous.
    pub(crate) fn write_head(&mut self, signature: Signature) -> Result<(), LogError> {
        // This record supersedes one an append left for later.
        self.head_pending = None;
        let head = Head {
            key: self.key,
            writer: self.key_pair.is_some() || self.recovery.secret_key.is_some(),
            length: self.length,
            signed: self.recovery.unproven_length.unwrap_or(self.length).max(self.length),
            signature,
            roots: self.roots.clone(),
        };
        let bytes = head.encode();
        self.files.head.write(self.head_slot * SLOT_LEN, &bytes)?;
        self.head_slot ^= 1;
        Ok(())
    }

    /// Gives up the entries this writer signed but can no longer prove
    /// ([`Recovery::unproven_length`]), so it can append again. Returns how many
    /// were given up (0 if none).
    ///
    /// This is the one way to sign a sequence number a second time: peers that
    /// hold the lost entries will see the new ones as a fork and refuse them.
    /// Prefer restoring the feed from a peer that holds it (replicating into it
    /// fills what is missing and lifts the refusal by itself).
    pub fn accept_loss(&mut self) -> Result<u64, LogError> {
        let Some(signed) = self.recovery.unproven_length else { return Ok(0) };
        let length = self.length;
        let signature = self.signature()?;
        self.recovery.unproven_length = None;
        self.guarded(|f| {
            f.files.signatures.truncate(HEADER_LEN + 64 * length)?;
            f.files.tree.truncate(HEADER_LEN + 40 * (2 * length).saturating_sub(1))?;
            f.files.data.truncate(f.byte_length)?;
            f.blocks.clear();
            // The bitfield on disk was kept as it was, as a record of what was
            // signed: now it says what is left.
            f.files.bitfield.truncate(HEADER_LEN)?;
            for (p, page) in f.bitfield.all_pages() {
                f.files.bitfield.write(HEADER_LEN + (crate::bitfield::PAGE_SIZE * p) as u64, &page)?;
            }
            f.bitfield.discard_dirty();
            f.bitfield.set_all_written();
            match signature {
                Some(sig) => {
                    f.files.head.truncate(0)?;
                    f.head_slot = 0;
                    f.write_head(sig)?;
                }
                None => f.files.head.truncate(0)?,
            }
            f.sync_files()
        })?;
        self.recovery.missing_blocks = length - self.bitfield.count_blocks(0, length);
        Ok(signed - length)
    }

    /// After a verified put grew a writer's feed: keep its head record current,
    /// and lift the refusal to append once everything it signed is back.
    pub(crate) fn after_growth(&mut self, signature: Signature) -> Result<(), LogError> {
        if self.key_pair.is_none() {
            return Ok(());
        }
        if self.recovery.unproven_length.is_some_and(|signed| self.length >= signed) {
            self.recovery.unproven_length = None;
        }
        self.write_head(signature)
    }

    /// What open found wrong with this feed's files, and what it did about it.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// Whether this feed should download its own blocks from peers: a replica
    /// always does; a writer only to fill holes or restore what it signed.
    pub fn wants_blocks(&self) -> bool {
        self.key_pair.is_none() || !self.is_complete() || self.recovery.unproven_length.is_some()
    }
}

/// The error for a writer that must not append.
pub(crate) fn would_fork(recovery: &Recovery, length: u64) -> Option<LogError> {
    if let Some(signed) = recovery.unproven_length {
        return Some(LogError::WouldFork { signed, length });
    }
    recovery.secret_key.clone().map(LogError::SecretKey)
}

/// Rebuilds a missing or damaged `key` file with the chosen key.
pub(crate) fn restore_key_file(files: &mut Files, key: &PublicKey) -> Result<bool, LogError> {
    let current = match files.key.len()? {
        32 => Some(files.key.read(0, 32)?),
        _ => None,
    };
    if current.as_deref() == Some(&key.as_bytes()[..]) {
        return Ok(false);
    }
    files.key.truncate(0)?;
    files.key.write(0, key.as_bytes())?;
    files.key.sync()?;
    Ok(true)
}

/// `CorruptError` for the secret key file.
pub(crate) fn secret_problem(reason: impl Into<String>) -> CorruptError {
    CorruptError { file: "secret_key", reason: reason.into() }
}
