//! A set of `u64` ranges, kept merged: what a peer has, compactly, whatever the
//! claims (a hostile `Have{start: 0, length: 2^60}` costs one entry).

use std::collections::BTreeMap;
use std::ops::Range;

/// Disjoint, non-adjacent ranges, keyed by start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    map: BTreeMap<u64, u64>,
}

impl RangeSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `r`, merging with neighbours.
    pub fn insert(&mut self, r: Range<u64>) {
        if r.is_empty() {
            return;
        }
        let (mut start, mut end) = (r.start, r.end);
        // Merge with a range that starts before and reaches `start`.
        if let Some((&s, &e)) = self.map.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
                self.map.remove(&s);
            }
        }
        // Swallow ranges that start inside [start, end].
        let inside: Vec<(u64, u64)> = self.map.range(start..=end).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in inside {
            end = end.max(e);
            self.map.remove(&s);
        }
        self.map.insert(start, end);
    }

    /// Removes `r`.
    pub fn remove(&mut self, r: Range<u64>) {
        if r.is_empty() {
            return;
        }
        let touching: Vec<(u64, u64)> =
            self.map.range(..r.end).rev().take_while(|(_, &e)| e > r.start).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in touching {
            self.map.remove(&s);
            if s < r.start {
                self.map.insert(s, r.start);
            }
            if e > r.end {
                self.map.insert(r.end, e);
            }
        }
    }

    /// Whether `i` is in the set.
    pub fn contains(&self, i: u64) -> bool {
        self.map.range(..=i).next_back().is_some_and(|(_, &e)| i < e)
    }

    /// Whether all of `r` is in the set.
    pub fn contains_range(&self, r: &Range<u64>) -> bool {
        r.is_empty() || self.map.range(..=r.start).next_back().is_some_and(|(_, &e)| r.end <= e)
    }

    /// The smallest member `>= i`.
    pub fn next_member(&self, i: u64) -> Option<u64> {
        if self.contains(i) {
            return Some(i);
        }
        self.map.range(i..).next().map(|(&s, _)| s)
    }

    /// One past the largest member (0 when empty).
    pub fn end(&self) -> u64 {
        self.map.iter().next_back().map_or(0, |(_, &e)| e)
    }

    /// How many members the set has.
    pub fn count(&self) -> u64 {
        self.map.iter().map(|(&s, &e)| e - s).sum()
    }

    /// The ranges, in order.
    pub fn iter(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.map.iter().map(|(&s, &e)| s..e)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_merge_remove() {
        let mut s = RangeSet::new();
        s.insert(5..10);
        s.insert(0..2);
        s.insert(2..5);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0..10]);
        s.insert(20..30);
        s.insert(9..21);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0..30]);
        s.remove(3..4);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0..3, 4..30]);
        assert!(!s.contains(3) && s.contains(4) && s.contains(0) && !s.contains(30));
        assert_eq!(s.next_member(3), Some(4));
        assert_eq!(s.next_member(30), None);
        assert!(s.contains_range(&(5..30)) && !s.contains_range(&(2..5)));
        s.insert(0..u64::MAX);
        assert_eq!(s.end(), u64::MAX);
    }
}
