//! Syncs two feed sets between two processes over TCP (the feed-set benchmark,
//! and a small demo of `Multifeed::replicate`).
//!
//! ```text
//! sync create DIR FEEDS ENTRIES    a set of FEEDS writers with ENTRIES JSON entries each
//! sync serve DIR PORT              serve the set to one peer (non-live)
//! sync fetch DIR ADDR              sync a set in DIR with the peer at ADDR (non-live)
//! sync open DIR                    open the set in DIR and read the last entry of each feed
//! ```
//!
//! All use the shared key 32 × `0x42`. `serve` prints `{"port": P}` once
//! listening; `fetch` prints the feeds, entries and seconds from connect to the
//! end; `open` the feeds and milliseconds. Both also print the process's open
//! files and peak RSS (from `/proc/self`, 0 where there is none).

use std::error::Error;
use std::time::Instant;

use async_std::net::{TcpListener, TcpStream};
use kappa_log::encoding::{Codec, Json};
use kappa_multifeed::{Multifeed, ReplicateOptions};
use serde_json::{json, Value};

const SHARED_KEY: [u8; 32] = [0x42; 32];

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().ok_or_else(|| format!("missing argument {i}; see the docs"));
    match args.first().map(String::as_str) {
        Some("create") => {
            let (dir, feeds, entries): (String, u64, u64) = (arg(1)?, arg(2)?.parse()?, arg(3)?.parse()?);
            let mf = Multifeed::open_dir(&dir)?;
            let codec = Json::<Value>::new();
            for f in 0..feeds {
                let w = mf.writer(&format!("writer-{f}"))?;
                let mut i = 0;
                while i < entries {
                    let end = (i + 1000).min(entries);
                    let batch: Result<Vec<_>, _> = (i..end)
                        .map(|k| codec.encode(&json!({"key": format!("k{k}"), "value": k})))
                        .collect();
                    w.append_batch(batch?)?;
                    i = end;
                }
            }
            mf.close()?;
        }
        Some("serve") => {
            let (dir, port) = (arg(1)?, arg(2)?);
            let mf = Multifeed::open_dir(&dir)?;
            async_std::task::block_on(async {
                let listener = TcpListener::bind(format!("127.0.0.1:{port}")).await?;
                println!("{{\"port\": {}}}", listener.local_addr()?.port());
                let (stream, _) = listener.accept().await?;
                stream.set_nodelay(true)?;
                mf.replicate(stream, ReplicateOptions::new(false).shared_key(SHARED_KEY)).await?;
                Ok::<(), Box<dyn Error>>(())
            })?;
        }
        Some("fetch") => {
            let (dir, addr) = (arg(1)?, arg(2)?);
            let mf = Multifeed::open_dir(&dir)?;
            let (report, secs) = async_std::task::block_on(async {
                let stream = TcpStream::connect(&addr).await?;
                stream.set_nodelay(true)?;
                let started = Instant::now();
                let report = mf.replicate(stream, ReplicateOptions::new(true).shared_key(SHARED_KEY)).await?;
                Ok::<_, Box<dyn Error>>((report, started.elapsed().as_secs_f64()))
            })?;
            let entries = report.blocks_received();
            println!(
                "{{\"feeds\": {}, \"entries\": {entries}, \"seconds\": {secs:.4}, \"entries_per_s\": {:.0}, {}}}",
                mf.feeds().len(),
                entries as f64 / secs,
                kappa_testkit::process_figures()
            );
        }
        Some("open") => {
            let dir = arg(1)?;
            let started = Instant::now();
            let mf = Multifeed::open_dir(&dir)?;
            let opened = started.elapsed().as_secs_f64();
            // Touch every feed: its last entry, read and verified.
            let mut read = 0u64;
            for feed in mf.feeds() {
                let len = feed.len();
                if len > 0 && feed.get(len - 1)?.is_some() {
                    read += 1;
                }
            }
            println!(
                "{{\"feeds\": {}, \"open_ms\": {:.1}, \"read_ms\": {:.1}, \"last_entries_read\": {read}, {}}}",
                mf.feeds().len(),
                opened * 1000.0,
                (started.elapsed().as_secs_f64() - opened) * 1000.0,
                kappa_testkit::process_figures()
            );
        }
        _ => {
            return Err(
                "usage: sync (create DIR FEEDS ENTRIES | serve DIR PORT | fetch DIR ADDR | open DIR)".into()
            )
        }
    }
    Ok(())
}
