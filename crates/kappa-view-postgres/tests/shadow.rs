//! Rebuilds beside the live view on PostgreSQL: a version bump and a feed
//! blocked on a running indexer, over 100,000 entries, while a reader (a
//! reader handle of its own, as another process would have) scans the live
//! view: it sees the whole old view until the swap and the whole new view
//! after it, never a blank or partial one.

use std::sync::Arc;

use futures::executor::block_on;
use kappa_index::Indexer;
use kappa_log::SharedFeed;
use kappa_multifeed::Multifeed;
use kappa_testkit::generations::{reader_sees_one_whole_view, Generations};
use kappa_testkit::postgres::cluster_or_skip;
use kappa_view::ViewStore;
use kappa_view_postgres::PgViews;

const N: u64 = 100_000;

/// A writer elsewhere with `n` entries, and its whole replica in `mf`.
fn replica_of(mf: &Multifeed, seed: u8, n: u64) -> SharedFeed {
    let w = kappa_testkit::feeds::writer(seed, (0..n).map(|k| k.to_string()));
    let r = mf.add_remote(*w.public_key()).unwrap();
    kappa_testkit::feeds::copy_all(&w, &r);
    r
}

#[test]
fn rebuilds_on_postgres_keep_the_old_view_until_the_swap() {
    let Some(pg) = cluster_or_skip("postgres shadow rebuilds") else { return };
    let url = pg.url("shadow");
    let views = PgViews::open(&url).unwrap();
    let store: Arc<dyn ViewStore> = Arc::new(views.store("gen").unwrap());
    let reader: Arc<dyn ViewStore> = Arc::new(PgViews::open_reader(&url).unwrap().store("gen").unwrap());
    let mf = Multifeed::in_memory().unwrap();
    let spam = replica_of(&mf, 1, N / 10);
    replica_of(&mf, 2, N - N / 10);
    let start = |version| {
        Indexer::start("gen", Arc::new(Generations { store: store.clone(), version }), &mf).unwrap()
    };
    block_on(start(1).ready()).unwrap();
    // A version bump.
    let (olds, news) = reader_sees_one_whole_view(reader.clone(), (1, N as usize), (2, N as usize), || {
        let ix = start(2);
        let st = ix.state();
        assert_eq!(st.rebuild.as_ref().and_then(|r| r.live_version), Some(1), "{st:?}");
        block_on(ix.ready()).unwrap();
        assert!(ix.state().rebuild.is_none());
    });
    eprintln!("version bump: the reader saw the old view {olds} times, then the new one {news} times");
    // A feed blocked under a running indexer.
    let ix = start(2);
    block_on(ix.ready()).unwrap();
    let (olds, news) =
        reader_sees_one_whole_view(reader.clone(), (2, N as usize), (2, (N - N / 10) as usize), || {
            mf.block(spam.public_key()).unwrap();
            block_on(ix.ready()).unwrap();
            assert!(ix.state().rebuild.is_none());
        });
    eprintln!("block: the reader saw the old view {olds} times, then the new one {news} times");
    // The shadow is empty again, and not listed as a view.
    assert_eq!(store.shadow().unwrap().unwrap().state().unwrap(), None);
    assert_eq!(views.views().unwrap(), vec!["gen".to_owned()]);
}
