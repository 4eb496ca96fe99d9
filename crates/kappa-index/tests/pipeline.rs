//! Pipelined commits: with a backlog, the indexer maps the next group while
//! the one before commits. The next group must read the writes of the one in
//! flight (which the store may not hold yet), and must never be committed if
//! the one in flight fails.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use futures::executor::block_on;
use kappa_index::Indexer;
use kappa_multifeed::Multifeed;
use kappa_view::{Batch, Entry, MemoryStore, StoreError, StoreErrorKind, Tx, View, ViewError, ViewStore};

/// Keys the entries count into: fewer than a group's entries, so every group
/// reads rows that the group before it wrote.
const KEYS: u64 = 500;
/// Entries in the backlog: several commit groups of 4,096.
const ENTRIES: u64 = 20_000;

/// Counts entries per key `n % KEYS` (entry values are `n`), and how often each
/// entry was applied.
struct Counter<S>(S);

impl<S: ViewStore> View for Counter<S> {
    fn store(&self) -> &dyn ViewStore {
        &self.0
    }
    fn map(&self, entries: &[Entry], tx: &mut Tx<'_>) -> Result<(), ViewError> {
        for e in entries {
            let n: u64 = e.json()?;
            for key in [format!("key{}", n % KEYS).into_bytes(), e.id().into_bytes()] {
                let count = tx.get(&key)?.map_or(0, |v| u64::from_be_bytes(v.try_into().unwrap_or([0; 8])));
                tx.put(key, (count + 1).to_be_bytes().to_vec());
            }
        }
        Ok(())
    }
}

fn backlog() -> Multifeed {
    let mf = Multifeed::in_memory().unwrap();
    let w = mf.writer("local").unwrap();
    for start in (0..ENTRIES).step_by(1000) {
        w.append_batch((start..start + 1000).map(|n| format!("{n}\n"))).unwrap();
    }
    mf
}

/// Every key counted exactly what the entries hold, and every entry once.
fn check(store: &MemoryStore) {
    for k in 0..KEYS {
        let v = store.get(format!("key{k}").as_bytes()).unwrap().expect("a key never counted");
        let expected = (ENTRIES - k).div_ceil(KEYS);
        assert_eq!(u64::from_be_bytes(v.try_into().unwrap()), expected, "key{k}");
    }
    let rows = store.scan((std::ops::Bound::Unbounded, std::ops::Bound::Unbounded), false, None).unwrap();
    let entries: Vec<_> = rows.iter().filter(|(k, _)| !k.starts_with(b"key")).collect();
    assert_eq!(entries.len() as u64, ENTRIES);
    for (k, v) in entries {
        assert_eq!(v, &1u64.to_be_bytes().to_vec(), "{} applied more than once", String::from_utf8_lossy(k));
    }
}

/// A store whose commits wait (up to 10 s) until the indexer reads during
/// them: the rows a commit writes land only after the next group has read.
struct HoldsCommits {
    inner: MemoryStore,
    /// Reads seen while a commit was waiting.
    state: Mutex<(bool, usize)>,
    read: Condvar,
    overlapped: AtomicUsize,
    commits: AtomicUsize,
}

impl ViewStore for HoldsCommits {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let mut st = self.state.lock().unwrap();
        if st.0 {
            st.1 += 1;
            self.read.notify_all();
        }
        drop(st);
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
        // The last commit has no group behind it; the others wait for one.
        if n < (ENTRIES / 4096) as usize {
            let mut st = self.state.lock().unwrap();
            *st = (true, 0);
            let (mut st, _) =
                self.read.wait_timeout_while(st, Duration::from_secs(10), |st| st.1 == 0).unwrap();
            if st.1 > 0 {
                self.overlapped.fetch_add(1, Ordering::SeqCst);
            }
            *st = (false, 0);
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
fn the_next_group_is_mapped_while_a_commit_is_in_flight_and_reads_its_writes() {
    let mf = backlog();
    let store = MemoryStore::new();
    let holds = HoldsCommits {
        inner: store.clone(),
        state: Mutex::new((false, 0)),
        read: Condvar::new(),
        overlapped: AtomicUsize::new(0),
        commits: AtomicUsize::new(0),
    };
    let view = Arc::new(Counter(holds));
    let ix = Indexer::start("count", view.clone(), &mf).unwrap();
    block_on(ix.ready()).unwrap();
    let commits = view.0.commits.load(Ordering::SeqCst);
    assert_eq!(commits, ENTRIES.div_ceil(4096) as usize, "one commit per group of 4,096");
    // Every commit but the last waited for, and saw, the next group's reads:
    // the rows it held had not landed when the next group counted on them.
    assert_eq!(view.0.overlapped.load(Ordering::SeqCst), commits - 1);
    check(&store);
}

/// A store that fails its Nth commit, before or after applying it.
struct FailsOnce {
    inner: MemoryStore,
    commits: AtomicUsize,
    fail_at: usize,
    landed: bool,
}

impl ViewStore for FailsOnce {
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
        if self.commits.fetch_add(1, Ordering::SeqCst) != self.fail_at {
            return self.inner.commit(batch);
        }
        if self.landed {
            self.inner.commit(batch)?;
        }
        // Transient: the indexer reloads the progress the store holds and
        // goes on.
        Err(StoreError::from_message(StoreErrorKind::Unavailable, "injected: connection lost"))
    }
    fn state(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.state()
    }
    fn clear(&self) -> Result<(), StoreError> {
        self.inner.clear()
    }
}

#[test]
fn a_failed_commit_in_flight_drops_the_group_mapped_behind_it() {
    let mf = backlog();
    for fail_at in 0..5 {
        for landed in [false, true] {
            let store = MemoryStore::new();
            let view = Arc::new(Counter(FailsOnce {
                inner: store.clone(),
                commits: AtomicUsize::new(0),
                fail_at,
                landed,
            }));
            let ix = Indexer::start("count", view.clone(), &mf).unwrap();
            block_on(ix.ready()).unwrap();
            assert!(view.0.commits.load(Ordering::SeqCst) > fail_at, "fault {fail_at} never fired");
            // Exactly once: the group mapped behind the failed commit was not
            // committed on top of it, and nothing was lost.
            check(&store);
        }
    }
}
