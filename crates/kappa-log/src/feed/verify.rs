//! Verifying a feed: its signature and its stored blocks.

use super::*;

impl Feed {
    // ----- verification ------------------------------------------------------

    /// Verifies the signature of the current state: the stored roots of
    /// [`len`](Self::len) against the signature in slot `len − 1`.
    pub fn verify(&mut self) -> Result<(), LogError> {
        if self.length == 0 {
            return Ok(());
        }
        let sig = self.signature()?.ok_or_else(|| CorruptError {
            file: "signatures",
            reason: format!("no signature for length {}", self.length),
        })?;
        if self.key.verify_roots(&self.roots, &sig).is_none() {
            return Err(
                CorruptError { file: "signatures", reason: "signature does not verify".into() }.into()
            );
        }
        Ok(())
    }

    /// Verifies everything stored: every present block hashes to its leaf, every
    /// stored parent to its children, and the roots to the signature. Returns the
    /// number of blocks checked.
    pub fn audit(&mut self) -> Result<u64, LogError> {
        self.verify()?;
        let mut checked = 0;
        for i in 0..self.length {
            if !self.has(i) {
                continue;
            }
            let data = self.try_get(i)?;
            let leaf = self.require_node(2 * i)?;
            if Node::leaf(i, &data) != leaf {
                return Err(CorruptError {
                    file: "data",
                    reason: format!("block {i} does not match its hash"),
                }
                .into());
            }
            checked += 1;
        }
        for x in (1..2 * self.length).step_by(2) {
            if !self.has_node(x) {
                continue;
            }
            let Some((l, r)) = flat::children(x) else { continue };
            if let (Some(l), Some(r)) = (self.node(l)?, self.node(r)?) {
                let want = Node::parent_of(&l, &r);
                if want.as_ref() != self.node(x)?.as_ref() {
                    return Err(CorruptError {
                        file: "tree",
                        reason: format!("node {x} does not match its children"),
                    }
                    .into());
                }
            }
        }
        Ok(checked)
    }
}
