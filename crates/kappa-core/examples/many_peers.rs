//! Many peers syncing from one serve at once (the seed-node benchmark of
//! `cargo xtask bench peers`).
//!
//! ```text
//! many_peers PEERS ENTRIES [--stalled]
//! ```
//!
//! One database in memory holds a feed of ENTRIES JSON entries and serves them
//! on loopback to PEERS databases, each in memory, that connect at once and
//! sync everything (non-live), each checking that it has every entry. With
//! `--stalled`, one more peer asks for everything and stops reading its socket
//! after a few reads (small socket buffers on both ends, so what it asked for
//! waits in the server). Prints one JSON line: the time until the last peer
//! finished, the aggregate entries/s, the fastest, median and slowest peer's
//! time, the process's peak RSS and the most files it had open as peers
//! finished (all peers run in this process, so both count their sockets and
//! memory too).

use std::error::Error;
use std::time::{Duration, Instant};

use async_std::net::{TcpListener, TcpStream};
use futures::{FutureExt, StreamExt};
use kappa_core::{Kappa, ReplicateOptions, ServeOptions};
use kappa_testkit::stall::{connect_small_receive_buffer, small_send_buffer_listener, StopsReading};

const SHARED_KEY: [u8; 32] = [0x51; 32];

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: many_peers PEERS ENTRIES [--stalled]";
    let peers: usize = args.first().ok_or(usage)?.parse()?;
    let entries: u64 = args.get(1).ok_or(usage)?.parse()?;
    let stalled = args.iter().any(|a| a == "--stalled");

    let server = Kappa::builder().shared_key(SHARED_KEY).open()?;
    let w = server.writer("seed")?;
    let mut i = 0;
    while i < entries {
        let end = (i + 1000).min(entries);
        let batch: Vec<_> =
            (i..end).map(|k| serde_json::json!({"key": format!("k{k}"), "value": k})).collect();
        w.append_batch(&batch)?;
        i = end;
    }
    let key = w.key();
    let last = w.feed().get(entries.saturating_sub(1))?;

    async_std::task::block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stall_listener = small_send_buffer_listener()?;
        let stall_addr = stall_listener.local_addr()?;
        let incoming = futures::stream::select(
            stall_listener.incoming().take(usize::from(stalled)).map(|r| r.map(|s| (s, None))),
            listener.incoming().take(peers).map(|r| r.map(|s| (s, None))),
        );
        // The stalled peer is not dropped while the others run.
        let opts = ServeOptions::default().max_connections(peers + 1).timeout(Duration::from_secs(600));
        let serving = server.serve_with(incoming, opts, |_| {}).fuse();

        let stall = if stalled {
            let client = Kappa::builder().shared_key(SHARED_KEY).open()?;
            let mut reads = 0u32;
            let stream = StopsReading {
                inner: connect_small_receive_buffer(stall_addr)?,
                stop: Box::new(move || {
                    reads += 1;
                    reads > 40
                }),
                stopped: Some(futures::channel::oneshot::channel().0),
            };
            let opts = ReplicateOptions::new(true).timeout(Duration::from_secs(600));
            let (fut, _session) = client.replicate_session(stream, opts)?;
            Some((client, async_std::task::spawn(fut)))
        } else {
            None
        };

        let started = Instant::now();
        let most_open = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let clients: Vec<_> = (0..peers)
            .map(|_| {
                let last = last.clone();
                let most_open = most_open.clone();
                async_std::task::spawn(async move {
                    let client = Kappa::builder().shared_key(SHARED_KEY).open()?;
                    let stream = TcpStream::connect(addr).await?;
                    stream.set_nodelay(true)?;
                    client.replicate(stream, ReplicateOptions::new(true)).await?;
                    let took = started.elapsed().as_secs_f64();
                    let open = std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0);
                    most_open.fetch_max(open, std::sync::atomic::Ordering::Relaxed);
                    let feed = client.feed(&key).ok_or("the feed did not arrive")?;
                    if feed.len() != entries || feed.get(entries.saturating_sub(1))? != last {
                        return Err(format!("a peer has {} of {entries} entries", feed.len()).into());
                    }
                    Ok::<f64, Box<dyn Error + Send + Sync>>(took)
                })
            })
            .collect();
        let all = futures::future::join_all(clients).fuse();
        futures::pin_mut!(serving, all);
        // Serving ends once every session has (not before with a stalled peer).
        let times = futures::select! {
            times = all => times,
            r = serving => {
                r?;
                all.await
            }
        };
        let mut times = times.into_iter().collect::<Result<Vec<f64>, _>>().map_err(|e| e.to_string())?;
        times.sort_by(f64::total_cmp);
        let secs = times.last().copied().unwrap_or(0.0);
        let buffered: u64 = server.status()?.peers.iter().map(|p| p.buffered_bytes).max().unwrap_or(0);
        println!(
            "{{\"peers\": {peers}, \"entries\": {entries}, \"stalled\": {stalled}, \"seconds\": {secs:.3}, \
             \"entries_per_s\": {:.0}, \"fastest_s\": {:.3}, \"median_s\": {:.3}, \"slowest_s\": {secs:.3}, \
             \"most_buffered_for_a_peer\": {buffered}, \"most_open_files\": {}, {}}}",
            (peers as u64 * entries) as f64 / secs,
            times.first().copied().unwrap_or(0.0),
            times.get(times.len() / 2).copied().unwrap_or(0.0),
            most_open.load(std::sync::atomic::Ordering::Relaxed),
            kappa_testkit::process_figures()
        );
        drop(stall);
        Ok::<(), Box<dyn Error>>(())
    })?;
    Ok(())
}
