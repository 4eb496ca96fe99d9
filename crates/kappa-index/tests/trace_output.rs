//! The indexer's tracing output: its span names the view, a store that is
//! unreachable for a moment shows as a retry with the store's own error, and
//! each commit as an event with its counts.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::executor::block_on;
use kappa_index::Indexer;
use kappa_multifeed::Multifeed;
use kappa_view::sum::SumView;
use kappa_view::{Batch, MemoryStore, StoreError, StoreErrorKind, ViewStore};

/// Fails its first commit as a store whose server went away (before the
/// commit landed); then works.
struct DownOnce {
    inner: MemoryStore,
    commits: AtomicUsize,
}

impl ViewStore for DownOnce {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key)
    }
    fn scan(
        &self,
        r: kappa_view::KeyRange,
        rev: bool,
        lim: Option<usize>,
    ) -> Result<Vec<kappa_view::Row>, StoreError> {
        self.inner.scan(r, rev, lim)
    }
    fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        if self.commits.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(StoreError::from_message(
                StoreErrorKind::Unavailable,
                "connection to the view server lost",
            ));
        }
        self.inner.commit(batch)
    }
    fn state(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.state()
    }
    fn clear(&self) -> Result<(), StoreError> {
        self.inner.clear()
    }
}

#[test]
fn a_retry_and_the_commits_are_traced_in_the_indexer_span() {
    // The indexer runs on its own thread: a global subscriber sees it.
    let captured = kappa_testkit::trace::capture_global("kappa_index=debug");
    let mf = Multifeed::in_memory().unwrap();
    let w = mf.writer("local").unwrap();
    let store = DownOnce { inner: MemoryStore::new(), commits: AtomicUsize::new(0) };
    let sum = Arc::new(SumView::new(Arc::new(store)));
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
