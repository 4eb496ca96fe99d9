//! Rebuilds beside the live view: a version bump or a policy change on a
//! store with a shadow never shows readers a blank or partial view. A reader
//! in another thread sees the complete old view until the swap and the
//! complete new view after it (100,000 entries, memory and redb stores); a
//! rebuild interrupted by a restart resumes from its shadow; and a model
//! test (proptest) drives appends, version bumps, blocks, hides, unhides and
//! restarts in any order and checks the view after each `ready`.

use std::sync::Arc;

use futures::executor::block_on;
use kappa_index::{IndexEvent, Indexer};
use kappa_log::{Feed, KeyPair, SharedFeed};
use kappa_multifeed::Multifeed;
use kappa_storage::MemoryProvider;
use kappa_testkit::generations::{reader_sees_one_whole_view, snapshot, Generations};
use kappa_view::{Entry, MemoryStore, Tx, View, ViewError, ViewStore};
use kappa_view_redb::RedbViews;
use proptest::prelude::*;

/// A writer elsewhere with `n` entries, and its whole replica in `mf`.
fn replica_of(mf: &Multifeed, seed: u8, n: u64) -> SharedFeed {
    let w = kappa_testkit::feeds::writer(seed, (0..n).map(|k| k.to_string()));
    let r = mf.add_remote(*w.public_key()).unwrap();
    kappa_testkit::feeds::copy_all(&w, &r);
    r
}

/// Runs `change` (which starts the rebuild and returns the indexer) while a
/// reader scans the live store, and checks that it saw the whole old view,
/// then the whole new one; the rebuild's progress shows meanwhile.
fn readers_never_see_a_blank_view(
    store: Arc<dyn ViewStore>,
    old: (u64, usize),
    new: (u64, usize),
    change: impl FnOnce() -> Indexer,
) {
    let (olds, news) = reader_sees_one_whole_view(store.clone(), old, new, || {
        let ix = change();
        let mut saw_rebuild = false;
        loop {
            let st = ix.state();
            if let Some(r) = &st.rebuild {
                saw_rebuild = true;
                assert!(st.indexed <= st.total, "{st:?}");
                assert_eq!(r.live_indexed, old.1 as u64, "the live view's count is shown beside the rebuild");
            }
            if st.rebuild.is_none() && (saw_rebuild || snapshot(&*store).0 == Some(new.0)) {
                break;
            }
            std::thread::yield_now();
        }
        block_on(ix.ready()).unwrap();
        assert!(ix.state().rebuild.is_none());
    });
    eprintln!("reader saw the old view {olds} times, then the new one {news} times");
}

const N: u64 = 100_000;

fn version_bump_on(store: Arc<dyn ViewStore>) {
    let mf = Multifeed::in_memory().unwrap();
    replica_of(&mf, 1, N);
    {
        let ix =
            Indexer::start("gen", Arc::new(Generations { store: store.clone(), version: 1 }), &mf).unwrap();
        block_on(ix.ready()).unwrap();
    }
    readers_never_see_a_blank_view(store.clone(), (1, N as usize), (2, N as usize), || {
        let ix =
            Indexer::start("gen", Arc::new(Generations { store: store.clone(), version: 2 }), &mf).unwrap();
        assert!(ix.state().rebuild.is_some(), "a version bump rebuilds beside the live view");
        ix
    });
}

fn block_on_a_running_indexer(store: Arc<dyn ViewStore>) {
    let mf = Multifeed::in_memory().unwrap();
    let spam = replica_of(&mf, 1, N / 10);
    replica_of(&mf, 2, N - N / 10);
    let ix = Indexer::start("gen", Arc::new(Generations { store: store.clone(), version: 1 }), &mf).unwrap();
    block_on(ix.ready()).unwrap();
    let mut events = ix.subscribe();
    let ix = std::cell::RefCell::new(Some(ix));
    readers_never_see_a_blank_view(store.clone(), (1, N as usize), (1, (N - N / 10) as usize), || {
        mf.block(spam.public_key()).unwrap();
        ix.borrow_mut().take().unwrap()
    });
    let evs: Vec<IndexEvent> = std::iter::from_fn(|| events.try_recv().ok()).collect();
    assert!(evs.iter().any(|e| matches!(e, IndexEvent::Rebuilding { .. })), "{evs:?}");
    assert!(evs.iter().any(|e| matches!(e, IndexEvent::Rebuilt { .. })), "{evs:?}");
}

fn redb_store() -> (tempfile::TempDir, Arc<dyn ViewStore>) {
    let dir = tempfile::tempdir().unwrap();
    let views = RedbViews::open(dir.path().join("views.redb")).unwrap();
    (dir, Arc::new(views.store("gen").unwrap()))
}

#[test]
fn version_bump_keeps_the_old_view_until_the_swap_memory() {
    version_bump_on(Arc::new(MemoryStore::new()));
}

#[test]
fn version_bump_keeps_the_old_view_until_the_swap_redb() {
    let (_dir, store) = redb_store();
    version_bump_on(store);
}

#[test]
fn blocking_a_feed_keeps_the_old_view_until_the_swap_memory() {
    block_on_a_running_indexer(Arc::new(MemoryStore::new()));
}

#[test]
fn blocking_a_feed_keeps_the_old_view_until_the_swap_redb() {
    let (_dir, store) = redb_store();
    block_on_a_running_indexer(store);
}

/// A rebuild stopped half way (the indexer closed, as a process that exits)
/// resumes from what its shadow holds: the entries it had rebuilt are not
/// applied again, and the live view stays the old one until the swap.
#[test]
fn an_interrupted_rebuild_resumes_from_its_shadow() {
    let (_dir, store) = redb_store();
    let mf = Multifeed::in_memory().unwrap();
    replica_of(&mf, 1, 30_000);
    {
        let ix =
            Indexer::start("gen", Arc::new(Generations { store: store.clone(), version: 1 }), &mf).unwrap();
        block_on(ix.ready()).unwrap();
    }
    let shadow = store.shadow().unwrap().unwrap();
    let mut rebuilt = 0;
    {
        let ix =
            Indexer::start("gen", Arc::new(Generations { store: store.clone(), version: 2 }), &mf).unwrap();
        while ix.state().indexed < 5_000 {
            std::thread::yield_now();
        }
        drop(ix);
        let (v, n) = snapshot(&*shadow);
        if n > 0 {
            assert_eq!(v, Some(2));
            rebuilt = n;
        }
    }
    assert!(rebuilt > 0 && rebuilt < 30_000, "the rebuild was stopped half way ({rebuilt} rows)");
    assert_eq!(snapshot(&*store), (Some(1), 30_000), "the live view is the old one");
    let ix = Indexer::start("gen", Arc::new(Generations { store: store.clone(), version: 2 }), &mf).unwrap();
    let st = ix.state();
    assert_eq!(st.indexed, rebuilt as u64, "resumed from the shadow: {st:?}");
    assert_eq!(st.rebuild.as_ref().and_then(|r| r.live_version), Some(1));
    block_on(ix.ready()).unwrap();
    // Every entry applied once (snapshot checks the counts).
    assert_eq!(snapshot(&*store), (Some(2), 30_000));
    assert_eq!(snapshot(&*shadow), (None, 0), "the shadow is empty after the swap");
    drop(ix);
    // A stale rebuild (the version went back) is dropped, not swapped in.
    {
        let ix =
            Indexer::start("gen", Arc::new(Generations { store: store.clone(), version: 3 }), &mf).unwrap();
        while ix.state().indexed < 5_000 {
            std::thread::yield_now();
        }
    }
    let ix = Indexer::start("gen", Arc::new(Generations { store: store.clone(), version: 2 }), &mf).unwrap();
    assert!(ix.state().rebuild.is_none(), "version 2 is live: nothing to rebuild");
    block_on(ix.ready()).unwrap();
    assert_eq!(snapshot(&*store), (Some(2), 30_000));
    assert_eq!(snapshot(&*shadow), (None, 0), "the stale rebuild was dropped");
}

/// Data subscribers hear of an entry appended during a rebuild once, after
/// the swap (when a reader can see it), and not of the entries the live
/// view already showed.
#[test]
fn subscribers_hear_of_new_entries_after_the_swap() {
    let mf = Multifeed::in_memory().unwrap();
    let w = mf.writer("local").unwrap();
    w.append_batch((0..10_000).map(|k| format!("{{\"key\":\"k{k}\",\"value\":{k}}}"))).unwrap();
    let store: Arc<dyn ViewStore> = Arc::new(MemoryStore::new());
    {
        let kv = Arc::new(kappa_view::kv::KvView::new(store.clone()));
        let ix = Indexer::start("kv", kv, &mf).unwrap();
        block_on(ix.ready()).unwrap();
    }
    let kv = Arc::new(Bumped(kappa_view::kv::KvView::new(store.clone())));
    let mut updates = kv.0.subscribe();
    let ix = Indexer::start("kv", kv.clone(), &mf).unwrap();
    assert!(ix.state().rebuild.is_some());
    w.append(br#"{"key":"new","value":1}"#).unwrap();
    block_on(ix.ready()).unwrap();
    let got: Vec<_> = std::iter::from_fn(|| updates.try_recv().ok()).collect();
    let keys: Vec<&str> = got.iter().map(|u| u.key.as_str()).collect();
    assert_eq!(keys, vec!["new"], "only the entry new to readers");
    assert_eq!(kv.0.get("new").unwrap().len(), 1);
}

/// The kv view at version 2.
struct Bumped(kappa_view::kv::KvView);

impl View for Bumped {
    fn store(&self) -> &dyn ViewStore {
        self.0.store()
    }
    fn map(&self, entries: &[Entry], tx: &mut Tx<'_>) -> Result<(), ViewError> {
        self.0.map(entries, tx)
    }
    fn map_batches(&self, batches: &[&[Entry]], tx: &mut Tx<'_>) -> Result<(), ViewError> {
        self.0.map_batches(batches, tx)
    }
    fn indexed(&self, entries: &[Entry]) {
        self.0.indexed(entries)
    }
    fn version(&self) -> u64 {
        2
    }
}

#[derive(Debug, Clone)]
enum Op {
    Append(usize, u64),
    Bump,
    Block(usize),
    Hide(usize),
    Unhide(usize),
    /// Close the indexer without waiting for it (a rebuild may be half way).
    Restart,
    Ready,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..3usize, 1..400u64).prop_map(|(f, n)| Op::Append(f, n)),
        2 => Just(Op::Bump),
        1 => (0..3usize).prop_map(Op::Block),
        1 => (0..3usize).prop_map(Op::Hide),
        1 => (0..3usize).prop_map(Op::Unhide),
        2 => Just(Op::Restart),
        2 => Just(Op::Ready),
    ]
}

/// The model: entries per feed, blocked and hidden feeds, the version.
#[derive(Default)]
struct Model {
    len: [u64; 3],
    blocked: [bool; 3],
    hidden: [bool; 3],
    version: u64,
}

impl Model {
    fn visible_rows(&self) -> usize {
        (0..3).filter(|&i| !self.blocked[i] && !self.hidden[i]).map(|i| self.len[i] as usize).sum()
    }
}

fn run_model(ops: Vec<Op>, store: Arc<dyn ViewStore>) -> Result<(), TestCaseError> {
    let mf = Multifeed::in_memory().unwrap();
    // Three writers elsewhere, replicated in as they append.
    let writers: Vec<SharedFeed> = (0..3u8)
        .map(|i| {
            SharedFeed::new(
                Feed::builder(MemoryProvider::new())
                    .key_pair(KeyPair::from_seed(&[i + 1; 32]))
                    .open()
                    .unwrap(),
            )
        })
        .collect();
    let replicas: Vec<SharedFeed> = writers.iter().map(|w| mf.add_remote(*w.public_key()).unwrap()).collect();
    let mut m = Model { version: 1, ..Model::default() };
    let start = |v: u64| {
        Indexer::start("gen", Arc::new(Generations { store: store.clone(), version: v }), &mf).unwrap()
    };
    let mut ix = Some(start(1));
    let check = |ix: &Indexer, m: &Model| -> Result<(), TestCaseError> {
        block_on(ix.ready()).unwrap();
        let (v, n) = snapshot(&*store);
        prop_assert_eq!(n, m.visible_rows(), "rows after ready");
        if n > 0 {
            prop_assert_eq!(v, Some(m.version));
        }
        prop_assert!(ix.state().rebuild.is_none());
        Ok(())
    };
    for op in ops {
        match op {
            Op::Append(f, n) => {
                if m.blocked[f] {
                    continue;
                }
                let w = &writers[f];
                let from = w.len();
                w.append_batch((from..from + n).map(|k| k.to_string())).unwrap();
                for i in from..from + n {
                    let proof = w.lock().proof(i, replicas[f].lock().digest(i), false).unwrap();
                    replicas[f].put(i, &w.get(i).unwrap().unwrap(), &proof).unwrap();
                }
                m.len[f] += n;
            }
            Op::Bump => {
                m.version += 1;
                drop(ix.take());
                ix = Some(start(m.version));
            }
            Op::Block(f) => {
                if !m.blocked[f] {
                    mf.block(replicas[f].public_key()).unwrap();
                    m.blocked[f] = true;
                }
            }
            Op::Hide(f) => {
                if !m.blocked[f] {
                    mf.hide(replicas[f].public_key()).unwrap();
                    m.hidden[f] = true;
                }
            }
            Op::Unhide(f) => {
                if m.hidden[f] && !m.blocked[f] {
                    mf.unhide(replicas[f].public_key()).unwrap();
                    m.hidden[f] = false;
                }
            }
            Op::Restart => {
                drop(ix.take());
                ix = Some(start(m.version));
            }
            Op::Ready => check(ix.as_ref().unwrap(), &m)?,
        }
        // Whatever happens, a reader sees one whole generation (snapshot
        // panics on mixed versions or entries applied twice).
        snapshot(&*store);
    }
    check(ix.as_ref().unwrap(), &m)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn rebuilds_follow_the_model_memory(ops in proptest::collection::vec(op(), 1..24)) {
        run_model(ops, Arc::new(MemoryStore::new()))?;
    }

    #[test]
    fn rebuilds_follow_the_model_redb(ops in proptest::collection::vec(op(), 1..16)) {
        let (_dir, store) = redb_store();
        run_model(ops, store)?;
    }
}
