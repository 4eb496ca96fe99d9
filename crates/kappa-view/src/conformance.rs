//! The behaviour every [`ViewStore`] must have, as a suite any backend runs:
//!
//! ```
//! kappa_view::conformance::run_all(kappa_view::MemoryStore::new);
//! ```
//!
//! Each check panics with a message on failure. `make` must return a fresh,
//! empty store each time it is called. The shadow checks ([`run_shadow`])
//! run for stores that have a [shadow](ViewStore::shadow); [`run_all`] runs
//! them too, for such stores.

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
    if make().shadow().unwrap_or_else(|e| panic!("shadow: {e}")).is_some() {
        run_shadow(make);
    }
}

/// Runs every shadow check on stores made by `make`, which must have a
/// shadow.
pub fn run_shadow<S: ViewStore>(make: impl Fn() -> S) {
    shadow_is_apart_from_the_live_rows(&make());
    promote_swaps_rows_and_state(&make());
    promote_of_an_empty_shadow_empties_the_view(&make());
    shadow_clear_restarts_only_the_shadow(&make());
    shadow_is_reused_after_a_promote(&make());
    readers_see_the_old_view_or_the_new_never_a_mix(Arc::new(make()));
}

fn shadow_of<S: ViewStore>(s: &S) -> Arc<dyn ViewStore> {
    match s.shadow() {
        Ok(Some(sh)) => sh,
        Ok(None) => panic!("the store has no shadow"),
        Err(e) => panic!("shadow: {e}"),
    }
}

fn all_rows(s: &dyn ViewStore) -> Vec<crate::Row> {
    s.scan((Unbounded, Unbounded), false, None).unwrap_or_else(|e| panic!("scan: {e}"))
}

/// What is written to the shadow is invisible through the store, and the
/// other way round; a shadow has no shadow of its own.
pub fn shadow_is_apart_from_the_live_rows<S: ViewStore>(s: &S) {
    commit(s, vec![put(b"a", b"live"), put(b"b", b"live")], Some(b"live-state"));
    let sh = shadow_of(s);
    assert!(all_rows(&*sh).is_empty(), "a new shadow is empty");
    assert_eq!(sh.state().ok().flatten(), None, "a new shadow has no state");
    commit(&*sh, vec![put(b"a", b"shadow"), put(b"c", b"shadow")], Some(b"shadow-state"));
    assert_eq!(s.get(b"a").ok().flatten(), Some(b"live".to_vec()), "the live row is untouched");
    assert_eq!(s.get(b"c").ok().flatten(), None, "a shadow row is not live");
    assert_eq!(s.state().ok().flatten(), Some(b"live-state".to_vec()));
    assert_eq!(sh.get(b"b").ok().flatten(), None, "a live row is not in the shadow");
    assert_eq!(sh.get(b"a").ok().flatten(), Some(b"shadow".to_vec()));
    assert_eq!(sh.state().ok().flatten(), Some(b"shadow-state".to_vec()));
    assert_eq!(
        sh.get_many(&[b"a", b"b", b"c"]).ok(),
        Some(vec![Some(b"shadow".to_vec()), None, Some(b"shadow".to_vec())])
    );
    assert_eq!(
        keys(sh.scan_prefix(b"", false, None).unwrap_or_default()),
        vec![b"a".to_vec(), b"c".to_vec()]
    );
    commit(s, vec![put(b"d", b"live")], None);
    assert_eq!(sh.get(b"d").ok().flatten(), None, "later live commits stay out of the shadow");
    assert!(sh.shadow().map(|x| x.is_none()).unwrap_or(false), "a shadow has no shadow");
    // A second handle on the shadow sees the same rows.
    assert_eq!(shadow_of(s).get(b"c").ok().flatten(), Some(b"shadow".to_vec()));
}

/// `promote_shadow` makes the shadow's rows and state the live ones, drops
/// the old rows, and leaves an empty shadow.
pub fn promote_swaps_rows_and_state<S: ViewStore>(s: &S) {
    commit(s, (0..100u32).map(|i| put(&i.to_be_bytes(), b"old")).collect(), Some(b"old-state"));
    let sh = shadow_of(s);
    commit(&*sh, (50..120u32).map(|i| put(&i.to_be_bytes(), b"new")).collect(), Some(b"new-state"));
    s.promote_shadow().unwrap_or_else(|e| panic!("promote: {e}"));
    let rows = all_rows(s);
    assert_eq!(rows.len(), 70, "exactly the shadow's rows");
    assert!(rows.iter().all(|(_, v)| v == b"new"), "no old row survives");
    assert_eq!(s.state().ok().flatten(), Some(b"new-state".to_vec()));
    assert!(all_rows(&*sh).is_empty(), "the shadow is empty after the swap");
    assert_eq!(sh.state().ok().flatten(), None, "and has no state");
    assert_eq!(shadow_of(s).state().ok().flatten(), None);
}

/// Promoting a shadow that holds nothing empties the view (a rebuild from
/// logs that now show nothing to it).
pub fn promote_of_an_empty_shadow_empties_the_view<S: ViewStore>(s: &S) {
    commit(s, vec![put(b"a", b"1")], Some(b"st"));
    let sh = shadow_of(s);
    commit(&*sh, vec![], Some(b"empty-state"));
    s.promote_shadow().unwrap_or_else(|e| panic!("promote: {e}"));
    assert!(all_rows(s).is_empty());
    assert_eq!(s.state().ok().flatten(), Some(b"empty-state".to_vec()));
    // With no state either, the view has none afterwards.
    commit(s, vec![put(b"b", b"1")], Some(b"st"));
    s.promote_shadow().unwrap_or_else(|e| panic!("promote: {e}"));
    assert!(all_rows(s).is_empty());
    assert_eq!(s.state().ok().flatten(), None);
}

/// The shadow's `clear` starts it over and leaves the live view alone.
pub fn shadow_clear_restarts_only_the_shadow<S: ViewStore>(s: &S) {
    commit(s, vec![put(b"a", b"live")], Some(b"live-state"));
    let sh = shadow_of(s);
    commit(&*sh, vec![put(b"b", b"shadow")], Some(b"shadow-state"));
    sh.clear().unwrap_or_else(|e| panic!("clear: {e}"));
    assert!(all_rows(&*sh).is_empty());
    assert_eq!(sh.state().ok().flatten(), None);
    assert_eq!(s.get(b"a").ok().flatten(), Some(b"live".to_vec()));
    assert_eq!(s.state().ok().flatten(), Some(b"live-state".to_vec()));
    commit(&*sh, vec![put(b"c", b"again")], Some(b"s2"));
    assert_eq!(sh.get(b"c").ok().flatten(), Some(b"again".to_vec()), "usable after clear");
}

/// After a swap, a new rebuild in the shadow and a second swap work alike.
pub fn shadow_is_reused_after_a_promote<S: ViewStore>(s: &S) {
    for round in 0..3u8 {
        let sh = shadow_of(s);
        commit(&*sh, vec![put(&[round], &[round]), put(b"k", &[round])], Some(&[round]));
        s.promote_shadow().unwrap_or_else(|e| panic!("promote {round}: {e}"));
        let want: Vec<crate::Row> = vec![(vec![round], vec![round]), (b"k".to_vec(), vec![round])];
        assert_eq!(all_rows(s), want, "round {round}");
        assert_eq!(s.state().ok().flatten(), Some(vec![round]));
    }
    // Live commits after a swap go to the live rows, not to the shadow.
    commit(s, vec![put(b"after", b"1")], None);
    assert_eq!(s.get(b"after").ok().flatten(), Some(b"1".to_vec()));
    assert_eq!(shadow_of(s).get(b"after").ok().flatten(), None);
}

/// A reader in another thread, while the shadow is built and swapped in
/// again and again, sees every time one whole view: all the rows of one
/// generation and its state, never rows of two, never an empty or partial
/// view.
pub fn readers_see_the_old_view_or_the_new_never_a_mix<S: ViewStore>(s: Arc<S>) {
    const KEYS: u32 = 40;
    const ROUNDS: u32 = 30;
    let gen_rows =
        |round: u32| (0..KEYS).map(|i| put(&(i + round).to_be_bytes(), &round.to_be_bytes())).collect();
    commit(&*s, gen_rows(0), Some(&0u32.to_be_bytes()));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let s = s.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            for round in 1..=ROUNDS {
                let sh = shadow_of(&*s);
                // The shadow fills in several commits, as a rebuild does.
                let rows: Vec<_> = gen_rows(round);
                for chunk in rows.chunks(7) {
                    commit(&*sh, chunk.to_vec(), None);
                }
                commit(&*sh, vec![], Some(&round.to_be_bytes()));
                s.promote_shadow().unwrap_or_else(|e| panic!("promote: {e}"));
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        })
    };
    let mut reads = 0;
    while !done.load(std::sync::atomic::Ordering::SeqCst) || reads < 20 {
        let rows = all_rows(&*s);
        assert_eq!(rows.len(), KEYS as usize, "a reader saw a partial or blank view");
        let values: std::collections::HashSet<Vec<u8>> = rows.iter().map(|(_, v)| v.clone()).collect();
        assert_eq!(values.len(), 1, "a reader saw rows of two generations: {values:?}");
        let round = rows[0].1.clone();
        let first = u32::from_be_bytes(round.as_slice().try_into().unwrap_or([0; 4]));
        assert_eq!(rows[0].0, first.to_be_bytes().to_vec(), "rows of generation {first} are its own");
        reads += 1;
    }
    writer.join().unwrap_or_else(|_| panic!("writer panicked"));
    assert_eq!(s.state().ok().flatten(), Some(ROUNDS.to_be_bytes().to_vec()));
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

fn commit<S: ViewStore + ?Sized>(s: &S, ops: Vec<(Vec<u8>, Option<Vec<u8>>)>, state: Option<&[u8]>) {
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
