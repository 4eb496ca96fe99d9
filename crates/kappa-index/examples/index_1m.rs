//! Indexes a large feed into a kv view on redb (durable commits) and reports
//! throughput and peak memory, to show memory does not grow with the number of
//! entries beyond redb's own cache.
//!
//! ```text
//! cargo run --release -p kappa-index --example index_1m -- [ENTRIES]   (default 1,000,000)
//! ```

use std::error::Error;
use std::sync::Arc;
use std::time::Instant;

use kappa_index::Indexer;
use kappa_log::encoding::{Codec, Json};
use kappa_multifeed::Multifeed;
use kappa_view::kv::KvView;
use kappa_view_redb::RedbViews;

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() -> Result<(), Box<dyn Error>> {
    let n: u64 = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;
    let mf = Multifeed::open_dir(dir.path().join("feeds"))?;
    let w = mf.writer("local")?;
    let codec = Json::<serde_json::Value>::new();
    let started = Instant::now();
    let mut i = 0;
    while i < n {
        let end = (i + 1000).min(n);
        let batch: Result<Vec<Vec<u8>>, _> = (i..end)
            .map(|k| codec.encode(&serde_json::json!({"key": format!("k{k}"), "value": k})))
            .collect();
        w.append_batch(batch?)?;
        i = end;
    }
    println!(
        "appended {n} entries in {:.2} s; peak RSS {:.0} MB",
        started.elapsed().as_secs_f64(),
        peak_rss_mb()
    );
    let views = RedbViews::open(dir.path().join("views.redb"))?;
    let kv = Arc::new(KvView::new(Arc::new(views.store("kv")?)));
    let started = Instant::now();
    let ix = Indexer::start("kv", kv.clone(), &mf)?;
    futures::executor::block_on(ix.ready())?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "indexed {n} entries into redb (durable commits) in {secs:.2} s: {:.0} entries/s; peak RSS {:.0} MB",
        n as f64 / secs,
        peak_rss_mb()
    );
    assert_eq!(kv.get("k0")?.len(), 1);
    Ok(())
}
