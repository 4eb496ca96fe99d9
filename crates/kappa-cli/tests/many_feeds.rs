//! A database of many feeds under a small open-file limit (issue 16): `kappa
//! serve`, `kappa sync`, `kappa check` and `kappa feeds` run with
//! `RLIMIT_NOFILE` at 256 (soft and hard, set by the shell's `ulimit` before
//! it execs `kappa`), over a database of 1,500 feeds (about 12,000 files, each
//! feed had six to eight descriptors open for its life before the file pool),
//! and every entry is compared afterwards on both sides.
//!
//! Seeded: the feeds' lengths come from `KAPPA_SOAK_SEED`; `cargo xtask soak
//! feeds` runs it with 10,000 feeds (`KAPPA_SOAK_FEEDS`).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use common::{key_of, ok, Rng, KAPPA};
use kappa_core::{Kappa, SyncPolicy};
use serde_json::{json, Value};

/// The open-file limit the commands run under.
const LIMIT: u32 = 256;

/// `kappa --dir DIR ARGS...` run with at most [`LIMIT`] open files.
fn limited(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(format!("ulimit -n {LIMIT} && exec \"$0\" \"$@\""))
        .arg(KAPPA)
        .arg("--dir")
        .arg(dir)
        .args(args);
    c
}

fn run_limited(dir: &Path, args: &[&str]) -> String {
    let out = limited(dir, args).output().expect("run kappa");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert!(
        out.status.success(),
        "kappa {args:?} under ulimit -n {LIMIT}: {}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Every feed of the database in `dir`: key → entries.
fn contents(dir: &Path, shared_key: [u8; 32]) -> BTreeMap<String, Vec<Vec<u8>>> {
    let kappa = Kappa::builder().dir(dir).shared_key(shared_key).open().unwrap();
    let mut all = BTreeMap::new();
    for feed in kappa.feeds() {
        let mut f = feed.lock();
        assert!(f.is_complete(), "feed {} is not complete", f.public_key().to_hex());
        f.verify().unwrap();
        let entries: Vec<Vec<u8>> = (0..f.len()).map(|i| f.try_get(i).unwrap()).collect();
        all.insert(f.public_key().to_hex(), entries);
    }
    drop(kappa);
    all
}

#[test]
fn many_feeds_open_sync_and_serve_under_a_small_open_file_limit() {
    let n: u64 = std::env::var("KAPPA_SOAK_FEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1500);
    let seed = std::env::var("KAPPA_SOAK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5EED_0016);
    eprintln!("{n} feeds, KAPPA_SOAK_SEED={seed}");
    let mut rng = Rng(seed | 1);

    // The limit does reach the child.
    let shown = Command::new("sh").arg("-c").arg(format!("ulimit -n {LIMIT} && ulimit -n")).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&shown.stdout).trim(), LIMIT.to_string());

    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let key = key_of(&a);
    ok(&b, &["--shared-key", &key, "key"]);
    let shared: [u8; 32] = hex::decode(&key).unwrap().try_into().unwrap();

    // `a`: n writers of 1 to 4 entries each (written by the library, unsynced:
    // this is the fixture, not what is tested).
    {
        let kappa = Kappa::builder().dir(&a).shared_key(shared).sync(SyncPolicy::None).open().unwrap();
        for i in 0..n {
            let w = kappa.writer(&format!("w{i}")).unwrap();
            let count = 1 + rng.below(4);
            let entries: Vec<Value> =
                (0..count).map(|j| json!({"key": format!("k{i}"), "value": j, "links": []})).collect();
            w.append_batch(&entries).unwrap();
        }
        kappa.close().unwrap();
    }
    // `b`: one writer of its own, written under the limit.
    run_limited(&b, &["put", "from-b", "1"]);
    run_limited(&a, &["feeds"]);

    // Serve `a` and sync `b` with it, both under the limit.
    let mut server = limited(&a, &["serve", "--listen", "127.0.0.1:0", "--max-peers", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(server.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let addr = first.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("{first:?}")).to_owned();
    // The server reports on both streams as it goes: read them on, or it
    // blocks on a full pipe.
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = r.read_to_string(&mut text);
            text
        })
    };
    let (out, err) = (drain(Box::new(out)), drain(Box::new(server.stderr.take().unwrap())));
    let synced = limited(&b, &["sync", &addr]).output().expect("run kappa sync");
    if !synced.status.success() {
        let _ = server.kill();
    }
    let status = server.wait().unwrap();
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    // A failed sync shows the server's side too (its last lines: with
    // RUST_LOG set they say what it was doing when the sync gave up).
    let tail = |text: &str| {
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(200)..].join("\n")
    };
    assert!(
        synced.status.success(),
        "kappa sync under ulimit -n {LIMIT}: {}\n{}\nserve ({status}), its last lines:\n{}",
        synced.status,
        tail(&String::from_utf8_lossy(&synced.stderr)),
        tail(&err)
    );
    assert!(status.success(), "serve: {status}: {err}\n{}", out.len());

    // Both open and verify everything under the limit.
    let mut listed = Vec::new();
    for dir in [&a, &b] {
        run_limited(dir, &["check"]);
        listed.push(run_limited(dir, &["--json", "feeds"]).lines().count());
    }

    // Every entry of every feed, on both sides: the n writers of `a`, `b`'s
    // writer, and the local writer `kappa key` made in `a`.
    let (in_a, in_b) = (contents(&a, shared), contents(&b, shared));
    assert_eq!(in_a.len() as u64, n + 2);
    assert_eq!(in_a, in_b);
    assert_eq!(listed, [in_a.len(), in_a.len()], "`kappa feeds` lists every feed");
}
