//! A kappa database whose views live in PostgreSQL.

#![cfg(feature = "postgres")]

use kappa_core::view::kv::KvView;
use kappa_core::view_postgres::PgViews;
use kappa_core::{Kappa, KappaError, ViewStorage};
use kappa_testkit::postgres::cluster_or_skip;

#[test]
fn views_on_postgres_index_persist_and_serve_readers() {
    let Some(pg) = cluster_or_skip("kappa-core on postgres") else { return };
    let url = pg.url("app");
    let tmp = tempfile::tempdir().unwrap();
    let open = || Kappa::builder().dir(tmp.path()).view_storage(ViewStorage::Postgres(url.clone())).open();
    {
        let core = open().unwrap();
        let kv = core.use_view("kv", 1, KvView::new).unwrap();
        let w = core.writer("local").unwrap();
        for i in 0..1_000 {
            w.append(&serde_json::json!({ "key": format!("k{}", i % 10), "value": i })).unwrap();
        }
        futures::executor::block_on(kv.ready()).unwrap();
        assert_eq!(kv.get("k3").unwrap().len(), 1000 / 10, "unlinked writes are all heads");

        // A second indexer of the same views is refused; a reader process (here
        // a second handle) queries the same rows.
        let err = Kappa::builder()
            .view_storage(ViewStorage::Postgres(format!("{url}&retry_for=0.2")))
            .open()
            .map(|_| ())
            .unwrap_err();
        assert!(matches!(err, KappaError::Views(_)), "{err:?}");
        assert!(err.to_string().contains("writer lock"), "{err}");
        let reader = PgViews::open_reader(&url).unwrap();
        let kv_reader = KvView::new(std::sync::Arc::new(reader.store("kv").unwrap()));
        assert_eq!(kv_reader.get("k3").unwrap(), kv.get("k3").unwrap());
        core.close().unwrap();
    }
    // Reopened: the view is up to date at once, nothing to rebuild.
    let core = open().unwrap();
    let kv = core.use_view("kv", 1, KvView::new).unwrap();
    assert_eq!(kv.state().indexed, 1_000, "progress came back from PostgreSQL");
    assert_eq!(kv.get("k9").unwrap().len(), 100);
}

/// The list and sum views run unchanged on PostgreSQL, and give what they give
/// in memory.
#[test]
fn list_and_sum_views_on_postgres_match_memory() {
    use kappa_core::view::list::{ListRange, ListView};
    use kappa_core::view::sum::SumView;
    let Some(pg) = cluster_or_skip("list and sum on postgres") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let on_pg =
        Kappa::builder().dir(tmp.path()).view_storage(ViewStorage::Postgres(pg.url("views"))).open().unwrap();
    let in_mem = Kappa::in_memory().unwrap();
    let by_time = |e: &kappa_core::Entry| {
        e.json::<serde_json::Value>().ok().and_then(|v| v["time"].as_u64()).map(|t| t.to_be_bytes().to_vec())
    };
    let mut results = Vec::new();
    for core in [&on_pg, &in_mem] {
        let list = core.use_view("list", 1, |s| ListView::new(s, by_time)).unwrap();
        let sum = core
            .use_view("sum", 1, |s| SumView::with(s, |e| e.json::<serde_json::Value>().ok()?["n"].as_f64()))
            .unwrap();
        let w = core.writer("local").unwrap();
        for i in 0..500u64 {
            w.append(&serde_json::json!({ "time": (i * 7919) % 1000, "n": i })).unwrap();
        }
        futures::executor::block_on(core.ready(&[])).unwrap();
        let range = ListRange {
            gte: Some(100u64.to_be_bytes().to_vec()),
            limit: Some(20),
            reverse: true,
            ..Default::default()
        };
        let items: Vec<(Vec<u8>, u64)> =
            list.read(&range).unwrap().into_iter().map(|i| (i.key, i.seq)).collect();
        assert_eq!(items.len(), 20);
        results.push((items, sum.get().unwrap()));
    }
    assert_eq!(results[0], results[1]);
    assert_eq!(results[0].1, (0..500).sum::<u64>() as f64);
}
