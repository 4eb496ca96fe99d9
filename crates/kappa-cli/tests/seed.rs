//! `kappa serve --no-views`: a seed node replicates everything and indexes
//! nothing; the views catch up when a command uses them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

fn append_lines(dir: &std::path::Path, n: usize) {
    let mut child = Command::new(KAPPA)
        .env_remove("RUST_LOG")
        .arg("--dir")
        .arg(dir)
        .args(["append", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for i in 0..n {
        writeln!(stdin, r#"{{"key": "k{i}", "value": {i}, "links": []}}"#).unwrap();
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

#[test]
fn serve_no_views_replicates_and_leaves_the_views_alone_until_they_are_used() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = pair(tmp.path());
    append_lines(&a, 200);
    // The seed node has a view already, over entries of its own.
    ok(&b, &["put", "mine", "1"]);
    ok(&b, &["put", "also-mine", "2"]);
    let views_before = std::fs::read(b.join("views.redb")).unwrap();

    let server = Server::start(&b, &["--no-views", "--max-peers", "1", "--json"]);
    let synced = json_lines(&a, &["sync", &server.addr]);
    assert_eq!(synced[0]["blocks_sent"], 200, "{synced:?}");
    let (code, log) = server.wait();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains(r#""event":"seed_mode""#), "{log}");
    // Nothing indexed, nothing written to the view file.
    assert_eq!(
        std::fs::read(b.join("views.redb")).unwrap(),
        views_before,
        "serve --no-views touched views.redb"
    );

    // The first command that uses the view indexes the 200 new entries.
    let v = json_lines(&b, &["views"]);
    assert_eq!(
        (v[0]["name"].as_str(), v[0]["indexed"].as_u64(), v[0]["total"].as_u64()),
        (Some("kv"), Some(202), Some(202))
    );
    assert_eq!(json_lines(&b, &["table"]).len(), 202);
    assert_eq!(json_lines(&b, &["get", "k7"])[0]["heads"][0]["value"], 7);
    // And it stays caught up.
    let v = json_lines(&b, &["views", "--no-wait"]);
    assert_eq!(v[0]["indexed"], 202);
}

#[test]
fn serve_no_views_on_a_new_directory_creates_no_view_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = pair(tmp.path());
    append_lines(&a, 5);
    let _ = std::fs::remove_file(b.join("views.redb"));
    let server = Server::start(&b, &["--no-views", "--max-peers", "1"]);
    ok(&a, &["sync", &server.addr]);
    let (code, log) = server.wait();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("seed mode"), "{log}");
    assert!(!b.join("views.redb").exists());
    assert_eq!(json_lines(&b, &["views"])[0]["indexed"], 5);
}
