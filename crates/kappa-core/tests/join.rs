//! `Kappa::join` over a scripted discovery and loopback TCP: one session per
//! peer address however often it is found, the database's topic announced,
//! a dropped session redialled until the peer is back, the peer cap; a peer
//! that accepts and then goes silent dropped after `JoinOptions::timeout` and
//! redialled with backoff, without holding up the others.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_std::net::{TcpListener, TcpStream};
use futures::channel::mpsc;
use kappa_core::discovery::{Discovery, DiscoveryError};
use kappa_core::{JoinEvent, JoinOptions, Kappa};

const KEY: [u8; 32] = [9; 32];

/// A discovery whose peers the test hands in.
#[derive(Default)]
struct Scripted {
    announced: Mutex<Vec<([u8; 32], u16)>>,
    lookups: Mutex<Vec<mpsc::UnboundedSender<SocketAddr>>>,
}

impl Scripted {
    fn found(&self, peer: SocketAddr) {
        for tx in self.lookups.lock().unwrap().iter() {
            let _ = tx.unbounded_send(peer);
        }
    }
}

impl Discovery for Scripted {
    type Lookup = mpsc::UnboundedReceiver<SocketAddr>;

    fn announce(&self, topic: [u8; 32], port: u16) -> Result<(), DiscoveryError> {
        self.announced.lock().unwrap().push((topic, port));
        Ok(())
    }

    fn lookup(&self, _topic: [u8; 32]) -> Result<Self::Lookup, DiscoveryError> {
        let (tx, rx) = mpsc::unbounded();
        self.lookups.lock().unwrap().push(tx);
        Ok(rx)
    }

    fn stop(&self, _topic: &[u8; 32]) {
        self.lookups.lock().unwrap().clear();
    }
}

fn db(entry: &str) -> Kappa {
    let k = Kappa::builder().shared_key(KEY).open().unwrap();
    k.writer("local").unwrap().append(&entry).unwrap();
    k
}

/// Serves `k` on `listener` in a task of its own.
fn serve(k: &Kappa, listener: TcpListener) -> async_std::task::JoinHandle<()> {
    let k = k.clone();
    async_std::task::spawn(async move {
        let _ = k.serve(listener.incoming(), |_| {}).await;
    })
}

/// Waits (up to 10 s) until `k` holds `n` feeds, each with every block.
async fn until_holds(k: &Kappa, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let feeds = k.feeds();
        if feeds.len() >= n && feeds.iter().all(|f| !f.is_empty() && (0..f.len()).all(|i| f.has(i))) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} feeds after 10 s: {:?}",
            feeds.len(),
            feeds.iter().map(|f| (f.len(), (0..f.len()).filter(|&i| f.has(i)).count())).collect::<Vec<_>>()
        );
        async_std::task::sleep(Duration::from_millis(10)).await;
    }
}

type Log = Arc<Mutex<Vec<String>>>;

fn logger(log: &Log) -> impl FnMut(JoinEvent) {
    let log = log.clone();
    move |ev| {
        let line = match ev {
            JoinEvent::Found(p) => format!("found {p}"),
            JoinEvent::OverCap(p) => format!("over-cap {p}"),
            JoinEvent::Connected(p) => format!("connected {p}"),
            JoinEvent::ConnectFailed { peer, retry_in, .. } => format!("unreachable {peer} {retry_in:?}"),
            JoinEvent::Ended { peer, retry_in, .. } => format!("ended {peer} {retry_in:?}"),
            other => format!("{other:?}"),
        };
        log.lock().unwrap().push(line);
    }
}

fn count(log: &Log, prefix: &str) -> usize {
    log.lock().unwrap().iter().filter(|l| l.starts_with(prefix)).count()
}

async fn until_logged(log: &Log, prefix: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(log, prefix) < n {
        assert!(Instant::now() < deadline, "no {n} × {prefix:?} in 10 s: {:?}", log.lock().unwrap());
        async_std::task::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn a_peer_found_again_and_again_gets_one_session_and_replicates() {
    async_std::task::block_on(async {
        let (a, b) = (db("a"), db("b"));
        assert_eq!(
            b.topic(),
            kappa_core::log::discovery_key(&KEY),
            "the topic is the shared key's discovery key"
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a_addr = listener.local_addr().unwrap();
        let _serving = serve(&a, listener);
        let disc = Scripted::default();
        let log: Log = Log::default();
        let joining = b.join(&disc, Some(4000), TcpStream::connect, JoinOptions::default(), logger(&log));
        let test = async {
            while disc.lookups.lock().unwrap().is_empty() {
                async_std::task::yield_now().await;
            }
            for _ in 0..3 {
                disc.found(a_addr);
            }
            until_holds(&b, 2).await;
            until_holds(&a, 2).await;
            disc.found(a_addr);
        };
        futures::pin_mut!(joining);
        match futures::future::select(joining, Box::pin(test)).await {
            futures::future::Either::Left((r, _)) => panic!("join ended: {r:?}"),
            futures::future::Either::Right(_) => {}
        }
        assert_eq!(*disc.announced.lock().unwrap(), vec![(b.topic(), 4000)]);
        let log = log.lock().unwrap();
        assert_eq!(*log, vec![format!("found {a_addr}"), format!("connected {a_addr}")]);
    });
}

#[test]
fn a_dropped_session_is_redialled_until_the_peer_is_back() {
    async_std::task::block_on(async {
        let (a, b) = (db("a"), db("b"));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a_addr = listener.local_addr().unwrap();
        let serving = serve(&a, listener);
        let disc = Scripted::default();
        let log: Log = Log::default();
        let opts = JoinOptions::default()
            .backoff(Duration::from_millis(20), Duration::from_millis(100))
            .max_retries(1000);
        let joining = b.join(&disc, None, TcpStream::connect, opts, logger(&log));
        let test = async {
            while disc.lookups.lock().unwrap().is_empty() {
                async_std::task::yield_now().await;
            }
            disc.found(a_addr);
            until_logged(&log, "connected", 1).await;
            until_holds(&b, 2).await;
            // The peer goes away: its session ends, redials fail.
            serving.cancel().await;
            a.close().unwrap();
            until_logged(&log, "ended", 1).await;
            until_logged(&log, "unreachable", 2).await;
            // It comes back on the same address, with more: the next redial gets it.
            let a = db("a");
            a.writer("local").unwrap().append(&"a2").unwrap();
            let listener = TcpListener::bind(a_addr).await.unwrap();
            let _serving = serve(&a, listener);
            until_logged(&log, "connected", 2).await;
            // b, the first a, and the a that came back (a new writer).
            until_holds(&b, 3).await;
        };
        futures::pin_mut!(joining);
        match futures::future::select(joining, Box::pin(test)).await {
            futures::future::Either::Left((r, _)) => panic!("join ended: {r:?}"),
            futures::future::Either::Right(_) => {}
        }
        assert_eq!(count(&log, "found"), 1, "{:?}", log.lock().unwrap());
    });
}

#[test]
fn peers_beyond_the_cap_are_not_dialled() {
    async_std::task::block_on(async {
        let (a, b) = (db("a"), db("b"));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a_addr = listener.local_addr().unwrap();
        let _serving = serve(&a, listener);
        let other: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let disc = Scripted::default();
        let log: Log = Log::default();
        let joining =
            b.join(&disc, None, TcpStream::connect, JoinOptions::default().max_peers(1), logger(&log));
        let test = async {
            while disc.lookups.lock().unwrap().is_empty() {
                async_std::task::yield_now().await;
            }
            disc.found(a_addr);
            disc.found(other);
            until_logged(&log, "over-cap", 1).await;
            until_holds(&b, 2).await;
        };
        futures::pin_mut!(joining);
        match futures::future::select(joining, Box::pin(test)).await {
            futures::future::Either::Left((r, _)) => panic!("join ended: {r:?}"),
            futures::future::Either::Right(_) => {}
        }
        let log = log.lock().unwrap();
        assert_eq!(log[..2], [format!("found {a_addr}"), format!("over-cap {other}")], "{log:?}");
    });
}

/// A peer that accepts connections and never sends a byte: each accepted
/// socket is kept open and read (to see when the dialler drops it), never
/// written to. `accepted` hears each accept, `closed` each close by the
/// dialler (its index among the accepts).
fn silent_peer() -> (SocketAddr, mpsc::UnboundedReceiver<usize>, mpsc::UnboundedReceiver<usize>) {
    use futures::{AsyncReadExt, StreamExt};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = TcpListener::from(listener);
    let (accepted_tx, accepted) = mpsc::unbounded();
    let (closed_tx, closed) = mpsc::unbounded();
    async_std::task::spawn(async move {
        let mut incoming = listener.incoming();
        let mut n = 0;
        while let Some(Ok(mut s)) = incoming.next().await {
            let i = n;
            n += 1;
            let _ = accepted_tx.unbounded_send(i);
            let closed_tx = closed_tx.clone();
            async_std::task::spawn(async move {
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink).await;
                let _ = closed_tx.unbounded_send(i);
            });
        }
    });
    (addr, accepted, closed)
}

/// Hands each join event to the test as it happens.
fn events() -> (impl FnMut(JoinEvent), mpsc::UnboundedReceiver<JoinEvent>) {
    let (tx, rx) = mpsc::unbounded();
    (move |ev| drop(tx.unbounded_send(ev)), rx)
}

/// The next event about `peer` (others are kept in `seen`).
async fn next_about(
    rx: &mut mpsc::UnboundedReceiver<JoinEvent>,
    peer: SocketAddr,
    seen: &mut Vec<JoinEvent>,
) -> JoinEvent {
    use futures::StreamExt;
    loop {
        let ev = rx.next().await.expect("the join ended");
        let about = match &ev {
            JoinEvent::Found(p) | JoinEvent::OverCap(p) | JoinEvent::Connected(p) => *p,
            JoinEvent::ConnectFailed { peer, .. } | JoinEvent::Ended { peer, .. } => *peer,
            other => panic!("unexpected event {other:?}"),
        };
        if about == peer {
            return ev;
        }
        seen.push(ev);
    }
}

/// Runs `test` beside `joining`; the join must not end first.
async fn beside<J, T>(joining: J, test: T) -> T::Output
where
    J: std::future::Future<Output = Result<(), kappa_core::KappaError>>,
    T: std::future::Future,
{
    futures::pin_mut!(joining, test);
    match futures::future::select(joining, test).await {
        futures::future::Either::Left((r, _)) => panic!("join ended: {r:?}"),
        futures::future::Either::Right((out, _)) => out,
    }
}

/// A discovered peer that accepts the connection and then sends nothing is
/// dropped after `JoinOptions::timeout` (with the protocol's timeout error,
/// the socket closed) and redialled after `backoff_min`, again and again.
#[test]
fn a_silent_discovered_peer_is_dropped_after_the_timeout_and_redialled() {
    use futures::StreamExt;
    async_std::task::block_on(async {
        let b = db("b");
        let (silent, mut accepted, mut closed) = silent_peer();
        let disc = Scripted::default();
        let (on_event, mut rx) = events();
        let timeout = Duration::from_millis(300);
        let backoff = Duration::from_millis(20);
        let opts = JoinOptions::default()
            .timeout(timeout)
            .backoff(backoff, Duration::from_millis(100))
            .max_retries(1000);
        let joining = b.join(&disc, None, TcpStream::connect, opts, on_event);
        beside(joining, async {
            while disc.lookups.lock().unwrap().is_empty() {
                async_std::task::yield_now().await;
            }
            disc.found(silent);
            let mut seen = Vec::new();
            assert!(matches!(next_about(&mut rx, silent, &mut seen).await, JoinEvent::Found(_)));
            for round in 0..3 {
                let ev = next_about(&mut rx, silent, &mut seen).await;
                assert!(matches!(ev, JoinEvent::Connected(_)), "round {round}: {ev:?}");
                assert_eq!(accepted.next().await, Some(round));
                match next_about(&mut rx, silent, &mut seen).await {
                    JoinEvent::Ended { result: Err(e), retry_in, .. } => {
                        let msg = e.to_string();
                        assert!(msg.contains("timed out") && msg.contains(&format!("{timeout:?}")), "{msg}");
                        // Failures in a row double the wait (capped).
                        let want = backoff * (1 << round);
                        assert_eq!(retry_in, Some(want.min(Duration::from_millis(100))));
                    }
                    other => panic!("round {round}: {other:?}"),
                }
                assert_eq!(closed.next().await, Some(round), "the dropped socket was closed");
            }
            assert!(seen.is_empty(), "{seen:?}");
        })
        .await;
    });
}

/// A peer that goes silent does not hold up the others: with a timeout far
/// beyond the test, a second discovered peer syncs both ways while the silent
/// one's session is still open.
#[test]
fn a_silent_discovered_peer_does_not_hold_up_the_others() {
    use futures::StreamExt;
    async_std::task::block_on(async {
        let (a, b) = (db("a"), db("b"));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a_addr = listener.local_addr().unwrap();
        let _serving = serve(&a, listener);
        let (silent, mut accepted, mut closed) = silent_peer();
        let disc = Scripted::default();
        let (on_event, mut rx) = events();
        let opts = JoinOptions::default().timeout(Duration::from_secs(600));
        let joining = b.join(&disc, None, TcpStream::connect, opts, on_event);
        beside(joining, async {
            while disc.lookups.lock().unwrap().is_empty() {
                async_std::task::yield_now().await;
            }
            disc.found(silent);
            let mut seen = Vec::new();
            assert!(matches!(next_about(&mut rx, silent, &mut seen).await, JoinEvent::Found(_)));
            assert!(matches!(next_about(&mut rx, silent, &mut seen).await, JoinEvent::Connected(_)));
            assert_eq!(accepted.next().await, Some(0));
            disc.found(a_addr);
            assert!(matches!(next_about(&mut rx, a_addr, &mut seen).await, JoinEvent::Found(_)));
            assert!(matches!(next_about(&mut rx, a_addr, &mut seen).await, JoinEvent::Connected(_)));
            until_holds(&b, 2).await;
            until_holds(&a, 2).await;
            // The silent peer's session is still there: nothing ended, its
            // socket is open.
            assert!(seen.is_empty(), "{seen:?}");
            assert!(rx.try_recv().is_err(), "an event came: {:?}", rx.try_recv());
            assert!(closed.try_recv().is_err(), "the silent peer's socket was closed");
        })
        .await;
    });
}

/// A loopback listener whose accepted sockets have a small receive buffer.
fn small_receive_buffer_listener() -> TcpListener {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    s.listen(16).unwrap();
    TcpListener::from(std::net::TcpListener::from(s))
}

/// Dials with a small send buffer, so what the peer does not read waits in
/// our session rather than in the kernel.
fn connect_small_send_buffer(addr: SocketAddr) -> futures::future::Ready<std::io::Result<TcpStream>> {
    use socket2::{Domain, Socket, Type};
    futures::future::ready((|| {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        s.set_send_buffer_size(4096)?;
        s.connect(&addr.into())?;
        Ok(TcpStream::from(std::net::TcpStream::from(s)))
    })())
}

/// A discovered peer that proves the key, asks for everything and then
/// stops reading (its own writes, keep-alives every 200 ms, go on, so the
/// silence limit cannot go first) is dropped with `NotReading` once a write
/// of ours has waited `JoinOptions::timeout`, and redialled after
/// `backoff_min`.
#[test]
fn a_discovered_peer_that_stops_reading_is_dropped_with_not_reading_and_redialled() {
    use futures::channel::oneshot;
    use futures::StreamExt;
    use kappa_core::multifeed::MultifeedError;
    use kappa_core::protocol::ProtocolError;
    use kappa_core::{KappaError, ReplicateOptions};
    use kappa_testkit::stall::StopsReading;
    async_std::task::block_on(async {
        let b = Kappa::builder().shared_key(KEY).open().unwrap();
        let values: Vec<String> = (0..500).map(|i| format!("entry {i} {}", "x".repeat(1000))).collect();
        b.writer("local").unwrap().append_batch(&values).unwrap();
        let listener = small_receive_buffer_listener();
        let stalled_addr = listener.local_addr().unwrap();
        let (accepted_tx, mut accepted) = mpsc::unbounded();
        let (stopped_tx, stopped) = oneshot::channel();
        // The stalled peer: a real database answering each connection, whose
        // first stream stops passing reads on once 100 requests of its wait.
        async_std::task::spawn(async move {
            let stalled = Kappa::builder().shared_key(KEY).open().unwrap();
            let mut incoming = listener.incoming().fuse();
            let mut stopped_tx = Some(stopped_tx);
            let mut sessions = futures::stream::FuturesUnordered::new();
            loop {
                futures::select! {
                    s = incoming.next() => {
                        let Some(Ok(s)) = s else { break };
                        let _ = accepted_tx.unbounded_send(());
                        let handle: Arc<std::sync::OnceLock<kappa_protocol::SessionHandle>> = Arc::default();
                        let h = handle.clone();
                        let first = stopped_tx.is_some();
                        let stream = StopsReading {
                            inner: s,
                            stop: Box::new(move || {
                                first
                                    && h.get().and_then(|h| h.progress()).map_or(0, |p| {
                                        p.feeds.iter().map(|f| f.requests_in_flight).sum::<usize>()
                                    }) >= 100
                            }),
                            stopped: stopped_tx.take().or_else(|| Some(oneshot::channel().0)),
                        };
                        let ropts = ReplicateOptions::new(false)
                            .live(true)
                            .timeout(Duration::from_secs(600))
                            .keep_alive(Duration::from_millis(200));
                        let (fut, session) = stalled.replicate_session(stream, ropts).unwrap();
                        handle.set(session).ok().unwrap();
                        sessions.push(fut);
                    }
                    _ = sessions.select_next_some() => {}
                }
            }
        });
        let disc = Scripted::default();
        let (on_event, mut rx) = events();
        // Longer than the session driver's first timer wait (up to 1 s, set
        // before the handshake), as in many_peers.rs.
        let timeout = Duration::from_secs(3);
        let backoff = Duration::from_millis(20);
        let opts = JoinOptions::default().timeout(timeout).backoff(backoff, Duration::from_secs(1));
        let joining = b.join(&disc, None, connect_small_send_buffer, opts, on_event);
        beside(joining, async {
            while disc.lookups.lock().unwrap().is_empty() {
                async_std::task::yield_now().await;
            }
            disc.found(stalled_addr);
            let mut seen = Vec::new();
            assert!(matches!(next_about(&mut rx, stalled_addr, &mut seen).await, JoinEvent::Found(_)));
            assert!(matches!(next_about(&mut rx, stalled_addr, &mut seen).await, JoinEvent::Connected(_)));
            accepted.next().await.unwrap();
            stopped.await.expect("the stalled peer stopped reading");
            match next_about(&mut rx, stalled_addr, &mut seen).await {
                JoinEvent::Ended {
                    result:
                        Err(KappaError::Multifeed(MultifeedError::Replication(ProtocolError::NotReading {
                            buffered,
                            waited,
                        }))),
                    retry_in,
                    ..
                } => {
                    assert_eq!(waited, timeout);
                    assert!(buffered > 0, "nothing buffered");
                    assert_eq!(retry_in, Some(backoff));
                }
                other => panic!("{other:?}"),
            }
            // Redialled: the peer answers a new connection.
            assert!(matches!(next_about(&mut rx, stalled_addr, &mut seen).await, JoinEvent::Connected(_)));
            accepted.next().await.unwrap();
            assert!(seen.is_empty(), "{seen:?}");
        })
        .await;
    });
}
