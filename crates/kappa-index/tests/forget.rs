//! The kv view forgets a blocked or hidden feed without a rebuild
//! (`View::forget`): the feed's heads go, the values its entries had
//! replaced are heads again, and the rows equal those of a view indexed from
//! scratch without it; a feed unhidden comes back; a feed blocked while the
//! view was closed is forgotten at start.

use std::sync::Arc;

use futures::executor::block_on;
use kappa_index::{IndexEvent, Indexer};
use kappa_log::SharedFeed;
use kappa_multifeed::Multifeed;
use kappa_view::kv::KvView;
use kappa_view::{MemoryStore, Row, ViewStore};
use kappa_view_redb::RedbViews;

const KEYS: u64 = 200;

/// A database with a local writer of keys `k0..` and a peer's feed that
/// overwrites the first half of them (linking the local heads) and writes
/// keys `s0..` of its own.
fn database() -> (Multifeed, SharedFeed, SharedFeed) {
    let mf = Multifeed::in_memory().unwrap();
    let local = mf.writer("local").unwrap();
    local
        .append_batch(
            (0..KEYS).map(|k| format!("{}\n", serde_json::json!({"key": format!("k{k}"), "value": k}))),
        )
        .unwrap();
    let hex = local.public_key().to_hex();
    let peer = kappa_testkit::feeds::writer(
        9,
        (0..KEYS / 2)
            .map(|k| serde_json::json!({"key": format!("k{k}"), "value": "spam", "links": [format!("{hex}@{k}")]}))
            .chain((0..KEYS / 2).map(|k| serde_json::json!({"key": format!("s{k}"), "value": "spam"})))
            .map(|v| format!("{v}\n")),
    );
    let replica = mf.add_remote(*peer.public_key()).unwrap();
    kappa_testkit::feeds::copy_all(&peer, &replica);
    (mf, local, replica)
}

/// The rows but the records (`r` rows, one per batch: their cut depends on
/// how the entries were batched; `kappa-view`'s tests check them).
fn rows(store: &dyn ViewStore) -> Vec<Row> {
    let all = store.scan((std::ops::Bound::Unbounded, std::ops::Bound::Unbounded), false, None).unwrap();
    all.into_iter().filter(|(k, _)| k.first() != Some(&b'r')).collect()
}

/// The rows a view indexed from scratch over `mf` holds.
fn from_scratch(mf: &Multifeed) -> Vec<Row> {
    let store = Arc::new(MemoryStore::new());
    let ix = Indexer::start("kv", Arc::new(KvView::new(store.clone())), mf).unwrap();
    block_on(ix.ready()).unwrap();
    rows(&*store)
}

fn head_feed(kv: &KvView, key: &str) -> Vec<String> {
    kv.get(key).unwrap().into_iter().map(|h| h.id.split('@').next().unwrap_or_default().to_owned()).collect()
}

/// What the indexer said until now (without waiting).
fn events(rx: &mut futures::channel::mpsc::UnboundedReceiver<IndexEvent>) -> Vec<IndexEvent> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

fn forgets_on(store: Arc<dyn ViewStore>, hide: bool) {
    let (mf, local, peer) = database();
    let kv = Arc::new(KvView::new(store.clone()));
    let ix = Indexer::start("kv", kv.clone(), &mf).unwrap();
    block_on(ix.ready()).unwrap();
    let (lh, ph) = (local.public_key().to_hex(), peer.public_key().to_hex());
    assert_eq!(head_feed(&kv, "k0"), vec![ph.clone()], "the peer's value replaced the local one");
    assert_eq!(kv.get("s0").unwrap().len(), 1);
    let mut rx = ix.subscribe();

    if hide {
        mf.hide(peer.public_key()).unwrap();
    } else {
        mf.block(peer.public_key()).unwrap();
    }
    block_on(ix.ready()).unwrap();
    let evs = events(&mut rx);
    assert!(
        evs.iter()
            .any(|e| matches!(e, IndexEvent::Forgotten { feeds, .. } if feeds == &[*peer.public_key()])),
        "{evs:?}"
    );
    assert!(!evs.iter().any(|e| matches!(e, IndexEvent::Rebuilding { .. })), "no rebuild: {evs:?}");
    for k in 0..KEYS {
        assert_eq!(head_feed(&kv, &format!("k{k}")), vec![lh.clone()], "k{k} is the local value again");
    }
    assert!(kv.get("s0").unwrap().is_empty());
    assert_eq!(ix.state().indexed, KEYS);
    assert_eq!(rows(&*store), from_scratch(&mf), "the rows of a view indexed without the feed");

    if hide {
        // Unhidden: its entries are indexed again, as if never forgotten.
        mf.unhide(peer.public_key()).unwrap();
        block_on(ix.ready()).unwrap();
        assert_eq!(head_feed(&kv, "k0"), vec![ph]);
        assert_eq!(ix.state().indexed, 2 * KEYS);
        assert_eq!(rows(&*store), from_scratch(&mf));
    }
}

fn redb() -> (tempfile::TempDir, Arc<dyn ViewStore>) {
    let dir = tempfile::tempdir().unwrap();
    let views = RedbViews::open(dir.path().join("views.redb")).unwrap();
    (dir, Arc::new(views.store("kv").unwrap()))
}

#[test]
fn a_blocked_feed_is_forgotten_without_a_rebuild_memory() {
    forgets_on(Arc::new(MemoryStore::new()), false);
}

#[test]
fn a_blocked_feed_is_forgotten_without_a_rebuild_redb() {
    let (_dir, store) = redb();
    forgets_on(store, false);
}

#[test]
fn a_hidden_feed_is_forgotten_and_comes_back_when_unhidden_memory() {
    forgets_on(Arc::new(MemoryStore::new()), true);
}

#[test]
fn a_hidden_feed_is_forgotten_and_comes_back_when_unhidden_redb() {
    let (_dir, store) = redb();
    forgets_on(store, true);
}

#[test]
fn a_feed_blocked_while_the_view_was_closed_is_forgotten_at_start() {
    let (_dir, store) = redb();
    let (mf, local, peer) = database();
    {
        let ix = Indexer::start("kv", Arc::new(KvView::new(store.clone())), &mf).unwrap();
        block_on(ix.ready()).unwrap();
    }
    mf.block(peer.public_key()).unwrap();
    let kv = Arc::new(KvView::new(store.clone()));
    let ix = Indexer::start("kv", kv.clone(), &mf).unwrap();
    assert_eq!(ix.rebuilt_because(), None, "forgotten, not rebuilt");
    // Forgotten before the indexer's first batch: the view is right at once.
    assert_eq!(head_feed(&kv, "k1"), vec![local.public_key().to_hex()]);
    block_on(ix.ready()).unwrap();
    assert_eq!(rows(&*store), from_scratch(&mf));
}
