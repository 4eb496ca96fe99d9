//! The view file is derived state: a damaged or unusable `views.redb` is moved
//! aside when the database opens, reported, and the views rebuild from the logs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use futures::executor::block_on;
use kappa_core::view::kv::KvView;
use kappa_core::{Kappa, VIEWS_FILE};
use serde_json::json;

fn fill(dir: &std::path::Path) -> Vec<(String, Vec<String>)> {
    let db = Kappa::open(dir).unwrap();
    assert!(db.views_moved_aside().is_none());
    let kv = db.use_view("kv", 1, KvView::new).unwrap();
    let w = db.writer("local").unwrap();
    for i in 0..200 {
        w.append(&json!({"key": format!("k{}", i % 50), "value": i, "links": []})).unwrap();
    }
    block_on(kv.ready()).unwrap();
    let all = summary(&kv);
    db.close().unwrap();
    all
}

fn summary(kv: &KvView) -> Vec<(String, Vec<String>)> {
    kv.all().unwrap().into_iter().map(|(k, hs)| (k, hs.into_iter().map(|h| h.id).collect())).collect()
}

#[test]
fn an_unusable_view_file_is_moved_aside_and_the_views_rebuild() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let expected = fill(&dir);
    let good = std::fs::read(dir.join(VIEWS_FILE)).unwrap();
    // A key's bytes flipped wherever they are (the live page among them: caught
    // by redb's integrity check), then garbage.
    let needle = b"k17";
    let mut flipped = good.clone();
    let mut hits = 0;
    for at in 0..good.len() - needle.len() {
        if &good[at..at + needle.len()] == needle {
            flipped[at + 2] ^= 0x02; // k17 -> k15: a plausible, wrong key
            hits += 1;
        }
    }
    assert!(hits > 0, "the key is in the file");
    for (what, bytes) in [("flipped", flipped), ("garbage", vec![0x5a; 70_000])] {
        std::fs::write(dir.join(VIEWS_FILE), &bytes).unwrap();
        let db = Kappa::open(&dir).unwrap();
        let moved = db.views_moved_aside().cloned().unwrap_or_else(|| panic!("{what}: not moved aside"));
        assert_eq!(moved.from, dir.join(VIEWS_FILE));
        // Kept (redb's open may have written its header and repair marks).
        assert_eq!(std::fs::metadata(&moved.to).unwrap().len(), bytes.len() as u64, "{what}: kept");
        let kv = db.use_view("kv", 1, KvView::new).unwrap();
        block_on(kv.ready()).unwrap();
        assert_eq!(summary(&kv), expected, "{what}: rebuilt from the logs");
        db.close().unwrap();
        drop(kv);
        drop(db);
        // The next open finds a healthy file.
        let db = Kappa::open(&dir).unwrap();
        assert!(db.views_moved_aside().is_none(), "{what}");
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// A view that indexed entries its logs no longer hold (the view's commit
/// reached the disk, the log's writes did not: a machine crash) is rebuilt
/// from the logs when it is used, and says why; a view that matches its logs
/// is not.
#[test]
fn a_view_ahead_of_its_logs_is_rebuilt_from_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let expected = fill(&dir);
    // The log as it was with 200 entries; then 100 more are indexed.
    let old_log = tmp.path().join("old-0");
    copy_dir(&dir.join("0"), &old_log);
    {
        let db = Kappa::open(&dir).unwrap();
        let kv = db.use_view("kv", 1, KvView::new).unwrap();
        assert_eq!(kv.rebuilt_because(), None, "a view that matches its logs is kept");
        let w = db.writer("local").unwrap();
        for i in 0..100 {
            w.append(&json!({"key": format!("new{i}"), "value": i, "links": []})).unwrap();
        }
        block_on(kv.ready()).unwrap();
        assert_eq!(kv.all().unwrap().len(), 150);
        db.close().unwrap();
    }
    // The machine crashed: the view kept the 100, the log lost them.
    std::fs::remove_dir_all(dir.join("0")).unwrap();
    copy_dir(&old_log, &dir.join("0"));
    let db = Kappa::open(&dir).unwrap();
    let kv = db.use_view("kv", 1, KvView::new).unwrap();
    let why = kv.rebuilt_because().expect("the view is ahead of its log: rebuilt");
    assert!(why.contains("100 entries") && why.contains("0..300"), "{why}");
    block_on(kv.ready()).unwrap();
    assert_eq!(summary(&kv), expected, "rebuilt from the logs: no row of a lost entry");
    db.close().unwrap();
    drop(kv);
    drop(db);
    let db = Kappa::open(&dir).unwrap();
    let kv = db.use_view("kv", 1, KvView::new).unwrap();
    assert_eq!(kv.rebuilt_because(), None, "rebuilt once");
}
