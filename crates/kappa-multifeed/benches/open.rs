//! Opening a feed set of 1,000 feeds from disk (each with a few entries).
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use kappa_multifeed::Multifeed;

fn open(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    {
        let mf = Multifeed::open_dir(dir.path()).unwrap();
        for i in 0..1000 {
            mf.writer(&format!("w{i}")).unwrap().append_batch([b"a", b"b", b"c"]).unwrap();
        }
        mf.close().unwrap();
    }
    let mut g = c.benchmark_group("multifeed");
    g.sample_size(10);
    g.bench_function("open_1000_feeds", |b| {
        b.iter(|| {
            let mf = Multifeed::open_dir(dir.path()).unwrap();
            assert_eq!(mf.feeds().len(), 1000);
            mf
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    targets = open
}
criterion_main!(benches);
