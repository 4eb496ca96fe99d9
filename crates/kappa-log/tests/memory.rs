//! Memory independent of history length (issue 16): a child process grows a
//! feed on disk from nothing to 3 million entries, with random gets over its
//! whole range after every 100,000 appends, and reports its own peak RSS
//! (`VmHWM` in `/proc/self/status`). Past the point where the bounded caches
//! are full (500,000 entries), the peak may grow by allocator noise only: not
//! by 8 bytes per entry as the offset index did (20 MB here), nor by the
//! bitfield's 0.44 bytes per entry (1 MiB here) before its full pages were
//! shared. `examples/big_feed.rs` does the same to 100 million entries.

use std::process::Command;

use kappa_log::storage::DirectoryProvider;
use kappa_log::{Feed, KeyPair};

const CHILD: &str = "KAPPA_MEMORY_CHILD";
const TOTAL: u64 = 3_000_000;
const BASELINE: u64 = 500_000;
const STEP: u64 = 100_000;
/// What the peak may grow by from the baseline to the end.
const BOUND_KIB: u64 = 512;

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The child: grows a feed, printing `hwm <entries> <peak KiB> <RSS KiB>` at
/// each step.
#[test]
fn grow_a_feed_and_report_peak_rss() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut feed = Feed::builder(DirectoryProvider::new(dir.path()))
        .key_pair(KeyPair::from_seed(&[3; 32]))
        .block_cache(1 << 20)
        .open()
        .unwrap();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut batch = Vec::with_capacity(1000);
    while feed.len() < TOTAL {
        let at = feed.len();
        batch.clear();
        batch.extend((at..at + 1000).map(|i| format!("{{\"entry\":{i:>12}}}")));
        feed.append_batch(&batch).unwrap();
        if feed.len().is_multiple_of(STEP) {
            for _ in 0..1000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = x % feed.len();
                assert_eq!(feed.get(i).unwrap().unwrap(), format!("{{\"entry\":{i:>12}}}").into_bytes());
            }
            println!("hwm {} {} {}", feed.len(), status_kib("VmHWM:"), status_kib("VmRSS:"));
        }
    }
}

#[test]
fn peak_rss_stays_flat_while_a_feed_grows() {
    if !cfg!(target_os = "linux") || std::env::var_os(CHILD).is_some() {
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "grow_a_feed_and_report_peak_rss", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let points: Vec<(u64, u64, u64)> = stdout
        .lines()
        // The harness may print its "test ... " prefix on the first line.
        .filter_map(|l| l.find("hwm ").map(|at| &l[at + 4..]))
        .map(|l| {
            let v: Vec<u64> = l.split_whitespace().map(|x| x.parse().unwrap()).collect();
            (v[0], v[1], v[2])
        })
        .collect();
    assert_eq!(points.len() as u64, TOTAL / STEP, "{stdout}");
    let at = |n: u64| *points.iter().find(|p| p.0 == n).unwrap();
    let ((_, base, base_rss), (_, end, end_rss)) = (at(BASELINE), at(TOTAL));
    eprintln!("peak RSS: {base} KiB at {BASELINE} entries, {end} KiB at {TOTAL}; RSS {base_rss} KiB, then {end_rss} KiB");
    assert!(
        end <= base + BOUND_KIB,
        "peak RSS grew from {base} KiB at {BASELINE} entries to {end} KiB at {TOTAL} (bound {BOUND_KIB} KiB): {points:?}"
    );
    // The peak may come from an early moment; what the process holds now
    // must not grow either (the bitfield's pages did, by 1 MiB here).
    assert!(
        end_rss <= base_rss + BOUND_KIB,
        "RSS grew from {base_rss} KiB at {BASELINE} entries to {end_rss} KiB at {TOTAL} (bound {BOUND_KIB} KiB): {points:?}"
    );
}
