//! The local (non-replication) [A] cases of multifeed's JS test suite (reference
//! §2, cases 3–6, 11–13, 16, 22, 28), plus what we promise beyond JS: race-free
//! writers, the directory lock, and events for every feed.

use std::collections::HashSet;
use std::sync::Arc;
use std::thread;

use futures::StreamExt;
use kappa_log::KeyPair;
use kappa_multifeed::{Multifeed, MultifeedError, Origin};
use kappa_storage::StorageError;

#[test]
fn no_feeds() {
    let mf = Multifeed::in_memory().unwrap();
    assert!(mf.feeds().is_empty());
}

#[test]
fn create_writer_append_get() {
    let mf = Multifeed::in_memory().unwrap();
    let w = mf.writer("0").unwrap();
    w.append(b"foo").unwrap();
    assert_eq!(w.get(0).unwrap().as_deref(), Some(&b"foo"[..]));
    let feeds = mf.feeds();
    assert_eq!(feeds.len(), 1);
    assert!(feeds[0].same_as(&w));
}

#[test]
fn feed_by_key_bytes_and_hex() {
    let mf = Multifeed::in_memory().unwrap();
    let w = mf.writer("a").unwrap();
    assert!(mf.feed(w.public_key()).unwrap().same_as(&w));
    assert!(mf.feed_by_hex(&w.public_key().to_hex()).unwrap().unwrap().same_as(&w));
    assert!(mf.feed_by_hex(&"00".repeat(32)).unwrap().is_none());
    assert!(matches!(mf.feed_by_hex("zz"), Err(MultifeedError::Key(_))));
}

#[test]
fn writer_by_name_twice_is_the_same_feed() {
    let mf = Multifeed::in_memory().unwrap();
    let a = mf.writer("bob").unwrap();
    let b = mf.writer("bob").unwrap();
    assert!(a.same_as(&b));
    assert_eq!(mf.feeds().len(), 1);
}

#[test]
fn writer_by_name_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let key = {
        let mf = Multifeed::open_dir(dir.path()).unwrap();
        let w = mf.writer("minuette").unwrap();
        w.append(b"x").unwrap();
        mf.writer("other").unwrap();
        mf.close().unwrap();
        *w.public_key()
    };
    let mf = Multifeed::open_dir(dir.path()).unwrap();
    let w = mf.writer("minuette").unwrap();
    assert_eq!(*w.public_key(), key);
    assert!(w.is_writable());
    assert_eq!(w.get(0).unwrap().as_deref(), Some(&b"x"[..]));
    assert_eq!(mf.feeds().len(), 2);
    assert_eq!(mf.name_of(&key).as_deref(), Some("minuette"));
    // The layout is multifeed's: numbered folders with localname.
    assert_eq!(std::fs::read(dir.path().join("0/localname")).unwrap(), b"minuette");
    assert_eq!(std::fs::read(dir.path().join("1/localname")).unwrap(), b"other");
}

#[test]
fn close_clears_feeds_and_the_directory_can_be_removed() {
    let dir = tempfile::tempdir().unwrap();
    let mf = Multifeed::open_dir(dir.path()).unwrap();
    mf.writer("w").unwrap().append(b"1").unwrap();
    assert!(!mf.is_closed());
    mf.close().unwrap();
    assert!(mf.is_closed());
    assert!(mf.feeds().is_empty());
    assert!(matches!(mf.writer("w"), Err(MultifeedError::Closed)));
    drop(mf);
    std::fs::remove_dir_all(dir.path()).unwrap();
}

#[test]
fn close_after_double_open() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..2u8 {
        let mf = Multifeed::open_dir(dir.path()).unwrap();
        mf.writer("w").unwrap().append([round]).unwrap();
        mf.close().unwrap();
    }
    let mf = Multifeed::open_dir(dir.path()).unwrap();
    assert_eq!(mf.writer("w").unwrap().len(), 2);
}

#[test]
fn writer_with_custom_key_pair() {
    let mf = Multifeed::in_memory().unwrap();
    let kp = KeyPair::from_seed(&[42; 32]);
    let w = mf.writer_with_key_pair("custom", kp.clone()).unwrap();
    assert_eq!(*w.public_key(), kp.public_key());
    w.append(b"data").unwrap();
    assert_eq!(w.get(0).unwrap().as_deref(), Some(&b"data"[..]));
    // Same name, same key: fine. Same name, another key: an error.
    assert!(mf.writer_with_key_pair("custom", kp).unwrap().same_as(&w));
    let r = mf.writer_with_key_pair("custom", KeyPair::from_seed(&[1; 32]));
    assert!(matches!(r, Err(MultifeedError::WriterKeyMismatch { .. })));
}

#[test]
fn concurrent_writer_creation_gives_one_feed() {
    let mf = Arc::new(Multifeed::in_memory().unwrap());
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let mf = mf.clone();
            thread::spawn(move || *mf.writer("race").unwrap().public_key())
        })
        .collect();
    let keys: HashSet<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(keys.len(), 1, "JS creates two feeds under this race; we must not");
    assert_eq!(mf.feeds().len(), 1);
}

#[test]
fn close_while_closing() {
    let mf = Multifeed::in_memory().unwrap();
    mf.writer("a").unwrap();
    let a = mf.clone();
    let t = thread::spawn(move || a.close());
    let r2 = mf.close();
    assert!(t.join().unwrap().is_ok());
    assert!(r2.is_ok());
    assert!(mf.is_closed());
}

#[test]
fn one_process_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let mf = Multifeed::open_dir(dir.path()).unwrap();
    match Multifeed::open_dir(dir.path()) {
        Err(MultifeedError::Storage(StorageError::Locked { .. })) => {}
        other => panic!("second open: {other:?}"),
    }
    drop(mf);
    Multifeed::open_dir(dir.path()).unwrap();
}

#[test]
fn events_for_every_feed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mf = Multifeed::open_dir(dir.path()).unwrap();
        mf.writer("old").unwrap();
    }
    let mf = Multifeed::open_dir(dir.path()).unwrap();
    let mut events = mf.subscribe();
    mf.writer("new").unwrap();
    let remote = KeyPair::from_seed(&[8; 32]).public_key();
    let r = mf.add_remote(remote).unwrap();
    assert!(!r.is_writable());
    assert!(mf.add_remote(remote).unwrap().same_as(&r), "a known key is not added twice");
    let got: Vec<_> = futures::executor::block_on(events.by_ref().take(3).collect::<Vec<_>>());
    let summary: Vec<_> = got.iter().map(|e| (e.dir, e.name.clone(), e.origin)).collect();
    assert_eq!(
        summary,
        vec![
            (0, Some("old".to_string()), Origin::Loaded),
            (1, Some("new".to_string()), Origin::Created),
            (2, None, Origin::Remote),
        ]
    );
    // Feed handles (here, in the events) keep their feeds' locks: let go first.
    drop((mf, got, events, r));
    // The remote feed reloads without a name; writers keep theirs.
    let mf = Multifeed::open_dir(dir.path()).unwrap();
    let infos: Vec<_> = mf.feed_infos().into_iter().map(|(d, n, _)| (d, n)).collect();
    assert_eq!(infos, vec![(0, Some("old".into())), (1, Some("new".into())), (2, None)]);
    assert!(!dir.path().join("2/localname").exists());
    assert!(!dir.path().join("2/secret_key").exists());
}

#[test]
fn opening_many_feeds_is_fast_enough() {
    // The figure is 1,000 feeds in under a second; this checks the
    // behaviour (all load, in order) and leaves timing to the benchmark.
    let dir = tempfile::tempdir().unwrap();
    {
        let mf = Multifeed::open_dir(dir.path()).unwrap();
        for i in 0..200 {
            mf.writer(&format!("w{i}")).unwrap().append(b"x").unwrap();
        }
    }
    let mf = Multifeed::open_dir(dir.path()).unwrap();
    assert_eq!(mf.feeds().len(), 200);
    assert_eq!(mf.feed_infos()[137].1.as_deref(), Some("w137"));
}
