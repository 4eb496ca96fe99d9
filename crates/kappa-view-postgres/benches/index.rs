//! Indexing 100,000 small JSON entries `{key, value}` of one feed into the kv
//! view on PostgreSQL (a throwaway local server on loopback TCP, default
//! settings: fsync on), the same over TLS (`verify-full`), and the kv view on
//! redb with durable commits, in the same run. The indexer commits up to 4,096
//! entries per transaction (41 `map` batches of 100, mapped together): one read
//! and one commit round trip each, the commit of a group pipelined with the
//! mapping of the next. Each iteration indexes into a fresh schema, dropped
//! after it, then a checkpoint (untimed): a server at rest each time. Skips (with a message) when no PostgreSQL
//! server can be started.
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kappa_index::Indexer;
use kappa_log::encoding::{Codec, Json};
use kappa_multifeed::Multifeed;
use kappa_testkit::postgres::TempCluster;
use kappa_view::kv::KvView;
use kappa_view::View;
use kappa_view_postgres::PgViews;
use kappa_view_redb::RedbViews;

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

fn index_once(mf: &Multifeed, view: Arc<dyn View>) -> Duration {
    let start = Instant::now();
    let ix = Indexer::start("bench", view, mf).unwrap();
    futures::executor::block_on(ix.ready()).unwrap();
    start.elapsed()
}

/// Drops an iteration's schema and checkpoints (untimed), so that every
/// iteration indexes into a server at rest holding only its own view, as the
/// first one did. Without it the samples measured the server's backlog more
/// than the indexing: on 2026-12-07, twelve runs in a row on one server went
/// from 600 ms to 1.1 to 1.4 s per 100,000 entries (from 0.9 s with the schema
/// dropped but no checkpoint), and stayed at 560 to 800 ms with both.
fn drop_schema(pg: &TempCluster, schema: &str) {
    pg.psql(&format!("DROP SCHEMA {schema} CASCADE")).unwrap();
    pg.psql("CHECKPOINT").unwrap();
}

fn bench(c: &mut Criterion) {
    let pg = match TempCluster::start() {
        Ok(pg) => pg,
        Err(e) => {
            eprintln!("*** SKIPPING the PostgreSQL benchmark: cannot start a server: {e} ***");
            return;
        }
    };
    let mf = database();
    let schemas = AtomicU32::new(0);
    let mut g = c.benchmark_group("postgres_index_100k");
    g.throughput(Throughput::Elements(N));
    g.sample_size(10);
    g.bench_function("kv/postgres", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    // A fresh schema each time: indexing from scratch.
                    let schema = format!("bench{}", schemas.fetch_add(1, Ordering::SeqCst));
                    let views = PgViews::open(&pg.url(&schema)).unwrap();
                    let store = Arc::new(views.store("kv").unwrap());
                    let took = index_once(&mf, Arc::new(KvView::new(store)));
                    drop(views);
                    drop_schema(&pg, &schema);
                    took
                })
                .sum()
        })
    });
    // The same over TLS (verify-full, SCRAM-SHA-256-PLUS), on a server of
    // its own with `ssl = on`.
    match TempCluster::start_with_tls("bench") {
        Ok((tls, ca, _)) => {
            let url = |schema: &str| {
                format!(
                    "postgres://postgres:bench@localhost:{}/postgres?schema={schema}&sslmode=verify-full&sslrootcert={}",
                    tls.port(),
                    ca.display()
                )
            };
            g.bench_function("kv/postgres_tls", |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| {
                            let schema = format!("bench{}", schemas.fetch_add(1, Ordering::SeqCst));
                            let views = PgViews::open(&url(&schema)).unwrap();
                            let store = Arc::new(views.store("kv").unwrap());
                            let took = index_once(&mf, Arc::new(KvView::new(store)));
                            drop(views);
                            drop_schema(&tls, &schema);
                            took
                        })
                        .sum()
                })
            });
        }
        Err(e) => eprintln!("*** SKIPPING the PostgreSQL-over-TLS benchmark: cannot start a server: {e} ***"),
    }
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
