//! [`PackedBlocks`]: many blocks in one buffer, for large batches.

use crate::crypto::{leaf_hash, Hash};

/// From how many blocks a batch's leaves are hashed on two threads.
const PARALLEL_LEAVES: usize = 8192;

/// Blocks laid end to end in one buffer, with where each ends: a batch of a
/// million small blocks costs two allocations instead of a million, and is
/// the data file's bytes as they will be written.
///
/// ```
/// use kappa_log::PackedBlocks;
///
/// let mut blocks = PackedBlocks::new();
/// blocks.push(b"first");
/// blocks.push_with(|buf| {
///     buf.extend_from_slice(b"second");
///     Ok::<(), ()>(())
/// })?;
/// assert!(blocks.push_with(|buf| {
///     buf.extend_from_slice(b"half written");
///     Err(())
/// }).is_err());
/// assert_eq!(blocks.len(), 2);
/// assert_eq!(blocks.iter().collect::<Vec<_>>(), [&b"first"[..], &b"second"[..]]);
/// # Ok::<(), ()>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackedBlocks {
    data: Vec<u8>,
    ends: Vec<usize>,
}

impl PackedBlocks {
    /// No blocks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a block.
    pub fn push(&mut self, block: &[u8]) {
        self.data.extend_from_slice(block);
        self.ends.push(self.data.len());
    }

    /// Adds the block `write` appends to the buffer (an encoder writing in
    /// place). If `write` fails, what it wrote is taken back and no block is
    /// added.
    pub fn push_with<E>(&mut self, write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>) -> Result<(), E> {
        let start = self.data.len();
        match write(&mut self.data) {
            Ok(()) => {
                self.ends.push(self.data.len());
                Ok(())
            }
            Err(e) => {
                self.data.truncate(start);
                Err(e)
            }
        }
    }

    /// How many blocks.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The bytes of all blocks together.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// The blocks laid end to end.
    pub fn into_data(self) -> Vec<u8> {
        self.data
    }

    /// The blocks, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let block = &self.data[start..end];
            start = end;
            block
        })
    }
}

impl PackedBlocks {
    /// The leaf hashes of a large batch, half of them hashed on a second
    /// thread (a tenth of appending a million small blocks, taken off the
    /// critical path); `None` for a small batch or a single core, whose
    /// leaves are hashed as they are appended.
    pub(crate) fn leaf_hashes_in_parallel(&self) -> Option<Vec<Hash>> {
        let n = self.len();
        if n < PARALLEL_LEAVES || std::thread::available_parallelism().map_or(1, |p| p.get()) < 2 {
            return None;
        }
        let mut hashes = vec![[0u8; 32]; n];
        let half = n / 2;
        let (first, second) = hashes.split_at_mut(half);
        let hash_range = |out: &mut [Hash], from: usize| {
            let mut start = if from == 0 { 0 } else { self.ends[from - 1] };
            for (h, &end) in out.iter_mut().zip(&self.ends[from..]) {
                *h = leaf_hash(&self.data[start..end]);
                start = end;
            }
        };
        let spawned = std::thread::scope(|s| {
            let other = std::thread::Builder::new().spawn_scoped(s, || hash_range(second, half));
            hash_range(first, 0);
            match other {
                Ok(h) => h.join().is_ok(),
                Err(_) => false,
            }
        });
        // No second thread to be had: hash the rest here.
        if !spawned {
            return None;
        }
        Some(hashes)
    }
}

impl<'a> IntoIterator for &'a PackedBlocks {
    type Item = &'a [u8];
    type IntoIter = Box<dyn ExactSizeIterator<Item = &'a [u8]> + 'a>;
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl<B: AsRef<[u8]>> FromIterator<B> for PackedBlocks {
    fn from_iter<I: IntoIterator<Item = B>>(iter: I) -> Self {
        let mut blocks = PackedBlocks::new();
        for b in iter {
            blocks.push(b.as_ref());
        }
        blocks
    }
}
