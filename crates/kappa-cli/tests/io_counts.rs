//! What each command costs the feeds' files: positioned writes, `fdatasync`s,
//! files opened for writing, and the threads alive when it is done, reported by
//! `kappa` on standard error when `KAPPA_IO_COUNTS` is set. Read-only commands
//! must write and sync nothing, and a `put` must not creep back to six syncs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::*;

/// Runs `kappa --dir DIR ARGS` with the report on; expects exit 0 and returns
/// the report's fields.
fn costs(dir: &Path, args: &[&str]) -> BTreeMap<String, u64> {
    let o = Command::new(KAPPA)
        .env_remove("RUST_LOG")
        .arg("--dir")
        .arg(dir)
        .args(args)
        .env("KAPPA_IO_COUNTS", "1")
        .output()
        .expect("run kappa");
    assert_eq!(o.status.code(), Some(0), "kappa {args:?}: {}", stderr(&o));
    let err = stderr(&o);
    let line = err
        .lines()
        .find_map(|l| l.strip_prefix("kappa-io: "))
        .unwrap_or_else(|| panic!("no report from kappa {args:?}: {err}"));
    line.split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_owned(), v.parse().unwrap_or(u64::MAX))
        })
        .collect()
}

#[test]
fn commands_cost_what_they_must() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("db");
    ok(&d, &["put", "a", "1"]);
    ok(&d, &["put", "b", "2"]);
    let mut seen = Vec::new();
    for args in [
        &["put", "c", "3"][..],
        &["get", "a"],
        &["get", "c"],
        &["table"],
        &["feeds"],
        &["log"],
        &["key"],
        &["check"],
        &["views"],
    ] {
        let c = costs(&d, args);
        println!("{args:?}: {c:?}");
        seen.push((args.join(" "), c));
    }
    let of = |name: &str| &seen.iter().find(|(n, _)| n == name).unwrap().1;
    // Before issue 20: `put` 5 writes and 7 syncs on the feed's files (closing
    // synced all seven files), every read-only command 7 syncs, 9 files opened
    // for writing, and 4 threads (async-std's runtime) plus the indexer.
    // Now a close syncs only the files written: data, tree, signatures,
    // bitfield, head.
    let put = of("put c 3");
    assert!(put["writes"] <= 5 && put["syncs"] <= 5, "put: {put:?}");
    for cmd in ["get a", "get c", "table", "feeds", "log", "key", "check", "views"] {
        let c = of(cmd);
        assert_eq!((c["writes"], c["syncs"], c["opened_for_writing"]), (0, 0, 0), "{cmd}: {c:?}");
        // `put` indexes its own entry before it ends, so the view is current
        // and the view file, sealed by the clean close, is only read (before:
        // redb opened it for writing, eight `fdatasync`s per command).
        assert_eq!(c["views_opened_for_writing"], 0, "{cmd}: {c:?}");
    }
    assert_eq!(put["views_opened_for_writing"], 1, "put: {put:?}");
    // No thread but this one where no view is needed; the view's indexer
    // where one is (the views file itself is redb's: see docs/benchmarks.md).
    for cmd in ["feeds", "log", "key", "check"] {
        assert_eq!(of(cmd)["threads"], 1, "{cmd}: {:?}", of(cmd));
    }
    for cmd in ["get a", "table", "views"] {
        assert!(of(cmd)["threads"] <= 2, "{cmd}: {:?}", of(cmd));
    }
}
