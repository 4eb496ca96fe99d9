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
use kappa_testkit::store::HookedStore;
use kappa_view::{Entry, MemoryStore, StoreError, StoreErrorKind, Tx, View, ViewError, ViewStore};

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

/// Reads seen while a commit waits: `(waiting, reads)`.
#[derive(Default)]
struct Held {
    state: Mutex<(bool, usize)>,
    read: Condvar,
    overlapped: AtomicUsize,
}

/// A store whose commits wait (up to 10 s) until the indexer reads during
/// them: the rows a commit writes land only after the next group has read.
fn holds_commits(inner: MemoryStore, held: Arc<Held>) -> HookedStore {
    let on_read = held.clone();
    HookedStore::new(inner, move |n, inner, batch| {
        // The last commit has no group behind it; the others wait for one.
        if n < (ENTRIES / 4096) as usize {
            let mut st = held.state.lock().unwrap();
            *st = (true, 0);
            let (mut st, _) =
                held.read.wait_timeout_while(st, Duration::from_secs(10), |st| st.1 == 0).unwrap();
            if st.1 > 0 {
                held.overlapped.fetch_add(1, Ordering::SeqCst);
            }
            *st = (false, 0);
        }
        inner.commit(batch)
    })
    .on_read(move || {
        let mut st = on_read.state.lock().unwrap();
        if st.0 {
            st.1 += 1;
            on_read.read.notify_all();
        }
    })
}

#[test]
fn the_next_group_is_mapped_while_a_commit_is_in_flight_and_reads_its_writes() {
    let mf = backlog();
    let store = MemoryStore::new();
    let held = Arc::new(Held::default());
    let view = Arc::new(Counter(holds_commits(store.clone(), held.clone())));
    let ix = Indexer::start("count", view.clone(), &mf).unwrap();
    block_on(ix.ready()).unwrap();
    let commits = view.0.commits();
    assert_eq!(commits, ENTRIES.div_ceil(4096) as usize, "one commit per group of 4,096");
    // Every commit but the last waited for, and saw, the next group's reads:
    // the rows it held had not landed when the next group counted on them.
    assert_eq!(held.overlapped.load(Ordering::SeqCst), commits - 1);
    check(&store);
}

/// A store that fails its `fail_at`th commit, after applying it if
/// `landed`. Transient: the indexer reloads the progress the store holds and
/// goes on.
fn fails_once(inner: MemoryStore, fail_at: usize, landed: bool) -> HookedStore {
    HookedStore::new(inner, move |n, inner, batch| {
        if n != fail_at {
            return inner.commit(batch);
        }
        if landed {
            inner.commit(batch)?;
        }
        Err(StoreError::from_message(StoreErrorKind::Unavailable, "injected: connection lost"))
    })
}

#[test]
fn a_failed_commit_in_flight_drops_the_group_mapped_behind_it() {
    let mf = backlog();
    for fail_at in 0..5 {
        for landed in [false, true] {
            let store = MemoryStore::new();
            let view = Arc::new(Counter(fails_once(store.clone(), fail_at, landed)));
            let ix = Indexer::start("count", view.clone(), &mf).unwrap();
            block_on(ix.ready()).unwrap();
            assert!(view.0.commits() > fail_at, "fault {fail_at} never fired");
            // Exactly once: the group mapped behind the failed commit was not
            // committed on top of it, and nothing was lost.
            check(&store);
        }
    }
}
