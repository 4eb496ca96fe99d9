//! [`Feed::check`]: verify everything a feed stores, without changing it, and
//! [`Feed::repair`]: fix what can be fixed from the feed's own files.

use crate::error::LogError;
use crate::feed::Feed;
use crate::files::HEADER_LEN;
use crate::flat;
use crate::node::Node;

/// At most this many block or node numbers are listed in a report (all are
/// counted).
const LISTED: usize = 100;

/// What [`Feed::check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckReport {
    /// The length the feed proves.
    pub length: u64,
    /// The highest length its files say it signed (equal to `length` unless
    /// entries were lost; then a writer refuses appends).
    pub signed_length: u64,
    /// Blocks below `length` stored here and intact.
    pub intact: u64,
    /// Blocks below `length` not stored here (holes; for a writer, lost).
    pub missing: u64,
    /// Blocks whose stored bytes do not match their leaf hash (first
    /// 100 of them).
    pub damaged_blocks: Vec<u64>,
    /// How many blocks are damaged.
    pub damaged_block_count: u64,
    /// Stored parent nodes that do not match their children (first 100), and how
    /// many in all.
    pub damaged_nodes: Vec<u64>,
    /// How many parent nodes are damaged.
    pub damaged_node_count: u64,
    /// Whether the signature of `length` verifies.
    pub signature_ok: bool,
    /// Older signature slots (of earlier lengths) that hold bytes which do not
    /// verify.
    pub damaged_signatures: Vec<u64>,
    /// Whether the feed is a writer whose secret key is missing or damaged.
    pub secret_key_lost: bool,
}

impl CheckReport {
    /// Whether nothing is wrong. A replica's holes are not damage; a writer's
    /// are (it once held every block).
    pub fn is_healthy(&self, writer: bool) -> bool {
        self.damaged_block_count == 0
            && self.damaged_node_count == 0
            && self.signature_ok
            && self.damaged_signatures.is_empty()
            && self.signed_length == self.length
            && !self.secret_key_lost
            && (!writer || self.missing == 0)
    }
}

impl Feed {
    /// Verifies every stored block against its leaf, every stored parent against
    /// its children and the roots against the signature. Reads everything;
    /// changes nothing.
    pub fn check(&mut self) -> Result<CheckReport, LogError> {
        let mut report = CheckReport {
            length: self.length,
            signed_length: self.recovery.unproven_length.unwrap_or(self.length),
            signature_ok: self.verify().is_ok(),
            secret_key_lost: self.recovery.secret_key.is_some(),
            ..CheckReport::default()
        };
        for i in 0..self.length {
            if !self.has(i) {
                report.missing += 1;
                continue;
            }
            if self.block_intact(i)? {
                report.intact += 1;
            } else {
                report.damaged_block_count += 1;
                if report.damaged_blocks.len() < LISTED {
                    report.damaged_blocks.push(i);
                }
            }
        }
        for slot in 0..self.length.saturating_sub(1) {
            if !self.slot_verifies(slot)? && report.damaged_signatures.len() < LISTED {
                report.damaged_signatures.push(slot);
            }
        }
        for x in (1..2 * self.length).step_by(2) {
            if self.parent_damaged(x)? {
                report.damaged_node_count += 1;
                if report.damaged_nodes.len() < LISTED {
                    report.damaged_nodes.push(x);
                }
            }
        }
        Ok(report)
    }

    /// Whether signature slot `slot` is blank or verifies the roots of length
    /// `slot + 1` (as stored in the tree; a slot whose roots are not stored
    /// counts as fine).
    fn slot_verifies(&mut self, slot: u64) -> Result<bool, LogError> {
        let Some(sig) = self.signature_slot(slot)? else { return Ok(true) };
        match self.roots_of(slot + 1)? {
            Some(roots) => Ok(self.key.verify_roots(&roots, &sig).is_some()),
            // Its roots are not stored (holes): nothing to check it against.
            None => Ok(true),
        }
    }

    fn roots_of(&mut self, length: u64) -> Result<Option<Vec<Node>>, LogError> {
        let mut roots = Vec::new();
        for r in flat::full_roots(2 * length) {
            match self.node(r)? {
                Some(n) => roots.push(n),
                None => return Ok(None),
            }
        }
        Ok(Some(roots))
    }

    fn block_intact(&mut self, index: u64) -> Result<bool, LogError> {
        let Ok((offset, size)) = self.block_range(index) else { return Ok(false) };
        let Some(leaf) = self.node(2 * index)? else { return Ok(false) };
        if size != leaf.size || size > 1 << 32 {
            return Ok(false);
        }
        let len = self.files.data.len()?;
        if offset.checked_add(size).is_none_or(|end| end > len) {
            return Ok(false);
        }
        let data = kappa_storage::RandomAccess::read(&mut self.files.data, offset, size as usize)?;
        Ok(Node::leaf(index, &data) == leaf)
    }

    fn parent_damaged(&mut self, x: u64) -> Result<bool, LogError> {
        let Some(node) = self.node(x)? else { return Ok(false) };
        let Some((l, r)) = flat::children(x) else { return Ok(false) };
        match (self.node(l)?, self.node(r)?) {
            (Some(l), Some(r)) => Ok(Node::parent_of(&l, &r) != Some(node)),
            _ => Ok(false),
        }
    }

    /// Fixes what the feed's own files can fix, after a [`check`](Self::check):
    /// a damaged block becomes a hole (or, when its leaf was the damaged part,
    /// the leaf is rebuilt from the data), and a damaged parent is rebuilt from
    /// its children when the result fits the node above it, or dropped
    /// otherwise, together with the blocks that need it (holes a peer can
    /// fill). Returns how many blocks and nodes it changed.
    pub fn repair(&mut self, report: &CheckReport) -> Result<u64, LogError> {
        let mut changed = 0;
        for &i in &report.damaged_blocks {
            // `get` tells a damaged leaf from damaged data and acts on it.
            let _ = self.get(i)?;
            changed += 1;
        }
        // Parents, once the leaves are settled (a damaged leaf also made its
        // parent look damaged).
        for &x in &report.damaged_nodes {
            if !self.parent_damaged(x)? {
                continue;
            }
            let Some((l, r)) = flat::children(x) else { continue };
            let (Some(l), Some(r)) = (self.node(l)?, self.node(r)?) else { continue };
            let Some(rebuilt) = Node::parent_of(&l, &r) else { continue };
            if self.node_fits(rebuilt)? {
                self.guarded(|f| Ok(f.files.tree.write(HEADER_LEN + 40 * x, &rebuilt.encode())?))?;
                self.cache_node(rebuilt);
            } else {
                // Nothing below x can be trusted: drop the subtree (a peer's
                // proofs bring it back with its blocks).
                let (first, last) = (flat::left_span(x), flat::right_span(x));
                self.guarded(|f| {
                    for y in first..=last {
                        f.bitfield.clear_node(y);
                    }
                    for i in first / 2..=last / 2 {
                        f.bitfield.set_block(i, false);
                    }
                    f.flush_bitfield()
                })?;
                for y in first..=last {
                    self.forget_node(y);
                }
                self.contiguous = self.contiguous.min(first / 2);
                self.read_cache = None;
                self.blocks.clear();
            }
            self.forget_node(x);
            changed += 1;
        }
        for &slot in &report.damaged_signatures {
            // Signing the same roots again gives the same bytes (Ed25519 is
            // deterministic), so a writer restores the original signature; a
            // replica, which needs only the newest one, blanks it.
            let sig = match (self.key_pair.clone(), self.roots_of(slot + 1)?) {
                (Some(kp), Some(roots)) => kp.sign_roots(&roots, self.sign_form).0,
                _ => [0u8; 64],
            };
            self.guarded(|f| Ok(f.files.signatures.write(HEADER_LEN + 64 * slot, &sig)?))?;
            changed += 1;
        }
        Ok(changed)
    }

    /// Whether `node` hashes with its stored sibling to the stored parent, or is
    /// one of the signed roots.
    fn node_fits(&mut self, node: Node) -> Result<bool, LogError> {
        if self.roots.iter().any(|r| r.index == node.index) {
            return Ok(self.roots.contains(&node));
        }
        let (p, s) = (flat::parent(node.index), flat::sibling(node.index));
        let (Some(parent), Some(sibling)) = (self.node(p)?, self.node(s)?) else { return Ok(false) };
        let pair =
            if node.index < s { Node::parent_of(&node, &sibling) } else { Node::parent_of(&sibling, &node) };
        Ok(pair == Some(parent))
    }
}
