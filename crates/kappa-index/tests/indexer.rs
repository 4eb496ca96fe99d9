//! The [A] cases of multifeed-index and kappa-core (reference §2, adapted), and
//! what SEMANTICS promises beyond JS: exactly once, pause that cannot be
//! defeated, an error state that ready reports and resume retries, versions
//! (0 included), holes.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::executor::block_on;
use futures::StreamExt;
use kappa_index::{IndexError, IndexEvent, Indexer, Status};
use kappa_log::{Feed, KeyPair, SharedFeed};
use kappa_multifeed::Multifeed;
use kappa_storage::MemoryProvider;
use kappa_testkit::store::HookedStore;
use kappa_view::sum::SumView;
use kappa_view::{Batch, Entry, MemoryStore, StoreError, StoreErrorKind, Tx, View, ViewError, ViewStore};

/// The cause of the errors the fault-injecting stores below make up.
#[derive(Debug, thiserror::Error)]
#[error("injected fault: {0}")]
struct InjectedFault(&'static str);

fn num(n: u64) -> String {
    format!("{n}\n")
}

fn sum_view(store: &MemoryStore) -> Arc<SumView> {
    Arc::new(SumView::new(Arc::new(store.clone())))
}

/// A view that records every map call: (feed, seqs), and counts per entry.
struct Recorder {
    store: MemoryStore,
    version: u64,
    max_batch: usize,
    calls: Mutex<Vec<Vec<u64>>>,
    fail_once: AtomicBool,
    slow: Duration,
}

impl Recorder {
    fn new(version: u64, max_batch: usize) -> Arc<Recorder> {
        Self::on(MemoryStore::new(), version, max_batch)
    }
    fn on(store: MemoryStore, version: u64, max_batch: usize) -> Arc<Recorder> {
        Arc::new(Recorder {
            store,
            version,
            max_batch,
            calls: Mutex::new(Vec::new()),
            fail_once: AtomicBool::new(false),
            slow: Duration::ZERO,
        })
    }
    fn calls(&self) -> Vec<Vec<u64>> {
        self.calls.lock().unwrap().clone()
    }
    /// How often each entry was applied, from the store's rows.
    fn counts(&self) -> Vec<(Vec<u8>, u64)> {
        self.store
            .scan((std::ops::Bound::Unbounded, std::ops::Bound::Unbounded), false, None)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, u64::from_be_bytes(v.try_into().unwrap())))
            .collect()
    }
}

impl View for Recorder {
    fn store(&self) -> &dyn ViewStore {
        &self.store
    }
    fn version(&self) -> u64 {
        self.version
    }
    fn max_batch(&self) -> usize {
        self.max_batch
    }
    fn map(&self, entries: &[Entry], tx: &mut Tx<'_>) -> Result<(), ViewError> {
        if self.fail_once.swap(false, Ordering::SeqCst) {
            return Err(ViewError::Map("injected failure".into()));
        }
        std::thread::sleep(self.slow);
        self.calls.lock().unwrap().push(entries.iter().map(|e| e.seq).collect());
        for e in entries {
            let key = e.id().into_bytes();
            let n = tx.get(&key)?.map_or(0, |v| u64::from_be_bytes(v.try_into().unwrap()));
            tx.put(key, (n + 1).to_be_bytes().to_vec());
        }
        Ok(())
    }
}

#[test]
fn simple_sum_view() {
    // kappa-core [A] 1 and the seed's example.
    let mf = Multifeed::in_memory().unwrap();
    let store = MemoryStore::new();
    let sum = sum_view(&store);
    let ix = Indexer::start("sum", sum.clone(), &mf).unwrap();
    mf.writer("local").unwrap().append(num(1)).unwrap();
    block_on(ix.ready()).unwrap();
    assert_eq!(sum.get().unwrap(), 1.0);
}

#[test]
fn views_still_work_while_paused() {
    // kappa-core [A] 2.
    let mf = Multifeed::in_memory().unwrap();
    let sum = sum_view(&MemoryStore::new());
    let ix = Indexer::start("sum", sum.clone(), &mf).unwrap();
    mf.writer("local").unwrap().append(num(1)).unwrap();
    block_on(ix.ready()).unwrap();
    block_on(ix.pause());
    block_on(ix.ready()).unwrap(); // resolves at once while paused
    assert_eq!(sum.get().unwrap(), 1.0);
    assert_eq!(ix.state().status, Status::Paused);
}

#[test]
fn indexed_events_add_up() {
    let mf = Multifeed::in_memory().unwrap();
    let view = Recorder::new(1, 100);
    let ix = Indexer::start("rec", view.clone(), &mf).unwrap();
    let mut events = ix.subscribe();
    let w = mf.writer("local").unwrap();
    w.append_batch((0..6).map(num)).unwrap();
    block_on(ix.ready()).unwrap();
    w.append(num(6)).unwrap();
    block_on(ix.ready()).unwrap();
    drop(ix);
    let total: usize = block_on(events.by_ref().collect::<Vec<_>>())
        .into_iter()
        .filter_map(|e| match e {
            IndexEvent::Indexed { count, .. } => Some(count),
            _ => None,
        })
        .sum();
    assert_eq!(total, 7);
}

#[test]
fn batch_size_when_the_index_comes_after_the_data() {
    let mf = Multifeed::in_memory().unwrap();
    mf.writer("local").unwrap().append_batch([num(10), num(10), num(10)]).unwrap();
    let view = Recorder::new(1, 10);
    let ix = Indexer::start("rec", view.clone(), &mf).unwrap();
    block_on(ix.ready()).unwrap();
    assert_eq!(view.calls(), vec![vec![0, 1, 2]], "one batch of 3");
    let many = Recorder::new(1, 10);
    mf.writer("local").unwrap().append_batch((0..25).map(num)).unwrap();
    let ix2 = Indexer::start("rec2", many.clone(), &mf).unwrap();
    block_on(ix2.ready()).unwrap();
    let sizes: Vec<usize> = many.calls().iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![10, 10, 8], "at most max_batch, ascending within a feed");
    drop((ix, ix2));
}

#[test]
fn pause_while_ready_then_resume() {
    let mf = Multifeed::in_memory().unwrap();
    let sum = sum_view(&MemoryStore::new());
    let ix = Indexer::start("sum", sum.clone(), &mf).unwrap();
    let w = mf.writer("local").unwrap();
    w.append(num(1)).unwrap();
    block_on(ix.ready()).unwrap();
    block_on(ix.pause());
    w.append_batch((0..10).map(|_| num(3))).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(sum.get().unwrap(), 1.0, "nothing indexed while paused");
    ix.resume();
    block_on(ix.ready()).unwrap();
    assert_eq!(sum.get().unwrap(), 31.0);
}

#[test]
fn pause_cannot_be_defeated_by_appends() {
    let mf = Multifeed::in_memory().unwrap();
    let w = mf.writer("local").unwrap();
    w.append_batch((0..50).map(num)).unwrap();
    let mut rec = Recorder::new(1, 5);
    Arc::get_mut(&mut rec).unwrap().slow = Duration::from_millis(5);
    let ix = Indexer::start("rec", rec.clone(), &mf).unwrap();
    std::thread::sleep(Duration::from_millis(12)); // mid-way through the batches
    let pausing = std::thread::scope(|s| {
        let h = s.spawn(|| block_on(ix.pause()));
        for i in 0..20 {
            w.append(num(100 + i)).unwrap(); // appends while the pause is pending
        }
        h.join().unwrap();
        rec.calls().len()
    });
    for i in 0..20 {
        w.append(num(200 + i)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(rec.calls().len(), pausing, "a map call ran after pause resolved");
    assert_eq!(ix.state().status, Status::Paused);
    ix.resume();
    block_on(ix.ready()).unwrap();
    assert_eq!(rec.counts().len(), 90);
    assert!(rec.counts().iter().all(|(_, n)| *n == 1));
}

#[test]
fn a_failing_map_is_an_error_state_that_ready_reports_and_resume_retries() {
    let mf = Multifeed::in_memory().unwrap();
    let rec = Recorder::new(1, 100);
    rec.fail_once.store(true, Ordering::SeqCst);
    let ix = Indexer::start("rec", rec.clone(), &mf).unwrap();
    let mut events = ix.subscribe();
    mf.writer("local").unwrap().append_batch((0..3).map(num)).unwrap();
    match block_on(ix.ready()) {
        Err(IndexError::View { view, .. }) => assert_eq!(view, "rec"),
        other => panic!("ready should report the error, got {other:?}"),
    }
    assert_eq!(ix.state().status, Status::Error);
    assert!(block_on(async {
        while let Some(e) = events.next().await {
            if matches!(e, IndexEvent::Error(_)) {
                return true;
            }
        }
        false
    }));
    ix.resume();
    block_on(ix.ready()).unwrap();
    assert_eq!(rec.counts().len(), 3, "the failed batch was retried");
}

#[test]
fn version_reopen_without_and_with_change() {
    let mf = Multifeed::in_memory().unwrap();
    let w = mf.writer("local").unwrap();
    w.append_batch((0..10).map(num)).unwrap();
    let store = MemoryStore::new();
    for (version, expect_calls) in [(1, 1), (1, 0), (2, 1), (0, 1), (0, 0), (7, 1)] {
        let rec = Recorder::on(store.clone(), version, 100);
        let ix = Indexer::start("rec", rec.clone(), &mf).unwrap();
        block_on(ix.ready()).unwrap();
        assert_eq!(rec.calls().len(), expect_calls, "version {version}");
        assert_eq!(rec.counts().len(), 10);
        assert!(
            rec.counts().iter().all(|(_, n)| *n == 1),
            "version {version}: rebuilt rows equal a fresh index"
        );
    }
}

#[test]
fn a_version_bump_while_paused_or_in_error_rebuilds() {
    let mf = Multifeed::in_memory().unwrap();
    mf.writer("local").unwrap().append_batch((0..5).map(num)).unwrap();
    let store = MemoryStore::new();
    {
        // Version 1 fails on its first batch: the error state, nothing committed.
        let rec = Recorder::on(store.clone(), 1, 2);
        rec.fail_once.store(true, Ordering::SeqCst);
        let ix = Indexer::start("rec", rec.clone(), &mf).unwrap();
        assert!(block_on(ix.ready()).is_err());
        assert_eq!(ix.state().status, Status::Error);
    }
    {
        // Bumped from the error state: rebuilt; then paused.
        let rec = Recorder::on(store.clone(), 2, 2);
        let ix = Indexer::start("rec", rec.clone(), &mf).unwrap();
        block_on(ix.ready()).unwrap();
        assert_eq!(rec.counts().len(), 5);
        assert!(rec.counts().iter().all(|(_, n)| *n == 1));
        block_on(ix.pause());
        assert_eq!(ix.state().status, Status::Paused);
    }
    // Bumped while paused: rebuilt from all entries, each once.
    let rec = Recorder::on(store.clone(), 3, 2);
    let ix = Indexer::start("rec", rec.clone(), &mf).unwrap();
    block_on(ix.ready()).unwrap();
    assert!(!rec.calls().is_empty(), "version 3 re-mapped the entries");
    assert_eq!(rec.counts().len(), 5);
    assert!(rec.counts().iter().all(|(_, n)| *n == 1));
}

fn put_block(w: &SharedFeed, r: &SharedFeed, i: u64) {
    let proof = w.lock().proof(i, r.lock().digest(i), false).unwrap();
    r.put(i, &w.get(i).unwrap().unwrap(), &proof).unwrap();
}

#[test]
fn holes_do_not_stall_and_fill_in_later() {
    // A writer elsewhere; our set holds a sparse replica of it.
    let w = SharedFeed::new(
        Feed::builder(MemoryProvider::new()).key_pair(KeyPair::from_seed(&[1; 32])).open().unwrap(),
    );
    w.append_batch((0..20).map(num)).unwrap();
    let mf = Multifeed::in_memory().unwrap();
    let replica = mf.add_remote(*w.public_key()).unwrap();
    for i in [0u64, 1, 5, 19] {
        put_block(&w, &replica, i);
    }
    let sum = sum_view(&MemoryStore::new());
    let ix = Indexer::start("sum", sum.clone(), &mf).unwrap();
    block_on(ix.ready()).unwrap();
    assert_eq!(
        sum.get().unwrap(),
        [0u64, 1, 5, 19].iter().sum::<u64>() as f64,
        "present entries indexed past the holes"
    );
    for i in 0..20 {
        if !replica.has(i) {
            put_block(&w, &replica, i);
        }
    }
    block_on(ix.ready()).unwrap();
    assert_eq!(sum.get().unwrap(), (0..20).sum::<u64>() as f64, "equal to a dense index");
}

#[test]
fn live_appends_and_new_feeds_wake_the_indexer() {
    let mf = Multifeed::in_memory().unwrap();
    let sum = sum_view(&MemoryStore::new());
    let ix = Indexer::start("sum", sum.clone(), &mf).unwrap();
    let mut events = ix.subscribe();
    mf.writer("a").unwrap().append(num(2)).unwrap();
    mf.writer("b").unwrap().append(num(3)).unwrap();
    // Nobody calls ready: the indexer gets there by itself. Its events say
    // when it changed state (the sum is committed before its status goes back
    // to idle, so the sum alone does not say it is done).
    block_on(async {
        loop {
            let st = ix.state();
            if (st.indexed, st.status) == (2, Status::Idle) {
                break;
            }
            let next = async_std::future::timeout(Duration::from_secs(60), events.next()).await;
            assert!(matches!(next, Ok(Some(_))), "the indexer stopped short: {st:?}");
        }
    });
    assert_eq!(sum.get().unwrap(), 5.0);
    let st = ix.state();
    assert_eq!((st.indexed, st.total, st.status), (2, 2, Status::Idle));
}

/// A store that fails the Nth commit (before applying it), then works again.
fn flaky<S: ViewStore>(inner: S, fail_at: usize) -> HookedStore<S> {
    HookedStore::new(inner, move |n, inner, batch| {
        if n == fail_at {
            return Err(StoreError::backend(InjectedFault("commit")));
        }
        inner.commit(batch)
    })
}

/// Counts how often each entry was applied (one row per entry id), over any
/// (fault-injecting) store.
struct Counting<S: ViewStore>(S);

impl<S: ViewStore> View for Counting<S> {
    fn store(&self) -> &dyn ViewStore {
        &self.0
    }
    fn max_batch(&self) -> usize {
        3
    }
    fn map(&self, entries: &[Entry], tx: &mut Tx<'_>) -> Result<(), ViewError> {
        for e in entries {
            let key = e.id().into_bytes();
            let n = tx.get(&key)?.map_or(0, |v| u64::from_be_bytes(v.try_into().unwrap()));
            tx.put(key, (n + 1).to_be_bytes().to_vec());
        }
        Ok(())
    }
}

/// Fails every commit point in turn, "restarts" on what was committed, and
/// checks that every entry was applied exactly once; `make` gives the store of a
/// round (the same underlying data for the crash and the restart).
fn exactly_once_with<S: ViewStore + Clone>(make: impl Fn() -> S) {
    for fail_at in 0..8 {
        // Entries arrive in rounds, each indexed by its own commit, so every
        // commit point of the run is a place the "crash" can hit.
        let mf = Multifeed::in_memory().unwrap();
        let writers = [mf.writer("a").unwrap(), mf.writer("b").unwrap()];
        let store = make();
        {
            let view = Arc::new(Counting(flaky(store.clone(), fail_at)));
            let ix = Indexer::start("count", view.clone(), &mf).unwrap();
            for round in 0..8 {
                writers[round % 2].append_batch([num(1), num(2)]).unwrap();
                let _ = block_on(ix.ready()); // from commit `fail_at` on: the "crash"
            }
            assert!(view.0.commits() > fail_at, "fault {fail_at} never fired");
        }
        // Restart on what was committed.
        let view = Arc::new(Counting(flaky(store.clone(), usize::MAX)));
        let ix = Indexer::start("count", view, &mf).unwrap();
        block_on(ix.ready()).unwrap();
        let rows = store.scan((std::ops::Bound::Unbounded, std::ops::Bound::Unbounded), false, None).unwrap();
        assert_eq!(rows.len(), 16, "fail_at {fail_at}");
        for (k, v) in rows {
            assert_eq!(
                v,
                1u64.to_be_bytes().to_vec(),
                "fail_at {fail_at}: {} applied more than once",
                String::from_utf8_lossy(&k)
            );
        }
    }
}

#[test]
fn exactly_once_when_any_commit_fails_memory() {
    exactly_once_with(MemoryStore::new);
}

#[test]
fn exactly_once_when_any_commit_fails_redb() {
    let dir = tempfile::tempdir().unwrap();
    let views = kappa_view_redb::RedbViews::open(dir.path().join("v.redb")).unwrap();
    let n = AtomicUsize::new(0);
    exactly_once_with(|| views.store(&format!("count{}", n.fetch_add(1, Ordering::SeqCst))).unwrap());
}

#[test]
fn concurrent_writers_while_indexing() {
    let mf = Multifeed::in_memory().unwrap();
    let sum = sum_view(&MemoryStore::new());
    let ix = Indexer::start("sum", sum.clone(), &mf).unwrap();
    std::thread::scope(|s| {
        for t in 0..4 {
            let w = mf.writer(&format!("w{t}")).unwrap();
            s.spawn(move || {
                for i in 0..250 {
                    w.append(num(i)).unwrap();
                }
            });
        }
    });
    block_on(ix.ready()).unwrap();
    assert_eq!(sum.get().unwrap(), 4.0 * (0..250).sum::<u64>() as f64);
}

/// A store that takes its time on every commit.
fn slow(inner: MemoryStore) -> HookedStore {
    HookedStore::new(inner, |_, inner, batch| {
        std::thread::sleep(Duration::from_millis(20));
        inner.commit(batch)
    })
}

#[test]
fn a_slow_store_with_appends_meanwhile() {
    let mf = Multifeed::in_memory().unwrap();
    let w = mf.writer("local").unwrap();
    let store = MemoryStore::new();
    let sum = Arc::new(SumView::new(Arc::new(slow(store.clone()))));
    let ix = Indexer::start("sum", sum.clone(), &mf).unwrap();
    for i in 0..30 {
        w.append(num(i)).unwrap();
        if i % 7 == 0 {
            std::thread::sleep(Duration::from_millis(15));
        }
    }
    block_on(ix.ready()).unwrap();
    assert_eq!(
        sum.get().unwrap(),
        (0..30).sum::<u64>() as f64,
        "ready waits for entries that arrived meanwhile"
    );
}

/// A store whose server is "down" for commits `down`: even-numbered ones fail
/// before landing, odd-numbered ones land and then lose their answer (the
/// connection broke after the commit was sent). `state` fails twice after each
/// outage commit, as the server is still away.
struct Outage {
    inner: MemoryStore,
    commits: AtomicUsize,
    down: std::ops::Range<usize>,
    state_failures: AtomicUsize,
}

impl ViewStore for Outage {
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
        let n = self.commits.fetch_add(1, Ordering::SeqCst);
        if !self.down.contains(&n) {
            return self.inner.commit(batch);
        }
        self.state_failures.store(2, Ordering::SeqCst);
        if n % 2 == 1 {
            self.inner.commit(batch)?;
        }
        Err(StoreError::from_message(
            StoreErrorKind::Unavailable,
            format!("connection lost during commit {n}"),
        ))
    }
    fn state(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let left = self.state_failures.load(Ordering::SeqCst);
        if left > 0 {
            self.state_failures.store(left - 1, Ordering::SeqCst);
            return Err(StoreError::from_message(StoreErrorKind::Unavailable, "server restarting"));
        }
        self.inner.state()
    }
    fn clear(&self) -> Result<(), StoreError> {
        self.inner.clear()
    }
}

#[test]
fn an_unavailable_store_is_retried_without_losing_or_repeating_entries() {
    for down in [0..1, 1..2, 2..6, 3..4] {
        let mf = Multifeed::in_memory().unwrap();
        let writers = [mf.writer("a").unwrap(), mf.writer("b").unwrap()];
        let store = MemoryStore::new();
        let view = Arc::new(Counting(Outage {
            inner: store.clone(),
            commits: AtomicUsize::new(0),
            down: down.clone(),
            state_failures: AtomicUsize::new(0),
        }));
        let ix = Indexer::start("count", view.clone(), &mf).unwrap();
        let mut events = ix.subscribe();
        for round in 0..8 {
            writers[round % 2].append_batch([num(1), num(2)]).unwrap();
            // No resume: the indexer gets over the outage by itself.
            block_on(ix.ready()).unwrap();
        }
        let st = ix.state();
        assert_eq!((st.indexed, st.total, st.error), (16, 16, None), "down {down:?}");
        let rows = store.scan((std::ops::Bound::Unbounded, std::ops::Bound::Unbounded), false, None).unwrap();
        assert_eq!(rows.len(), 16, "down {down:?}");
        for (k, v) in rows {
            assert_eq!(
                v,
                1u64.to_be_bytes().to_vec(),
                "down {down:?}: {} not applied once",
                String::from_utf8_lossy(&k)
            );
        }
        let mut retried = 0;
        while let Ok(ev) = events.try_recv() {
            retried += matches!(ev, IndexEvent::Retrying(_)) as usize;
        }
        assert!(retried >= down.len(), "down {down:?}: {retried} Retrying events");
    }
}

/// A commit that landed but reported a (non-transient) error: the indexer
/// stops; `resume` reloads the stored progress, so the batch is not applied
/// twice.
#[test]
fn resume_after_a_commit_that_landed_but_failed_does_not_repeat_it() {
    let lands_then_fails = |inner| {
        HookedStore::new(inner, |n, inner: &MemoryStore, batch| {
            inner.commit(batch)?;
            if n == 1 {
                return Err(StoreError::backend(InjectedFault("the answer was lost")));
            }
            Ok(())
        })
    };
    let mf = Multifeed::in_memory().unwrap();
    let w = mf.writer("a").unwrap();
    let store = MemoryStore::new();
    let ix = Indexer::start("count", Arc::new(Counting(lands_then_fails(store.clone()))), &mf).unwrap();
    let mut resumed = false;
    for round in 0..4 {
        w.append_batch([num(1), num(2)]).unwrap();
        if block_on(ix.ready()).is_err() {
            assert_eq!(round, 1, "the second commit fails");
            ix.resume();
            resumed = true;
            block_on(ix.ready()).unwrap();
        }
    }
    assert!(resumed, "the failing commit was hit");
    let rows = store.scan((std::ops::Bound::Unbounded, std::ops::Bound::Unbounded), false, None).unwrap();
    assert_eq!(rows.len(), 8);
    for (k, v) in rows {
        assert_eq!(v, 1u64.to_be_bytes().to_vec(), "{} applied more than once", String::from_utf8_lossy(&k));
    }
}
