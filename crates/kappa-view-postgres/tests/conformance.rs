//! The view-store conformance suite that memory and redb pass, on a real server.

use std::sync::atomic::{AtomicU32, Ordering};

use kappa_testkit::postgres::cluster_or_skip;
use kappa_view_postgres::PgViews;

#[test]
fn postgres_store_passes_the_conformance_suite() {
    let Some(pg) = cluster_or_skip("postgres conformance") else { return };
    let n = AtomicU32::new(0);
    // A fresh, empty store each time: a new view in one database, and now and
    // then a new schema too.
    let views = PgViews::open(&pg.url("conf")).unwrap();
    kappa_view::conformance::run_all(|| {
        let i = n.fetch_add(1, Ordering::SeqCst);
        if i.is_multiple_of(2) {
            views.store(&format!("view {i}")).unwrap()
        } else {
            PgViews::open(&pg.url(&format!("conf{i}"))).unwrap().store("v").unwrap()
        }
    });
}
