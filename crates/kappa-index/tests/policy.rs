//! The indexer follows the feed set's policy: a blocked or hidden feed's
//! entries leave the view (a rebuild without them, announced by
//! `IndexEvent::Rebuilding`), also when the block comes while the indexer is
//! reading that feed; unhidden, its entries are indexed again.

use std::sync::Arc;

use futures::executor::block_on;
use kappa_index::{IndexEvent, Indexer};
use kappa_log::SharedFeed;
use kappa_multifeed::Multifeed;
use kappa_view::sum::SumView;
use kappa_view::MemoryStore;

fn num(n: u64) -> String {
    format!("{n}\n")
}

/// A writer elsewhere with `n` entries `1`, and its whole replica in `mf`.
fn replica_of(mf: &Multifeed, seed: u8, n: u64) -> SharedFeed {
    let w = kappa_testkit::feeds::writer(seed, (0..n).map(|_| num(1)));
    let r = mf.add_remote(*w.public_key()).unwrap();
    kappa_testkit::feeds::copy_all(&w, &r);
    r
}

#[test]
fn blocked_and_hidden_feeds_leave_the_view_and_unhidden_ones_return() {
    let mf = Multifeed::in_memory().unwrap();
    let spam = replica_of(&mf, 1, 20_000);
    let good = replica_of(&mf, 2, 7);
    let mine = mf.writer("local").unwrap();
    mine.append_batch((0..3).map(|_| num(100))).unwrap();
    let sum = Arc::new(SumView::new(Arc::new(MemoryStore::new())));
    let ix = Indexer::start("sum", sum.clone(), &mf).unwrap();
    let mut events = ix.subscribe();
    // Blocked while the indexer works through it (maybe mid-read).
    mf.block(spam.public_key()).unwrap();
    block_on(ix.ready()).unwrap();
    assert_eq!(sum.get().unwrap(), 307.0);
    assert_eq!((ix.state().indexed, ix.state().total), (10, 10));
    mf.hide(good.public_key()).unwrap();
    block_on(ix.ready()).unwrap();
    assert_eq!(sum.get().unwrap(), 300.0);
    let mut rebuilding = 0;
    while let Ok(ev) = events.try_recv() {
        if matches!(ev, IndexEvent::Rebuilding { .. }) {
            rebuilding += 1;
        }
    }
    assert!(rebuilding >= 1, "the rebuild was announced");
    mf.unhide(good.public_key()).unwrap();
    block_on(ix.ready()).unwrap();
    assert_eq!(sum.get().unwrap(), 307.0);
    assert_eq!(ix.state().indexed, 10);
    // Our own writer may be hidden.
    mf.hide(mine.public_key()).unwrap();
    block_on(ix.ready()).unwrap();
    assert_eq!(sum.get().unwrap(), 7.0);
}
