//! The six files of a feed and their 32-byte headers (spec §2.1, §2.2).

use kappa_storage::{BoxedStorage, Provider, RandomAccess};

use crate::error::{CorruptError, LogError};

/// The name of the head record's file in a feed's storage.
pub(crate) const HEAD_FILE: &str = "kappa-head";

/// Length of the common header of `tree`, `signatures` and `bitfield`.
pub(crate) const HEADER_LEN: u64 = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HeaderKind {
    Bitfield,
    Signatures,
    Tree,
}

impl HeaderKind {
    pub(crate) const fn file(self) -> &'static str {
        match self {
            HeaderKind::Bitfield => "bitfield",
            HeaderKind::Signatures => "signatures",
            HeaderKind::Tree => "tree",
        }
    }

    /// The exact header hypercore 8 writes.
    pub(crate) fn header(self) -> [u8; 32] {
        let (kind, entry, algo): (u8, u16, &[u8]) = match self {
            HeaderKind::Bitfield => (0, 3584, b""),
            HeaderKind::Signatures => (1, 64, b"Ed25519"),
            HeaderKind::Tree => (2, 40, b"BLAKE2b"),
        };
        let mut h = [0u8; 32];
        h[..3].copy_from_slice(&[0x05, 0x02, 0x57]);
        h[3] = kind;
        h[4] = 0;
        h[5..7].copy_from_slice(&entry.to_be_bytes());
        h[7] = algo.len() as u8;
        h[8..8 + algo.len()].copy_from_slice(algo);
        h
    }

    /// Checks an existing header. hypercore only reads the page size from the
    /// bitfield header; we check the magic, the type and the entry size of all three,
    /// so a foreign or damaged file is reported instead of misread.
    pub(crate) fn check(self, bytes: &[u8; 32]) -> Result<(), CorruptError> {
        let want = self.header();
        let bad = |reason: String| CorruptError { file: self.file(), reason };
        if bytes[..3] != want[..3] {
            return Err(bad(format!("bad magic {}", hex::encode(&bytes[..3]))));
        }
        if bytes[3] != want[3] {
            return Err(bad(format!("header type {} (expected {})", bytes[3], want[3])));
        }
        if bytes[5..7] != want[5..7] {
            let size = u16::from_be_bytes([bytes[5], bytes[6]]);
            return Err(bad(format!("entry size {size} is not supported")));
        }
        Ok(())
    }
}

/// The open storages of one feed.
pub(crate) struct Files {
    pub(crate) key: BoxedStorage,
    pub(crate) secret_key: BoxedStorage,
    pub(crate) tree: BoxedStorage,
    pub(crate) data: BoxedStorage,
    pub(crate) signatures: BoxedStorage,
    pub(crate) bitfield: BoxedStorage,
    /// Our head record ([`crate::head`]); JS hypercore does not know it.
    pub(crate) head: BoxedStorage,
}

impl Files {
    pub(crate) fn open(provider: &dyn Provider) -> Result<Files, LogError> {
        Ok(Files {
            key: provider.open("key")?,
            secret_key: provider.open("secret_key")?,
            tree: provider.open("tree")?,
            data: provider.open("data")?,
            signatures: provider.open("signatures")?,
            bitfield: provider.open("bitfield")?,
            head: provider.open(HEAD_FILE)?,
        })
    }

    pub(crate) fn headered(&mut self, kind: HeaderKind) -> &mut BoxedStorage {
        match kind {
            HeaderKind::Bitfield => &mut self.bitfield,
            HeaderKind::Signatures => &mut self.signatures,
            HeaderKind::Tree => &mut self.tree,
        }
    }

    /// Writes the header if the file has none; checks it otherwise. A file shorter
    /// than a header (a torn first write) is given a fresh header when that is all it
    /// holds.
    ///
    /// With `rewrite`, a header that fails the check is replaced by the right one
    /// (the header is a constant: nothing of the feed is in it); that is what an
    /// explicit repair asks for. Returns whether the header was rewritten.
    pub(crate) fn ensure_header(&mut self, kind: HeaderKind, rewrite: bool) -> Result<bool, LogError> {
        let file = self.headered(kind);
        let len = file.len()?;
        if len < HEADER_LEN {
            file.write(0, &kind.header())?;
            return Ok(len > 0);
        }
        let mut h = [0u8; 32];
        file.read_into(0, &mut h)?;
        match kind.check(&h) {
            Ok(()) => Ok(false),
            Err(_) if rewrite => {
                file.write(0, &kind.header())?;
                Ok(true)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Empties the data-bearing files (used when a feed is created over leftovers
    /// without a key, as hypercore does).
    pub(crate) fn reset(&mut self) -> Result<(), LogError> {
        for f in [&mut self.tree, &mut self.data, &mut self.signatures, &mut self.bitfield] {
            f.truncate(0)?;
        }
        Ok(())
    }
}
