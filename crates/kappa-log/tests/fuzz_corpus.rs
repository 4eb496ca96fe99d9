//! Replays the committed cargo-fuzz corpora (`fuzz/corpus/<target>/`) through the
//! same entry points the fuzzers use, so every input a fuzzer ever kept is checked
//! on every `cargo test`.

use std::path::PathBuf;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let result = std::panic::catch_unwind(|| run(&data));
        assert!(result.is_ok(), "fuzz input {} panics", path.display());
        n += 1;
    }
    assert!(n > 0, "no corpus for {target} in {}", dir.display());
    eprintln!("{target}: replayed {n} inputs");
}

#[test]
fn open_feed_corpus() {
    replay("open_feed", kappa_log::fuzzing::open_feed);
}

#[test]
fn verify_proof_corpus() {
    replay("verify_proof", kappa_log::fuzzing::verify_proof);
}

#[test]
fn bitfield_corpus() {
    replay("bitfield", kappa_log::fuzzing::bitfield);
}
