//! Appends to a real on-disk feed and reads it back.
//!
//! ```text
//! cargo run --release -p kappa-log --example feed -- [DIR] [ENTRIES]
//! ```
//!
//! Creates (or reopens) a hypercore-8 feed in `DIR` (default `./kappa-data/feed`),
//! appends `ENTRIES` JSON entries (default 100000) in batches of 1000, reads every
//! entry back, audits every hash and the signature, and prints what it did. Run it
//! twice: the second run reopens the same feed and continues it.

use std::error::Error;
use std::time::Instant;

use kappa_log::encoding::{Codec, Json};
use kappa_log::{Feed, SyncPolicy};
use serde_json::{json, Value};

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "kappa-data/feed".into());
    let entries: u64 = match args.next() {
        Some(n) => n.parse().map_err(|_| format!("not a number of entries: {n}"))?,
        None => 100_000,
    };

    let started = Instant::now();
    let mut feed =
        Feed::builder(kappa_log::storage::DirectoryProvider::new(&dir)).sync(SyncPolicy::None).open()?;
    println!(
        "opened {dir} in {:.1} ms: key {}, {} entries, {} bytes, {}",
        started.elapsed().as_secs_f64() * 1e3,
        feed.public_key(),
        feed.len(),
        feed.byte_len(),
        if feed.is_writable() { "writable" } else { "read-only" }
    );

    let codec = Json::<Value>::new();
    let first = feed.len();
    let started = Instant::now();
    let mut batch = Vec::with_capacity(1000);
    for i in first..first + entries {
        batch.push(codec.encode(&json!({"key": format!("k{i}"), "value": i}))?);
        if batch.len() == 1000 {
            feed.append_batch(&batch)?;
            batch.clear();
        }
    }
    feed.append_batch(&batch)?;
    feed.sync_all()?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "appended {entries} entries in {:.3} s ({:.0} entries/s), length now {}",
        secs,
        entries as f64 / secs,
        feed.len()
    );
    drop(feed);

    let started = Instant::now();
    let mut feed = Feed::open_dir(&dir)?;
    let mut bytes = 0u64;
    for i in 0..feed.len() {
        let value = codec.decode(&feed.try_get(i)?)?;
        if value["value"] != json!(i) {
            return Err(format!("entry {i} reads back as {value}").into());
        }
        bytes += 1;
    }
    println!("reopened and read {bytes} entries back in {:.3} s", started.elapsed().as_secs_f64());

    let started = Instant::now();
    let checked = feed.audit()?;
    println!(
        "audited {checked} blocks (leaf hashes, parents, signature) in {:.3} s: ok",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
