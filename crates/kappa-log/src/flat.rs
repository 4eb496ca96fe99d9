//! Flat-tree index arithmetic (spec §1.1).
//!
//! Blocks and tree nodes share one index space: block `i` is the leaf `2i`, parents
//! are odd. All functions are total: they never panic, even on indices near
//! `u64::MAX` (the results are then meaningless, and callers bound indices taken
//! from disk or a peer with [`MAX_NODE`] first).

/// The largest node index the log accepts from outside (2^62). Larger indices in a
/// proof or on disk are rejected before any arithmetic is done with them.
pub const MAX_NODE: u64 = 1 << 62;

/// Number of trailing 1-bits: 0 for leaves.
#[inline]
pub fn depth(i: u64) -> u32 {
    (!i).trailing_zeros()
}

/// Position of `i` among the nodes of its depth.
#[inline]
pub fn offset(i: u64) -> u64 {
    i.wrapping_shr(depth(i) + 1)
}

/// The node at `depth` and `offset`.
#[inline]
pub fn index(depth: u32, offset: u64) -> u64 {
    offset.wrapping_shl(depth + 1) | (1u64.wrapping_shl(depth).wrapping_sub(1))
}

/// The parent of `i`.
#[inline]
pub fn parent(i: u64) -> u64 {
    let d = depth(i);
    index(d + 1, offset(i) >> 1)
}

/// The other child of `i`'s parent.
#[inline]
pub fn sibling(i: u64) -> u64 {
    let d = depth(i);
    index(d, offset(i) ^ 1)
}

/// Whether `i` is the left child of its parent.
#[inline]
pub fn is_left(i: u64) -> bool {
    offset(i) & 1 == 0
}

/// The two children of `i`, or `None` for a leaf.
#[inline]
pub fn children(i: u64) -> Option<(u64, u64)> {
    let d = depth(i);
    if d == 0 {
        return None;
    }
    let o = offset(i).wrapping_mul(2);
    Some((index(d - 1, o), index(d - 1, o.wrapping_add(1))))
}

/// The leftmost leaf under `i`.
#[inline]
pub fn left_span(i: u64) -> u64 {
    let d = depth(i);
    if d == 0 {
        i
    } else {
        offset(i).wrapping_shl(d + 1)
    }
}

/// The rightmost leaf under `i`.
#[inline]
pub fn right_span(i: u64) -> u64 {
    let d = depth(i);
    if d == 0 {
        i
    } else {
        offset(i).wrapping_add(1).wrapping_shl(d + 1).wrapping_sub(2)
    }
}

/// The roots of a tree whose leaves are `0 .. leaf_end` (so `leaf_end = 2 · length`),
/// left to right.
///
/// ```
/// use kappa_log::flat::full_roots;
/// assert_eq!(full_roots(20), vec![7, 17]);
/// assert_eq!(full_roots(10), vec![3, 8]);
/// assert!(full_roots(0).is_empty());
/// ```
pub fn full_roots(leaf_end: u64) -> Vec<u64> {
    let mut roots = Vec::with_capacity(8);
    for_each_full_root(leaf_end, |r| roots.push(r));
    roots
}

/// Calls `f` with each root of [`full_roots`]`(leaf_end)`, without allocating.
pub fn for_each_full_root(leaf_end: u64, mut f: impl FnMut(u64)) {
    let mut blocks = (leaf_end / 2) & (MAX_NODE - 1);
    let mut start = 0u64;
    while blocks > 0 {
        let size = 1u64 << (63 - blocks.leading_zeros());
        f(2 * start + size - 1);
        start += size;
        blocks -= size;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basics() {
        assert_eq!(depth(0), 0);
        assert_eq!(depth(1), 1);
        assert_eq!(depth(3), 2);
        assert_eq!(depth(7), 3);
        assert_eq!(parent(0), 1);
        assert_eq!(parent(2), 1);
        assert_eq!(parent(1), 3);
        assert_eq!(parent(5), 3);
        assert_eq!(sibling(0), 2);
        assert_eq!(sibling(2), 0);
        assert_eq!(sibling(1), 5);
        assert_eq!(children(3), Some((1, 5)));
        assert_eq!(children(4), None);
        assert_eq!(left_span(3), 0);
        assert_eq!(right_span(3), 6);
        assert_eq!(left_span(23), 16);
        assert_eq!(right_span(23), 30);
        assert_eq!(index(1, 2), 9);
        assert!(is_left(0) && !is_left(2) && is_left(1) && !is_left(5));
        assert_eq!(full_roots(2), vec![0]);
        assert_eq!(full_roots(16), vec![7]);
        assert_eq!(full_roots(18), vec![7, 16]);
    }

    #[test]
    fn extremes_do_not_panic() {
        for i in [u64::MAX, u64::MAX - 1, MAX_NODE, 1 << 63] {
            let _ = (depth(i), offset(i), parent(i), sibling(i), children(i));
            let _ = (left_span(i), right_span(i), full_roots(i));
        }
    }
}
