//! The indexer's tracing output: its span names the view, a store that is
//! unreachable for a moment shows as a retry with the store's own error, and
//! each commit as an event with its counts.

use std::sync::Arc;

use futures::executor::block_on;
use kappa_index::Indexer;
use kappa_multifeed::Multifeed;
use kappa_testkit::store::HookedStore;
use kappa_view::sum::SumView;
use kappa_view::{MemoryStore, StoreError, StoreErrorKind, ViewStore};

/// Fails its first commit as a store whose server went away (before the
/// commit landed); then works.
fn down_once() -> HookedStore {
    HookedStore::new(MemoryStore::new(), |n, inner, batch| {
        if n == 0 {
            return Err(StoreError::from_message(
                StoreErrorKind::Unavailable,
                "connection to the view server lost",
            ));
        }
        inner.commit(batch)
    })
}

#[test]
fn a_retry_and_the_commits_are_traced_in_the_indexer_span() {
    // The indexer runs on its own thread: a global subscriber sees it.
    let captured = kappa_testkit::trace::capture_global("kappa_index=debug");
    let mf = Multifeed::in_memory().unwrap();
    let w = mf.writer("local").unwrap();
    let sum = Arc::new(SumView::new(Arc::new(down_once())));
    let ix = Indexer::start("sum", sum.clone(), &mf).unwrap();
    w.append_batch(["1\n", "2\n", "3\n"]).unwrap();
    block_on(ix.ready()).unwrap();
    assert_eq!(sum.get().unwrap(), 6.0);
    drop(ix);
    let out = captured.text();
    let retry = out
        .lines()
        .find(|l| l.contains("view store unreachable: retrying"))
        .unwrap_or_else(|| panic!("no retry event in:\n{out}"));
    assert!(retry.contains("WARN") && retry.contains("indexer{view=\"sum\"}"), "{retry}");
    assert!(retry.contains("connection to the view server lost"), "{retry}");
    assert!(retry.contains("cause=Store {"), "{retry}");
    assert!(out.contains("view store reachable again"), "{out}");
    let commit =
        out.lines().find(|l| l.contains("committed")).unwrap_or_else(|| panic!("no commit event in:\n{out}"));
    assert!(commit.contains("index_group{") && commit.contains("entries="), "{commit}");
}
