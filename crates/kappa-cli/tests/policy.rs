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
