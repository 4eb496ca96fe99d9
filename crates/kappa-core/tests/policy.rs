//! Views follow the feed policy on every store (memory, redb, PostgreSQL):
//! the rows of a blocked or hidden feed disappear from the kv, list and sum
//! views, stay gone across reopening, and come back on unhide, or on unblock
//! and a sync with a peer that holds the feed.

use async_std::os::unix::net::UnixStream;
use futures::executor::block_on;
use kappa_core::view::kv::KvView;
use kappa_core::view::list::{ListRange, ListView};
use kappa_core::view::sum::SumView;
use kappa_core::{Entry, Kappa, KappaError, PolicyError, PublicKey, ReplicateOptions, ViewHandle};
use serde_json::{json, Value};

const SHARED: [u8; 32] = [7; 32];

fn sync(a: &Kappa, b: &Kappa) {
    let (s1, s2) = UnixStream::pair().unwrap();
    let (ra, rb) = block_on(futures::future::join(
        a.replicate(s1, ReplicateOptions::new(true)),
        b.replicate(s2, ReplicateOptions::new(false)),
    ));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert!(ra.missing.is_empty() && rb.missing.is_empty(), "{ra:?} {rb:?}");
}

struct Views {
    kv: ViewHandle<KvView>,
    list: ViewHandle<ListView>,
    sum: ViewHandle<SumView>,
}

fn by_time(e: &Entry) -> Option<Vec<u8>> {
    e.json::<Value>().ok().and_then(|v| v["time"].as_u64()).map(|t| t.to_be_bytes().to_vec())
}

fn use_views(core: &Kappa) -> Views {
    Views {
        kv: core.use_view("kv", 1, KvView::new).unwrap(),
        list: core.use_view("list", 1, |s| ListView::new(s, by_time)).unwrap(),
        sum: core
            .use_view("sum", 1, |s| SumView::with(s, |e| e.json::<Value>().ok()?["n"].as_f64()))
            .unwrap(),
    }
}

/// What the views show: the kv heads' values of every key, the feeds of the
/// list's items, and the sum.
/// The kv keys with their heads' values, the list's feeds, the sum.
type Shown = (Vec<(String, Vec<String>)>, Vec<PublicKey>, f64);

fn shown(core: &Kappa, v: &Views) -> Shown {
    block_on(core.ready(&[])).unwrap();
    let kv =
        v.kv.all()
            .unwrap()
            .into_iter()
            .map(|(k, heads)| {
                let mut vals: Vec<String> = heads
                    .iter()
                    .map(|h| h.json::<Value>().unwrap()["value"].as_str().unwrap().to_owned())
                    .collect();
                vals.sort();
                (k, vals)
            })
            .collect();
    let mut feeds: Vec<PublicKey> =
        v.list.read(&ListRange::default()).unwrap().iter().map(|i| i.feed).collect();
    feeds.sort();
    feeds.dedup();
    (kv, feeds, v.sum.get().unwrap())
}

fn write(core: &Kappa, name: &str, n: u64, value: &str) -> PublicKey {
    let w = core.writer(name).unwrap();
    for i in 0..n {
        w.append(&json!({"key": format!("k{}", i % 3), "value": value, "links": [], "time": i, "n": 1}))
            .unwrap();
    }
    w.key()
}

/// The scenario on the database `open` opens (again, for stores that keep
/// their rows).
fn views_follow_the_policy(open: &dyn Fn() -> Kappa, persistent: bool) {
    let peer = Kappa::builder().shared_key(SHARED).open().unwrap();
    let spam = write(&peer, "spam", 30, "spam");
    let good = write(&peer, "good", 6, "good");
    let core = open();
    let mine = write(&core, "local", 3, "mine");
    let v = use_views(&core);
    sync(&peer, &core);
    let (kv, feeds, sum) = shown(&core, &v);
    assert_eq!(sum, 39.0);
    assert_eq!(feeds.len(), 3);
    assert!(kv.iter().all(|(_, vals)| vals.contains(&"spam".to_owned())));

    // Blocked: its rows leave every view.
    assert!(matches!(
        core.block(&mine),
        Err(KappaError::Multifeed(kappa_core::multifeed::MultifeedError::Policy(
            PolicyError::LocalWriter { .. }
        )))
    ));
    assert!(core.block(&spam).unwrap().changed);
    let (kv, feeds, sum) = shown(&core, &v);
    assert_eq!(sum, 9.0);
    assert!(!feeds.contains(&spam) && feeds.len() == 2, "{feeds:?}");
    assert!(kv.iter().all(|(_, vals)| !vals.contains(&"spam".to_owned())), "{kv:?}");
    assert_eq!(v.kv.state().indexed, 9);
    assert_eq!(v.kv.state().total, 9);

    // Hidden: its rows leave too, though the feed is kept.
    assert!(core.hide(&good).unwrap());
    let (kv, feeds, sum) = shown(&core, &v);
    assert_eq!((feeds, sum), (vec![mine], 3.0));
    assert!(kv.iter().all(|(_, vals)| vals == &vec!["mine".to_owned()]), "{kv:?}");
    assert_eq!(core.feed(&good).unwrap().len(), 6);

    let (core, v) = if persistent {
        core.close().unwrap();
        drop((v, core));
        let core = open();
        let v = use_views(&core);
        // Nothing to rebuild: the stored views agree with the policy.
        assert!(v.kv.rebuilt_because().is_none(), "{:?}", v.kv.rebuilt_because());
        assert_eq!(v.kv.state().indexed, 3);
        (core, v)
    } else {
        (core, v)
    };
    assert_eq!(shown(&core, &v).2, 3.0);

    // Unhidden: its entries are indexed again, without a rebuild.
    assert!(core.unhide(&good).unwrap());
    assert_eq!(shown(&core, &v).2, 9.0);
    // Unblocked and synced: back.
    assert!(core.unblock(&spam).unwrap());
    sync(&peer, &core);
    let (kv, feeds, sum) = shown(&core, &v);
    assert_eq!(sum, 39.0);
    assert_eq!(feeds.len(), 3);
    assert!(kv.iter().all(|(_, vals)| vals.contains(&"spam".to_owned())));
    core.close().unwrap();
}

#[test]
fn views_in_memory_follow_the_policy() {
    views_follow_the_policy(&|| Kappa::builder().shared_key(SHARED).open().unwrap(), false);
}

#[test]
fn views_on_redb_follow_the_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    views_follow_the_policy(&|| Kappa::builder().dir(&dir).shared_key(SHARED).open().unwrap(), true);
}

#[cfg(feature = "postgres")]
#[test]
fn views_on_postgres_follow_the_policy() {
    use kappa_core::ViewStorage;
    let Some(pg) = kappa_testkit::postgres::cluster_or_skip("the feed policy on postgres") else { return };
    let url = pg.url("policy");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    views_follow_the_policy(
        &|| {
            Kappa::builder()
                .dir(&dir)
                .shared_key(SHARED)
                .view_storage(ViewStorage::Postgres(url.clone()))
                .open()
                .unwrap()
        },
        true,
    );
}

/// A view opened after the policy changed (a crash before the view caught
/// up, or a view not in use at the time) is rebuilt at once without the feed;
/// the kv view forgets the feed at once instead, without a rebuild.
#[test]
fn a_view_that_still_holds_a_blocked_feed_is_rebuilt_when_used() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let peer = Kappa::builder().shared_key(SHARED).open().unwrap();
    let spam = write(&peer, "spam", 5, "spam");
    {
        let core = Kappa::builder().dir(&dir).shared_key(SHARED).open().unwrap();
        let kv = core.use_view("kv", 1, KvView::new).unwrap();
        let list = core.use_view("list", 1, |s| ListView::new(s, by_time)).unwrap();
        sync(&peer, &core);
        block_on(kv.ready()).unwrap();
        block_on(list.ready()).unwrap();
        core.close().unwrap();
    }
    {
        // Blocked while the views are not in use.
        let core = Kappa::builder().dir(&dir).shared_key(SHARED).open().unwrap();
        core.block(&spam).unwrap();
        core.close().unwrap();
    }
    let core = Kappa::builder().dir(&dir).shared_key(SHARED).open().unwrap();
    let list = core.use_view("list", 1, |s| ListView::new(s, by_time)).unwrap();
    let why = list.rebuilt_because().unwrap().to_owned();
    assert!(why.contains("blocked") && why.contains(&spam.to_hex()), "{why}");
    block_on(list.ready()).unwrap();
    assert!(list.read(&Default::default()).unwrap().is_empty());
    let kv = core.use_view("kv", 1, KvView::new).unwrap();
    assert_eq!(kv.rebuilt_because(), None, "the kv view forgets the feed without a rebuild");
    assert!(kv.all().unwrap().is_empty(), "before any indexing");
    block_on(kv.ready()).unwrap();
    assert!(kv.all().unwrap().is_empty());
}
