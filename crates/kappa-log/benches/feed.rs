//! Feed benchmarks: appends (batched and single) and random reads, on file
//! storage without fsync, with 30-byte entries (the reference workload;
//! JS hypercore 8 figures are measured side by side by `cargo xtask bench`).
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kappa_log::{Feed, KeyPair, SyncPolicy};

const ENTRY: &[u8; 30] = b"{\"key\":\"k123456\",\"value\":1234}";

fn new_feed(dir: &std::path::Path) -> Feed {
    Feed::builder(kappa_log::storage::DirectoryProvider::new(dir))
        .key_pair(KeyPair::from_seed(&[1; 32]))
        .open()
        .unwrap()
}

fn append(c: &mut Criterion) {
    let mut g = c.benchmark_group("append");
    for batch in [1000u64, 1] {
        g.throughput(Throughput::Elements(batch));
        g.bench_function(BenchmarkId::new("file", format!("batch_{batch}")), |b| {
            b.iter_custom(|iters| {
                let dir = tempfile::tempdir().unwrap();
                let mut feed = new_feed(dir.path());
                let values = vec![ENTRY; batch as usize];
                let start = Instant::now();
                for _ in 0..iters {
                    feed.append_batch(&values).unwrap();
                }
                start.elapsed()
            })
        });
    }
    g.finish();
}

/// Ed25519 signing alone: the floor of single appends (one signature each).
fn sign(c: &mut Criterion) {
    let kp = KeyPair::from_seed(&[1; 32]);
    let mut g = c.benchmark_group("crypto");
    g.throughput(Throughput::Elements(1));
    let mut msg = [7u8; 32];
    g.bench_function("sign", |b| {
        b.iter(|| {
            msg[0] = msg[0].wrapping_add(1);
            kp.sign(&msg)
        })
    });
    g.finish();
}

/// Single appends that are on disk when `append` returns (`SyncPolicy::PerBatch`).
fn durable(c: &mut Criterion) {
    let mut g = c.benchmark_group("append");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.bench_function(BenchmarkId::new("file", "durable_single"), |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().unwrap();
            let mut feed = Feed::builder(kappa_log::storage::DirectoryProvider::new(dir.path()))
                .key_pair(KeyPair::from_seed(&[1; 32]))
                .sync(SyncPolicy::PerBatch)
                .open()
                .unwrap();
            let start = Instant::now();
            for _ in 0..iters {
                feed.append(ENTRY).unwrap();
            }
            start.elapsed()
        })
    });
    g.finish();
}

fn get(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let n = 100_000u64;
    let mut feed = new_feed(dir.path());
    for _ in 0..n / 1000 {
        feed.append_batch(vec![ENTRY; 1000]).unwrap();
    }
    drop(feed);
    let mut feed = new_feed(dir.path());
    // Warm: one pass over everything.
    for i in 0..n {
        feed.get(i).unwrap().unwrap();
    }
    let mut g = c.benchmark_group("get");
    g.throughput(Throughput::Elements(1));
    let mut x = 0x2545F4914F6CDD1Du64;
    g.bench_function(BenchmarkId::new("file", "random_warm"), |b| {
        b.iter(|| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            feed.get(x % n).unwrap().unwrap()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = sign, append, durable, get
}
criterion_main!(benches);
