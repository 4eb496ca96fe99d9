//! Feed-set replication: the [A] cases of multifeed's JS suite (reference §2,
//! cases 7–31), over socket pairs and async-std.

use std::time::Duration;

use async_std::os::unix::net::UnixStream;
use async_std::task;
use kappa_log::KeyPair;
use kappa_multifeed::{Multifeed, MultifeedError, ReplicateOptions, SyncReport};
use kappa_storage::{BoxedStorage, MemoryProvider, Provider, RandomAccess, StorageError};

const KEY: [u8; 32] = [0x5a; 32];

async fn sync(
    a: &Multifeed,
    b: &Multifeed,
    opts_a: ReplicateOptions,
    opts_b: ReplicateOptions,
) -> (Result<SyncReport, MultifeedError>, Result<SyncReport, MultifeedError>) {
    let (s1, s2) = UnixStream::pair().unwrap();
    let (fa, _ha) = a.session(s1, opts_a).unwrap();
    let (fb, _hb) = b.session(s2, opts_b).unwrap();
    futures::future::join(fa, fb).await
}

async fn sync_ok(a: &Multifeed, b: &Multifeed) -> (SyncReport, SyncReport) {
    let (ra, rb) =
        sync(a, b, ReplicateOptions::new(true).shared_key(KEY), ReplicateOptions::new(false).shared_key(KEY))
            .await;
    (ra.expect("a"), rb.expect("b"))
}

fn keys(mf: &Multifeed) -> Vec<String> {
    let mut k: Vec<String> = mf.feeds().iter().map(|f| f.public_key().to_hex()).collect();
    k.sort();
    k
}

#[async_std::test]
async fn two_empty_sets() {
    let (a, b) = (Multifeed::in_memory().unwrap(), Multifeed::in_memory().unwrap());
    let (ra, rb) = sync_ok(&a, &b).await;
    assert!(a.feeds().is_empty() && b.feeds().is_empty());
    assert!(ra.feeds.is_empty() && rb.feeds.is_empty());
}

#[async_std::test]
async fn one_side_has_an_empty_writer() {
    let (a, b) = (Multifeed::in_memory().unwrap(), Multifeed::in_memory().unwrap());
    a.writer("local").unwrap();
    let (_, rb) = sync_ok(&a, &b).await;
    assert_eq!(keys(&a), keys(&b));
    assert_eq!(rb.new_feeds.len(), 1);
}

#[async_std::test]
async fn both_sides_with_entries_and_twice_in_a_row() {
    let (a, b) = (Multifeed::in_memory().unwrap(), Multifeed::in_memory().unwrap());
    a.writer("local").unwrap().append(b"from a").unwrap();
    b.writer("local").unwrap().append(b"from b").unwrap();
    let (ra, rb) = sync_ok(&a, &b).await;
    assert_eq!(keys(&a), keys(&b));
    assert_eq!((ra.blocks_received(), rb.blocks_received()), (1, 1));
    // The remote entry is readable at feeds()[1] on both sides.
    assert_eq!(a.feeds()[1].get(0).unwrap().as_deref(), Some(&b"from b"[..]));
    assert_eq!(b.feeds()[1].get(0).unwrap().as_deref(), Some(&b"from a"[..]));
    // Again, with more data on one side: only the new block moves.
    a.writer("local").unwrap().append(b"more").unwrap();
    let (ra, rb) = sync_ok(&a, &b).await;
    assert_eq!((ra.blocks_received(), rb.blocks_received()), (0, 1));
    assert_eq!(b.feeds()[1].len(), 2);
    assert!(rb.new_feeds.is_empty());
}

#[async_std::test]
async fn a_thousand_versus_ten() {
    let (a, b) = (Multifeed::in_memory().unwrap(), Multifeed::in_memory().unwrap());
    let wa = a.writer("local").unwrap();
    wa.append_batch((0..1000).map(|i| format!("a{i}"))).unwrap();
    let wb = b.writer("local").unwrap();
    for i in 0..10 {
        wb.append(format!("b{i}")).unwrap();
    }
    sync_ok(&a, &b).await;
    let fa = b.feed(wa.public_key()).unwrap();
    let fb = a.feed(wb.public_key()).unwrap();
    assert_eq!((fa.len(), fb.len()), (1000, 10));
    assert_eq!(fa.get(999).unwrap().as_deref(), Some(&b"a999"[..]));
    assert_eq!(fb.get(9).unwrap().as_deref(), Some(&b"b9"[..]));
    assert_eq!(fa.lock().audit().unwrap(), 1000);
}

#[async_std::test]
async fn custom_key_pairs_replicate() {
    let (a, b) = (Multifeed::in_memory().unwrap(), Multifeed::in_memory().unwrap());
    let ka = KeyPair::from_seed(&[1; 32]);
    let kb = KeyPair::from_seed(&[2; 32]);
    a.writer_with_key_pair("local", ka.clone()).unwrap().append(b"x").unwrap();
    b.writer_with_key_pair("local", kb.clone()).unwrap().append(b"y").unwrap();
    sync_ok(&a, &b).await;
    assert_eq!(a.feed(&kb.public_key()).unwrap().get(0).unwrap().as_deref(), Some(&b"y"[..]));
    assert_eq!(b.feed(&ka.public_key()).unwrap().get(0).unwrap().as_deref(), Some(&b"x"[..]));
}

#[async_std::test]
async fn different_shared_keys_fail_on_both_sides() {
    let (a, b) = (Multifeed::in_memory().unwrap(), Multifeed::in_memory().unwrap());
    a.writer("local").unwrap().append(b"secret").unwrap();
    let started = std::time::Instant::now();
    let (ra, rb) = sync(
        &a,
        &b,
        ReplicateOptions::new(true).shared_key([1; 32]),
        ReplicateOptions::new(false).shared_key([2; 32]),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    for r in [ra, rb] {
        match r {
            Err(MultifeedError::Replication(e)) => assert!(e.to_string().contains("shared key"), "{e}"),
            other => panic!("expected a shared-key error, got {other:?}"),
        }
    }
    assert_eq!(b.feeds().len(), 0, "nothing was replicated");
}

#[async_std::test]
async fn the_default_shared_key_works_with_a_warning() {
    let (a, b) = (Multifeed::in_memory().unwrap(), Multifeed::in_memory().unwrap());
    a.writer("local").unwrap().append(b"x").unwrap();
    let (ra, _) = sync(&a, &b, ReplicateOptions::new(true), ReplicateOptions::new(false)).await;
    let ra = ra.unwrap();
    assert_eq!(b.feeds().len(), 1);
    assert!(ra.warnings.iter().any(|w| w.contains("default shared key")));
}

#[async_std::test]
async fn the_shared_key_is_never_written_to_disk() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (Multifeed::open_dir(da.path()).unwrap(), Multifeed::open_dir(db.path()).unwrap());
    a.writer("local").unwrap().append(b"hello").unwrap();
    sync_ok(&a, &b).await;
    for dir in [da.path(), db.path()] {
        for entry in walk(dir) {
            let bytes = std::fs::read(&entry).unwrap();
            assert!(!bytes.windows(32).any(|w| w == KEY), "{} holds the shared key", entry.display());
            let hex = hex::encode(KEY);
            assert!(
                !String::from_utf8_lossy(&bytes).contains(&hex),
                "{} holds the shared key in hex",
                entry.display()
            );
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Storage that sleeps before every write (slow disks, slow phones).
#[derive(Clone)]
struct Slow(MemoryProvider, Duration);
struct SlowFile(BoxedStorage, Duration);

impl Provider for Slow {
    fn open(&self, name: &str) -> Result<BoxedStorage, StorageError> {
        Ok(Box::new(SlowFile(self.0.open(name)?, self.1)))
    }
    fn exists(&self, name: &str) -> Result<bool, StorageError> {
        self.0.exists(name)
    }
}

impl RandomAccess for SlowFile {
    fn read_into(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        self.0.read_into(offset, buf)
    }
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        std::thread::sleep(self.1);
        self.0.write(offset, data)
    }
    fn len(&mut self) -> Result<u64, StorageError> {
        self.0.len()
    }
    fn truncate(&mut self, len: u64) -> Result<(), StorageError> {
        self.0.truncate(len)
    }
    fn sync(&mut self) -> Result<(), StorageError> {
        self.0.sync()
    }
}

#[async_std::test]
async fn slow_storage_on_one_side() {
    let a =
        Multifeed::open(Slow(MemoryProvider::new(), Duration::from_millis(1)), Default::default()).unwrap();
    let b =
        Multifeed::open(Slow(MemoryProvider::new(), Duration::from_millis(30)), Default::default()).unwrap();
    a.writer("local").unwrap().append_batch((0..20).map(|i| format!("{i}"))).unwrap();
    b.writer("local").unwrap().append(b"b").unwrap();
    sync_ok(&a, &b).await;
    assert_eq!(keys(&a), keys(&b));
    assert_eq!(b.feeds()[1].len(), 20);
}

#[async_std::test]
async fn live_replication_sends_new_entries_and_new_feeds() {
    let (a, b) = (Multifeed::in_memory().unwrap(), Multifeed::in_memory().unwrap());
    let wa = a.writer("local").unwrap();
    wa.append(b"first").unwrap();
    let (s1, s2) = UnixStream::pair().unwrap();
    let (fa, ha) = a.session(s1, ReplicateOptions::new(true).shared_key(KEY).live(true)).unwrap();
    let (fb, _hb) = b.session(s2, ReplicateOptions::new(false).shared_key(KEY).live(true)).unwrap();
    let ta = task::spawn(fa);
    let tb = task::spawn(fb);
    wait(|| b.feed(wa.public_key()).is_some_and(|f| f.len() == 1)).await;
    wa.append(b"second").unwrap();
    wait(|| b.feed(wa.public_key()).is_some_and(|f| f.len() == 2)).await;
    // A feed created after connecting reaches the peer.
    let late = a.writer("late").unwrap();
    late.append(b"late entry").unwrap();
    wait(|| b.feed(late.public_key()).is_some_and(|f| f.len() == 1)).await;
    // And the other way.
    let wb = b.writer("mine").unwrap();
    wb.append(b"from b").unwrap();
    wait(|| a.feed(wb.public_key()).is_some_and(|f| f.len() == 1)).await;
    ha.close();
    let (ra, rb) = (ta.await, tb.await);
    assert!(ra.is_ok() && rb.is_ok(), "{ra:?} {rb:?}");
}

async fn wait(mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        task::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached in 5 s");
}

#[async_std::test]
async fn new_feeds_travel_through_a_middle_peer() {
    // m1 <-> m2 <-> m3, live: m3's new writer reaches m1 through m2.
    let (m1, m2, m3) =
        (Multifeed::in_memory().unwrap(), Multifeed::in_memory().unwrap(), Multifeed::in_memory().unwrap());
    m2.writer("middle").unwrap().append(b"m2").unwrap();
    let connect = |x: &Multifeed, y: &Multifeed| {
        let (s1, s2) = UnixStream::pair().unwrap();
        let (fx, hx) = x.session(s1, ReplicateOptions::new(true).shared_key(KEY).live(true)).unwrap();
        let (fy, hy) = y.session(s2, ReplicateOptions::new(false).shared_key(KEY).live(true)).unwrap();
        (task::spawn(fx), task::spawn(fy), hx, hy)
    };
    let c12 = connect(&m1, &m2);
    let c32 = connect(&m3, &m2);
    let w3 = m3.writer("far").unwrap();
    w3.append(b"from m3").unwrap();
    wait(|| m1.feed(w3.public_key()).is_some_and(|f| f.len() == 1)).await;
    assert_eq!(m1.feed(w3.public_key()).unwrap().get(0).unwrap().as_deref(), Some(&b"from m3"[..]));
    c12.2.close();
    c32.2.close();
    let _ = (c12.0.await, c12.1.await, c32.0.await, c32.1.await);
}

#[async_std::test]
async fn offer_and_accept_filters() {
    let (a, b) = (Multifeed::in_memory().unwrap(), Multifeed::in_memory().unwrap());
    let public = a.writer("public").unwrap();
    let private = a.writer("private").unwrap();
    public.append(b"p").unwrap();
    private.append(b"s").unwrap();
    let hide = *private.public_key();
    let (ra, rb) = sync(
        &a,
        &b,
        ReplicateOptions::new(true).shared_key(KEY).offer(move |k| *k != hide),
        ReplicateOptions::new(false).shared_key(KEY),
    )
    .await;
    ra.unwrap();
    rb.unwrap();
    assert!(b.feed(public.public_key()).is_some());
    assert!(b.feed(private.public_key()).is_none(), "a feed that was not offered travelled");
    let c = Multifeed::in_memory().unwrap();
    let only = *public.public_key();
    let (_, rc) = sync(
        &a,
        &c,
        ReplicateOptions::new(true).shared_key(KEY),
        ReplicateOptions::new(false).shared_key(KEY).accept(move |k| *k == only),
    )
    .await;
    rc.unwrap();
    assert_eq!(keys(&c), vec![public.public_key().to_hex()]);
}

#[async_std::test]
async fn replicate_after_close_is_an_error() {
    let a = Multifeed::in_memory().unwrap();
    a.close().unwrap();
    let (s1, _s2) = UnixStream::pair().unwrap();
    assert!(matches!(a.session(s1, ReplicateOptions::new(true)), Err(MultifeedError::Closed)));
}

#[async_std::test]
async fn a_non_live_sync_against_a_live_peer_ends_with_everything() {
    let (a, b) = (Multifeed::in_memory().unwrap(), Multifeed::in_memory().unwrap());
    a.writer("local").unwrap().append_batch((0..200).map(|i| format!("a{i}"))).unwrap();
    b.writer("local").unwrap().append_batch((0..50).map(|i| format!("b{i}"))).unwrap();
    let (s1, s2) = UnixStream::pair().unwrap();
    // a serves live; b syncs once.
    let (fa, _ha) = a.session(s1, ReplicateOptions::new(false).shared_key(KEY).live(true)).unwrap();
    let (fb, _hb) = b.session(s2, ReplicateOptions::new(true).shared_key(KEY)).unwrap();
    let served = task::spawn(fa);
    let rb = async_std::future::timeout(Duration::from_secs(10), fb)
        .await
        .expect("the non-live side ends")
        .expect("without an error");
    assert_eq!(rb.blocks_received(), 200);
    assert_eq!(rb.blocks_sent(), 50);
    assert_eq!(keys(&a), keys(&b));
    assert_eq!(a.feeds()[1].len(), 50, "the live side got everything too");
    let _ = served.await;
}
