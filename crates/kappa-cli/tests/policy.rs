//! `kappa block|unblock|hide|unhide FEED`, the policy in `kappa feeds`, and
//! `kappa du`, as a user runs them against a `kappa serve` peer.

mod common;

use common::{fails, json_lines, ok, pair, sync_once};

/// The key of the feed called `name` in `dir`.
fn feed_key(dir: &std::path::Path, name: &str) -> String {
    json_lines(dir, &["feeds"])
        .into_iter()
        .find(|f| f["name"] == name)
        .and_then(|f| f["key"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no feed {name}"))
}

#[test]
fn block_hide_and_their_undo_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = pair(tmp.path());
    ok(&a, &["put", "x", "from-a"]);
    ok(&b, &["put", "y", "from-b"]);
    sync_once(&a, &b);
    assert!(ok(&b, &["get", "x"]).contains("from-a"));
    let theirs = feed_key(&a, "local");

    // Bad input changes nothing.
    fails(&b, &["block", "local"], 2, "local writer");
    fails(&b, &["block", "zz"], 2, "unknown feed");

    let v = json_lines(&b, &["block", &theirs[..12]]);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0]["key"], theirs.as_str());
    assert_eq!(v[0]["policy"], "blocked");
    assert_eq!(v[0]["changed"], true);
    assert!(v[0]["freed"].as_u64().unwrap() > 0, "{v:?}");
    assert!(ok(&b, &["get", "x"]).contains("x: not set"));
    assert!(!ok(&b, &["table"]).contains("from-a"));
    assert!(ok(&b, &["block", &theirs]).contains("was blocked already"));

    // `feeds` shows the policy; `du` the bytes.
    let feeds = json_lines(&b, &["feeds"]);
    let row = feeds.iter().find(|f| f["key"] == theirs.as_str()).unwrap();
    assert_eq!(row["policy"], "blocked");
    assert!(ok(&b, &["feeds"]).contains("blocked"));
    let du = json_lines(&b, &["du"]);
    let blocked = du.iter().find(|u| u["key"] == theirs.as_str()).unwrap();
    assert_eq!(blocked["policy"], "blocked");
    assert!(blocked["bytes"].as_u64().unwrap() <= 32 + 65, "{blocked}");
    let mine = du.iter().find(|u| u["name"] == "local").unwrap();
    assert!(mine["bytes"].as_u64().unwrap() > 100, "{mine}");
    assert!(du.iter().any(|u| u["total"].is_u64()));
    assert!(ok(&b, &["du"]).contains("(total)"));

    // A sync with the peer that holds it succeeds and brings nothing of it.
    let (client, _) = sync_once(&a, &b);
    assert!(client.contains("refused: blocked here"), "{client}");
    assert!(ok(&b, &["get", "x"]).contains("x: not set"));

    // Hidden: out of the views, still kept.
    assert!(ok(&b, &["hide", "local"]).contains("hid "));
    assert!(ok(&b, &["get", "y"]).contains("y: not set"));
    assert!(ok(&b, &["unhide", "local"]).contains("unhid "));
    assert!(ok(&b, &["get", "y"]).contains("from-b"));
    assert!(ok(&b, &["unhide", "local"]).contains("was not hidden"));

    // Unblocked: the next sync brings it back.
    assert!(ok(&b, &["unblock", &theirs]).contains("unblocked"));
    assert!(ok(&b, &["unblock", &theirs]).contains("was not blocked"));
    sync_once(&a, &b);
    assert!(ok(&b, &["get", "x"]).contains("from-a"));
    let feeds = json_lines(&b, &["feeds"]);
    assert!(feeds.iter().all(|f| f["policy"].is_null()), "{feeds:?}");
}

/// A key never seen here can be blocked in advance, and is never accepted.
#[test]
fn a_feed_can_be_blocked_before_it_arrives() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = pair(tmp.path());
    ok(&a, &["put", "x", "spam"]);
    ok(&b, &["put", "y", "mine"]);
    let theirs = feed_key(&a, "local");
    assert!(ok(&b, &["block", &theirs]).contains("never held it"));
    let (client, _) = sync_once(&a, &b);
    assert!(client.contains("synced"), "{client}");
    assert!(ok(&b, &["get", "x"]).contains("x: not set"));
    assert_eq!(json_lines(&b, &["feeds"]).len(), 2, "ours and the blocked key");
}

/// `kappa clear FEED [--from --to]`: the entries leave the views, their disk
/// space is given back, the feed still checks, and a sync downloads them
/// again; bad ranges change nothing.
#[test]
fn clear_frees_space_and_a_sync_brings_the_entries_back() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = pair(tmp.path());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kappa"))
        .env_remove("RUST_LOG")
        .arg("--dir")
        .arg(&a)
        .args(["append", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let pad = "p".repeat(2000);
    for i in 0..2000 {
        writeln!(stdin, "{{\"key\":\"k{i}\",\"value\":\"{pad}{i}\",\"links\":[]}}").unwrap();
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
    sync_once(&a, &b);
    let theirs = feed_key(&a, "local");
    assert!(ok(&b, &["get", "k600"]).contains("p600"));
    let clearable = |dir: &std::path::Path| {
        json_lines(dir, &["du"]).into_iter().find(|u| u["key"] == theirs.as_str()).unwrap()["clearable"]
            .as_u64()
            .unwrap()
    };
    let before = clearable(&b);
    assert!(before > 2000 * 2000, "{before}");

    // Bad ranges and unknown feeds change nothing.
    fails(&b, &["clear", &theirs, "--from", "10", "--to", "5"], 2, "after --to");
    fails(&b, &["clear", &theirs, "--to", "99999"], 2, "past the feed's length");
    fails(&b, &["clear", "zz"], 2, "unknown feed");
    assert!(ok(&b, &["get", "k600"]).contains("p600"));

    let v = json_lines(&b, &["clear", &theirs[..12], "--from", "500", "--to", "1500"]);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(
        (v[0]["entries"].as_u64(), v[0]["from"].as_u64(), v[0]["to"].as_u64()),
        (Some(1000), Some(500), Some(1500))
    );
    assert_eq!(v[0]["released"], true, "{v:?}");
    assert!(v[0]["freed"].as_u64().unwrap() >= 1000 * 2000, "{v:?}");
    let after = clearable(&b);
    assert!(before - after >= 1000 * 2000, "du: {before} -> {after}");
    // The views leave the cleared entries out; the rest stays.
    assert!(ok(&b, &["get", "k600"]).contains("k600: not set"));
    assert!(ok(&b, &["get", "k1499"]).contains("k1499: not set"));
    assert!(ok(&b, &["get", "k499"]).contains("p499"));
    assert!(ok(&b, &["get", "k1500"]).contains("p1500"));
    // What is kept still checks.
    ok(&b, &["check"]);
    let feeds = json_lines(&b, &["feeds"]);
    let row = feeds.iter().find(|f| f["key"] == theirs.as_str()).unwrap();
    assert_eq!((row["length"].as_u64(), row["downloaded"].as_u64()), (Some(2000), Some(1000)), "{row}");
    // Cleared again: nothing left to clear.
    assert!(ok(&b, &["clear", &theirs, "--from", "500", "--to", "1500"]).contains("cleared 0 entries"));

    // A sync with the peer that holds them downloads them again.
    sync_once(&a, &b);
    assert!(ok(&b, &["get", "k600"]).contains("p600"));

    // A local writer's entries are not cleared.
    fails(&a, &["clear", "local"], 2, "local writer");
    assert!(ok(&a, &["get", "k1"]).contains("p1"));
    ok(&a, &["check"]);
}
