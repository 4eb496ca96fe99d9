//! Feed-set replication with real JS multifeed peers over loopback TCP, with
//! the pinned `interop/multifeed-peer.js` of both generations (kappa-core 6:
//! multifeed 5 over hypercore-protocol 7; kappa-core 7: multifeed 6 over
//! hypercore-protocol 8, `interop/kc7/`). For both, one body per scenario
//! (`kc6_…`, `kc7_…`): both roles, non-live and live, feeds created after
//! connecting, sparse, a shared-key mismatch. kappa-core 6 only: a chain JS ↔
//! Rust ↔ JS through which a new feed reaches the far end, and a chain Rust ↔
//! JS ↔ Rust through the JS `interop/bridge-peer.js`. What only kappa-core 7
//! has (signature forms, the bridge between generations) is in
//! `interop_kc7.rs`. Every connection goes through the seeded chaos relay when
//! `KAPPA_CHAOS_SEED` is set.

mod common;

use std::time::{Duration, Instant};

use async_std::net::{TcpListener, TcpStream};
use async_std::task;
use common::{
    form, js_summary, key_hex, listening, opts, rust_writer, spawn, spawn_live_writer, summary, KC6, KEY,
};
use kappa_log::SignatureForm;
use kappa_multifeed::{Multifeed, MultifeedError, ReplicateOptions};
use kappa_protocol::Generation;
use kappa_testkit::js::Role;
use kappa_testkit::{chaos, js};
use serde_json::{json, Value};

kappa_testkit::both_generations! {
    js_1000_and_rust_500_end_identical_both_roles =>
        kc6_js_1000_and_rust_500_end_identical_both_roles,
        kc7_js_1000_and_rust_500_end_identical_both_roles;
    rust_listens_js_connects_non_live => kc6_rust_listens_js_connects_non_live, kc7_rust_listens_js_connects_non_live;
    live_new_feeds_both_ways => kc6_live_new_feeds_both_ways, kc7_live_new_feeds_both_ways;
    a_shared_key_mismatch_fails_on_both_sides_within_a_second =>
        kc6_a_shared_key_mismatch_fails_on_both_sides_within_a_second,
        kc7_a_shared_key_mismatch_fails_on_both_sides_within_a_second;
    a_sparse_rust_peer_takes_the_newest_entries_from_js =>
        kc6_a_sparse_rust_peer_takes_the_newest_entries_from_js,
        kc7_a_sparse_rust_peer_takes_the_newest_entries_from_js;
    a_sparse_rust_peer_takes_the_newest_of_each_js_feed =>
        kc6_a_sparse_rust_peer_takes_the_newest_of_each_js_feed,
        kc7_a_sparse_rust_peer_takes_the_newest_of_each_js_feed;
}

fn js_1000_and_rust_500_end_identical_both_roles(generation: Generation) {
    let Some(harness) = js::harness_for(generation) else { return };
    for js_listens_as_initiator in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let js_dir = tmp.path().join("js");
        let role = if js_listens_as_initiator { Role::Initiator } else { Role::Responder };
        let (mut peer, route) = listening(&harness, &js_dir, role, &["--write", "local:1000"]);
        let mf = Multifeed::open_dir(tmp.path().join("rust")).unwrap();
        rust_writer(&mf, "local", 500);
        let report = task::block_on(async {
            let stream = TcpStream::connect(route.addr()).await.unwrap();
            mf.replicate(stream, opts(generation, !js_listens_as_initiator)).await
        })
        .unwrap();
        let done = peer.until("done");
        assert!(peer.finish().success());
        assert_eq!(report.generation, Some(generation));
        assert!(report.withheld.is_empty(), "{report:?}");
        assert_eq!(report.blocks_received(), 1000);
        assert_eq!(report.blocks_sent(), 500);
        let ours = summary(&mf);
        assert_eq!(ours.len(), 2);
        assert_eq!(ours, js_summary(&done), "both sides hold identical feeds");
        let mut lengths: Vec<u64> = ours.values().map(|(l, _)| *l).collect();
        lengths.sort();
        assert_eq!(lengths, vec![500, 1000]);
        // The JS feed is signed in its generation's form, ours in the 32-byte one.
        for (key, _) in ours {
            let theirs = report.new_feeds.iter().any(|k| k.to_hex() == key);
            let want = if theirs { js::signature_form_of(generation) } else { SignatureForm::TreeHash };
            assert_eq!(form(&mf, &key), Some(want));
        }
    }
}

fn rust_listens_js_connects_non_live(generation: Generation) {
    let Some(harness) = js::harness_for(generation) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mf = Multifeed::open_dir(tmp.path().join("rust")).unwrap();
    rust_writer(&mf, "local", 300);
    rust_writer(&mf, "second", 7);
    let (report, done) = task::block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let route = chaos::route_to_port(listener.local_addr().unwrap().port());
        let addr = route.addr().to_string();
        let js_dir = tmp.path().join("js");
        let kh = key_hex();
        let mut peer = spawn(
            &harness,
            &[
                "--dir",
                js_dir.to_str().unwrap(),
                "--connect",
                &addr,
                "--initiator",
                "--shared-key",
                &kh,
                "--write",
                "js:20",
            ],
        );
        let (stream, _) = listener.accept().await.unwrap();
        let report = mf.replicate(stream, opts(generation, false)).await;
        let done = task::spawn_blocking(move || {
            let d = peer.until("done");
            assert!(peer.finish().success());
            d
        })
        .await;
        (report, done)
    });
    let report = report.unwrap();
    assert_eq!(report.generation, Some(generation));
    assert_eq!(summary(&mf), js_summary(&done));
    assert_eq!(mf.feeds().len(), 3);
}

fn a_sparse_rust_peer_takes_the_newest_of_each_js_feed(generation: Generation) {
    let Some(harness) = js::harness_for(generation) else { return };
    // A fresh Rust peer takes only the newest 5 of each JS feed.
    let tmp = tempfile::tempdir().unwrap();
    let js_dir = tmp.path().join("js");
    let (mut peer, route) =
        listening(&harness, &js_dir, Role::Responder, &["--write", "a:50", "--write", "b:8"]);
    let mf = Multifeed::open_dir(tmp.path().join("rust")).unwrap();
    rust_writer(&mf, "mine", 1);
    let mut o = opts(generation, true);
    o.selection = kappa_protocol::Selection::Newest(5);
    let report = task::block_on(async {
        let stream = TcpStream::connect(route.addr()).await.unwrap();
        mf.replicate(stream, o).await
    })
    .unwrap();
    peer.until("done");
    assert!(peer.finish().success());
    assert_eq!(report.generation, Some(generation));
    assert_eq!(report.blocks_received(), 10);
    for f in mf.feeds() {
        let f = f.lock();
        let len = f.len();
        assert!(len == 1 || len == 50 || len == 8, "{len}");
        if len > 1 {
            assert_eq!(f.downloaded(0..len), 5);
            assert!((len - 5..len).all(|i| f.has(i)));
        }
    }
}

fn a_sparse_rust_peer_takes_the_newest_entries_from_js(generation: Generation) {
    let Some(harness) = js::harness_for(generation) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let js_dir = tmp.path().join("js");
    let (mut peer, route) = listening(&harness, &js_dir, Role::Responder, &["--write", "local:1000"]);
    let mf = Multifeed::in_memory().unwrap();
    let report = task::block_on(async {
        let stream = TcpStream::connect(route.addr()).await.unwrap();
        let mut o = opts(generation, true);
        o.selection = kappa_protocol::Selection::Newest(100);
        mf.replicate(stream, o).await
    })
    .unwrap();
    peer.until("done");
    assert!(peer.finish().success());
    assert_eq!(report.generation, Some(generation));
    assert_eq!(report.blocks_received(), 100, "{report:?}");
    let feed = &mf.feeds()[0];
    assert_eq!(feed.len(), 1000);
    assert_eq!((0..1000).filter(|&i| feed.has(i)).collect::<Vec<_>>(), (900..1000).collect::<Vec<_>>());
    feed.lock().verify().unwrap();
    let v: Value = serde_json::from_slice(&feed.get(999).unwrap().unwrap()).unwrap();
    assert_eq!(v, json!({"n": 999, "who": "local"}));
}

fn live_new_feeds_both_ways(generation: Generation) {
    let Some(harness) = js::harness_for(generation) else { return };
    // JS creates a writer after connecting; it reaches Rust live.
    let tmp = tempfile::tempdir().unwrap();
    let js_dir = tmp.path().join("js");
    let extra = ["--live", "--write", "local:10", "--write-during-live", "late:20"];
    let (mut peer, route) = listening(&harness, &js_dir, Role::Responder, &extra);
    let mf = Multifeed::open_dir(tmp.path().join("rust")).unwrap();
    rust_writer(&mf, "mine", 3);
    let result = task::block_on(async {
        let stream = TcpStream::connect(route.addr()).await.unwrap();
        let (session, handle) = mf.session(stream, opts(generation, true).live(true)).unwrap();
        let running = task::spawn(session);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(mf.feeds().len() == 3 && mf.feeds().iter().map(|f| f.len()).sum::<u64>() == 33) {
            assert!(Instant::now() < deadline, "the live JS feed did not arrive");
            task::sleep(Duration::from_millis(20)).await;
        }
        handle.close();
        running.await
    });
    assert_eq!(result.unwrap().generation, Some(generation));
    peer.until("done");
    assert!(peer.finish().success());

    // Rust creates a writer after connecting; it reaches JS live.
    let kh = key_hex();
    let tmp = tempfile::tempdir().unwrap();
    let mf = Multifeed::open_dir(tmp.path().join("rust")).unwrap();
    rust_writer(&mf, "local", 5);
    let done = task::block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let route = chaos::route_to_port(listener.local_addr().unwrap().port());
        let addr = route.addr().to_string();
        let js_dir = tmp.path().join("js");
        let mut peer = spawn(
            &harness,
            &[
                "--dir",
                js_dir.to_str().unwrap(),
                "--connect",
                &addr,
                "--initiator",
                "--live",
                "--shared-key",
                &kh,
                "--expect-feeds",
                "2",
                "--expect-total",
                "25",
            ],
        );
        let (stream, _) = listener.accept().await.unwrap();
        let (session, _handle) = mf.session(stream, opts(generation, false).live(true)).unwrap();
        let running = task::spawn(session);
        task::sleep(Duration::from_millis(300)).await;
        rust_writer(&mf, "late", 20);
        let done = task::spawn_blocking(move || {
            let d = peer.until("done");
            assert!(peer.finish().success());
            d
        })
        .await;
        let _ = running.await; // the JS peer hung up
        done
    });
    assert_eq!(js_summary(&done), summary(&mf));
}

fn a_shared_key_mismatch_fails_on_both_sides_within_a_second(generation: Generation) {
    let Some(harness) = js::harness_for(generation) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let js_dir = tmp.path().join("js");
    let other_key = "77".repeat(32);
    let extra = ["--shared-key", &other_key, "--write", "local:3"];
    let (mut peer, route) =
        js::Peer::listening(&harness, "multifeed-peer.js", &js_dir, Role::Responder, &extra);
    let mf = Multifeed::in_memory().unwrap();
    let started = Instant::now();
    let result = task::block_on(async {
        let stream = TcpStream::connect(route.addr()).await.unwrap();
        mf.replicate(stream, opts(generation, true)).await
    });
    let ours = started.elapsed();
    match result {
        Err(MultifeedError::Replication(e)) => {
            let msg = e.to_string();
            assert!(msg.contains("shared key") || msg.contains("closed the connection"), "{msg}");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    let theirs = peer.next_event();
    assert_eq!(theirs["event"], "error", "{theirs}");
    assert!(theirs["message"].as_str().unwrap().contains("Exchange key did not match remote"), "{theirs}");
    assert!(!peer.finish().success());
    assert!(ours < Duration::from_secs(1), "took {ours:?}");
    assert!(mf.feeds().is_empty());
}

#[test]
fn chain_js_rust_js_carries_a_new_feed_to_the_far_end() {
    let Some(harness) = js::harness_for(KC6) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let a_dir = tmp.path().join("a");
    let c_dir = tmp.path().join("c");
    // A: writes, and creates a feed once connected. C: expects A's two feeds and
    // Rust's one, all complete.
    let (mut a, route_a) = spawn_live_writer(&harness, &a_dir);
    let c_extra = ["--live", "--expect-feeds", "3", "--expect-total", "16"];
    let (mut c, route_c) = listening(&harness, &c_dir, Role::Responder, &c_extra);
    let b = Multifeed::open_dir(tmp.path().join("b")).unwrap();
    rust_writer(&b, "b", 1);
    let c_done = task::block_on(async {
        let sa = TcpStream::connect(route_a.addr()).await.unwrap();
        let sc = TcpStream::connect(route_c.addr()).await.unwrap();
        let (fa, ha) = b.session(sa, ReplicateOptions::new(true).shared_key(KEY).live(true)).unwrap();
        let (fc, _hc) = b.session(sc, ReplicateOptions::new(true).shared_key(KEY).live(true)).unwrap();
        let ta = task::spawn(fa);
        let tc = task::spawn(fc);
        let done = task::spawn_blocking(move || {
            let d = c.until("done");
            assert!(c.finish().success());
            d
        })
        .await;
        ha.close();
        let _ = (ta.await, tc.await);
        done
    });
    a.until("done");
    let _ = a.finish();
    let feeds = js_summary(&c_done);
    assert_eq!(feeds.len(), 3);
    assert_eq!(feeds.values().map(|(l, _)| *l).sum::<u64>(), 16);
    // What C holds is exactly what B holds.
    assert_eq!(feeds, summary(&b));
}

#[test]
fn chain_rust_js_rust_carries_feeds_both_ways_through_a_js_bridge() {
    let Some(harness) = js::harness_for(KC6) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let kh = key_hex();
    // A and C are Rust; the JS bridge in the middle listens for A and dials C.
    let a = Multifeed::open_dir(tmp.path().join("a")).unwrap();
    let c = Multifeed::open_dir(tmp.path().join("c")).unwrap();
    rust_writer(&a, "a", 10);
    rust_writer(&c, "c", 7);
    let bridge_dir = tmp.path().join("bridge");
    let (a_feeds, c_feeds, bridge_done) = task::block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let route = chaos::route_to_port(listener.local_addr().unwrap().port());
        let c_addr = route.addr().to_string();
        let mut bridge = js::Peer::spawn(
            &harness,
            "bridge-peer.js",
            &[
                "--dir",
                bridge_dir.to_str().unwrap(),
                "--listen",
                "0",
                "--connect",
                &c_addr,
                "--shared-key",
                &kh,
                "--expect-feeds",
                "3",
                "--expect-total",
                "21",
            ],
        );
        let port = bridge.until("listening")["port"].as_u64().unwrap() as u16;
        let (sc, _) = listener.accept().await.unwrap();
        let (fc, hc) = c.session(sc, ReplicateOptions::new(false).shared_key(KEY).live(true)).unwrap();
        let sa = TcpStream::connect(chaos::route_to_port(port).addr()).await.unwrap();
        let (fa, ha) = a.session(sa, ReplicateOptions::new(true).shared_key(KEY).live(true)).unwrap();
        let (ta, tc) = (task::spawn(fa), task::spawn(fc));
        // A new feed on A while connected travels A -> JS -> C.
        task::sleep(Duration::from_millis(200)).await;
        rust_writer(&a, "late", 4);
        let complete = |mf: &Multifeed| {
            mf.feeds().len() == 3
                && mf.feeds().iter().map(|f| f.len()).sum::<u64>() == 21
                && mf.feeds().iter().all(|f| f.lock().is_complete())
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while !(complete(&a) && complete(&c)) {
            assert!(
                Instant::now() < deadline,
                "the chain did not converge: a {:?}, c {:?}",
                summary(&a),
                summary(&c)
            );
            task::sleep(Duration::from_millis(20)).await;
        }
        let done = task::spawn_blocking(move || {
            let d = bridge.until("done");
            (d, bridge)
        })
        .await;
        ha.close();
        hc.close();
        let _ = (ta.await, tc.await);
        let (done, mut bridge) = done;
        let closed = bridge.until("closed");
        assert_eq!(closed["closedBy"], "remote", "{closed}");
        assert!(bridge.finish().success());
        (summary(&a), summary(&c), done)
    });
    assert_eq!(a_feeds.len(), 3);
    assert_eq!(a_feeds, c_feeds);
    // The JS bridge holds exactly the same feeds, byte for byte.
    assert_eq!(js_summary(&bridge_done), a_feeds);
}
