//! Indexing 100,000 small JSON entries `{key, value}` of one feed from scratch:
//! the sum view and the kv view in memory, and the kv view on redb with durable
//! commits (the JS figures are in the reference: 300k/s, 40k/s and 31k/s).
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kappa_index::Indexer;
use kappa_log::encoding::{Codec, Json};
use kappa_multifeed::Multifeed;
use kappa_view::kv::KvView;
use kappa_view::sum::SumView;
use kappa_view::{MemoryStore, View, ViewStore};
use kappa_view_redb::RedbViews;
use serde::Deserialize;

const N: u64 = 100_000;

fn database() -> Multifeed {
    let mf = Multifeed::in_memory().unwrap();
    let w = mf.writer("local").unwrap();
    let codec = Json::<serde_json::Value>::new();
    let mut i = 0;
    while i < N {
        let end = (i + 1000).min(N);
        let batch: Vec<Vec<u8>> = (i..end)
            .map(|k| codec.encode(&serde_json::json!({"key": format!("k{k}"), "value": k})).unwrap())
            .collect();
        w.append_batch(batch).unwrap();
        i = end;
    }
    mf
}

#[derive(Deserialize)]
struct Row {
    value: f64,
}

fn index_once(mf: &Multifeed, view: Arc<dyn View>) -> Duration {
    let start = Instant::now();
    let ix = Indexer::start("bench", view, mf).unwrap();
    futures::executor::block_on(ix.ready()).unwrap();
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let mf = database();
    let mut g = c.benchmark_group("index_100k");
    g.throughput(Throughput::Elements(N));
    g.sample_size(10);
    g.bench_function("sum/memory", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let store: Arc<dyn ViewStore> = Arc::new(MemoryStore::new());
                    let view = SumView::with(store, |e| {
                        serde_json::from_slice::<Row>(&e.value).ok().map(|r| r.value)
                    });
                    index_once(&mf, Arc::new(view))
                })
                .sum()
        })
    });
    g.bench_function("kv/memory", |b| {
        b.iter_custom(|iters| {
            (0..iters).map(|_| index_once(&mf, Arc::new(KvView::new(Arc::new(MemoryStore::new()))))).sum()
        })
    });
    g.bench_function("kv/redb_durable", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let dir = tempfile::tempdir().unwrap();
                    let views = RedbViews::open(dir.path().join("views.redb")).unwrap();
                    let store = Arc::new(views.store("kv").unwrap());
                    index_once(&mf, Arc::new(KvView::new(store)))
                })
                .sum()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(10)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
