//! One `serve_with` keeps 100 peers syncing at once over loopback TCP, and a
//! peer that connects and then neither speaks nor reads does not keep them
//! from finishing. How much slower the others are with such a peer is a
//! figure of `cargo xtask bench peers`, not asserted here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use async_std::net::{TcpListener, TcpStream};
use futures::StreamExt;
use kappa_core::{Kappa, ReplicateOptions, ServeOptions};

const PEERS: usize = 100;
const FEEDS: usize = 4;
const ENTRIES_PER_FEED: u64 = 250;

#[test]
fn a_hundred_peers_sync_everything_from_one_serve_despite_a_stalled_peer() {
    async_std::task::block_on(async {
        let server = Kappa::builder().shared_key([9; 32]).open().unwrap();
        let mut writers = Vec::new();
        for f in 0..FEEDS {
            let w = server.writer(&format!("w{f}")).unwrap();
            let values: Vec<String> =
                (0..ENTRIES_PER_FEED).map(|i| format!("feed {f} entry {i} {}", "x".repeat(200))).collect();
            w.append_batch(&values).unwrap();
            writers.push(w);
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = listener.incoming().take(PEERS + 1).map(|r| r.map(|s| (s, None)));
        let mut ended = 0usize;
        let opts = ServeOptions::default().max_connections(PEERS + 1);
        let serving = server.serve_with(incoming, opts, |_| ended += 1);
        let clients = async {
            // Connected first, never reads or writes: it holds a place.
            let stalled = TcpStream::connect(addr).await.unwrap();
            let syncs = (0..PEERS).map(|_| async {
                let client = Kappa::builder().shared_key([9; 32]).open().unwrap();
                let stream = TcpStream::connect(addr).await.unwrap();
                client.replicate(stream, ReplicateOptions::new(true)).await.unwrap();
                client
            });
            let mut pending: futures::stream::FuturesUnordered<_> = syncs.collect();
            let mut max_buffered = 0u64;
            let mut done = Vec::new();
            while let Some(client) = pending.next().await {
                for p in server.status().unwrap().peers {
                    max_buffered = max_buffered.max(p.buffered_bytes);
                }
                done.push(client);
            }
            for p in &server.status().unwrap().peers {
                max_buffered = max_buffered.max(p.buffered_bytes);
            }
            assert!(
                max_buffered <= (kappa_protocol::MAX_BUFFERED_OUT + kappa_protocol::WRITE_TURN) as u64,
                "{max_buffered} bytes buffered for one peer"
            );
            drop(stalled);
            done
        };
        let (served, clients) = futures::join!(serving, clients);
        served.unwrap();
        assert_eq!(ended, PEERS + 1);
        assert_eq!(clients.len(), PEERS);
        for client in &clients {
            for w in &writers {
                let feed = client.feed(&w.key()).expect("every feed arrived");
                for i in 0..ENTRIES_PER_FEED {
                    assert_eq!(feed.get(i).unwrap(), w.feed().get(i).unwrap(), "entry {i}");
                }
            }
        }
    });
}
