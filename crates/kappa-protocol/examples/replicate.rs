//! Replicates one feed between two processes over TCP (the replication benchmark
//! and a small demo of the `Session` API).
//!
//! ```text
//! replicate create DIR N SIZE      write a feed of N entries of SIZE bytes; print its key
//! replicate serve DIR PORT [6|7]   serve the feed in DIR to one peer (non-live),
//!                                  answering in that wire generation (default 6)
//! replicate fetch DIR KEY ADDR     download feed KEY from ADDR into DIR (non-live;
//!                                  detects the peer's wire generation)
//! ```
//!
//! `serve` prints `{"port": P}` once listening; `fetch` prints one JSON line with
//! the entries, bytes and seconds from connect to the end of the session, and the
//! wire generation spoken.

use std::error::Error;
use std::time::Instant;

use async_std::net::{TcpListener, TcpStream};
use kappa_log::storage::DirectoryProvider;
use kappa_log::{Feed, KeyPair, PublicKey, SharedFeed};
use kappa_protocol::{EndReason, FeedOptions, Generation, ProtocolOptions, Session};

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().ok_or_else(|| format!("missing argument {i}; see the docs"));
    match args.first().map(String::as_str) {
        Some("create") => {
            let (dir, n, size): (String, u64, usize) = (arg(1)?, arg(2)?.parse()?, arg(3)?.parse()?);
            let mut feed =
                Feed::builder(DirectoryProvider::new(&dir)).key_pair(KeyPair::generate()).open()?;
            let mut i = 0;
            while i < n {
                let end = (i + 1000).min(n);
                feed.append_batch((i..end).map(|k| {
                    let mut v = format!("{k:012}").into_bytes();
                    v.resize(size, b'x');
                    v
                }))?;
                i = end;
            }
            feed.sync_all()?;
            println!("{}", feed.public_key());
        }
        Some("serve") => {
            let (dir, port) = (arg(1)?, arg(2)?);
            let generation = match args.get(3).map(String::as_str) {
                None | Some("6") => Generation::KappaCore6,
                Some("7") => Generation::KappaCore7,
                Some(other) => return Err(format!("unknown wire generation {other:?} (6 or 7)").into()),
            };
            let feed = SharedFeed::new(Feed::open_dir(&dir)?);
            async_std::task::block_on(async {
                let listener = TcpListener::bind(format!("127.0.0.1:{port}")).await?;
                println!("{{\"port\": {}}}", listener.local_addr()?.port());
                let (stream, _) = listener.accept().await?;
                stream.set_nodelay(true)?;
                let (session, handle) =
                    Session::new(stream, ProtocolOptions::new(false).responder_generation(generation));
                handle.open_feed(feed, FeedOptions::default());
                let report = session.run().await;
                report.result().map_err(|e| e.to_string())?;
                Ok::<(), Box<dyn Error>>(())
            })?;
        }
        Some("fetch") => {
            let (dir, key, addr) = (arg(1)?, arg(2)?, arg(3)?);
            let key = PublicKey::from_hex(&key)?;
            let feed = SharedFeed::new(Feed::builder(DirectoryProvider::new(&dir)).public_key(key).open()?);
            let report = async_std::task::block_on(async {
                let stream = TcpStream::connect(&addr).await?;
                stream.set_nodelay(true)?;
                let started = Instant::now();
                let (session, handle) = Session::new(stream, ProtocolOptions::new(true));
                handle.open_feed(feed.clone(), FeedOptions::default());
                let report = session.run().await;
                Ok::<_, Box<dyn Error>>((report, started.elapsed()))
            })?;
            let (report, elapsed) = report;
            if report.end != EndReason::Finished {
                return Err(format!("session ended with {:?}", report.end).into());
            }
            let bytes: u64 = report.feeds.iter().map(|(_, s)| s.bytes_down).sum();
            let secs = elapsed.as_secs_f64();
            println!(
                "{{\"entries\": {}, \"bytes\": {bytes}, \"seconds\": {secs:.4}, \"entries_per_s\": {:.0}, \"mb_per_s\": {:.1}, \"wire_bytes\": {}, \"wire\": {}}}",
                report.blocks_received(),
                report.blocks_received() as f64 / secs,
                bytes as f64 / secs / 1e6,
                report.bytes_received,
                report.generation.map_or(0, |g| g.number())
            );
        }
        _ => return Err("usage: replicate (create DIR N SIZE | serve DIR PORT | fetch DIR KEY ADDR)".into()),
    }
    Ok(())
}
