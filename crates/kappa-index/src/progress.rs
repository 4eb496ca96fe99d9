//! The indexing state stored with every batch: the view version and, per feed,
//! the ranges of sequence numbers already given to the view.
//!
//! Format (little-endian): `b"KIX1"`, `u64 version`, `u32 feeds`, then per feed
//! `32-byte key, u32 ranges, (u64 start, u64 end)…`. multifeed-index stores one
//! counter per feed, which cannot describe holes; this format can, so sparse feeds
//! never stall a view.

use std::collections::HashMap;

use kappa_log::{PublicKey, RangeSet};

const MAGIC: &[u8; 4] = b"KIX1";

/// What a view has indexed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// The view version the rows were made with.
    pub version: u64,
    /// Indexed sequence numbers per feed.
    pub feeds: HashMap<PublicKey, RangeSet>,
}

impl Progress {
    /// Nothing indexed, at `version`.
    pub fn new(version: u64) -> Self {
        Progress { version, feeds: HashMap::new() }
    }

    /// Entries indexed in all feeds.
    pub fn count(&self) -> u64 {
        self.feeds.values().map(RangeSet::count).sum()
    }

    /// Whether `seq` of `feed` is indexed.
    pub fn contains(&self, feed: &PublicKey, seq: u64) -> bool {
        self.feeds.get(feed).is_some_and(|r| r.contains(seq))
    }

    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.feeds.len() * 56);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.feeds.len() as u32).to_le_bytes());
        let mut keys: Vec<&PublicKey> = self.feeds.keys().collect();
        keys.sort();
        for k in keys {
            let ranges: Vec<_> = self.feeds[k].iter().collect();
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(&(ranges.len() as u32).to_le_bytes());
            for r in ranges {
                out.extend_from_slice(&r.start.to_le_bytes());
                out.extend_from_slice(&r.end.to_le_bytes());
            }
        }
        out
    }

    /// Parses the stored form; `None` if it is not one.
    pub fn decode(bytes: &[u8]) -> Option<Progress> {
        let mut r = Reader(bytes);
        if r.take(4)? != MAGIC {
            return None;
        }
        let version = r.u64()?;
        let n = r.u32()?;
        let mut feeds = HashMap::new();
        for _ in 0..n {
            let key = PublicKey::try_from_slice(r.take(32)?).ok()?;
            let m = r.u32()?;
            let mut set = RangeSet::new();
            for _ in 0..m {
                let (s, e) = (r.u64()?, r.u64()?);
                if s >= e {
                    return None;
                }
                set.insert(s..e);
            }
            feeds.insert(key, set);
        }
        r.0.is_empty().then_some(Progress { version, feeds })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let mut p = Progress::new(7);
        let mut r = RangeSet::new();
        r.insert(0..10);
        r.insert(20..21);
        p.feeds.insert(PublicKey::from_bytes([3; 32]), r);
        assert_eq!(Progress::decode(&p.encode()), Some(p.clone()));
        assert_eq!(p.count(), 11);
        assert!(Progress::decode(b"nope").is_none());
        let mut bad = p.encode();
        bad.push(0);
        assert!(Progress::decode(&bad).is_none());
        for cut in 0..p.encode().len() {
            assert!(Progress::decode(&p.encode()[..cut]).is_none());
        }
    }
}
