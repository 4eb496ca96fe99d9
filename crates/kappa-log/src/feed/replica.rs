//! What replication (`put`, recovery) needs of a feed: raw access to its
//! files and bitfield, growing it, and holding writes back.

use super::*;

impl Feed {
    pub(crate) fn files_mut(&mut self) -> &mut Files {
        &mut self.files
    }

    pub(crate) fn bitfield_mut(&mut self) -> &mut Bitfield {
        &mut self.bitfield
    }

    /// Adopts a longer verified length with its roots.
    pub(crate) fn grow_to(&mut self, length: u64, roots: Vec<Node>) {
        if length > self.length {
            self.byte_length = roots.iter().map(|r| r.size).sum();
            self.roots = roots;
            self.length = length;
        }
    }

    pub(crate) fn advance_contiguous(&mut self) {
        let max = self.bitfield.data_bits();
        while self.contiguous < max && self.bitfield.has_block(self.contiguous) {
            // Keep the offset cache growing with an in-order download.
            if let Some(last) = self.offsets.end_at(self.contiguous) {
                if let Ok(Some(n)) = self.node(2 * self.contiguous) {
                    self.offsets.push(self.contiguous + 1, last.saturating_add(n.size));
                }
            }
            self.contiguous += 1;
        }
    }

    /// Holds a deferred put's writes until `flush_deferred` (flushing at once if
    /// too much is pending).
    pub(crate) fn hold_writes(
        &mut self,
        data: Option<(u64, &[u8])>,
        nodes: &[Node],
        signature: Option<(u64, Signature)>,
    ) -> Result<(), LogError> {
        // Empty blocks share their offset with the next block and write nothing.
        if let Some((offset, d)) = data {
            self.pending.put_data(offset, d);
        }
        for n in nodes {
            self.pending.put_node(*n);
        }
        if let Some(s) = signature {
            self.pending.bytes += 64;
            self.pending.signatures.push(s);
        }
        self.read_cache = None;
        if self.pending.bytes > MAX_PENDING {
            self.flush_deferred()?;
        }
        Ok(())
    }

    /// Forgets the read-ahead window (the data file changed under it).
    pub(crate) fn drop_read_cache(&mut self) {
        self.read_cache = None;
    }

    pub(crate) fn defer_bitfield(&mut self) {
        self.bitfield_pending = true;
    }
}
