//! Interop with real JS hypercore 8.14.0 (the pinned harness in `interop/`):
//! JS opens, reads and verifies feed directories written by Rust, and appends to
//! them; Rust opens, audits and appends to directories written by JS.
//!
//! Needs `interop/setup.sh` to have run (`cargo xtask ci` runs it). Without it the
//! tests are skipped with a loud message, except under CI (`CI` set), where they
//! fail.

use std::path::{Path, PathBuf};
use std::process::Command;

use kappa_log::storage::DirectoryProvider;
use kappa_log::{Feed, KeyPair, LogError, SyncPolicy};
use kappa_testkit::{content_digest, js};
use serde_json::Value;

fn interop_dir() -> Option<PathBuf> {
    js::harness()
}

fn node(interop: &Path, script: &str, args: &[&str]) -> Vec<Value> {
    js::run(interop, script, args)
}

fn digest(feed: &mut Feed) -> String {
    content_digest(feed)
}

const SEED: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn seed() -> [u8; 32] {
    hex::decode(SEED).unwrap().try_into().unwrap()
}

#[test]
fn js_reads_verifies_and_extends_a_rust_feed() {
    let Some(interop) = interop_dir() else { return };
    for (n, batch) in [(0u64, 1u64), (1, 1), (1000, 100), (10_000, 1000), (300, 7)] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("feed");
        let mut feed = Feed::builder(DirectoryProvider::new(&dir))
            .key_pair(KeyPair::from_seed(&seed()))
            .sync(SyncPolicy::PerBatch)
            .open()
            .unwrap();
        let mut i = 0;
        while i < n {
            let end = (i + batch).min(n);
            feed.append_batch((i..end).map(|k| format!("entry-{k}"))).unwrap();
            i = end;
        }
        let want_digest = digest(&mut feed);
        let byte_len = feed.byte_len();
        drop(feed);

        let reports = node(&interop, "hypercore-read.js", &[dir.to_str().unwrap(), "--append", "5"]);
        let first = &reports[0];
        assert_eq!(first["key"], KeyPair::from_seed(&seed()).public_key().to_hex());
        assert_eq!(first["length"], n, "JS length for n={n}");
        assert_eq!(first["byteLength"], byte_len);
        assert_eq!(first["digest"], want_digest.as_str());
        assert_eq!(first["verified"], true, "{first}");
        assert_eq!(first["treeVerified"], true, "{first}");
        assert_eq!(first["writable"], true);
        assert_eq!(reports[1]["length"], n + 5);

        // JS appended five single entries to our feed: we open, audit and read them.
        let mut feed = Feed::open_dir(&dir).unwrap();
        assert_eq!(feed.len(), n + 5);
        assert_eq!(feed.audit().unwrap(), n + 5);
        assert_eq!(feed.get(n + 4).unwrap(), Some(b"more-4".to_vec()));
        assert_eq!(digest(&mut feed), reports[1]["digest"].as_str().unwrap());
    }
}

#[test]
fn rust_opens_verifies_and_extends_a_js_feed() {
    let Some(interop) = interop_dir() else { return };
    for (n, batch) in [(1u64, 1u64), (50, 1), (5000, 1000), (9000, 333)] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("feed");
        let d = dir.to_str().unwrap();
        let written = node(&interop, "hypercore-write.js", &[d, SEED, &n.to_string(), &batch.to_string()]);
        let mut feed = Feed::open_dir(&dir).unwrap();
        assert!(feed.is_writable());
        assert_eq!(feed.public_key().to_hex(), written[0]["key"].as_str().unwrap());
        assert_eq!(feed.len(), n);
        assert_eq!(feed.byte_len(), written[0]["byteLength"].as_u64().unwrap());
        assert_eq!(feed.audit().unwrap(), n);
        assert_eq!(digest(&mut feed), written[0]["digest"].as_str().unwrap());
        assert_eq!(feed.get(n - 1).unwrap(), Some(format!("entry-{}", n - 1).into_bytes()));

        // Continue the JS feed from Rust; JS reads and verifies the result.
        feed.append_batch(["rust-0", "rust-1", "rust-2"]).unwrap();
        feed.append("rust-3").unwrap();
        let want = digest(&mut feed);
        drop(feed);
        let read = node(&interop, "hypercore-read.js", &[d, "--verify-all"]);
        assert_eq!(read[0]["length"], n + 4);
        assert_eq!(read[0]["digest"], want.as_str());
        assert_eq!(read[0]["verified"], true, "{}", read[0]);
        assert_eq!(read[0]["treeVerified"], true, "{}", read[0]);
    }
}

#[test]
fn rust_and_js_exclude_each_other_with_the_bitfield_lock() {
    let Some(interop) = interop_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("feed");
    let mut feed = Feed::open_dir(&dir).unwrap();
    feed.append("held").unwrap();
    // While Rust holds the feed, JS hypercore cannot open it.
    let out = Command::new("node").arg(interop.join("hypercore-read.js")).arg(&dir).output().unwrap();
    assert!(!out.status.success(), "JS opened a feed Rust holds");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("lock") || stderr.contains("LOCK"), "unexpected JS error: {stderr}");
    // And a second Rust handle fails with a clear error, not corruption.
    match Feed::open_dir(&dir) {
        Err(LogError::Storage(kappa_log::storage::StorageError::Locked { .. })) => {}
        other => panic!("second open: {other:?}"),
    }
    drop(feed);
    let read = node(&interop, "hypercore-read.js", &[dir.to_str().unwrap()]);
    assert_eq!(read[0]["length"], 1);
}

#[test]
fn js_reads_a_feed_repaired_from_a_peer() {
    let Some(interop) = interop_dir() else { return };
    for damage in ["data-half", "tree-deleted", "bitfield-deleted", "signatures-deleted"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("feed");
        let mut feed =
            Feed::builder(DirectoryProvider::new(&dir)).key_pair(KeyPair::from_seed(&seed())).open().unwrap();
        for chunk in (0..1000u32).collect::<Vec<_>>().chunks(100) {
            feed.append_batch(chunk.iter().map(|k| format!("entry-{k}"))).unwrap();
        }
        // A peer holds the whole history.
        let mut peer = Feed::builder(kappa_log::storage::MemoryProvider::new())
            .public_key(*feed.public_key())
            .open()
            .unwrap();
        for i in 0..feed.len() {
            let data = feed.get(i).unwrap().unwrap();
            let proof = feed.proof(i, peer.digest(i), false).unwrap();
            peer.put(i, &data, &proof).unwrap();
        }
        let want_digest = digest(&mut feed);
        drop(feed);
        let file = |f: &str| dir.join(f);
        match damage {
            "data-half" => {
                let f = std::fs::OpenOptions::new().write(true).open(file("data")).unwrap();
                f.set_len(f.metadata().unwrap().len() / 2).unwrap();
            }
            "tree-deleted" => std::fs::remove_file(file("tree")).unwrap(),
            "bitfield-deleted" => std::fs::remove_file(file("bitfield")).unwrap(),
            _ => std::fs::remove_file(file("signatures")).unwrap(),
        }
        let mut feed = Feed::open_dir(&dir).unwrap();
        assert_eq!(feed.len(), 1000, "{damage}");
        for i in 0..peer.len() {
            if feed.has(i) {
                continue;
            }
            let data = peer.get(i).unwrap().unwrap();
            let proof = peer.proof(i, feed.digest(i), false).unwrap();
            feed.put(i, &data, &proof).unwrap();
        }
        assert_eq!(feed.audit().unwrap(), 1000, "{damage}");
        assert_eq!(digest(&mut feed), want_digest, "{damage}");
        drop(feed);
        let read = node(&interop, "hypercore-read.js", &[dir.to_str().unwrap()]);
        assert_eq!(read[0]["length"], 1000, "{damage}: {}", read[0]);
        assert_eq!(read[0]["digest"], want_digest.as_str(), "{damage}");
        assert_eq!(read[0]["verified"], true, "{damage}: {}", read[0]);
        assert_eq!(read[0]["treeVerified"], true, "{damage}: {}", read[0]);
    }
}
