//! Blocking a feed of 100,000 entries in a database of 1,000,000, with the kv
//! view on redb (durable commits): how long until the view no longer shows
//! it (the full rebuild beside the live view, then the swap), the bytes the
//! block frees, and what a reader sees meanwhile: the latency of `get` on
//! random keys before and during the rebuild, and that it never found a key
//! missing that should be there.
//!
//! The blocked feed's entries overwrite keys of the local writer (each links
//! the local value it replaces), so removing them brings those values back.
//! By default the kv view forgets the feed by itself (`View::forget`, the
//! targeted path); with `--rebuild` it is wrapped in a view that cannot, so
//! the indexer rebuilds it beside the live one.
//!
//! ```text
//! cargo run --release -p kappa-index --example block_1m -- [--rebuild] [ENTRIES] [BLOCKED]
//!     (defaults 1,000,000 and 100,000)
//! ```

use std::error::Error;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kappa_index::Indexer;
use kappa_log::encoding::{Codec, Json};
use kappa_log::{Feed, KeyPair, SharedFeed};
use kappa_multifeed::Multifeed;
use kappa_storage::MemoryProvider;
use kappa_view::kv::KvView;
use kappa_view::{Entry, Tx, View, ViewError, ViewStore};
use kappa_view_redb::RedbViews;

/// Entries writing keys `k<range>`; with `links`, each links that key's
/// entry of the feed `links` names (same sequence number).
fn entries(
    codec: &Json<serde_json::Value>,
    range: std::ops::Range<u64>,
    links: Option<&str>,
) -> Vec<Vec<u8>> {
    range
        .map(|k| {
            let v = match links {
                Some(hex) => {
                    serde_json::json!({"key": format!("k{k}"), "value": k, "links": [format!("{hex}@{k}")]})
                }
                None => serde_json::json!({"key": format!("k{k}"), "value": k}),
            };
            codec.encode(&v).unwrap_or_default()
        })
        .collect()
}

/// The kv view, unable to forget: the indexer rebuilds it instead.
struct RebuildOnly(Arc<KvView>);

impl View for RebuildOnly {
    fn store(&self) -> &dyn ViewStore {
        self.0.store()
    }
    fn map(&self, entries: &[Entry], tx: &mut Tx<'_>) -> Result<(), ViewError> {
        self.0.map(entries, tx)
    }
    fn map_batches(&self, batches: &[&[Entry]], tx: &mut Tx<'_>) -> Result<(), ViewError> {
        self.0.map_batches(batches, tx)
    }
}

/// Latency percentiles of `samples` (sorted in place).
fn percentiles(samples: &mut [Duration]) -> String {
    if samples.is_empty() {
        return "no samples".into();
    }
    samples.sort();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6;
    format!(
        "{} gets: p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs",
        samples.len(),
        at(0.5),
        at(0.99),
        samples[samples.len() - 1].as_secs_f64() * 1e6
    )
}

/// Reads random keys of the local writer until `stop`, timing each `get`;
/// panics if one is missing (the view must never go blank).
fn reader(kv: Arc<KvView>, keys: u64, stop: Arc<AtomicBool>) -> Vec<Duration> {
    let mut samples = Vec::new();
    let mut x = 0x9E37_79B9_7F4A_7C15_u64;
    while !stop.load(Ordering::Relaxed) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let key = format!("k{}", x % keys);
        let t = Instant::now();
        let heads = kv.get(&key).unwrap_or_default();
        samples.push(t.elapsed());
        assert_eq!(heads.len(), 1, "a reader found {key} missing: the view went blank");
    }
    samples
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let rebuild = args.iter().any(|a| a == "--rebuild");
    args.retain(|a| a != "--rebuild");
    let n: u64 = args.first().map(|s| s.parse()).transpose()?.unwrap_or(1_000_000);
    let blocked: u64 = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(100_000);
    let dir = tempfile::tempdir()?;
    let mf = Multifeed::open_dir(dir.path().join("feeds"))?;
    let codec = Json::<serde_json::Value>::new();
    let started = Instant::now();
    // The local writer's entries...
    let w = mf.writer("local")?;
    let local = n - blocked;
    let mut i = 0;
    while i < local {
        let end = (i + 5000).min(local);
        w.append_batch(entries(&codec, i..end, None))?;
        i = end;
    }
    // ...and a peer's, replicated in (the feed to block).
    let spam =
        SharedFeed::new(Feed::builder(MemoryProvider::new()).key_pair(KeyPair::from_seed(&[9; 32])).open()?);
    let mut i = 0;
    while i < blocked {
        let end = (i + 5000).min(blocked);
        spam.append_batch(entries(&codec, i..end, Some(&w.public_key().to_hex())))?;
        i = end;
    }
    let replica = mf.add_remote(*spam.public_key())?;
    for i in 0..blocked {
        let proof = spam.lock().proof(i, replica.lock().digest(i), false)?;
        replica.put(i, &spam.get(i)?.unwrap_or_default(), &proof)?;
    }
    mf.sync_all()?;
    println!("built {n} entries ({blocked} of them a peer's) in {:.1} s", started.elapsed().as_secs_f64());

    let views = RedbViews::open(dir.path().join("views.redb"))?;
    let kv = Arc::new(KvView::new(Arc::new(views.store("kv")?)));
    let started = Instant::now();
    let view: Arc<dyn View> = if rebuild { Arc::new(RebuildOnly(kv.clone())) } else { kv.clone() };
    let ix = Indexer::start("kv", view, &mf)?;
    futures::executor::block_on(ix.ready())?;
    let index_secs = started.elapsed().as_secs_f64();
    println!("indexed {n} entries in {index_secs:.1} s ({:.0} entries/s)", n as f64 / index_secs);
    let views_bytes = std::fs::metadata(dir.path().join("views.redb"))?.len();

    // Reader latency with the indexer idle.
    let stop = Arc::new(AtomicBool::new(false));
    let idle = {
        let (kv, stop2) = (kv.clone(), stop.clone());
        let t = std::thread::spawn(move || reader(kv, local, stop2));
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        t.join().map_err(|_| "reader failed")?
    };

    // Block, while the reader goes on.
    let stop = Arc::new(AtomicBool::new(false));
    let during = {
        let (kv2, stop2) = (kv.clone(), stop.clone());
        let t = std::thread::spawn(move || reader(kv2, local, stop2));
        let started = Instant::now();
        let b = mf.block(spam.public_key())?;
        let block_ms = started.elapsed().as_secs_f64() * 1e3;
        futures::executor::block_on(ix.ready())?;
        let secs = started.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        let samples = t.join().map_err(|_| "reader failed (the view went blank)")?;
        let how = if rebuild {
            format!("swapped in (full rebuild of {local} entries beside the live view)")
        } else {
            format!("committed (the kv view forgot the feed's {blocked} entries by itself)")
        };
        println!(
            "blocked the peer's feed: the block itself took {block_ms:.0} ms and freed {} bytes of feed files; \
             the view without it was {how} {secs:.2} s after the block",
            b.freed
        );
        samples
    };
    let local_hex = mf.writer("local")?.public_key().to_hex();
    for k in [0, blocked / 2, blocked.saturating_sub(1)] {
        let heads = kv.get(&format!("k{k}"))?;
        assert!(heads.len() == 1 && heads[0].id.starts_with(&local_hex), "k{k} is the local value again");
    }
    let mut idle = idle;
    let mut during = during;
    println!("reader, indexer idle:     {}", percentiles(&mut idle));
    println!("reader, from the block to the view without it: {}", percentiles(&mut during));
    println!("views.redb: {views_bytes} bytes before the block");
    Ok(())
}
