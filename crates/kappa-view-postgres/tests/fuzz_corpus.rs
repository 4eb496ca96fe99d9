//! Replays the committed cargo-fuzz corpus of the PostgreSQL client target.

#[test]
fn postgres_client_corpus() {
    kappa_testkit::replay_fuzz_corpus("postgres_client", kappa_view_postgres::fuzzing::client);
}
