//! Rust ↔ JS over loopback TCP in both wire generations, with the pinned JS
//! peers `interop/replicate-peer.js` (hypercore 8 over hypercore-protocol 7,
//! kappa-core 6) and `interop/kc7/replicate-peer.js` (hypercore 9 over
//! hypercore-protocol 8, kappa-core 7): both directions, as initiator
//! (detecting the generation, `Wire::Auto`) and as responder (answering in
//! the peer's generation), non-live, live with appends, and sparse; feeds
//! signed in both forms for kappa-core 7. One body per scenario, run for each
//! generation (`kc6_…`, `kc7_…`); every connection goes through the seeded
//! chaos relay when `KAPPA_CHAOS_SEED` is set (`kappa_testkit::chaos::route`).

use std::path::Path;
use std::time::Duration;

use async_std::net::{TcpListener, TcpStream};
use async_std::task;
use kappa_log::storage::DirectoryProvider;
use kappa_log::{Feed, KeyPair, SharedFeed, SignatureForm};
use kappa_protocol::{EndReason, FeedOptions, Generation, ProtocolOptions, Session, SessionReport, Wire};
use kappa_testkit::chaos::{self, Route};
use kappa_testkit::js::Role;
use kappa_testkit::{content_digest, js};

const SEED: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

const KC7: Generation = Generation::KappaCore7;

type JsPeer = js::Peer;

fn spawn(harness: &Path, args: &[&str]) -> JsPeer {
    js::Peer::spawn(harness, "replicate-peer.js", args)
}

/// A JS writer (the fixed seed's key) in `dir`, listening in `role`, with
/// `--append N` and `extra`; the route to it, and its key.
fn listening_writer(
    harness: &Path,
    dir: &Path,
    role: Role,
    append: &str,
    extra: &[&str],
) -> (JsPeer, Route, String) {
    let args = [&["--seed", SEED, "--append", append][..], extra].concat();
    let (peer, route) = js::Peer::listening(harness, "replicate-peer.js", dir, role, &args);
    let key = peer.listened()["key"].as_str().unwrap().to_owned();
    (peer, route, key)
}

fn writer(dir: &Path, n: u64) -> SharedFeed {
    writer_in(dir, n, SignatureForm::TreeHash)
}

fn writer_in(dir: &Path, n: u64, form: SignatureForm) -> SharedFeed {
    let mut f = Feed::builder(DirectoryProvider::new(dir))
        .key_pair(KeyPair::from_seed(&[0x42; 32]))
        .signature_form(form)
        .open()
        .unwrap();
    let mut i = 0;
    while i < n {
        let end = (i + 1000).min(n);
        f.append_batch((i..end).map(|k| format!("entry-{k}"))).unwrap();
        i = end;
    }
    SharedFeed::new(f)
}

fn replica(dir: &Path, key: &str) -> SharedFeed {
    let key = kappa_log::PublicKey::from_hex(key).unwrap();
    SharedFeed::new(Feed::builder(DirectoryProvider::new(dir)).public_key(key).open().unwrap())
}

async fn run(
    generation: Generation,
    stream: TcpStream,
    initiator: bool,
    live: bool,
    feed: SharedFeed,
    fopts: FeedOptions,
) -> SessionReport {
    let (s, h) = Session::new(stream, options(generation, initiator).live(live));
    h.open_feed(feed, fopts);
    let report = s.run().await;
    assert_eq!(report.generation, Some(generation), "{report:?}");
    report
}

/// An initiator detects the generation; a responder answers in the peer's.
fn options(generation: Generation, initiator: bool) -> ProtocolOptions {
    ProtocolOptions::new(initiator).wire(Wire::Auto).responder_generation(generation)
}

kappa_testkit::both_generations! {
    rust_downloads_from_js_as_initiator_and_responder =>
        kc6_rust_downloads_from_js_as_initiator_and_responder,
        kc7_rust_downloads_from_js_as_initiator_and_responder;
    js_downloads_from_rust_as_initiator_and_responder =>
        kc6_js_downloads_from_rust_as_initiator_and_responder,
        kc7_js_downloads_from_rust_as_initiator_and_responder;
    live_both_ways_with_appends => kc6_live_both_ways_with_appends, kc7_live_both_ways_with_appends;
    sparse_both_ways => kc6_sparse_both_ways, kc7_sparse_both_ways;
}

fn rust_downloads_from_js_as_initiator_and_responder(generation: Generation) {
    let Some(harness) = js::harness_for(generation) else { return };
    for rust_initiates in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let js_dir = tmp.path().join("js");
        let role = if rust_initiates { Role::Responder } else { Role::Initiator };
        let (mut peer, route, key) = listening_writer(&harness, &js_dir, role, "3000", &["--batch", "7"]);
        let r = replica(&tmp.path().join("rust"), &key);
        let report = task::block_on(async {
            let stream = TcpStream::connect(route.addr()).await.unwrap();
            run(generation, stream, rust_initiates, false, r.clone(), FeedOptions::default()).await
        });
        assert_eq!(report.end, EndReason::Finished, "{report:?}");
        assert_eq!(report.blocks_received(), 3000);
        let done = peer.until("done");
        peer.finish();
        assert_eq!(r.len(), 3000);
        let mut f = r.lock();
        assert_eq!(f.audit().unwrap(), 3000);
        assert_eq!(content_digest(&mut f), done["digest"].as_str().unwrap());
        // hypercore 9 signed it in the 40-byte form, hypercore 8 in the 32-byte one.
        assert_eq!(f.signature_form().unwrap(), Some(js::signature_form_of(generation)));
    }
}

fn js_downloads_from_rust_as_initiator_and_responder(generation: Generation) {
    let Some(harness) = js::harness_for(generation) else { return };
    // hypercore 8 cannot read a feed signed in the 40-byte form.
    let mut cases = vec![(true, SignatureForm::TreeHash), (false, SignatureForm::TreeHash)];
    if generation == KC7 {
        cases.push((true, SignatureForm::TreeHashAndLength));
    }
    for (rust_initiates, form) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let w = writer_in(&tmp.path().join("rust"), 2500, form);
        let want = content_digest(&mut w.lock());
        let key = w.public_key().to_hex();
        let report = task::block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let route = chaos::route_to_port(listener.local_addr().unwrap().port());
            let role = if rust_initiates { "--responder" } else { "--initiator" };
            let js_dir = tmp.path().join("js");
            let mut peer = spawn(
                &harness,
                &[
                    "--dir",
                    js_dir.to_str().unwrap(),
                    "--connect",
                    &route.addr().to_string(),
                    role,
                    "--key",
                    &key,
                ],
            );
            let (stream, _) = listener.accept().await.unwrap();
            let report =
                run(generation, stream, rust_initiates, false, w.clone(), FeedOptions::default()).await;
            let done = task::spawn_blocking(move || {
                let d = peer.until("done");
                peer.finish();
                d
            })
            .await;
            assert_eq!(done["length"], 2500);
            assert_eq!(done["downloaded"], 2500);
            assert_eq!(done["verified"], true);
            assert_eq!(done["digest"], want.as_str());
            report
        });
        assert_eq!(report.end, EndReason::Finished, "{report:?}");
        assert_eq!(report.blocks_sent(), 2500);
    }
}

fn live_both_ways_with_appends(generation: Generation) {
    let Some(harness) = js::harness_for(generation) else { return };
    // Rust writer, JS live replica: Rust appends while connected.
    let tmp = tempfile::tempdir().unwrap();
    let w = writer(&tmp.path().join("rust"), 100);
    let key = w.public_key().to_hex();
    let report = task::block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let route = chaos::route_to_port(listener.local_addr().unwrap().port());
        let js_dir = tmp.path().join("js");
        let mut peer = spawn(
            &harness,
            &[
                "--dir",
                js_dir.to_str().unwrap(),
                "--connect",
                &route.addr().to_string(),
                "--initiator",
                "--live",
                "--key",
                &key,
                "--expect-length",
                "110",
            ],
        );
        let (stream, _) = listener.accept().await.unwrap();
        let session = task::spawn(run(generation, stream, false, true, w.clone(), FeedOptions::default()));
        task::sleep(Duration::from_millis(300)).await;
        for k in 0..10 {
            w.append(format!("live-{k}")).unwrap();
            task::sleep(Duration::from_millis(5)).await;
        }
        let done = task::spawn_blocking(move || {
            let d = peer.until("done");
            peer.finish();
            d
        })
        .await;
        assert_eq!(done["downloaded"], 110);
        assert_eq!(done["digest"], content_digest(&mut w.lock()).as_str());
        session.await
    });
    assert!(matches!(report.end, EndReason::Disconnected | EndReason::Failed(_)), "{report:?}");
    assert_eq!(report.blocks_sent(), 110);

    // JS writer appending live, Rust live replica.
    let tmp = tempfile::tempdir().unwrap();
    let js_dir = tmp.path().join("js");
    let extra = ["--live", "--append-during-live", "5"];
    let (mut peer, route, key) = listening_writer(&harness, &js_dir, Role::Responder, "50", &extra);
    let r = replica(&tmp.path().join("rust"), &key);
    let report = task::block_on(async {
        let stream = TcpStream::connect(route.addr()).await.unwrap();
        let (s, h) = Session::new(stream, options(generation, true).live(true));
        h.open_feed(r.clone(), FeedOptions::default());
        let session = task::spawn(s.run());
        for _ in 0..400 {
            if r.len() == 55 && r.lock().is_complete() {
                break;
            }
            task::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(r.len(), 55, "live appends did not arrive");
        h.close();
        session.await
    });
    peer.until("done");
    peer.finish();
    assert_eq!(report.blocks_received(), 55);
    assert_eq!(r.get(54).unwrap().as_deref(), Some(&b"live-4"[..]));
    r.lock().audit().unwrap();
}

fn sparse_both_ways(generation: Generation) {
    let Some(harness) = js::harness_for(generation) else { return };
    // Rust sparse replica of a JS writer: only blocks 100..200 travel.
    let tmp = tempfile::tempdir().unwrap();
    let js_dir = tmp.path().join("js");
    let (mut peer, route, key) = listening_writer(&harness, &js_dir, Role::Responder, "1000", &[]);
    let r = replica(&tmp.path().join("rust"), &key);
    let report = task::block_on(async {
        let stream = TcpStream::connect(route.addr()).await.unwrap();
        run(generation, stream, true, false, r.clone(), FeedOptions::sparse_range(100..200)).await
    });
    peer.until("done");
    peer.finish();
    assert_eq!(report.end, EndReason::Finished, "{report:?}");
    assert_eq!(report.blocks_received(), 100);
    assert_eq!((0..1000).filter(|&i| r.has(i)).collect::<Vec<_>>(), (100..200).collect::<Vec<_>>());
    r.lock().verify().unwrap();

    // JS sparse replica of a Rust writer.
    let tmp = tempfile::tempdir().unwrap();
    let w = writer(&tmp.path().join("rust"), 1000);
    let key = w.public_key().to_hex();
    let report = task::block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let route = chaos::route_to_port(listener.local_addr().unwrap().port());
        let js_dir = tmp.path().join("js");
        let mut peer = spawn(
            &harness,
            &[
                "--dir",
                js_dir.to_str().unwrap(),
                "--connect",
                &route.addr().to_string(),
                "--initiator",
                "--key",
                &key,
                "--sparse",
                "100:200",
            ],
        );
        let (stream, _) = listener.accept().await.unwrap();
        let report = run(generation, stream, false, false, w.clone(), FeedOptions::default()).await;
        let done = task::spawn_blocking(move || {
            let d = peer.until("done");
            peer.finish();
            d
        })
        .await;
        assert_eq!(done["downloaded"], 100);
        assert_eq!(done["verified"], true);
        report
    });
    assert_eq!(report.end, EndReason::Finished, "{report:?}");
    assert_eq!(report.blocks_sent(), 100);
}
