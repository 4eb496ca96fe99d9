//! Committing 100,000 small rows (16-byte keys, 30-byte values) into a fresh
//! view database, in batches of 100 and 1000, durable and not.
//!
//! `cargo bench -p kappa-view-redb --bench commit`; throughput is in rows/s.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kappa_view::{Batch, ViewStore};
use kappa_view_redb::{Durability, RedbViews};

const ROWS: usize = 100_000;

fn batches(size: usize) -> Vec<Batch> {
    let rows: Vec<_> = (0..ROWS)
        .map(|i| (format!("row:{i:012}").into_bytes(), Some(format!("value-{i:024}").into_bytes())))
        .collect();
    rows.chunks(size)
        .enumerate()
        .map(|(n, chunk)| Batch { ops: chunk.to_vec(), state: Some((n as u64).to_be_bytes().to_vec()) })
        .collect()
}

fn commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("commit_100k_rows");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .throughput(Throughput::Elements(ROWS as u64));
    for size in [100, 1000] {
        let input = batches(size);
        for durability in [Durability::Immediate, Durability::None] {
            let mut reported = false;
            group.bench_with_input(
                BenchmarkId::new(format!("{durability:?}"), format!("batch{size}")),
                &input,
                |b, input| {
                    b.iter_custom(|iters| {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            let dir = tempfile::tempdir().unwrap();
                            let path = dir.path().join("views.redb");
                            let views = RedbViews::open(&path).unwrap();
                            let store = views.store("bench").unwrap();
                            store.set_durability(durability);
                            let batches = input.clone();
                            let start = Instant::now();
                            for batch in batches {
                                store.commit(batch).unwrap();
                            }
                            // A rebuild made without durability ends with one durable commit.
                            if durability == Durability::None {
                                store.sync().unwrap();
                            }
                            total += start.elapsed();
                            if !reported {
                                reported = true;
                                let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                                eprintln!(
                                    "\n{durability:?}/batch{size}: file {} KiB after {ROWS} rows",
                                    len / 1024
                                );
                            }
                        }
                        total
                    })
                },
            );
        }
    }
    group.finish();
}

/// Opening a view database of 100,000 and 1,000,000 rows: [`RedbViews::open`]
/// (which runs redb's integrity check over the whole file) against redb's plain
/// open (which checks nothing of a cleanly closed file).
fn open(c: &mut Criterion) {
    let mut group = c.benchmark_group("open");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    for rows in [ROWS, 10 * ROWS] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("views.redb");
        {
            let views = RedbViews::open(&path).unwrap();
            let store = views.store("bench").unwrap();
            store.set_durability(Durability::None);
            for chunk in (0..rows).collect::<Vec<_>>().chunks(10_000) {
                let ops = chunk
                    .iter()
                    .map(|i| {
                        (format!("row:{i:012}").into_bytes(), Some(format!("value-{i:024}").into_bytes()))
                    })
                    .collect();
                store.commit(Batch { ops, state: Some(chunk[0].to_be_bytes().to_vec()) }).unwrap();
            }
            store.sync().unwrap();
        }
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        eprintln!("\n{rows} rows: file {} KiB", len / 1024);
        group.throughput(Throughput::Bytes(len));
        group.bench_function(BenchmarkId::new("checked", rows), |b| {
            b.iter(|| drop(RedbViews::open(&path).unwrap()));
        });
        group.bench_function(BenchmarkId::new("redb_unchecked", rows), |b| {
            b.iter(|| drop(redb::Database::open(&path).unwrap()));
        });
    }
    group.finish();
}

criterion_group!(benches, commit, open);
criterion_main!(benches);
