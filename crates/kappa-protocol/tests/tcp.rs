//! Real TCP on loopback (async-std): two Rust peers replicate feeds stored in
//! files, non-live and live.

use std::time::Duration;

use async_std::net::{TcpListener, TcpStream};
use async_std::task;
use kappa_log::storage::DirectoryProvider;
use kappa_log::{Feed, KeyPair, SharedFeed};
use kappa_protocol::{EndReason, FeedOptions, ProtocolOptions, Session};

fn writer(dir: &std::path::Path, n: u64) -> SharedFeed {
    let mut f =
        Feed::builder(DirectoryProvider::new(dir)).key_pair(KeyPair::from_seed(&[3; 32])).open().unwrap();
    let mut i = 0;
    while i < n {
        let end = (i + 1000).min(n);
        f.append_batch((i..end).map(|k| format!("entry-{k}"))).unwrap();
        i = end;
    }
    SharedFeed::new(f)
}

fn replica(dir: &std::path::Path, w: &SharedFeed) -> SharedFeed {
    SharedFeed::new(Feed::builder(DirectoryProvider::new(dir)).public_key(*w.public_key()).open().unwrap())
}

async fn connected() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = task::spawn(async move { TcpStream::connect(addr).await.unwrap() });
    let (server, _) = listener.accept().await.unwrap();
    let client = client.await;
    // As the CLI does: small live messages go out at once.
    server.set_nodelay(true).unwrap();
    client.set_nodelay(true).unwrap();
    (server, client)
}

/// Waits (at most 10 s) until `r` holds exactly its first `n` blocks.
async fn wait_for(r: &SharedFeed, n: u64) {
    for _ in 0..500 {
        if r.len() == n && r.lock().is_complete() {
            return;
        }
        let l = r.changed();
        let _ = futures::future::select(l, futures_timer::Delay::new(Duration::from_millis(20))).await;
    }
    panic!("replica stuck at {} of {n}", r.len());
}

#[async_std::test]
async fn non_live_over_tcp_both_roles() {
    for server_initiates in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let w = writer(&tmp.path().join("w"), 5000);
        let r = replica(&tmp.path().join("r"), &w);
        let (server, client) = connected().await;
        let (s1, h1) = Session::new(server, ProtocolOptions::new(server_initiates));
        let (s2, h2) = Session::new(client, ProtocolOptions::new(!server_initiates));
        h1.open_feed(w.clone(), FeedOptions::default());
        h2.open_feed(r.clone(), FeedOptions::default());
        let a = task::spawn(s1.run());
        let b = task::spawn(s2.run());
        let (ra, rb) = (a.await, b.await);
        assert_eq!(ra.end, EndReason::Finished, "{ra:?}");
        assert_eq!(rb.end, EndReason::Finished, "{rb:?}");
        assert_eq!(rb.blocks_received(), 5000);
        assert_eq!(ra.blocks_sent(), 5000);
        assert_eq!(r.len(), 5000);
        assert_eq!(r.lock().audit().unwrap(), 5000);
    }
}

#[async_std::test]
async fn live_over_tcp_with_appends_then_close() {
    let tmp = tempfile::tempdir().unwrap();
    let w = writer(&tmp.path().join("w"), 100);
    let r = replica(&tmp.path().join("r"), &w);
    let (server, client) = connected().await;
    let (s1, h1) = Session::new(server, ProtocolOptions::new(false).live(true));
    let (s2, h2) = Session::new(client, ProtocolOptions::new(true).live(true));
    h1.open_feed(w.clone(), FeedOptions::default());
    h2.open_feed(r.clone(), FeedOptions::default());
    let a = task::spawn(s1.run());
    let b = task::spawn(s2.run());
    wait_for(&r, 100).await;
    for k in 0..20 {
        w.append(format!("live-{k}")).unwrap();
    }
    wait_for(&r, 120).await;
    w.append_batch(["x", "y", "z"]).unwrap();
    wait_for(&r, 123).await;
    assert_eq!(r.get(122).unwrap().as_deref(), Some(&b"z"[..]));
    h2.close();
    let (ra, rb) = (a.await, b.await);
    assert_eq!(ra.end, EndReason::Disconnected, "{ra:?}");
    assert_eq!(rb.end, EndReason::Disconnected, "{rb:?}");
    assert_eq!(rb.blocks_received(), 123);
    drop(h1);
}

#[async_std::test]
async fn a_wrong_peer_fails_cleanly_over_tcp() {
    // Both sides initiators: the handshake can never complete; each side fails
    // within the timeout instead of hanging.
    let (server, client) = connected().await;
    let opts = ProtocolOptions::new(true).timeouts(Duration::from_millis(500), Duration::from_millis(200));
    let (s1, _h1) = Session::new(server, opts.clone());
    let (s2, _h2) = Session::new(client, opts);
    let (ra, rb) = futures::future::join(s1.run(), s2.run()).await;
    assert!(matches!(ra.end, EndReason::Failed(_)), "{ra:?}");
    assert!(matches!(rb.end, EndReason::Failed(_)), "{rb:?}");
}

/// Appends racing the session: each burst's last append must reach the peer
/// however it falls against the session's look at the feed (the watcher
/// used to listen again only after looking, so an append in between woke
/// nobody and a live peer waited for it forever).
#[async_std::test]
async fn every_burst_of_live_appends_reaches_the_peer() {
    let tmp = tempfile::tempdir().unwrap();
    let w = writer(&tmp.path().join("w"), 1);
    let r = replica(&tmp.path().join("r"), &w);
    let (server, client) = connected().await;
    let (s1, h1) = Session::new(server, ProtocolOptions::new(false).live(true));
    let (s2, h2) = Session::new(client, ProtocolOptions::new(true).live(true));
    h1.open_feed(w.clone(), FeedOptions::default());
    h2.open_feed(r.clone(), FeedOptions::default());
    let a = task::spawn(s1.run());
    let b = task::spawn(s2.run());
    let mut n = 1;
    for round in 0..2000u64 {
        // 1 to 4 appends from a thread of their own, a few spins apart, so
        // they land anywhere in the session's handling of the previous one.
        let burst = 1 + round % 4;
        let w2 = w.clone();
        let appender = std::thread::spawn(move || {
            for k in 0..burst {
                for _ in 0..(round * 7 + k * 13) % 50 {
                    std::hint::spin_loop();
                }
                w2.append(format!("r{round}-{k}")).unwrap();
            }
        });
        n += burst;
        appender.join().unwrap();
        let mut waited = 0;
        while !(r.len() == n && r.lock().is_complete()) {
            let l = r.changed();
            if r.len() == n && r.lock().is_complete() {
                break;
            }
            let tick = futures_timer::Delay::new(Duration::from_millis(20));
            if let futures::future::Either::Right(_) = futures::future::select(l, tick).await {
                waited += 1;
                assert!(waited < 500, "round {round}: replica stuck at {} of {n}", r.len());
            }
        }
    }
    h2.close();
    let (ra, rb) = (a.await, b.await);
    assert_eq!(rb.end, EndReason::Disconnected, "{rb:?}");
    assert_eq!(ra.end, EndReason::Disconnected, "{ra:?}");
    assert_eq!(rb.blocks_received(), n);
    drop(h1);
}

/// A step of our own that holds the session three times its silence limit
/// (here a handler that blocks its thread) while the peer's keep-alives wait
/// in the socket: that is not the peer's silence, and the session goes on.
#[async_std::test]
async fn a_long_step_of_ours_is_not_the_peers_silence() {
    let tmp = tempfile::tempdir().unwrap();
    let w = writer(&tmp.path().join("w"), 10);
    let r = replica(&tmp.path().join("r"), &w);
    let (server, client) = connected().await;
    let mut patient = ProtocolOptions::new(false).live(true);
    patient.timeout = Duration::from_secs(30);
    patient.keep_alive = Duration::from_millis(50);
    let mut strict = ProtocolOptions::new(true).live(true);
    strict.timeout = Duration::from_millis(300);
    let (s1, h1) = Session::new(server, patient);
    let (s2, h2) = Session::new(client, strict);
    let stalled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stalled.clone();
    let s2 = s2.on_event(move |_, _, ev| {
        if matches!(ev, kappa_protocol::Event::ChannelOpened { .. })
            && !flag.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            std::thread::sleep(Duration::from_millis(1000));
        }
    });
    h1.open_feed(w.clone(), FeedOptions::default());
    h2.open_feed(r.clone(), FeedOptions::default());
    let a = task::spawn(s1.run());
    let b = task::spawn(s2.run());
    wait_for(&r, 10).await;
    // Past the stall, the session is alive: a live append still arrives.
    for _ in 0..500 {
        if stalled.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        task::sleep(Duration::from_millis(10)).await;
    }
    assert!(stalled.load(std::sync::atomic::Ordering::SeqCst), "no channel opened");
    task::sleep(Duration::from_millis(1200)).await;
    w.append("after the stall").unwrap();
    wait_for(&r, 11).await;
    h2.close();
    let (ra, rb) = (a.await, b.await);
    assert_eq!(rb.end, EndReason::Disconnected, "{rb:?}");
    assert_eq!(ra.end, EndReason::Disconnected, "{ra:?}");
    drop(h1);
}
