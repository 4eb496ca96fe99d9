//! A storage folder written by JS multifeed 5 (as kappa-core 6 uses it) opens here
//! with all feeds, names and entries, and one written here opens in JS.

use kappa_log::encoding::{Codec, Json};
use kappa_log::{Feed, KeyPair};
use kappa_multifeed::Multifeed;
use kappa_storage::MemoryProvider;
use kappa_testkit::{content_digest, js};
use serde_json::{json, Value};

fn by_key(report: &Value) -> Vec<(String, Value)> {
    report["feeds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["key"].as_str().unwrap().to_owned(), f.clone()))
        .collect()
}

#[test]
fn js_folder_opens_in_rust_and_back() {
    let Some(harness) = js::harness() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let d = dir.to_str().unwrap();
    let written = &js::run(&harness, "multifeed-tool.js", &["write", d, "local:30", "second:7"])[0];

    let codec = Json::<Value>::new();
    let mf = Multifeed::open_dir(&dir).unwrap();
    let infos = mf.feed_infos();
    assert_eq!(infos.len(), 2);
    let js_feeds = by_key(written);
    for (dir_no, name, feed) in &infos {
        let key = feed.public_key().to_hex();
        let Some((_, js_feed)) = js_feeds.iter().find(|(k, _)| *k == key) else {
            panic!("folder {dir_no}: key {key} not among JS's feeds")
        };
        assert_eq!(name.as_deref(), js_feed["localname"].as_str());
        assert_eq!(feed.len(), js_feed["length"].as_u64().unwrap());
        let mut f = feed.lock();
        assert_eq!(f.audit().unwrap(), f.len());
        assert_eq!(content_digest(&mut f), js_feed["digest"].as_str().unwrap());
        let last_index = f.len() - 1;
        let last: Value = codec.decode(&f.try_get(last_index).unwrap()).unwrap();
        assert_eq!(last["who"], json!(name.as_deref().unwrap()));
    }
    // Rust continues JS's writer "local" with a JSON entry as a JS app would write it.
    let local = mf.writer("local").unwrap();
    assert!(local.same_as(&infos[0].2));
    local.append(codec.encode(&json!({"n": 30, "who": "local"})).unwrap()).unwrap();
    let want = content_digest(&mut local.lock());
    let local_key = local.public_key().to_hex();
    drop((local, infos, mf));

    // JS multifeed lists feeds in the order they finished loading, which is
    // not always folder order: find them by key.
    let read = &js::run(&harness, "multifeed-tool.js", &["read", d])[0];
    let feeds = by_key(read);
    assert_eq!(feeds.len(), 2);
    let (_, js_local) = feeds.iter().find(|(k, _)| *k == local_key).unwrap();
    assert_eq!(js_local["length"], 31);
    assert_eq!(js_local["digest"], want.as_str());
    for (_, f) in &feeds {
        assert_eq!(f["verified"], true, "{f}");
    }
}

#[test]
fn rust_folder_opens_in_js() {
    let Some(harness) = js::harness() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let codec = Json::<Value>::new();

    // A feed from elsewhere, replicated into the folder block by block.
    let mut other =
        Feed::builder(MemoryProvider::new()).key_pair(KeyPair::from_seed(&[2; 32])).open().unwrap();
    other.append_batch((0..12).map(|i| codec.encode(&json!({"n": i, "who": "peer"})).unwrap())).unwrap();

    let mf = Multifeed::open_dir(&dir).unwrap();
    let local = mf.writer("local").unwrap();
    for i in 0..5 {
        local.append(codec.encode(&json!({"n": i, "who": "local", "f": 0.5})).unwrap()).unwrap();
    }
    let remote = mf.add_remote(*other.public_key()).unwrap();
    for i in (0..12).rev() {
        let proof = other.proof(i, remote.lock().digest(i), false).unwrap();
        remote.put(i, &other.try_get(i).unwrap(), &proof).unwrap();
    }
    let want = [content_digest(&mut local.lock()), content_digest(&mut remote.lock())];
    let keys = [local.public_key().to_hex(), remote.public_key().to_hex()];
    drop((local, remote, mf));

    let read = &js::run(&harness, "multifeed-tool.js", &["read", dir.to_str().unwrap()])[0];
    // JS lists feeds in its own order (names live in a JS object, where the
    // numeric name "1" of the remote feed sorts before "local"): match by key.
    let feeds: std::collections::HashMap<String, Value> = by_key(read).into_iter().collect();
    assert_eq!(feeds.len(), 2);
    for (key, digest) in keys.iter().zip(&want) {
        let f = &feeds[key];
        assert_eq!(f["digest"], digest.as_str(), "{f}");
        assert_eq!(f["verified"], true, "{f}");
    }
    let (local, remote) = (&feeds[&keys[0]], &feeds[&keys[1]]);
    assert_eq!(local["localname"], "local");
    assert_eq!(local["writable"], true);
    assert_eq!(remote["localname"], Value::Null);
    assert_eq!(remote["writable"], false);
    assert_eq!(remote["length"], 12);

    // And JS keeps writing to the Rust-made writer.
    let after = &js::run(&harness, "multifeed-tool.js", &["write", dir.to_str().unwrap(), "local:2"])[0];
    let after: std::collections::HashMap<String, Value> = by_key(after).into_iter().collect();
    assert_eq!(after[&keys[0]]["length"], 7);
    let mf = Multifeed::open_dir(&dir).unwrap();
    let local = mf.writer("local").unwrap();
    let v: Value = codec.decode(&local.get(6).unwrap().unwrap()).unwrap();
    assert_eq!(v, json!({"n": 6, "who": "local"}));
}
