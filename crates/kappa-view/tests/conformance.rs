//! The memory store passes the view-store conformance suite.

#[test]
fn memory_store_conforms() {
    kappa_view::conformance::run_all(kappa_view::MemoryStore::new);
}
