//! Single-byte damage at seeded random offsets of `views.redb`: every command
//! either gives the right answer (the file moved aside and the views rebuilt
//! from the logs, with a warning) or a clear error, never wrong rows with exit 0.
//!
//! Offsets are half uniform over the file and half over its non-zero bytes (the
//! pages that hold something). The offsets and entries are seeded; the feed's
//! key (random) differs per run, so the file's bytes do too. A seeded sample runs with the tests;
//! `cargo xtask soak damage [N]` runs N (default 200). The environment sets the
//! campaign: `KAPPA_SOAK_DAMAGE` (cases), `KAPPA_SOAK_SEED`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Rng;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const KAPPA: &str = env!("CARGO_BIN_EXE_kappa");

fn cases() -> u64 {
    std::env::var("KAPPA_SOAK_DAMAGE").ok().and_then(|s| s.parse().ok()).unwrap_or(60)
}

fn seed() -> u64 {
    std::env::var("KAPPA_SOAK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0xDA3A_6E13) | 1
}

fn run(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut c = Command::new(KAPPA)
        .env_remove("RUST_LOG")
        .arg("--dir")
        .arg(dir)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kappa");
    if let (Some(text), Some(mut pipe)) = (stdin, c.stdin.take()) {
        pipe.write_all(text.as_bytes()).unwrap();
    }
    c.wait_with_output().expect("run kappa")
}

fn ok(dir: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let o = run(dir, args, stdin);
    assert_eq!(o.status.code(), Some(0), "kappa {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        if e.path().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// How a command answered a damaged file.
#[derive(Debug, Default)]
struct Tally {
    /// Right, nothing noticed (the byte was in unused space).
    right: u64,
    /// Right after moving the file aside and rebuilding.
    rebuilt: u64,
    /// A non-zero exit with an error message.
    errors: u64,
}

/// Checks one answer: the expected output with exit 0, or a clear error.
fn judge(o: &Output, expected: &str, what: &str, tally: &mut Tally) {
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    match o.status.code() {
        Some(0) => {
            assert_eq!(out, expected, "{what}: wrong answer with exit 0 (stderr: {err})");
            // The panic hook's report ("thread 'main' panicked at …"), not our
            // own message saying redb panicked.
            assert!(!err.contains("panicked at"), "{what}: a panic report reached the user: {err}");
            if err.contains("moved to") {
                assert!(err.contains("damaged-"), "{what}: {err}");
                tally.rebuilt += 1;
            } else {
                assert!(err.is_empty(), "{what}: unexpected stderr: {err}");
                tally.right += 1;
            }
        }
        Some(_) => {
            assert!(err.contains("kappa: error: "), "{what}: failed without a clear error: {err}");
            tally.errors += 1;
        }
        None => panic!("{what}: killed by a signal (a crash): {err}"),
    }
}

#[test]
fn single_byte_damage_to_views_is_rebuilt_or_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good");
    // Keys with several heads, replaced values, values of every JSON kind.
    let mut rng = Rng(seed());
    let entries: String = (0..400)
        .map(|i| {
            let v = match i % 4 {
                0 => serde_json::json!(i),
                1 => serde_json::json!(format!("text {i}")),
                2 => serde_json::json!({"n": i, "list": [i, i + 1]}),
                _ => serde_json::json!(null),
            };
            format!(
                "{}\n",
                serde_json::json!({"key": format!("k{}", rng.below(150)), "value": v, "links": []})
            )
        })
        .collect();
    ok(&good, &["append", "-"], Some(&entries));
    for i in 0..30 {
        ok(&good, &["put", &format!("k{}", i * 5), &format!("{{\"put\":{i}}}")], None);
    }
    let table = ok(&good, &["--json", "table"], None);
    let get_keys = ["k0", "k7", "k149", "absent"];
    let gets: Vec<String> = get_keys.iter().map(|k| ok(&good, &["--json", "get", k], None)).collect();
    let bytes = std::fs::read(good.join("views.redb")).unwrap();
    let nonzero: Vec<usize> = (0..bytes.len()).filter(|&i| bytes[i] != 0).collect();

    let (mut table_tally, mut get_tally, mut put_tally) =
        (Tally::default(), Tally::default(), Tally::default());
    let n = cases();
    for case in 0..n {
        let dir = tmp.path().join(format!("case-{case}"));
        copy_dir(&good, &dir);
        let mut bad = bytes.clone();
        let at = if case % 2 == 0 {
            rng.below(bad.len() as u64) as usize
        } else {
            nonzero[rng.below(nonzero.len() as u64) as usize]
        };
        bad[at] ^= 1 + rng.below(255) as u8;
        std::fs::write(dir.join("views.redb"), &bad).unwrap();
        let what = format!("case {case}: byte {at} of {}", bad.len());
        // The first command meets the damage; whichever it is.
        match case % 3 {
            0 => judge(&run(&dir, &["--json", "table"], None), &table, &what, &mut table_tally),
            1 => {
                let k = (case as usize / 3) % get_keys.len();
                judge(&run(&dir, &["--json", "get", get_keys[k]], None), &gets[k], &what, &mut get_tally);
            }
            _ => {
                // A put over damaged views must link the right heads: the
                // table afterwards equals a rebuild's.
                let o = run(&dir, &["put", "k0", "\"after\""], None);
                let mut t = Tally::default();
                if o.status.code() == Some(0) {
                    let rebuilt = tmp.path().join(format!("rebuilt-{case}"));
                    copy_dir(&dir, &rebuilt);
                    std::fs::remove_file(rebuilt.join("views.redb")).unwrap();
                    let expected = ok(&rebuilt, &["--json", "table"], None);
                    judge(&run(&dir, &["--json", "table"], None), &expected, &what, &mut t);
                    let _ = std::fs::remove_dir_all(&rebuilt);
                }
                judge(&o, &String::from_utf8_lossy(&o.stdout), &what, &mut put_tally);
            }
        }
        // Afterwards every command is right again (the damage was dealt with).
        if case % 3 != 2 {
            let o = run(&dir, &["--json", "table"], None);
            assert_eq!(
                o.status.code(),
                Some(0),
                "{what}: the next table: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            assert_eq!(String::from_utf8_lossy(&o.stdout), table, "{what}: the next table");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    eprintln!("{n} single-byte flips in a {} byte views.redb: table {table_tally:?}, get {get_tally:?}, put {put_tally:?}", bytes.len());
}
