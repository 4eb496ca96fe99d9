//! Replays the committed cargo-fuzz corpus of the multifeed extension target.

#[test]
fn multifeed_extensions_corpus() {
    kappa_testkit::replay_fuzz_corpus("multifeed_extensions", kappa_multifeed::fuzzing::extensions);
}
