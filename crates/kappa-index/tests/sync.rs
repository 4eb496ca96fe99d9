//! Indexing replicated data: multifeed-index [A] 43 (sync then index), 46 (kv
//! fork and merge across peers), 56 (indexes on both sides of a sync), and
//! kappa-view-kv [A] 58 (update notifications per key).

use std::sync::Arc;

use async_std::os::unix::net::UnixStream;
use futures::StreamExt;
use kappa_index::Indexer;
use kappa_multifeed::{Multifeed, ReplicateOptions};
use kappa_view::kv::KvView;
use kappa_view::sum::SumView;
use kappa_view::MemoryStore;
use serde_json::json;

const KEY: [u8; 32] = [9; 32];

async fn sync(a: &Multifeed, b: &Multifeed) {
    let (s1, s2) = UnixStream::pair().unwrap();
    let (fa, _ha) = a.session(s1, ReplicateOptions::new(true).shared_key(KEY)).unwrap();
    let (fb, _hb) = b.session(s2, ReplicateOptions::new(false).shared_key(KEY)).unwrap();
    let (ra, rb) = futures::future::join(fa, fb).await;
    ra.unwrap();
    rb.unwrap();
}

fn sum(mf: &Multifeed) -> (Arc<SumView>, Indexer) {
    let view = Arc::new(SumView::new(Arc::new(MemoryStore::new())));
    let ix = Indexer::start("sum", view.clone(), mf).unwrap();
    (view, ix)
}

#[async_std::test]
async fn sync_then_index_and_indexes_on_both_sides() {
    let (a, b) = (Multifeed::in_memory().unwrap(), Multifeed::in_memory().unwrap());
    a.writer("local").unwrap().append_batch(["1\n", "2\n", "3\n"]).unwrap();
    b.writer("local").unwrap().append_batch(["15\n", "23\n"]).unwrap();
    // 56: indexes already running on both sides while they sync.
    let (sum_a, ix_a) = sum(&a);
    sync(&a, &b).await;
    // 43: an index created after the sync.
    let (sum_b, ix_b) = sum(&b);
    ix_a.ready().await.unwrap();
    ix_b.ready().await.unwrap();
    assert_eq!(sum_a.get().unwrap(), 44.0);
    assert_eq!(sum_b.get().unwrap(), 44.0);
    let st = ix_a.state();
    assert_eq!((st.indexed, st.total), (5, 5));
}

fn id(mf: &Multifeed, name: &str, seq: u64) -> String {
    format!("{}@{seq}", mf.writer(name).unwrap().public_key().to_hex())
}

fn put(mf: &Multifeed, key: &str, value: u32, links: Vec<String>) -> u64 {
    let v = json!({"key": key, "value": value, "links": links});
    mf.writer("local").unwrap().append(format!("{v}\n")).unwrap()
}

#[async_std::test]
async fn kv_fork_across_peers_and_merge() {
    let (a, b) = (Multifeed::in_memory().unwrap(), Multifeed::in_memory().unwrap());
    let kv_a = Arc::new(KvView::new(Arc::new(MemoryStore::new())));
    let kv_b = Arc::new(KvView::new(Arc::new(MemoryStore::new())));
    let ix_a = Indexer::start("kv", kv_a.clone(), &a).unwrap();
    let ix_b = Indexer::start("kv", kv_b.clone(), &b).unwrap();
    let mut updates = kv_b.subscribe_key("doc");
    put(&a, "doc", 1, vec![]);
    sync(&a, &b).await;
    let first = id(&a, "local", 0);
    // Both peers edit the same version concurrently: a fork.
    put(&a, "doc", 2, vec![first.clone()]);
    put(&b, "doc", 3, vec![first.clone()]);
    sync(&a, &b).await;
    ix_a.ready().await.unwrap();
    ix_b.ready().await.unwrap();
    let heads = |kv: &KvView| {
        let mut v: Vec<String> = kv.get("doc").unwrap().into_iter().map(|h| h.id).collect();
        v.sort();
        v
    };
    let mut fork = vec![id(&a, "local", 1), id(&b, "local", 0)];
    fork.sort();
    assert_eq!(heads(&kv_a), fork);
    assert_eq!(heads(&kv_b), fork);
    // a merges: one head on both sides after the next sync.
    put(&a, "doc", 4, fork.clone());
    sync(&a, &b).await;
    ix_a.ready().await.unwrap();
    ix_b.ready().await.unwrap();
    assert_eq!(heads(&kv_a), vec![id(&a, "local", 2)]);
    assert_eq!(heads(&kv_b), heads(&kv_a));
    assert_eq!(kv_b.get("doc").unwrap()[0].json::<serde_json::Value>().unwrap()["value"], 4);
    // Every write of "doc" was announced to b's subscriber.
    let seen: Vec<u64> = updates
        .by_ref()
        .take(4)
        .map(|u| u.head.json::<serde_json::Value>().unwrap()["value"].as_u64().unwrap())
        .collect()
        .await;
    let mut seen = seen;
    seen.sort();
    assert_eq!(seen, vec![1, 2, 3, 4]);
    drop((ix_a, ix_b));
}
