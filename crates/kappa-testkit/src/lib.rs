//! Test support shared by the kappa-rs crates (not published).
//!
//! - [`js`]: finds the pinned JS harness in `interop/` and runs its scripts. Without
//!   `interop/setup.sh` having run, interop tests skip with a loud message, except
//!   under CI (`CI` set), where they fail: a missing harness never passes silently.
//! - [`content_digest`]: the harness's content digest of a feed, computed in Rust.

use std::path::{Path, PathBuf};
use std::process::Command;

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use kappa_log::Feed;
use serde_json::Value;

/// Running the JS harness.
pub mod js {
    use super::*;

    /// The `interop/` directory if its packages are installed; `None` (after a loud
    /// message) when they are not and we are not in CI.
    ///
    /// # Panics
    /// Under CI when the packages are missing.
    pub fn harness() -> Option<PathBuf> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../interop");
        if dir.join("node_modules/hypercore").is_dir() && dir.join("node_modules/multifeed").is_dir() {
            return Some(dir);
        }
        if std::env::var_os("CI").is_some() {
            panic!("interop/node_modules is missing: run interop/setup.sh (cargo xtask ci does)");
        }
        eprintln!("\n*** SKIPPING JS interop test: interop/node_modules missing; run interop/setup.sh ***\n");
        None
    }

    /// Runs `node interop/<script> <args>`, expecting success, and parses each line
    /// of its output as JSON.
    ///
    /// # Panics
    /// If node cannot run or the script fails.
    pub fn run(harness: &Path, script: &str, args: &[&str]) -> Vec<Value> {
        let out = Command::new("node")
            .arg(harness.join(script))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run node: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{script} {args:?} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{script}: bad JSON {l:?}: {e}")))
            .collect()
    }
}

/// The harness's content digest: hex BLAKE2b-256 over `u32be(len) ‖ bytes` for every
/// block in order.
///
/// # Panics
/// If a block is missing or unreadable.
pub fn content_digest(feed: &mut Feed) -> String {
    let mut h = Blake2b::<U32>::new();
    for i in 0..feed.len() {
        let v = feed.try_get(i).unwrap_or_else(|e| panic!("block {i}: {e}"));
        h.update((v.len() as u32).to_be_bytes());
        h.update(&v);
    }
    hex::encode(h.finalize())
}

/// Replays the committed cargo-fuzz corpus `fuzz/corpus/<target>/` through `run`,
/// the same entry point the fuzz target calls.
///
/// # Panics
/// If the corpus is missing or empty, or an input panics (the message names the
/// input file).
pub fn replay_fuzz_corpus(target: &str, run: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let mut n = 0;
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let result = std::panic::catch_unwind(|| run(&data));
        assert!(result.is_ok(), "fuzz input {} panics", path.display());
        n += 1;
    }
    assert!(n > 0, "no corpus for {target} in {}", dir.display());
    eprintln!("{target}: replayed {n} inputs");
}
