//! The behaviour every [`ViewStore`] must have, as a suite any backend runs:
//!
//! ```
//! kappa_view::conformance::run_all(kappa_view::MemoryStore::new);
//! ```
//!
//! Each check panics with a message on failure. `make` must return a fresh,
//! empty store each time it is called.

// A test suite: failing checks panic by design.
#![allow(clippy::panic)]

use std::ops::Bound::{Excluded, Included, Unbounded};
use std::sync::Arc;

use crate::{Batch, ViewStore};

fn put(k: &[u8], v: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
    (k.to_vec(), Some(v.to_vec()))
}

fn keys(rows: Vec<crate::Row>) -> Vec<Vec<u8>> {
    rows.into_iter().map(|(k, _)| k).collect()
}

/// Runs every check on stores made by `make`.
pub fn run_all<S: ViewStore>(make: impl Fn() -> S) {
    get_put_delete(&make());
    scans(&make());
    state_travels_with_batches(&make());
    clear_removes_rows_and_state(&make());
    binary_keys_and_values(&make());
    get_many_matches_get(&make());
    large_batches(&make());
    readers_never_see_half_a_batch(Arc::new(make()));
}

/// Reads see committed puts, overwrites and deletes.
pub fn get_put_delete<S: ViewStore>(s: &S) {
    assert_eq!(s.get(b"a").unwrap_or_else(|e| panic!("{e}")), None, "fresh store is empty");
    commit(s, vec![put(b"a", b"1"), put(b"b", b"2")], None);
    assert_eq!(s.get(b"a").ok().flatten(), Some(b"1".to_vec()));
    commit(s, vec![put(b"a", b"3"), (b"b".to_vec(), None)], None);
    assert_eq!(s.get(b"a").ok().flatten(), Some(b"3".to_vec()), "overwrite");
    assert_eq!(s.get(b"b").ok().flatten(), None, "delete");
    commit(s, vec![(b"missing".to_vec(), None)], None);
    // Ops in one batch apply in order.
    commit(s, vec![put(b"c", b"x"), (b"c".to_vec(), None), put(b"d", b"1"), put(b"d", b"2")], None);
    assert_eq!(s.get(b"c").ok().flatten(), None);
    assert_eq!(s.get(b"d").ok().flatten(), Some(b"2".to_vec()));
}

fn commit<S: ViewStore>(s: &S, ops: Vec<(Vec<u8>, Option<Vec<u8>>)>, state: Option<&[u8]>) {
    s.commit(Batch { ops, state: state.map(<[u8]>::to_vec) }).unwrap_or_else(|e| panic!("commit: {e}"));
}

/// Range scans in both directions, with bounds, limits and prefixes.
pub fn scans<S: ViewStore>(s: &S) {
    let all: Vec<&[u8]> = vec![b"a", b"ab", b"abc", b"b", b"b\xff", b"b\xff\xff", b"c"];
    commit(s, all.iter().map(|k| put(k, b"v")).collect(), None);
    let scan = |r, rev, lim| keys(s.scan(r, rev, lim).unwrap_or_else(|e| panic!("scan: {e}")));
    let v = |ks: &[&[u8]]| ks.iter().map(|k| k.to_vec()).collect::<Vec<_>>();
    assert_eq!(scan((Unbounded, Unbounded), false, None), v(&all), "full scan in order");
    let mut rev = all.clone();
    rev.reverse();
    assert_eq!(scan((Unbounded, Unbounded), true, None), v(&rev), "reverse scan");
    assert_eq!(scan((Included(b"ab".to_vec()), Excluded(b"b".to_vec())), false, None), v(&[b"ab", b"abc"]));
    assert_eq!(scan((Excluded(b"ab".to_vec()), Included(b"b".to_vec())), false, None), v(&[b"abc", b"b"]));
    assert_eq!(scan((Unbounded, Unbounded), false, Some(2)), v(&[b"a", b"ab"]), "limit");
    assert_eq!(scan((Unbounded, Unbounded), true, Some(2)), v(&[b"c", b"b\xff\xff"]), "reverse limit");
    assert_eq!(
        scan((Included(b"z".to_vec()), Excluded(b"a".to_vec())), false, None),
        v(&[]),
        "inverted range"
    );
    assert_eq!(scan((Excluded(b"b".to_vec()), Excluded(b"b".to_vec())), false, None), v(&[]), "empty range");
    let prefix = |p: &[u8]| keys(s.scan_prefix(p, false, None).unwrap_or_else(|e| panic!("{e}")));
    assert_eq!(prefix(b"ab"), v(&[b"ab", b"abc"]));
    assert_eq!(prefix(b"b\xff"), v(&[b"b\xff", b"b\xff\xff"]), "prefix ending in 0xff");
    assert_eq!(prefix(b""), v(&all), "empty prefix");
}

/// The state is stored with the batch that carries it and left alone otherwise.
pub fn state_travels_with_batches<S: ViewStore>(s: &S) {
    assert_eq!(s.state().ok().flatten(), None);
    commit(s, vec![put(b"k", b"v")], Some(b"progress-1"));
    assert_eq!(s.state().ok().flatten(), Some(b"progress-1".to_vec()));
    commit(s, vec![put(b"k2", b"v")], None);
    assert_eq!(s.state().ok().flatten(), Some(b"progress-1".to_vec()), "a batch without state keeps it");
    commit(s, vec![], Some(b"progress-2"));
    assert_eq!(s.state().ok().flatten(), Some(b"progress-2".to_vec()), "a state-only batch");
}

/// `clear` removes every row and the state.
pub fn clear_removes_rows_and_state<S: ViewStore>(s: &S) {
    commit(s, (0..100u32).map(|i| put(&i.to_be_bytes(), b"x")).collect(), Some(b"st"));
    s.clear().unwrap_or_else(|e| panic!("clear: {e}"));
    assert_eq!(s.state().ok().flatten(), None);
    assert!(s.scan((Unbounded, Unbounded), false, None).map(|r| r.is_empty()).unwrap_or(false));
    commit(s, vec![put(b"after", b"1")], Some(b"st2"));
    assert_eq!(s.get(b"after").ok().flatten(), Some(b"1".to_vec()), "usable after clear");
}

/// Keys and values may hold any bytes, including zeros; empty values exist.
pub fn binary_keys_and_values<S: ViewStore>(s: &S) {
    let k = [0u8, 255, 0, 1];
    commit(s, vec![put(&k, &[0, 0, 0]), put(b"empty", b"")], None);
    assert_eq!(s.get(&k).ok().flatten(), Some(vec![0, 0, 0]));
    assert_eq!(s.get(b"empty").ok().flatten(), Some(Vec::new()), "an empty value is not a missing one");
}

/// `get_many` answers like `get` for each key, in the order asked, duplicates
/// and missing keys included.
pub fn get_many_matches_get<S: ViewStore>(s: &S) {
    assert_eq!(s.get_many(&[]).ok(), Some(vec![]), "no keys");
    commit(s, vec![put(b"a", b"1"), put(b"b", b""), put(&[0, 255], b"z")], None);
    let got =
        s.get_many(&[b"b", b"missing", b"a", &[0, 255], b"a"]).unwrap_or_else(|e| panic!("get_many: {e}"));
    let want = vec![Some(vec![]), None, Some(b"1".to_vec()), Some(b"z".to_vec()), Some(b"1".to_vec())];
    assert_eq!(got, want, "get_many");
}

/// Tens of thousands of rows in one batch.
pub fn large_batches<S: ViewStore>(s: &S) {
    let ops: Vec<_> = (0..20_000u32).map(|i| put(&i.to_be_bytes(), &i.to_le_bytes())).collect();
    commit(s, ops, Some(b"big"));
    assert_eq!(s.get(&19_999u32.to_be_bytes()).ok().flatten(), Some(19_999u32.to_le_bytes().to_vec()));
    assert_eq!(s.scan((Unbounded, Unbounded), false, None).map(|r| r.len()).unwrap_or(0), 20_000);
}

/// A reader in another thread sees each batch whole or not at all.
pub fn readers_never_see_half_a_batch<S: ViewStore>(s: Arc<S>) {
    const KEYS: u32 = 50;
    let writer = {
        let s = s.clone();
        std::thread::spawn(move || {
            for round in 1..=200u32 {
                let ops = (0..KEYS).map(|i| put(&i.to_be_bytes(), &round.to_be_bytes())).collect();
                commit(&*s, ops, Some(&round.to_be_bytes()));
            }
        })
    };
    for _ in 0..200 {
        let rows = s.scan((Unbounded, Unbounded), false, None).unwrap_or_else(|e| panic!("{e}"));
        let values: std::collections::HashSet<Vec<u8>> = rows.into_iter().map(|(_, v)| v).collect();
        assert!(values.len() <= 1, "a reader saw rows of two different batches: {values:?}");
    }
    writer.join().unwrap_or_else(|_| panic!("writer panicked"));
}
