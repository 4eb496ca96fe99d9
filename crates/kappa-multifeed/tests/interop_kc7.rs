//! What only kappa-core 7 brings to feed sets, with real JS peers (the
//! scenarios both generations share run for both in `interop_tcp.rs`): the
//! one-way signature rule (a feed whose head is signed in the 40-byte
//! hypercore 9 form is not offered to a kappa-core 6 peer, and an offered
//! feed is served to it only up to its newest 32-byte state); the bridge
//! kappa-core 6 JS ↔ Rust ↔ kappa-core 7 JS, live; folders written by JS
//! kappa-core 7 opened by Rust and the reverse, in both signature forms (the
//! kappa-core 6 twin is `interop_disk.rs`). Every connection goes through the
//! seeded chaos relay when `KAPPA_CHAOS_SEED` is set.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use async_std::net::TcpStream;
use async_std::task;
use common::{form, js_summary, listening, rust_writer, spawn_live_writer, summary, KC6, KC7, KEY};
use kappa_log::encoding::{Codec, Json};
use kappa_log::SignatureForm;
use kappa_multifeed::{Multifeed, ReplicateOptions};
use kappa_testkit::js::Role;
use kappa_testkit::{content_digest, js};
use serde_json::{json, Value};

/// A Rust set holding a feed from JS kappa-core 7 (40-byte signatures) syncs
/// with a JS kappa-core 6 peer: that feed is withheld, with the reason, and
/// everything else travels; a kappa-core 7 peer gets it all.
#[test]
fn a_kc6_peer_is_not_offered_a_feed_only_kc7_can_verify() {
    let Some(kc6) = js::harness() else { return };
    let Some(kc7) = js::harness_kc7() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mf = Multifeed::open_dir(tmp.path().join("rust")).unwrap();
    rust_writer(&mf, "local", 4);

    let sync = |harness: &Path, dir: &str, write: &str| {
        let d = tmp.path().join(dir);
        let (mut peer, route) = listening(harness, &d, Role::Responder, &["--write", write]);
        let report = task::block_on(async {
            let stream = TcpStream::connect(route.addr()).await.unwrap();
            mf.replicate(stream, ReplicateOptions::new(true).shared_key(KEY)).await
        })
        .unwrap();
        let done = peer.until("done");
        assert!(peer.finish().success());
        (report, done)
    };
    let (r7, _) = sync(&kc7, "js7", "seven:6");
    assert_eq!(r7.generation, Some(KC7));
    let seven = r7.new_feeds[0];
    assert_eq!(form(&mf, &seven.to_hex()), Some(SignatureForm::TreeHashAndLength));

    let (r6, done6) = sync(&kc6, "js6", "six:3");
    assert_eq!(r6.generation, Some(KC6));
    assert_eq!(r6.withheld.len(), 1, "{r6:?}");
    assert_eq!(r6.withheld[0].0, seven);
    assert!(r6.withheld[0].1.contains("40-byte"), "{}", r6.withheld[0].1);
    let js6 = js_summary(&done6);
    assert_eq!(js6.len(), 2, "the kc6 peer holds its own feed and ours, not the kc7 one: {js6:?}");
    assert!(!js6.contains_key(&seven.to_hex()));
    assert_eq!(mf.feeds().len(), 3);

    // A second kappa-core 7 peer gets everything, the kappa-core 6 feed included.
    let (r7b, done7b) = sync(&kc7, "js7b", "again:1");
    assert!(r7b.withheld.is_empty());
    assert_eq!(js_summary(&done7b), summary(&mf));
    assert_eq!(mf.feeds().len(), 4);
}

/// kc6 JS (A) ↔ Rust (B) ↔ kc7 JS (C), live: A's feeds, also one made during
/// the session, reach C through B; C's feed, signed in the 40-byte form,
/// reaches B but is kept from A (the one-way rule), and B's report says so.
#[test]
fn bridge_kc6_js_rust_kc7_js_live() {
    let Some(kc6) = js::harness() else { return };
    let Some(kc7) = js::harness_kc7() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let a_dir = tmp.path().join("a");
    let c_dir = tmp.path().join("c");
    let (mut a, route_a) = spawn_live_writer(&kc6, &a_dir);
    // C expects A's two feeds, B's and its own: 10 + 5 + 1 + 4 entries.
    let c_extra = ["--live", "--write", "c:4", "--expect-feeds", "4", "--expect-total", "20"];
    let (mut c, route_c) = listening(&kc7, &c_dir, Role::Responder, &c_extra);
    let b = Multifeed::open_dir(tmp.path().join("b")).unwrap();
    rust_writer(&b, "b", 1);
    let (c_done, ra, rc) = task::block_on(async {
        let sa = TcpStream::connect(route_a.addr()).await.unwrap();
        let sc = TcpStream::connect(route_c.addr()).await.unwrap();
        let (fa, ha) = b.session(sa, ReplicateOptions::new(true).shared_key(KEY).live(true)).unwrap();
        let (fc, hc) = b.session(sc, ReplicateOptions::new(true).shared_key(KEY).live(true)).unwrap();
        let ta = task::spawn(fa);
        let tc = task::spawn(fc);
        let done = task::spawn_blocking(move || {
            let d = loop {
                let v = c.next_event();
                if v["event"] == "done" || v["event"] == "timeout" || v["event"] == "error" {
                    break v;
                }
            };
            let _ = c.finish();
            d
        })
        .await;
        ha.close();
        hc.close();
        let (ra, rc) = (ta.await, tc.await);
        (done, ra, rc)
    });
    let a_done = a.until("done");
    let _ = a.finish();
    assert_eq!(c_done["event"], "done", "{c_done}");
    let ra = ra.unwrap();
    assert_eq!(ra.generation, Some(KC6));
    let c_feeds = js_summary(&c_done);
    assert_eq!(c_feeds.len(), 4);
    assert_eq!(c_feeds, summary(&b), "C holds exactly what B holds");
    if let Ok(rc) = rc {
        assert_eq!(rc.generation, Some(KC7));
    }
    // A holds its own two, B's, and not C's.
    let a_feeds = js_summary(&a_done);
    let c_key: Vec<&String> = c_feeds.keys().filter(|k| !a_feeds.contains_key(*k)).collect();
    assert_eq!(a_feeds.len(), 3, "{a_feeds:?}");
    assert_eq!(c_key.len(), 1);
    assert_eq!(ra.withheld.len(), 1, "{ra:?}");
    assert_eq!(&ra.withheld[0].0.to_hex(), c_key[0]);
    for (k, v) in &a_feeds {
        assert_eq!(Some(v), c_feeds.get(k));
    }
}

/// The bridge with a feed that changes form during the session: kc6 JS (A)
/// ↔ Rust (B) ↔ kc7 JS (C), live. C's feed was written by kappa-core 6 (4
/// entries, 32-byte signatures) and B holds it; B offers it to A, then C,
/// now on kappa-core 7, appends 6 entries signed in the 40-byte form while
/// both sessions run. A keeps the 4 it can verify and never sees a
/// signature it cannot (it would fail "Remote signature could not be
/// verified"); C gets everything; B's report to A names the feed and the
/// first block kept back.
#[test]
fn bridge_kc6_js_rust_kc7_js_live_with_a_feed_signed_in_the_40_byte_form_mid_session() {
    let Some(kc6) = js::harness() else { return };
    let Some(kc7) = js::harness_kc7() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let a_dir = tmp.path().join("a");
    let c_dir = tmp.path().join("c");
    let b = Multifeed::open_dir(tmp.path().join("b")).unwrap();
    rust_writer(&b, "b", 1);

    // C's feed, written by kappa-core 6, reaches B first.
    let (mut c6, route) = listening(&kc6, &c_dir, Role::Responder, &["--write", "c:4"]);
    let r = task::block_on(async {
        let s = TcpStream::connect(route.addr()).await.unwrap();
        b.replicate(s, ReplicateOptions::new(true).shared_key(KEY)).await.unwrap()
    });
    assert_eq!(r.generation, Some(KC6));
    let c6_done = c6.until("done");
    let _ = c6.finish();
    let c_prefix = js_summary(&c6_done);
    let (c_key, c_at_4) =
        c_prefix.iter().find(|(_, (len, _))| *len == 4).map(|(k, v)| (k.clone(), v.clone())).unwrap();
    assert_eq!(form(&b, &c_key), Some(SignatureForm::TreeHash));

    let (mut a, route_a) = spawn_live_writer(&kc6, &a_dir);
    // C expects A's two feeds, B's and its own: 10 + 5 + 1 + 10 entries.
    let c_extra = ["--live", "--write-during-live", "c:6", "--expect-feeds", "4", "--expect-total", "26"];
    let (mut c, route_c) = listening(&kc7, &c_dir, Role::Responder, &c_extra);
    let (c_done, ra, rc) = task::block_on(async {
        let sa = TcpStream::connect(route_a.addr()).await.unwrap();
        let (fa, ha) = b.session(sa, ReplicateOptions::new(true).shared_key(KEY).live(true)).unwrap();
        let ta = task::spawn(fa);
        // A's session is under way (C's feed offered to A with its 32-byte
        // head) once A's feed written during it has reached B.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !b.feeds().iter().any(|f| f.len() == 5 && f.lock().is_complete()) {
            assert!(Instant::now() < deadline, "A's live feed never reached B");
            task::sleep(Duration::from_millis(20)).await;
        }
        let sc = TcpStream::connect(route_c.addr()).await.unwrap();
        let (fc, hc) = b.session(sc, ReplicateOptions::new(true).shared_key(KEY).live(true)).unwrap();
        let tc = task::spawn(fc);
        let done = task::spawn_blocking(move || {
            let d = loop {
                let v = c.next_event();
                if v["event"] == "done" || v["event"] == "timeout" || v["event"] == "error" {
                    break v;
                }
            };
            let _ = c.finish();
            d
        })
        .await;
        hc.close();
        let rc = tc.await;
        // C stops once it holds everything, maybe before B has C's newest
        // blocks: B fetches what it lacks from C's folder, still live with A.
        let (mut c2, route) = listening(&kc7, &c_dir, Role::Responder, &[]);
        let s = TcpStream::connect(route.addr()).await.unwrap();
        b.replicate(s, ReplicateOptions::new(true).shared_key(KEY)).await.unwrap();
        let c2_done = task::spawn_blocking(move || {
            let d = c2.until("done");
            let _ = c2.finish();
            d
        })
        .await;
        assert_eq!(js_summary(&c2_done), js_summary(&done));
        ha.close();
        let ra = ta.await;
        (done, ra, rc)
    });
    let a_done = a.until("done");
    let _ = a.finish();
    assert_eq!(c_done["event"], "done", "{c_done}");
    assert_eq!(a_done["event"], "done", "{a_done}");
    let ra = ra.unwrap();
    assert_eq!(ra.generation, Some(KC6));
    let c_feeds = js_summary(&c_done);
    assert_eq!(c_feeds.len(), 4);
    assert_eq!(c_feeds, summary(&b), "C holds exactly what B holds");
    assert_eq!(c_feeds[&c_key].0, 10);
    assert_eq!(form(&b, &c_key), Some(SignatureForm::TreeHashAndLength));
    if let Ok(rc) = rc {
        assert_eq!(rc.generation, Some(KC7));
    }
    // A holds its own two and B's whole, and C's as kappa-core 6 wrote it.
    let a_feeds = js_summary(&a_done);
    assert_eq!(a_feeds.len(), 4, "{a_feeds:?}");
    assert_eq!(a_feeds[&c_key], c_at_4, "A holds C's feed up to its 32-byte head");
    for (k, v) in a_feeds.iter().filter(|(k, _)| **k != c_key) {
        assert_eq!(Some(v), c_feeds.get(k));
    }
    assert_eq!(ra.withheld.len(), 1, "{ra:?}");
    assert_eq!(ra.withheld[0].0.to_hex(), c_key);
    assert!(ra.withheld[0].1.contains("from 4 on"), "{}", ra.withheld[0].1);
}

#[test]
fn a_js_kc7_folder_opens_in_rust_and_back() {
    let Some(harness) = js::harness_kc7() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let d = dir.to_str().unwrap();
    let written = &js::run(&harness, "multifeed-tool.js", &["write", d, "local:30", "second:7"])[0];
    let codec = Json::<Value>::new();
    let mf = Multifeed::open_dir(&dir).unwrap();
    assert_eq!(mf.feeds().len(), 2);
    assert_eq!(summary(&mf), js_summary(written));
    for f in mf.feeds() {
        let mut f = f.lock();
        assert_eq!(f.audit().unwrap(), f.len());
        assert_eq!(f.signature_form().unwrap(), Some(SignatureForm::TreeHashAndLength));
    }
    // Rust continues JS's writer; the head is then in the 32-byte form.
    let local = mf.writer("local").unwrap();
    local.append(codec.encode(&json!({"n": 30, "who": "local"})).unwrap()).unwrap();
    assert_eq!(local.lock().signature_form().unwrap(), Some(SignatureForm::TreeHash));
    let want = content_digest(&mut local.lock());
    let local_key = local.public_key().to_hex();
    drop((local, mf));

    let read = &js::run(&harness, "multifeed-tool.js", &["read", d])[0];
    let feeds: HashMap<String, Value> = read["feeds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["key"].as_str().unwrap().to_owned(), f.clone()))
        .collect();
    assert_eq!(feeds.len(), 2);
    assert_eq!(feeds[&local_key]["length"], 31);
    assert_eq!(feeds[&local_key]["digest"], want.as_str());
    for f in feeds.values() {
        assert_eq!(f["verified"], true, "{f}");
    }
    // JS kappa-core 6 reads the folder too, the Rust-signed head included; the
    // untouched feed's 40-byte head it cannot verify.
    let Some(kc6) = js::harness() else { return };
    let read6 = &js::run(&kc6, "multifeed-tool.js", &["read", d])[0];
    for f in read6["feeds"].as_array().unwrap() {
        let ours = f["key"] == local_key.as_str();
        assert_eq!(f["verified"], ours, "{f}");
    }
}

#[test]
fn a_rust_folder_opens_in_js_kc7_in_both_signature_forms() {
    let Some(harness) = js::harness_kc7() else { return };
    for form in [SignatureForm::TreeHash, SignatureForm::TreeHashAndLength] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("db");
        let mut o = kappa_multifeed::MultifeedOptions::default();
        o.signature_form = form;
        let mf = Multifeed::open(kappa_storage::DirectoryProvider::new(&dir), o).unwrap();
        rust_writer(&mf, "local", 5);
        rust_writer(&mf, "other", 3);
        let ours = summary(&mf);
        drop(mf);
        let read = &js::run(&harness, "multifeed-tool.js", &["read", dir.to_str().unwrap()])[0];
        assert_eq!(js_summary(read), ours);
        for f in read["feeds"].as_array().unwrap() {
            assert_eq!(f["verified"], true, "{form}: {f}");
        }
        let after = &js::run(&harness, "multifeed-tool.js", &["write", dir.to_str().unwrap(), "local:2"])[0];
        assert_eq!(js_summary(after).values().map(|(l, _)| *l).sum::<u64>(), 10);
        let mf = Multifeed::open_dir(&dir).unwrap();
        for f in mf.feeds() {
            let mut f = f.lock();
            assert_eq!(f.audit().unwrap(), f.len());
        }
    }
}
