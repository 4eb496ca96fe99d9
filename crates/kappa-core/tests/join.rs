//! `Kappa::join` over a scripted discovery and loopback TCP: one session per
//! peer address however often it is found, the database's topic announced,
//! a dropped session redialled until the peer is back, the peer cap.

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
