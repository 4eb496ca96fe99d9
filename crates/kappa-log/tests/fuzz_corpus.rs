//! Replays the committed cargo-fuzz corpora (`fuzz/corpus/<target>/`) through the
//! same entry points the fuzzers use, so every input a fuzzer kept is checked on
//! every `cargo test`.

use kappa_testkit::replay_fuzz_corpus;

#[test]
fn open_feed_corpus() {
    replay_fuzz_corpus("open_feed", kappa_log::fuzzing::open_feed);
}

#[test]
fn verify_proof_corpus() {
    replay_fuzz_corpus("verify_proof", kappa_log::fuzzing::verify_proof);
}

#[test]
fn bitfield_corpus() {
    replay_fuzz_corpus("bitfield", kappa_log::fuzzing::bitfield);
}

#[test]
fn js_json_corpus() {
    replay_fuzz_corpus("js_json", kappa_log::fuzzing::js_json);
}
