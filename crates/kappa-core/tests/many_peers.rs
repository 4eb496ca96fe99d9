//! One `serve_with` keeps 100 peers syncing at once over loopback TCP beside a
//! peer that asked for everything and then stopped reading its socket, so the
//! server really holds answers for it; and a peer that stops reading is
//! dropped with `ProtocolError::NotReading` once a write of ours has waited
//! for the serve timeout. How much slower the others are with such a peer is
//! a figure of `cargo xtask bench peers`, not asserted here.
//!
//! The stalled peer is a real kappa-core client whose stream stops passing
//! reads on once its session has many requests in flight (its writes still go
//! through: its requests and keep-alives reach us). Its socket has a small
//! receive buffer and it connects to a listener whose sockets have a small
//! send buffer, so the kernel holds only a few KiB of what we send it and the
//! rest waits in the session (`buffered_out`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_std::net::{TcpListener, TcpStream};
use futures::channel::{mpsc, oneshot};
use futures::StreamExt;
use kappa_core::multifeed::MultifeedError;
use kappa_core::protocol::ProtocolError;
use kappa_core::{Kappa, KappaError, ReplicateOptions, ServeOptions};
use kappa_protocol::{SessionHandle, MAX_BUFFERED_OUT, WRITE_TURN};
use kappa_testkit::stall::{connect_small_receive_buffer, small_send_buffer_listener, StopsReading};

const PEERS: usize = 100;
const FEEDS: usize = 4;
const ENTRIES_PER_FEED: u64 = 250;
/// The address the stalled peer's connection is labelled with for the server
/// (the others have none), to find its session in `Kappa::status`.
const STALLED_LABEL: [u8; 4] = [127, 0, 0, 2];
/// Most bytes one served session may hold for its peer.
const BOUND: u64 = (MAX_BUFFERED_OUT + WRITE_TURN) as u64;

/// A client of `server` at `addr` that requests what it is offered and stops
/// reading once `min_in_flight` requests of its wait; returns its session (to
/// run until dropped; it must not end) and hears the stop on the receiver.
/// `opts` are its options (initiator).
fn stalled_peer(
    client: &Kappa,
    addr: SocketAddr,
    min_in_flight: usize,
    opts: ReplicateOptions,
) -> (impl std::future::Future<Output = Result<kappa_core::SyncReport, KappaError>>, oneshot::Receiver<()>) {
    let handle: Arc<OnceLock<SessionHandle>> = Arc::new(OnceLock::new());
    let h = handle.clone();
    let (tx, rx) = oneshot::channel();
    let stream = StopsReading {
        inner: connect_small_receive_buffer(addr).unwrap(),
        stop: Box::new(move || {
            let in_flight = h
                .get()
                .and_then(|h| h.progress())
                .map_or(0, |p| p.feeds.iter().map(|f| f.requests_in_flight).sum::<usize>());
            in_flight >= min_in_flight
        }),
        stopped: Some(tx),
    };
    let (fut, session) = client.replicate_session(stream, opts).unwrap();
    handle.set(session).ok().unwrap();
    (fut, rx)
}

/// The bytes the server holds for the stalled peer, if its session is open.
fn stalled_buffered(server: &Kappa) -> Option<u64> {
    let label = std::net::IpAddr::from(STALLED_LABEL).to_string();
    server
        .status()
        .unwrap()
        .peers
        .iter()
        .find(|p| p.peer.as_deref() == Some(&label))
        .map(|p| p.buffered_bytes)
}

fn server_with(feeds: usize, entries: u64, entry_len: usize) -> (Kappa, Vec<kappa_core::Writer>) {
    let server = Kappa::builder().shared_key([9; 32]).open().unwrap();
    let mut writers = Vec::new();
    for f in 0..feeds {
        let w = server.writer(&format!("w{f}")).unwrap();
        let values: Vec<String> =
            (0..entries).map(|i| format!("feed {f} entry {i} {}", "x".repeat(entry_len))).collect();
        w.append_batch(&values).unwrap();
        writers.push(w);
    }
    (server, writers)
}

#[test]
fn a_hundred_peers_sync_everything_from_one_serve_despite_a_stalled_peer() {
    async_std::task::block_on(async {
        let (server, writers) = server_with(FEEDS, ENTRIES_PER_FEED, 200);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stalled_listener = small_send_buffer_listener().unwrap();
        let stalled_addr = stalled_listener.local_addr().unwrap();
        let label = Some(std::net::IpAddr::from(STALLED_LABEL));
        let incoming = futures::stream::select(
            stalled_listener.incoming().take(1).map(move |r| r.map(|s| (s, label))),
            listener.incoming().take(PEERS).map(|r| r.map(|s| (s, None))),
        );
        let mut ended = Vec::new();
        // Long enough that the stalled peer stays for the whole test (it is
        // dropped by its own hang-up at the end).
        let opts = ServeOptions::default().max_connections(PEERS + 1).timeout(Duration::from_secs(600));
        let serving =
            server.serve_with(incoming, opts, |r| ended.push(r.map(|_| ()).map_err(|e| e.to_string())));
        let clients = async {
            let stalled_client = Kappa::builder().shared_key([9; 32]).open().unwrap();
            let ropts = ReplicateOptions::new(true).timeout(Duration::from_secs(600));
            let (stalled, stopped) =
                stalled_peer(&stalled_client, stalled_addr, ENTRIES_PER_FEED as usize, ropts);
            let (hang_up, hung_up) = oneshot::channel::<()>();
            let stalled = async move {
                futures::pin_mut!(stalled);
                match futures::future::select(stalled, hung_up).await {
                    futures::future::Either::Left((r, _)) => {
                        panic!("the stalled peer's session ended: {r:?}")
                    }
                    // Dropping the session closes its socket.
                    futures::future::Either::Right(_) => {}
                }
            };
            let others = async {
                stopped.await.expect("the stalled peer stopped reading");
                let syncs = (0..PEERS).map(|_| async {
                    let client = Kappa::builder().shared_key([9; 32]).open().unwrap();
                    let stream = TcpStream::connect(addr).await.unwrap();
                    client.replicate(stream, ReplicateOptions::new(true)).await.unwrap();
                    client
                });
                let mut pending: futures::stream::FuturesUnordered<_> = syncs.collect();
                let mut done = Vec::new();
                let check = |server: &Kappa| {
                    for p in server.status().unwrap().peers {
                        assert!(
                            p.buffered_bytes <= BOUND,
                            "{} bytes buffered for {:?}",
                            p.buffered_bytes,
                            p.peer
                        );
                    }
                    stalled_buffered(server).expect("the stalled peer's session is open")
                };
                while let Some(client) = pending.next().await {
                    check(&server);
                    done.push(client);
                }
                // The stalled peer never reads again, so what it asked for
                // and could not take waits in its session, whenever we look.
                let mut held = check(&server);
                while held == 0 {
                    async_std::task::yield_now().await;
                    held = check(&server);
                }
                eprintln!("the stalled peer's session holds {held} bytes");
                let _ = hang_up.send(());
                done
            };
            let ((), done) = futures::join!(stalled, others);
            done
        };
        let (served, clients) = futures::join!(serving, clients);
        served.unwrap();
        assert_eq!(ended.len(), PEERS + 1, "{ended:?}");
        assert_eq!(ended.iter().filter(|r| r.is_ok()).count(), PEERS, "{ended:?}");
        assert_eq!(clients.len(), PEERS);
        for client in &clients {
            for w in &writers {
                let feed = client.feed(&w.key()).expect("every feed arrived");
                assert_eq!(feed.len(), ENTRIES_PER_FEED);
                for i in 0..ENTRIES_PER_FEED {
                    assert_eq!(feed.get(i).unwrap(), w.feed().get(i).unwrap(), "entry {i}");
                }
            }
        }
    });
}

/// A peer that asked for everything and reads nothing more is dropped with
/// `NotReading` once a write to it has made no progress for the serve timeout
/// (its keep-alives keep the silence limit from going first), holding at
/// most the bound meanwhile.
#[test]
fn a_peer_that_stops_reading_is_dropped_with_not_reading_after_the_timeout() {
    async_std::task::block_on(async {
        let (server, _writers) = server_with(1, 500, 1000);
        let listener = small_send_buffer_listener().unwrap();
        let addr = listener.local_addr().unwrap();
        // Longer than the session driver's first timer wait (up to 1 s, set
        // before the handshake), after which the stalled peer's keep-alives
        // come every 200 ms.
        let timeout = Duration::from_secs(3);
        let (ended_tx, mut ended) = mpsc::unbounded();
        let incoming = listener.incoming().take(1).map(|r| r.map(|s| (s, None)));
        let serving = server.serve_with(incoming, ServeOptions::default().timeout(timeout), move |r| {
            let _ = ended_tx.unbounded_send(r);
        });
        let client = async {
            let stalled_client = Kappa::builder().shared_key([9; 32]).open().unwrap();
            // It never times itself out, and its keep-alives reach us well
            // within our timeout: only our stalled write can end the session.
            let ropts = ReplicateOptions::new(true)
                .timeout(Duration::from_secs(600))
                .keep_alive(Duration::from_millis(200));
            let (stalled, stopped) = stalled_peer(&stalled_client, addr, 100, ropts);
            futures::pin_mut!(stalled);
            // The session end the server reports, while the stalled peer runs.
            let end = async {
                stopped.await.expect("the stalled peer stopped reading");
                ended.next().await.expect("the server reported the session's end")
            };
            futures::pin_mut!(end);
            match futures::future::select(stalled, end).await {
                futures::future::Either::Left((r, _)) => {
                    panic!("the stalled peer's session ended first: {r:?}")
                }
                futures::future::Either::Right((r, _)) => r,
            }
        };
        let (served, end) = futures::join!(serving, client);
        served.unwrap();
        match end {
            Err(KappaError::Multifeed(MultifeedError::Replication(ProtocolError::NotReading {
                buffered,
                waited,
            }))) => {
                assert_eq!(waited, timeout);
                assert!(buffered > 0 && buffered as u64 <= BOUND, "{buffered} bytes buffered");
            }
            other => panic!("the session ended with {other:?}, not NotReading"),
        }
    });
}
