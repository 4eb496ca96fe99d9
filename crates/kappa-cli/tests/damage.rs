//! A feed damaged on disk, through the `kappa` binary: no command wipes it,
//! forks it or creates a second writer; `check` reports it (exit 4); `repair
//! --from` restores it from a peer; entries the wire cannot carry are refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

const N: usize = 1000;

/// A database with a local writer of `N` entries, and a replica of it made by a
/// sync (a peer holding the original history).
fn original(tmp: &Path) -> (PathBuf, PathBuf) {
    let a = tmp.join("a");
    let mut child = Command::new(KAPPA)
        .env_remove("RUST_LOG")
        .arg("--dir")
        .arg(&a)
        .args(["append", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for i in 0..N {
        writeln!(stdin, "{{\"key\":\"k{i}\",\"value\":{i},\"links\":[]}}").unwrap();
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
    let b = tmp.join("b");
    ok(&b, &["--shared-key", &key_of(&a), "key"]);
    sync_once(&a, &b);
    (a, b)
}

fn feeds(dir: &Path) -> Vec<serde_json::Value> {
    json_lines(dir, &["feeds"])
}

fn local_length(dir: &Path) -> u64 {
    feeds(dir).iter().find(|f| f["name"] == "local").map(|f| f["length"].as_u64().unwrap()).unwrap()
}

fn writer_key(dir: &Path) -> String {
    feeds(dir).iter().find(|f| f["name"] == "local").map(|f| f["key"].as_str().unwrap().to_owned()).unwrap()
}

/// The replica `b` syncs from `a` and must take every new entry of `a`'s writer.
fn peer_accepts_new_entries(a: &Path, b: &Path, want: u64) {
    let key = writer_key(a);
    sync_once(a, b);
    let f = feeds(b);
    let feed = f.iter().find(|f| f["key"] == key.as_str()).unwrap();
    assert_eq!(feed["length"].as_u64(), Some(want), "the peer did not take the new entries: {f:?}");
    assert_eq!(feed["downloaded"].as_u64(), Some(want));
}

#[test]
fn a_deleted_key_file_keeps_the_feed_and_its_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = original(tmp.path());
    let key = writer_key(&a);
    let data = fs::metadata(a.join("0/data")).unwrap().len();
    fs::remove_file(a.join("0/key")).unwrap();
    ok(&a, &["put", "new", "1"]);
    assert!(fs::metadata(a.join("0/data")).unwrap().len() > data, "data shrank");
    assert_eq!(writer_key(&a), key);
    assert_eq!(local_length(&a), N as u64 + 1);
    peer_accepts_new_entries(&a, &b, N as u64 + 1);
}

#[test]
fn a_byte_cut_from_data_makes_a_hole_not_a_fork_and_a_peer_restores_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = original(tmp.path());
    let f = fs::OpenOptions::new().write(true).open(a.join("0/data")).unwrap();
    f.set_len(f.metadata().unwrap().len() - 1).unwrap();
    drop(f);
    // The length stays; the lost entry shows as damage.
    assert_eq!(local_length(&a), N as u64);
    let state = feeds(&a)[0]["state"].as_str().unwrap().to_owned();
    assert!(state.starts_with("damaged"), "{state}");
    let o = kappa(&a, &["check"]);
    assert_eq!(o.status.code(), Some(4), "check: {}", stdout(&o));
    assert!(stdout(&o).contains("1 missing"), "{}", stdout(&o));
    // A write goes after the signed length: the peer takes it (no fork).
    ok(&a, &["put", "after", "1"]);
    peer_accepts_new_entries(&a, &b, N as u64 + 1);
    // Repair from the peer.
    let server = Server::start(&b, &["--max-peers", "1"]);
    let out = ok(&a, &["repair", "--from", &server.addr]);
    assert!(out.contains("every feed verifies"), "{out}");
    drop(server);
    ok(&a, &["check"]);
    let log = ok(&a, &["log"]);
    assert_eq!(log.lines().skip(1).count(), N + 1, "{log}");
}

#[test]
fn damaged_localname_never_creates_a_second_writer() {
    for damage in ["flip", "truncate", "delete"] {
        let tmp = tempfile::tempdir().unwrap();
        let (a, _) = original(tmp.path());
        let path = a.join("0/localname");
        match damage {
            "flip" => fs::write(&path, b"lxcal").unwrap(),
            "truncate" => fs::write(&path, b"lo").unwrap(),
            _ => fs::remove_file(&path).unwrap(),
        }
        ok(&a, &["put", "x", "1"]);
        let f = feeds(&a);
        assert_eq!(f.len(), 1, "{damage}: {f:?}");
        assert_eq!(f[0]["length"].as_u64(), Some(N as u64 + 1), "{damage}");
    }
}

#[test]
fn a_writer_whose_name_and_backup_are_lost_is_refused_then_repaired() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, _) = original(tmp.path());
    fs::remove_file(a.join("0/localname")).unwrap();
    fs::remove_file(a.join("0/kappa-localname")).unwrap();
    let o = kappa(&a, &["put", "x", "1"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("localname"), "{}", stderr(&o));
    assert!(!a.join("1").exists(), "a second writer was created");
    let out = ok(&a, &["repair"]);
    assert!(out.contains("local name restored"), "{out}");
    ok(&a, &["put", "x", "1"]);
    assert_eq!(local_length(&a), N as u64 + 1);
}

#[test]
fn a_flipped_bitfield_byte_neither_blocks_writes_nor_hides_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, _) = original(tmp.path());
    let mut bytes = fs::read(a.join("0/bitfield")).unwrap();
    bytes[32 + 50] ^= 0xff; // data bits of blocks 400..408
    fs::write(a.join("0/bitfield"), bytes).unwrap();
    ok(&a, &["put", "x", "1"]);
    ok(&a, &["check"]);
    // A fresh peer gets everything.
    let c = tmp.path().join("c");
    ok(&c, &["--shared-key", &key_of(&a), "key"]);
    sync_once(&a, &c);
    let f = feeds(&c);
    assert_eq!(f[0]["downloaded"].as_u64(), Some(N as u64 + 1), "{f:?}");
}

#[test]
fn a_writer_that_cannot_prove_what_it_signed_refuses_writes_until_repaired() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = original(tmp.path());
    // Two files lost: the tree's second half and the head record.
    let tree = a.join("0/tree");
    let len = fs::metadata(&tree).unwrap().len();
    fs::OpenOptions::new().write(true).open(&tree).unwrap().set_len(len / 2).unwrap();
    fs::remove_file(a.join("0/kappa-head")).unwrap();
    let o = kappa(&a, &["put", "x", "1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("would fork"), "{}", stderr(&o));
    let o = kappa(&a, &["check"]);
    assert_eq!(o.status.code(), Some(4));
    assert!(stdout(&o).contains(&format!("signed {N} entries")), "{}", stdout(&o));
    // A peer that holds the feed restores it, and writes work again.
    let server = Server::start(&b, &["--max-peers", "1"]);
    ok(&a, &["repair", "--from", &server.addr]);
    drop(server);
    ok(&a, &["put", "x", "1"]);
    peer_accepts_new_entries(&a, &b, N as u64 + 1);
}

#[test]
fn accepting_the_loss_is_explicit() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, _) = original(tmp.path());
    let sigs = a.join("0/signatures");
    let len = fs::metadata(&sigs).unwrap().len();
    fs::OpenOptions::new().write(true).open(&sigs).unwrap().set_len(len / 2).unwrap();
    fs::remove_file(a.join("0/kappa-head")).unwrap();
    let tree = a.join("0/tree");
    let len = fs::metadata(&tree).unwrap().len();
    fs::OpenOptions::new().write(true).open(&tree).unwrap().set_len(len / 2).unwrap();
    let o = kappa(&a, &["repair"]);
    assert_eq!(o.status.code(), Some(4), "{}", stdout(&o));
    let out = ok(&a, &["repair", "--accept-loss"]);
    assert!(out.contains("gave up"), "{out}");
    ok(&a, &["put", "x", "1"]);
}

#[test]
fn an_entry_larger_than_a_wire_frame_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    ok(&a, &["put", "small", "1"]);
    let big = format!("{{\"key\":\"big\",\"value\":\"{}\",\"links\":[]}}", "x".repeat(9 << 20));
    let path = tmp.path().join("big.json");
    fs::write(&path, format!("{big}\n")).unwrap();
    let o = Command::new(KAPPA)
        .env_remove("RUST_LOG")
        .arg("--dir")
        .arg(&a)
        .args(["append", "-"])
        .stdin(fs::File::open(&path).unwrap())
        .output()
        .unwrap();
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("larger than"), "{}", stderr(&o));
    assert_eq!(local_length(&a), 1);
}
