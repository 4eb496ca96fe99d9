//! Channel closing as hypercore 9 (hypercore-protocol 8, kappa-core 7) does it,
//! on both wire generations, on the deterministic pair: a received Close is
//! answered with Close while the channel is open on our side, and a local
//! close sends Close at once (the peer's answer then closes the channel for
//! us). Want windows are unit tests in `src/replicate.rs`.

mod util;

use std::time::Instant;

use kappa_log::storage::MemoryProvider;
use kappa_log::{Feed, KeyPair, SharedFeed};
use kappa_protocol::{Event, FeedOptions, Generation, Protocol, ProtocolOptions, Wire};
use util::Pair;

fn writer(n: u64) -> SharedFeed {
    let mut f =
        Feed::builder(MemoryProvider::new()).key_pair(KeyPair::from_seed(&[0x17; 32])).open().unwrap();
    f.append_batch((0..n).map(|i| format!("entry-{i}"))).unwrap();
    SharedFeed::new(f)
}

fn replica_of(w: &SharedFeed) -> SharedFeed {
    SharedFeed::new(Feed::builder(MemoryProvider::new()).public_key(*w.public_key()).open().unwrap())
}

/// A live pair in `generation` with one feed open on both sides and
/// replicated.
fn live_pair(seed: u64, generation: Generation) -> (Pair, SharedFeed, SharedFeed) {
    let now = Instant::now();
    let opts = |initiator| ProtocolOptions::new(initiator).live(true).wire(Wire::Only(generation));
    let mut pair =
        Pair::from_protocols(seed, Protocol::new(now, opts(true)), Protocol::new(now, opts(false)), now);
    let (w, r) = {
        let w = writer(20);
        let r = replica_of(&w);
        (w, r)
    };
    pair.a.open_feed(now, w.clone(), FeedOptions::default()).unwrap();
    pair.b.open_feed(now, r.clone(), FeedOptions::default()).unwrap();
    pair.watch_a(&w);
    pair.watch_b(&r);
    assert!(pair.drive_until(100_000, |_| r.len() == 20 && r.lock().is_complete()));
    assert_eq!(pair.a.generation(), Some(generation));
    (pair, w, r)
}

fn closed(events: &[Event]) -> usize {
    events.iter().filter(|e| matches!(e, Event::ChannelClosed { .. })).count()
}

#[test]
fn a_received_close_is_answered_with_close_while_open() {
    for generation in Generation::ALL {
        for seed in 0..4 {
            let (mut pair, w, _r) = live_pair(seed, generation);
            assert_eq!((closed(&pair.events_a), closed(&pair.events_b)), (0, 0));
            // B closes its side; A answers with its own Close, which is what
            // closes the channel for B (a channel is closed once both sides
            // sent Close).
            let now = pair.now;
            pair.b.close_channel(now, w.public_key());
            assert!(pair.drive_until(100_000, |p| closed(&p.events_b) == 1), "{generation}, seed {seed}");
            assert_eq!(closed(&pair.events_a), 1, "A closed the channel on the peer's Close");
            assert!(pair.a.error().is_none() && pair.b.error().is_none());
        }
    }
}

#[test]
fn a_local_close_sends_close_at_once() {
    for generation in Generation::ALL {
        for seed in 0..4 {
            let (mut pair, w, _r) = live_pair(seed, generation);
            // A closes: its Close reaches B (B closes the channel and answers),
            // and B's answer closes it for A; nothing else is needed from A.
            let now = pair.now;
            pair.a.close_channel(now, w.public_key());
            assert_eq!(closed(&pair.events_a), 0, "open until the peer answers");
            assert!(pair.drive_until(100_000, |p| closed(&p.events_a) == 1), "{generation}, seed {seed}");
            assert_eq!(closed(&pair.events_b), 1, "B got A's Close");
            // Every channel there was is closed: the live session ends cleanly.
            assert!(pair.drive_to_end(100_000));
            assert!(
                pair.a.is_finished() && pair.b.is_finished(),
                "{:?} / {:?}",
                pair.a.error(),
                pair.b.error()
            );
        }
    }
}
