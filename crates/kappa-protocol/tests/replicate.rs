//! Replication between two Rust peers on the deterministic in-memory pair:
//! live and non-live, full and sparse, from either side, with appends during a
//! live session; a property test over seeds.

mod util;

use std::time::Duration;

use kappa_log::storage::MemoryProvider;
use kappa_log::{Feed, KeyPair, SharedFeed};
use kappa_protocol::{Event, FeedOptions};
use proptest::prelude::*;
use util::Pair;

fn writer(seed: u8, n: u64, size: usize) -> SharedFeed {
    let mut f =
        Feed::builder(MemoryProvider::new()).key_pair(KeyPair::from_seed(&[seed; 32])).open().unwrap();
    let mut i = 0;
    while i < n {
        let end = (i + 37).min(n);
        f.append_batch((i..end).map(|k| value(k, size))).unwrap();
        i = end;
    }
    SharedFeed::new(f)
}

fn value(k: u64, size: usize) -> Vec<u8> {
    let mut v = format!("entry-{k}-").into_bytes();
    v.resize(size.max(v.len()), (k % 251) as u8);
    v
}

fn replica_of(w: &SharedFeed) -> SharedFeed {
    SharedFeed::new(Feed::builder(MemoryProvider::new()).public_key(*w.public_key()).open().unwrap())
}

fn assert_copy(w: &SharedFeed, r: &SharedFeed) {
    assert_eq!(r.len(), w.len());
    for i in 0..w.len() {
        assert_eq!(r.get(i).unwrap(), w.get(i).unwrap(), "block {i}");
    }
    r.lock().verify().unwrap();
}

fn setup(seed: u64, live: bool, b_initiates: bool, n: u64, size: usize) -> (Pair, SharedFeed, SharedFeed) {
    let mut pair = Pair::new(seed, live, b_initiates);
    let w = writer(1, n, size);
    let r = replica_of(&w);
    let now = pair.now;
    pair.a.open_feed(now, w.clone(), FeedOptions::default()).unwrap();
    pair.b.open_feed(now, r.clone(), FeedOptions::default()).unwrap();
    pair.watch_a(&w);
    pair.watch_b(&r);
    (pair, w, r)
}

#[test]
fn non_live_full_sync_from_either_side() {
    for b_initiates in [false, true] {
        let (mut pair, w, r) = setup(7, false, b_initiates, 500, 30);
        assert!(pair.drive_to_end(200_000), "did not finish");
        assert!(pair.a.is_finished() && pair.b.is_finished(), "{:?} / {:?}", pair.a.error(), pair.b.error());
        assert_copy(&w, &r);
        assert!(pair.events_b.iter().any(|e| matches!(e, Event::FeedSynced { .. })));
        let closed = pair.events_b.iter().find_map(|e| match e {
            Event::ChannelClosed { stats, .. } => Some(*stats),
            _ => None,
        });
        assert_eq!(closed.unwrap().blocks_down, 500);
    }
}

#[test]
fn non_live_sync_of_an_empty_feed_finishes() {
    let (mut pair, w, r) = setup(3, false, false, 0, 30);
    assert!(pair.drive_to_end(10_000));
    assert!(pair.a.is_finished() && pair.b.is_finished());
    assert_copy(&w, &r);
}

#[test]
fn the_replica_can_be_the_initiator_and_the_writer_the_responder() {
    // Feeds on both sides, each side writer of one and replica of the other.
    let mut pair = Pair::new(11, false, true);
    let (w1, w2) = (writer(1, 100, 10), writer(2, 70, 100));
    let (r1, r2) = (replica_of(&w1), replica_of(&w2));
    let now = pair.now;
    pair.a.open_feed(now, w1.clone(), FeedOptions::default()).unwrap();
    pair.a.open_feed(now, r2.clone(), FeedOptions::default()).unwrap();
    pair.b.open_feed(now, r1.clone(), FeedOptions::default()).unwrap();
    pair.b.open_feed(now, w2.clone(), FeedOptions::default()).unwrap();
    assert!(pair.drive_to_end(200_000));
    assert!(pair.a.is_finished() && pair.b.is_finished(), "{:?} / {:?}", pair.a.error(), pair.b.error());
    assert_copy(&w1, &r1);
    assert_copy(&w2, &r2);
}

#[test]
fn live_sync_with_appends_during_the_session() {
    let (mut pair, w, r) = setup(5, true, false, 50, 20);
    assert!(pair.drive_until(100_000, |_| r.len() == 50 && r.lock().is_complete()));
    for round in 0..5u64 {
        w.append(value(50 + round, 20)).unwrap();
        w.append_batch((0..3).map(|k| value(1000 + 10 * round + k, 5))).unwrap();
        let want = w.len();
        assert!(pair.drive_until(100_000, |_| r.len() == want && r.lock().is_complete()), "round {round}");
    }
    assert_copy(&w, &r);
    assert!(!pair.a.is_ended() && !pair.b.is_ended(), "a live session stays up");
    // Keep-alives keep it up across long idle periods.
    let later = pair.now + Duration::from_secs(120);
    assert!(pair.drive_until(1_000_000, |p| p.now >= later));
    assert!(!pair.a.is_ended() && !pair.b.is_ended(), "{:?} {:?}", pair.a.error(), pair.b.error());
    // Closing from one side ends both.
    let now = pair.now;
    pair.a.close(now);
    assert!(pair.drive_to_end(100_000));
    assert!(pair.a.is_finished() && pair.b.is_finished());
}

#[test]
fn sparse_download_fetches_only_the_selected_blocks() {
    let mut pair = Pair::new(9, false, false);
    let w = writer(1, 20_000, 16);
    let r = replica_of(&w);
    let now = pair.now;
    pair.a.open_feed(now, w.clone(), FeedOptions::default()).unwrap();
    pair.b.open_feed(now, r.clone(), FeedOptions::sparse([10..20, 50..51, 19_990..20_000])).unwrap();
    assert!(pair.drive_to_end(200_000));
    assert!(pair.a.is_finished() && pair.b.is_finished(), "{:?} / {:?}", pair.a.error(), pair.b.error());
    let got: Vec<u64> = (0..20_000).filter(|&i| r.has(i)).collect();
    let want: Vec<u64> = (10..20).chain([50]).chain(19_990..20_000).collect();
    assert_eq!(got, want);
    let sent: u64 = pair.a.stats().iter().map(|(_, s)| s.blocks_up).sum();
    assert_eq!(sent, 21, "blocks on the wire");
    assert_eq!(r.len(), 20_000);
    r.lock().verify().unwrap();
    // A later full sync fills the holes.
    let mut pair = Pair::new(10, false, true);
    let now = pair.now;
    pair.a.open_feed(now, w.clone(), FeedOptions::default()).unwrap();
    pair.b.open_feed(now, r.clone(), FeedOptions::default()).unwrap();
    assert!(pair.drive_to_end(400_000));
    assert_copy(&w, &r);
    let sent: u64 = pair.a.stats().iter().map(|(_, s)| s.blocks_up).sum();
    assert_eq!(sent, 20_000 - 21);
}

#[test]
fn replicas_sync_with_each_other() {
    // Two read-only replicas of one feed, each with half, end with all of it.
    let w = writer(4, 64, 8);
    let (r1, r2) = (replica_of(&w), replica_of(&w));
    for i in 0..64 {
        let target = if i % 2 == 0 { &r1 } else { &r2 };
        let proof = w.lock().proof(i, target.lock().digest(i), false).unwrap();
        target.put(i, &w.get(i).unwrap().unwrap(), &proof).unwrap();
    }
    let mut pair = Pair::new(21, false, false);
    let now = pair.now;
    pair.a.open_feed(now, r1.clone(), FeedOptions::default()).unwrap();
    pair.b.open_feed(now, r2.clone(), FeedOptions::default()).unwrap();
    assert!(pair.drive_to_end(200_000));
    assert!(pair.a.is_finished() && pair.b.is_finished(), "{:?} / {:?}", pair.a.error(), pair.b.error());
    assert_copy(&w, &r1);
    assert_copy(&w, &r2);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn sync_converges_for_any_chunking(seed in any::<u64>(), n in 0u64..300, size in 0usize..300,
                                        b_initiates in any::<bool>(), live in any::<bool>()) {
        let (mut pair, w, r) = setup(seed, live, b_initiates, n, size);
        if live {
            prop_assert!(pair.drive_until(400_000, |_| r.len() == n && r.lock().is_complete()));
            w.append(b"one more").unwrap();
            prop_assert!(pair.drive_until(400_000, |_| r.len() == n + 1 && r.lock().is_complete()));
        } else {
            prop_assert!(pair.drive_to_end(400_000));
            prop_assert!(pair.a.is_finished() && pair.b.is_finished(), "{:?} / {:?}", pair.a.error(), pair.b.error());
        }
        assert_copy(&w, &r);
    }
}

#[test]
fn newest_n_and_from_selections() {
    for (opts, want) in [
        (FeedOptions::newest(25), (975u64..1000).collect::<Vec<_>>()),
        (FeedOptions::default().with_selection(kappa_protocol::Selection::From(990)), (990..1000).collect()),
    ] {
        let mut pair = Pair::new(13, false, false);
        let w = writer(1, 1000, 8);
        let r = replica_of(&w);
        let now = pair.now;
        pair.a.open_feed(now, w.clone(), FeedOptions::default()).unwrap();
        pair.b.open_feed(now, r.clone(), opts).unwrap();
        assert!(pair.drive_to_end(200_000));
        assert!(pair.a.is_finished() && pair.b.is_finished(), "{:?} / {:?}", pair.a.error(), pair.b.error());
        assert_eq!((0..1000).filter(|&i| r.has(i)).collect::<Vec<_>>(), want);
        assert_eq!(r.len(), 1000);
        r.lock().verify().unwrap();
    }
}

#[test]
fn newest_n_follows_a_live_feed() {
    let mut pair = Pair::new(17, true, false);
    let w = writer(1, 100, 8);
    let r = replica_of(&w);
    let now = pair.now;
    pair.a.open_feed(now, w.clone(), FeedOptions::default()).unwrap();
    pair.b.open_feed(now, r.clone(), FeedOptions::newest(10)).unwrap();
    pair.watch_a(&w);
    pair.watch_b(&r);
    assert!(pair.drive_until(100_000, |_| (90..100).all(|i| r.has(i))));
    w.append_batch((0..5).map(|k| value(100 + k, 8))).unwrap();
    assert!(pair.drive_until(100_000, |_| (95..105).all(|i| r.has(i))));
    assert!(!r.has(0) && !r.has(89));
}

#[test]
fn a_non_live_writer_finishes_against_a_live_replica() {
    // The live replica never says it is done downloading; the non-live writer
    // learns from the replica's Haves that it holds everything, and ends.
    let now = std::time::Instant::now();
    let a = kappa_protocol::Protocol::new(now, kappa_protocol::ProtocolOptions::new(true).live(true));
    let mut b = kappa_protocol::Protocol::new(now, kappa_protocol::ProtocolOptions::new(false));
    b.set_peer_live(true); // what multifeed's handshake tells it
    let mut pair = Pair::from_protocols(23, a, b, now);
    let w = writer(1, 300, 12);
    let r = replica_of(&w);
    pair.a.open_feed(now, r.clone(), FeedOptions::default()).unwrap();
    pair.b.open_feed(now, w.clone(), FeedOptions::default()).unwrap();
    pair.watch_a(&r);
    assert!(pair.drive_until(200_000, |p| p.b.is_finished()), "{:?}", pair.b.error());
    assert_copy(&w, &r);
    assert!(pair.drive_until(200_000, |p| p.a.is_ended()));
}

/// A replica whose storage fails while storing what arrived: the session ends
/// with `Storage`, and its cause is the storage's own error.
#[test]
fn a_storage_failure_ends_the_session_with_its_cause() {
    use kappa_log::storage::{Fault, FaultyProvider, StorageError};
    use kappa_log::LogError;
    use kappa_protocol::ProtocolError;
    let w = writer(1, 200, 30);
    let open =
        |p: FaultyProvider<MemoryProvider>| Feed::builder(p).public_key(*w.public_key()).open().unwrap();
    // Opening writes the same files each time: fail the third write after it.
    let probe = FaultyProvider::new(MemoryProvider::new(), None);
    drop(open(probe.clone()));
    let fault = Fault::FailWrite(probe.writes() + 2);
    let r = SharedFeed::new(open(FaultyProvider::new(MemoryProvider::new(), Some(fault))));
    let mut pair = Pair::new(3, false, false);
    let now = pair.now;
    pair.a.open_feed(now, w.clone(), FeedOptions::default()).unwrap();
    pair.b.open_feed(now, r.clone(), FeedOptions::default()).unwrap();
    pair.drive_until(100_000, |p| p.b.is_ended());
    match pair.b.error() {
        Some(e @ ProtocolError::Storage(source)) => {
            assert!(matches!(**source, LogError::Storage(StorageError::Injected(_))), "{source:?}");
            assert!(e.to_string().starts_with("storage: "), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn downloaded_blocks_are_announced_once_per_burst_not_once_per_block() {
    // Ten thousand blocks used to make ten thousand change records (and wake
    // every listener as often): more than the change log keeps, so a reader
    // behind it had to rescan the feed.
    let n = 10_000;
    let (mut pair, w, r) = setup(5, false, false, n, 16);
    // Input handed over in pieces of up to 64 KiB, as a TCP read gives it:
    // each piece is a burst.
    pair.max_chunk = 64 * 1024;
    let before = r.version();
    let listener = r.changed();
    assert!(pair.drive_to_end(1_000_000));
    assert_copy(&w, &r);
    assert!(
        futures::FutureExt::now_or_never(listener).is_some(),
        "a listener from before the download was not woken"
    );
    let (changes, now) = r.changes_since(before);
    let kappa_log::Changes::Ranges(ranges) = changes else {
        panic!("the change log overflowed: {} records for {n} blocks", now - before);
    };
    let mut announced = kappa_log::RangeSet::new();
    for run in ranges {
        announced.insert(run);
    }
    assert!(announced.contains_range(&(0..n)), "not every downloaded block was announced");
    assert!(now - before < n / 8, "{} change records for {n} blocks", now - before);
}
