//! Seed mode (`KappaBuilder::seed_mode`): a database that replicates
//! everything and indexes nothing; views turned back on later catch up,
//! indexing every entry that arrived meanwhile exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_std::os::unix::net::UnixStream;
use kappa_core::index::Progress;
use kappa_core::view::{Entry, Tx, View, ViewError, ViewStore};
use kappa_core::view_redb::RedbViews;
use kappa_core::{Kappa, KappaError, ReplicateOptions, VIEWS_FILE};

const KEY: [u8; 32] = [9; 32];
const VIEW: &str = "count";

/// Counts, in its store, how often each entry was mapped (a row per entry id
/// holding a `u64`), and, in memory, the entries mapped by this process.
struct CountView {
    store: Arc<dyn ViewStore>,
    mapped: Arc<Mutex<HashMap<String, u64>>>,
}

impl View for CountView {
    fn store(&self) -> &dyn ViewStore {
        &*self.store
    }

    fn map(&self, entries: &[Entry], tx: &mut Tx<'_>) -> Result<(), ViewError> {
        let mut mapped = self.mapped.lock().unwrap();
        for e in entries {
            let id = e.id();
            let n = tx.get(id.as_bytes())?.map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap()));
            tx.put(id.as_bytes().to_vec(), (n + 1).to_be_bytes().to_vec());
            *mapped.entry(id).or_default() += 1;
        }
        Ok(())
    }
}

fn open(dir: &Path, seed: bool) -> Kappa {
    Kappa::builder().dir(dir).shared_key(KEY).seed_mode(seed).open().unwrap()
}

type Mapped = Arc<Mutex<HashMap<String, u64>>>;

fn use_count(db: &Kappa) -> (kappa_core::ViewHandle<CountView>, Mapped) {
    let mapped: Mapped = Arc::default();
    let m = mapped.clone();
    let view = db.use_view(VIEW, 1, move |store| CountView { store, mapped: m }).unwrap();
    (view, mapped)
}

/// The view's progress as stored in `views.redb` (read with the file closed by
/// every database).
fn stored_progress(dir: &Path) -> Option<Progress> {
    let views = RedbViews::open(dir.join(VIEWS_FILE)).unwrap();
    let state = views.store(VIEW).unwrap().state().unwrap();
    state.and_then(|b| Progress::decode(&b))
}

fn sync(a: &Kappa, b: &Kappa) -> u64 {
    async_std::task::block_on(async {
        let (x, y) = UnixStream::pair().unwrap();
        let (ra, rb) = futures::future::join(
            a.replicate(x, ReplicateOptions::new(true)),
            b.replicate(y, ReplicateOptions::new(false)),
        )
        .await;
        ra.unwrap();
        rb.unwrap().blocks_received()
    })
}

#[test]
fn seed_mode_indexes_nothing_and_views_catch_up_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("seed");

    // The seed node first runs with its view, over 10 entries of its own.
    let own = 10u64;
    {
        let db = open(&dir, false);
        let (view, _) = use_count(&db);
        let w = db.writer("local").unwrap();
        for i in 0..own {
            w.append(&i).unwrap();
        }
        async_std::task::block_on(view.ready()).unwrap();
        drop(view);
        db.close().unwrap();
    }
    let before = std::fs::read(dir.join(VIEWS_FILE)).unwrap();
    assert_eq!(stored_progress(&dir).unwrap().count(), own);
    // Reading it sealed it again the same: the bytes stay as they were.
    let before_seal = std::fs::read(dir.join(VIEWS_FILE)).unwrap();

    // Two writers elsewhere, N entries between them.
    let source = Kappa::builder().shared_key(KEY).open().unwrap();
    let (per_writer, writers) = (300u64, 2u64);
    for w in 0..writers {
        let writer = source.writer(&format!("w{w}")).unwrap();
        let values: Vec<u64> = (0..per_writer).collect();
        writer.append_batch(&values).unwrap();
    }
    let n = per_writer * writers;

    // Seed mode: everything replicates, no view can be used, nothing is indexed.
    {
        let seed = open(&dir, true);
        assert!(seed.is_seed());
        assert!(matches!(
            seed.use_view(VIEW, 1, |store| CountView { store, mapped: Arc::default() }),
            Err(KappaError::SeedMode)
        ));
        assert_eq!(sync(&source, &seed), n);
        let held: u64 = seed.feeds().iter().map(|f| f.len()).sum();
        assert_eq!(held, n + own);
        assert!(!seed.views_open_for_writing());
        seed.close().unwrap();
    }
    // The view file was not touched: same bytes, same stored progress.
    let after = std::fs::read(dir.join(VIEWS_FILE)).unwrap();
    assert!(after == before || after == before_seal, "seed mode changed views.redb");
    assert_eq!(stored_progress(&dir).unwrap().count(), own, "seed mode indexed entries");

    // Views on again: the view catches up with the N new entries, each once.
    {
        let db = open(&dir, false);
        let (view, mapped) = use_count(&db);
        assert!(view.rebuilt_because().is_none());
        async_std::task::block_on(view.ready()).unwrap();
        let state = view.state();
        assert_eq!((state.indexed, state.total), (n + own, n + own));
        let mapped = mapped.lock().unwrap();
        assert_eq!(mapped.len() as u64, n, "only the entries that arrived in seed mode are mapped");
        assert!(mapped.values().all(|&c| c == 1), "an entry was mapped twice");
        // Every entry's stored count is 1: the old ones were not mapped again.
        for f in db.feeds() {
            for seq in 0..f.len() {
                let id = format!("{}@{seq}", f.public_key().to_hex());
                let stored = view
                    .store()
                    .get(id.as_bytes())
                    .unwrap()
                    .map(|b| u64::from_be_bytes(b.try_into().unwrap()));
                assert_eq!(stored, Some(1), "{id}");
            }
            let local = f.public_key() == db.writer("local").unwrap().feed().public_key();
            assert!(
                local
                    || mapped.keys().filter(|id| id.starts_with(&f.public_key().to_hex())).count() as u64
                        == f.len()
            );
        }
        drop(mapped);
        drop(view);
        db.close().unwrap();
    }
    // A second open maps nothing: the catch-up happened once.
    let db = open(&dir, false);
    let (view, mapped) = use_count(&db);
    async_std::task::block_on(view.ready()).unwrap();
    assert!(mapped.lock().unwrap().is_empty());
    assert_eq!(view.state().indexed, n + own);
}

#[test]
fn a_seed_database_creates_no_view_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fresh");
    let seed = open(&dir, true);
    seed.writer("local").unwrap().append(&1).unwrap();
    assert!(matches!(seed.view_store(VIEW), Err(KappaError::SeedMode)));
    seed.close().unwrap();
    drop(seed);
    assert!(!dir.join(VIEWS_FILE).exists());
    // And it opens with views afterwards.
    let db = open(&dir, false);
    let (view, mapped) = use_count(&db);
    async_std::task::block_on(view.ready()).unwrap();
    assert_eq!(mapped.lock().unwrap().len(), 1);
}
