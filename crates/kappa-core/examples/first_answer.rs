//! Time to the first correct answer on a fresh sparse peer, against a full sync.
//!
//! ```text
//! cargo run --release -p kappa-core --example first_answer -- [ENTRIES]   (default 1,000,000)
//! ```
//!
//! Peer A holds ENTRIES kv writes (1,000 keys updated in turn, each linking the
//! previous head of its key) in a database on disk and serves it on loopback TCP.
//! A fresh peer B syncs only the newest 1,000 entries and asks its kv view for
//! the newest value of a key; then a fresh peer C does a full sync and asks the
//! same. Prints one JSON line with both times.

use std::error::Error;
use std::time::Instant;

use async_std::net::{TcpListener, TcpStream};
use kappa_core::protocol::Selection;
use kappa_core::view::kv::KvView;
use kappa_core::{Kappa, ReplicateOptions};
use serde_json::{json, Value};

const KEYS: u64 = 1000;
const SHARED: [u8; 32] = [0x21; 32];

fn main() -> Result<(), Box<dyn Error>> {
    let n: u64 = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;
    let a = Kappa::builder().dir(dir.path().join("a")).shared_key(SHARED).open()?;
    let w = a.writer("local")?;
    let hex = w.key().to_hex();
    let mut batch = Vec::with_capacity(1000);
    for i in 0..n {
        let links: Vec<String> = if i >= KEYS { vec![format!("{hex}@{}", i - KEYS)] } else { vec![] };
        batch.push(json!({"key": format!("k{}", i % KEYS), "value": i, "links": links}));
        if batch.len() == 1000 {
            w.append_batch(&batch)?;
            batch.clear();
        }
    }
    w.append_batch(&batch)?;
    let key = format!("k{}", (n - 1) % KEYS);
    let answer = json!(n - 1);

    async_std::task::block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        // A serves every connection (non-live).
        let served = a.clone();
        async_std::task::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let a = served.clone();
                async_std::task::spawn(async move { a.replicate(s, ReplicateOptions::new(false)).await });
            }
        });
        let mut times = Vec::new();
        for (name, selection) in [("sparse_newest_1000", Selection::Newest(1000)), ("full", Selection::All)] {
            let peer = Kappa::builder().dir(dir.path().join(name)).shared_key(SHARED).open()?;
            let kv = peer.use_view("kv", 1, KvView::new)?;
            let started = Instant::now();
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let mut opts = ReplicateOptions::new(true);
            opts.selection = selection;
            let report = peer.replicate(stream, opts).await?;
            kv.ready().await?;
            let got: Value = kv.get(&key)?.first().ok_or("no head")?.json()?;
            if got["value"] != answer {
                return Err(format!("{name}: wrong answer {got}").into());
            }
            times.push((name, started.elapsed().as_secs_f64(), report.blocks_received()));
        }
        println!(
            "{{\"entries\": {n}, \"sparse_first_answer_s\": {:.3}, \"sparse_blocks\": {}, \"full_sync_and_answer_s\": {:.3}, \"full_blocks\": {}}}",
            times[0].1, times[0].2, times[1].1, times[1].2
        );
        Ok::<(), Box<dyn Error>>(())
    })
}
