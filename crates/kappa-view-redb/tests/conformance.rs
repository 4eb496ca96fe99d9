//! The `ViewStore` suite on fresh files, in memory, and on views sharing a file,
//! plus scans checked against `MemoryStore` over every bound combination.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering};

use kappa_view::{Batch, KeyRange, MemoryStore, ViewStore};
use kappa_view_redb::RedbViews;

#[test]
fn conformance_on_fresh_files() {
    let dir = tempfile::tempdir().unwrap();
    let n = AtomicUsize::new(0);
    kappa_view::conformance::run_all(|| {
        let path = dir.path().join(format!("views-{}.redb", n.fetch_add(1, Ordering::SeqCst)));
        RedbViews::open(path).unwrap().store("v").unwrap()
    });
}

#[test]
fn conformance_in_memory() {
    kappa_view::conformance::run_all(|| RedbViews::in_memory().unwrap().store("v").unwrap());
}

#[test]
fn conformance_on_views_sharing_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let views = RedbViews::open(dir.path().join("views.redb")).unwrap();
    let n = AtomicUsize::new(0);
    kappa_view::conformance::run_all(|| {
        views.store(&format!("view-{}", n.fetch_add(1, Ordering::SeqCst))).unwrap()
    });
    // Each check's view keeps its own rows beside the others'.
    let made = n.load(Ordering::SeqCst);
    let listed = views.views().unwrap();
    assert!(listed.len() > 1 && listed.len() <= made, "{listed:?}");
}

/// A tiny deterministic generator (no extra dependencies).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn key(&mut self) -> Vec<u8> {
        // Short keys over a small alphabet, so ranges hit, miss and share prefixes.
        let len = (self.next() % 4) as usize;
        (0..len).map(|_| [0u8, 1, b'a', b'b', 0xfe, 0xff][(self.next() % 6) as usize]).collect()
    }
    fn bound(&mut self) -> Bound<Vec<u8>> {
        match self.next() % 3 {
            0 => Bound::Included(self.key()),
            1 => Bound::Excluded(self.key()),
            _ => Bound::Unbounded,
        }
    }
}

#[test]
fn scans_match_memory_store_for_every_bound_combination() {
    let redb = RedbViews::in_memory().unwrap().store("model").unwrap();
    let memory = MemoryStore::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..40 {
        let ops: Vec<_> = (0..20)
            .map(|_| {
                let k = rng.key();
                let put = !rng.next().is_multiple_of(4);
                let v = put.then(|| rng.next().to_le_bytes()[..(rng.next() % 3) as usize].to_vec());
                (k, v)
            })
            .collect();
        let batch = Batch { ops, state: Some(vec![round]) };
        redb.commit(batch.clone()).unwrap();
        memory.commit(batch).unwrap();
        for _ in 0..50 {
            let range: KeyRange = (rng.bound(), rng.bound());
            let reverse = rng.next().is_multiple_of(2);
            let limit = match rng.next() % 4 {
                0 => None,
                n => Some((n as usize - 1) * 2), // 0, 2, 4
            };
            assert_eq!(
                redb.scan(range.clone(), reverse, limit).unwrap(),
                memory.scan(range.clone(), reverse, limit).unwrap(),
                "scan {range:?} reverse={reverse} limit={limit:?}"
            );
        }
        let prefix = rng.key();
        assert_eq!(
            redb.scan_prefix(&prefix, true, None).unwrap(),
            memory.scan_prefix(&prefix, true, None).unwrap()
        );
        assert_eq!(redb.state().unwrap(), memory.state().unwrap());
    }
}
