//! The `kappa` binary, run as a user or a script would: separate processes over
//! database directories, TCP replication on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

#[test]
fn put_get_table_across_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("db");
    let out = ok(&d, &["put", "monday", "soup"]);
    assert!(out.starts_with("monday = \"soup\""), "{out}");
    ok(&d, &["put", "count", "5"]);
    ok(&d, &["put", "obj", r#"{"a":[1,2]}"#]);
    ok(&d, &["put", "neg", "-3"]);

    let get = ok(&d, &["get", "monday"]);
    assert!(get.starts_with("monday = \"soup\"  id "), "{get}");
    assert!(!get.contains("forked"));

    // A put replaces the head.
    let out = ok(&d, &["put", "monday", "soup again"]);
    assert!(out.contains("replaces 1 head"), "{out}");
    let heads = &json_lines(&d, &["get", "monday"])[0];
    assert_eq!(heads["heads"].as_array().unwrap().len(), 1);
    assert_eq!(heads["heads"][0]["value"], "soup again");
    assert!(heads["heads"][0]["id"].as_str().unwrap().ends_with("@4"));

    let table = ok(&d, &["table"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("KEY"), "{table}");
    assert_eq!(lines.len(), 5, "{table}");
    assert!(lines[1].starts_with("count") && lines[1].contains(" 5 "), "{table}");
    assert!(lines[2].starts_with("monday") && lines[2].contains("\"soup again\""), "{table}");
    assert!(lines[3].starts_with("neg") && lines[3].contains("-3"), "{table}");
    assert!(lines[4].starts_with("obj") && lines[4].contains(r#"{"a":[1,2]}"#), "{table}");

    let rows = json_lines(&d, &["table"]);
    let keys: Vec<&str> = rows.iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["count", "monday", "neg", "obj"]);
    assert_eq!(rows[0]["heads"][0]["value"], 5);
    assert_eq!(rows[3]["heads"][0]["value"]["a"][1], 2);

    let missing = ok(&d, &["get", "nothing"]);
    assert_eq!(missing.trim(), "nothing: not set");
    assert_eq!(json_lines(&d, &["get", "nothing"])[0]["heads"], serde_json::json!([]));
}

#[test]
fn put_writes_kappa_view_kv_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("db");
    let first = json_lines(&d, &["put", "k", "v1"]).remove(0);
    let second = json_lines(&d, &["put", "k", "v2"]).remove(0);
    let log = json_lines(&d, &["log"]);
    assert_eq!(log.len(), 2);
    // Exactly {key, value, links}, in that order, links = the replaced ids.
    assert_eq!(log[0]["value"].to_string(), r#"{"key":"k","value":"v1","links":[]}"#);
    let id0 = first["id"].as_str().unwrap();
    assert_eq!(log[1]["value"]["links"], serde_json::json!([id0]));
    assert_eq!(second["links"], serde_json::json!([id0]));
    let feed = log[0]["feed"].as_str().unwrap();
    assert_eq!(id0, format!("{feed}@0"));
    assert_eq!(feed.len(), 64);
}

#[test]
fn feeds_views_key_log_output() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("db");
    ok(&d, &["put", "a", "1"]);
    ok(&d, &["append", r#"{"raw": true}"#]);

    // feeds
    let feeds = ok(&d, &["feeds"]);
    let lines: Vec<&str> = feeds.lines().collect();
    assert!(lines[0].contains("KEY") && lines[0].contains("WRITABLE"), "{feeds}");
    assert!(lines[1].contains("local") && lines[1].contains(" 2 ") && lines[1].ends_with("yes"), "{feeds}");
    let fj = json_lines(&d, &["feeds"]);
    assert_eq!(fj.len(), 1);
    assert_eq!(fj[0]["name"], "local");
    assert_eq!(fj[0]["length"], 2);
    assert_eq!(fj[0]["writable"], true);
    let feed = fj[0]["key"].as_str().unwrap().to_owned();
    assert_eq!(feed.len(), 64);

    // views
    let views = ok(&d, &["views"]);
    assert!(views.lines().nth(1).unwrap().starts_with("kv"), "{views}");
    assert!(views.contains("idle") && views.contains("2/2 (100%)"), "{views}");
    let vj = json_lines(&d, &["views"]);
    assert_eq!(vj[0]["name"], "kv");
    assert_eq!(vj[0]["version"], 1);
    assert_eq!(vj[0]["status"], "idle");
    assert_eq!(vj[0]["indexed"], 2);
    assert_eq!(vj[0]["total"], 2);
    let nw = json_lines(&d, &["views", "--no-wait"]);
    assert_eq!(nw[0]["total"], 2);

    // key
    let key = key_of(&d);
    assert_eq!(key.len(), 64);
    assert_eq!(json_lines(&d, &["key"])[0]["shared_key"], key.as_str());

    // log: the local writer by default, or by name, key, or prefix.
    let log = ok(&d, &["log"]);
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines[0].starts_with(&format!("feed {feed} (local, writable), 2 entries")), "{log}");
    assert!(lines[1].trim_start().starts_with("0  {\"key\":\"a\",\"value\":1,\"links\":[]}"), "{log}");
    assert!(lines[2].trim_start().starts_with("1  {\"raw\":true}"), "{log}");
    for spec in ["local", feed.as_str(), &feed[..6], &feed[..6].to_uppercase()] {
        let lj = json_lines(&d, &["log", spec]);
        assert_eq!(lj.len(), 2, "{spec}");
        assert_eq!(lj[1]["seq"], 1);
        assert_eq!(lj[1]["value"]["raw"], true);
        assert_eq!(lj[1]["id"], format!("{feed}@1"));
    }

    // append --json
    let aj = json_lines(&d, &["append", "[1,2]"]);
    assert_eq!(aj[0]["seq"], 2);
    assert_eq!(aj[0]["feed"], feed.as_str());
}

#[test]
fn append_from_stdin_is_all_or_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("db");
    ok(&d, &["key"]);
    let run = |input: &str| {
        let mut child = Command::new(KAPPA)
            .env_remove("RUST_LOG")
            .arg("--dir")
            .arg(&d)
            .args(["append", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let before = digest(&d);
    let bad = run("{\"key\":\"x\",\"value\":1}\n{oops\n");
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("malformed JSON entry on line 2"), "{}", stderr(&bad));
    assert_eq!(digest(&d), before);

    let good = run("{\"key\":\"x\",\"value\":1}\n\n{\"key\":\"y\",\"value\":2}\n");
    assert_eq!(good.status.code(), Some(0), "{}", stderr(&good));
    assert!(stdout(&good).contains("appended 2 entries"));
    assert_eq!(json_lines(&d, &["table"]).len(), 2);
}

#[test]
fn shared_key_is_random_persistent_and_overridable() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let ka = key_of(&a);
    assert_eq!(key_of(&a), ka, "the key persists across runs");
    let kb = key_of(&b);
    assert_ne!(ka, kb, "each new directory gets its own key");
    let default = hex::encode(kappa_core::DEFAULT_SHARED_KEY);
    assert_ne!(ka, default);
    assert_ne!(kb, default);
    let file = std::fs::read_to_string(a.join("kappa-shared-key")).unwrap();
    assert_eq!(file.trim(), ka);

    // --shared-key overrides for one run, and is the key of a new directory.
    let given = "11".repeat(32);
    assert_eq!(ok(&a, &["--shared-key", &given, "key"]).trim(), given);
    assert_eq!(key_of(&a), ka);
    let c = tmp.path().join("c");
    ok(&c, &["key", "--shared-key", &given]);
    assert_eq!(key_of(&c), given);
}

#[test]
fn serve_and_sync_between_two_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = pair(tmp.path());
    ok(&a, &["put", "monday", "soup"]);
    ok(&a, &["put", "tuesday", "sandwich"]);
    ok(&b, &["put", "wednesday", "pizza"]);

    let server = Server::start(&a, &["--max-peers", "1", "--json"]);
    let addr = server.addr.clone();
    let sync = json_lines(&b, &["sync", &addr]);
    let (code, log) = server.wait();
    assert_eq!(code, Some(0), "{log}");

    // The client's report.
    assert_eq!(sync.len(), 1);
    assert_eq!(sync[0]["peer"], addr.as_str());
    assert_eq!(sync[0]["blocks_received"], 2);
    assert_eq!(sync[0]["blocks_sent"], 1);
    assert_eq!(sync[0]["new_feeds"].as_array().unwrap().len(), 1);

    // The server's session log: connected, done (with what moved), stopping.
    let events: Vec<Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["peer_connected", "peer_done", "stopping"], "{log}");
    assert_eq!(events[1]["blocks_received"], 1);
    assert_eq!(events[1]["blocks_sent"], 2);

    // Both sides see the whole table, in later processes too.
    for d in [&a, &b] {
        let rows = json_lines(d, &["table"]);
        let keys: Vec<&str> = rows.iter().map(|r| r["key"].as_str().unwrap()).collect();
        assert_eq!(keys, ["monday", "tuesday", "wednesday"]);
        assert!(rows.iter().all(|r| r["forked"] == false));
        assert_eq!(json_lines(d, &["feeds"]).len(), 2);
    }

    // The text forms: the server logs each session, the client what moved.
    let server = Server::start(&a, &["--max-peers", "1"]);
    ok(&b, &["put", "thursday", "curry"]);
    let text = ok(&b, &["sync", &server.addr]);
    assert!(
        text.starts_with(&format!("synced with {}: received 0 blocks, sent 1 block", server.addr)),
        "{text}"
    );
    let (code, log) = server.wait();
    assert_eq!(code, Some(0));
    assert!(log.contains(": connected"), "{log}");
    assert!(log.contains(": done, received 1 block, sent 0 blocks"), "{log}");
    let get = ok(&a, &["get", "thursday"]);
    assert!(get.starts_with("thursday = \"curry\""), "{get}");
}

#[test]
fn fork_after_concurrent_puts_then_merge() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = pair(tmp.path());
    // Concurrent writes of one key, before the two databases meet.
    ok(&a, &["put", "monday", "soup"]);
    ok(&b, &["put", "monday", "salad"]);

    // a serves, b syncs: one session moves data both ways.
    sync_once(&a, &b);
    // And the other way round (nothing left to move).
    let (text, _) = sync_once(&b, &a);
    assert!(text.contains("received 0 blocks, sent 0 blocks"), "{text}");

    for d in [&a, &b] {
        let get = ok(d, &["get", "monday"]);
        assert!(get.starts_with("monday: forked (2 heads)"), "{get}");
        assert!(get.contains("\"soup\"") && get.contains("\"salad\""), "{get}");
        let j = &json_lines(d, &["get", "monday"])[0];
        assert_eq!(j["forked"], true);
        assert_eq!(j["heads"].as_array().unwrap().len(), 2);
        let table = ok(d, &["table"]);
        assert!(table.contains("forked (2 heads)"), "{table}");
    }
    let heads_a = json_lines(&a, &["get", "monday"]);
    let heads_b = json_lines(&b, &["get", "monday"]);
    assert_eq!(heads_a, heads_b, "both sides show the same heads");

    // A later put links both heads: merged.
    let put = json_lines(&a, &["put", "monday", "soup and salad"]).remove(0);
    assert_eq!(put["links"].as_array().unwrap().len(), 2);
    let get = ok(&a, &["get", "monday"]);
    assert!(get.starts_with("monday = \"soup and salad\""), "{get}");
    sync_once(&a, &b);
    let j = &json_lines(&b, &["get", "monday"])[0];
    assert_eq!(j["forked"], false);
    assert_eq!(j["heads"].as_array().unwrap().len(), 1);
    assert_eq!(j["heads"][0]["value"], "soup and salad");
    assert_eq!(j["heads"][0]["id"], put["id"]);
}

/// Runs a failing command and checks its exit code, message, and that the
/// directory did not change.

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("db");
    ok(&d, &["put", "a", "1"]);
    ok(&d, &["table"]);
    assert!(!digest(&d).is_empty());

    // Usage / bad input: exit 2.
    fails(&d, &["append", "{not json"], 2, "malformed JSON entry");
    fails(&d, &["--json", "append", "[1,"], 2, "\"kind\":\"usage\"");
    fails(&d, &["log", "ffff"], 2, "unknown feed \"ffff\"");
    fails(&d, &["log", "nobody"], 2, "unknown feed \"nobody\"");
    fails(&d, &["--shared-key", "xyz", "put", "a", "2"], 2, "--shared-key");
    fails(&d, &["--shared-key", "abcd", "key"], 2, "expected 32");
    fails(&d, &["frobnicate"], 2, "unrecognized subcommand");
    fails(&d, &["put", "only-a-key"], 2, "required");
    fails(&d, &["sync", "not an address"], 2, "bad address");

    // Unreachable peer: exit 1.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    fails(&d, &["sync", &closed], 1, &format!("cannot reach {closed}"));

    // Locked by another process (here: this one): exit 3.
    {
        let held = kappa_core::Kappa::builder()
            .dir(&d)
            .view_storage(kappa_core::ViewStorage::Memory)
            .open()
            .unwrap();
        fails(&d, &["put", "a", "2"], 3, "in use by another process");
        fails(&d, &["get", "a"], 3, "in use by another process");
        fails(&d, &["--json", "feeds"], 3, "\"code\":3");
        held.close().unwrap();
    }

    // Not a kappa database: exit 3, and nothing is written there.
    let other = tmp.path().join("photos");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("cat.jpg"), b"meow").unwrap();
    fails(&other, &["put", "a", "1"], 3, "is not a kappa database");
    fails(&other, &["key"], 3, "is not a kappa database");
    let file = other.join("cat.jpg");
    let o = kappa(&file, &["table"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("not a directory"));
    assert_eq!(std::fs::read(&file).unwrap(), b"meow");

    // After all that, the database still works and holds what it held.
    let j = &json_lines(&d, &["get", "a"])[0];
    assert_eq!(j["heads"][0]["value"], 1);
}

#[test]
fn sync_with_another_shared_key_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    ok(&a, &["put", "x", "1"]);
    ok(&b, &["put", "y", "2"]);
    let server = Server::start(&a, &["--max-peers", "1"]);
    let o = kappa(&b, &["sync", &server.addr]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stderr(&o).contains("replication with"), "{}", stderr(&o));
    assert!(stderr(&o).contains("shared key"), "{}", stderr(&o));
    let (code, log) = server.wait();
    assert_eq!(code, Some(0));
    assert!(log.contains("failed"), "{log}");
    assert_eq!(json_lines(&b, &["table"]).len(), 1);
}

#[test]
fn serve_exits_when_idle() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let server = Server::start(&a, &["--exit-when-idle-ms", "300"]);
    let (code, log) = server.wait();
    assert_eq!(code, Some(0));
    assert!(log.contains("stopping: no peer for the idle time"), "{log}");
}

#[test]
fn help_documents_exit_codes() {
    let o = Command::new(KAPPA).env_remove("RUST_LOG").arg("--help").output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    let help = stdout(&o);
    for needle in ["Exit codes:", "0  success", "1  runtime failure", "2  usage", "3  database unavailable"] {
        assert!(help.contains(needle), "{needle:?} missing from --help");
    }
    for cmd in ["put", "get", "table", "append", "log", "feeds", "views", "key", "serve", "sync", "demo"] {
        assert!(help.contains(&format!("  {cmd} ")), "{cmd} missing from --help");
    }
}

#[test]
fn demo_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let o = Command::new(KAPPA).env_remove("RUST_LOG").arg("demo").current_dir(tmp.path()).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let text = stdout(&o);
    for needle in [
        "alice$ kappa put monday soup",
        "bob: synced with 127.0.0.1:",
        "forked (2 heads)",
        "monday = \"soup and salad\"",
        "view \"count\" version 1: 5",
        "view \"count\" version 2: 3",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from the demo:\n{text}");
    }
    // It works in a temporary folder of its own.
    assert!(std::fs::read_dir(tmp.path()).unwrap().next().is_none());

    let o = Command::new(KAPPA)
        .env_remove("RUST_LOG")
        .args(["--json", "demo"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    for line in stdout(&o).lines() {
        let _: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    }
}

#[test]
fn sparse_sync_and_get_from_a_peer_fetch_only_the_newest_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = pair(tmp.path());
    for i in 0..12 {
        ok(&a, &["put", "counter", &i.to_string()]);
    }
    ok(&a, &["put", "colour", "teal"]);
    let key = key_of(&a);
    let server = Server::start(&a, &["--max-peers", "3"]);

    // b takes the newest 3 entries of a's log: the answers are already right.
    let sync = json_lines(&b, &["sync", &server.addr, "--newest", "3"]);
    assert_eq!(sync[0]["blocks_received"], 3, "{sync:?}");
    let feeds = json_lines(&b, &["feeds"]);
    let theirs = feeds.iter().find(|f| f["writable"] == false).unwrap();
    assert_eq!((theirs["length"].as_u64(), theirs["downloaded"].as_u64()), (Some(13), Some(3)));
    let got = json_lines(&b, &["get", "counter"]);
    assert_eq!(got[0]["heads"][0]["value"], 11);
    assert_eq!(json_lines(&b, &["get", "colour"])[0]["heads"][0]["value"], "teal");

    // A fresh database answers `get --from` with just the newest entry.
    let c = tmp.path().join("c");
    ok(&c, &["--shared-key", &key, "key"]);
    let got = json_lines(&c, &["get", "colour", "--from", &server.addr, "--newest", "1"]);
    assert_eq!(got[0]["heads"][0]["value"], "teal");
    let feeds = json_lines(&c, &["feeds"]);
    let theirs = feeds.iter().find(|f| f["writable"] == false).unwrap();
    assert_eq!((theirs["length"].as_u64(), theirs["downloaded"].as_u64()), (Some(13), Some(1)));

    // A later full sync fills the holes.
    let sync = json_lines(&b, &["sync", &server.addr]);
    assert_eq!(sync[0]["blocks_received"], 10, "{sync:?}");
    let feeds = json_lines(&b, &["feeds"]);
    let theirs = feeds.iter().find(|f| f["writable"] == false).unwrap();
    assert_eq!(theirs["downloaded"].as_u64(), Some(13));
    let (code, log) = server.wait();
    assert_eq!(code, Some(0), "{log}");
}

/// `--views postgres://…`: the kv view lives in PostgreSQL, survives the
/// directory's redb file being absent, and a bad URL is a usage error.
#[test]
fn views_in_postgres_with_the_views_flag() {
    let Some(pg) = kappa_testkit::postgres::cluster_or_skip("kappa --views postgres") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let url = pg.url("cli");
    ok(&dir, &["--views", &url, "put", "greeting", "hello"]);
    ok(&dir, &["--views", &url, "put", "greeting", "hi"]);
    assert!(!dir.join("views.redb").exists(), "no redb file when the views are in PostgreSQL");
    let out = ok(&dir, &["--views", &url, "get", "greeting"]);
    assert!(out.contains("\"hi\"") && !out.contains("hello"), "{out}");
    let rows = pg.psql("SELECT name FROM cli.kappa_views").unwrap();
    assert_eq!(rows.trim(), "kv");

    let o = kappa(&dir, &["--views", "postgres://h:notaport/x", "get", "greeting"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("not a port"), "{}", stderr(&o));
    let o = kappa(&dir, &["--views", "postgres://postgres@127.0.0.1:1/x?retry_for=0.1", "get", "greeting"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        stderr(&o).contains("cannot open the views") && stderr(&o).contains("127.0.0.1:1"),
        "{}",
        stderr(&o)
    );
}

/// A multifeed peer that offers a feed and then declines to send it (answers
/// our request with no feed): `kappa sync` must not say "synced".
#[test]
fn a_sync_that_leaves_feeds_behind_fails() {
    use kappa_core::protocol::{Event, Protocol, ProtocolOptions, Session};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let shared = [0x77u8; 32];
    let shared_hex = hex::encode(shared);
    let offered = "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29";
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let peer = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let stream = async_std::net::TcpStream::from(stream);
        let names = [
            "MULTIFEED_HANDSHAKE",
            "MULTIFEED_MANIFEST",
            "MULTIFEED_REPLICATE_FEEDS",
            "MULTIFEED_REQUEST_FEEDS",
        ];
        let opts = ProtocolOptions::new(false).extensions(names.iter().map(|s| s.to_string()).collect());
        let root = kappa_core::PublicKey::from_bytes(shared);
        let (session, handle) = Session::new(stream, opts);
        let session = session.on_event(move |p: &mut Protocol, now, ev: &Event| {
            let reply = match ev {
                Event::ChannelOpened { .. } => {
                    Some(("MULTIFEED_HANDSHAKE", r#"{"client":"MULTIFEED","version":"4.0.0"}"#.to_owned()))
                }
                Event::Extension { name, .. } => match name.as_str() {
                    "MULTIFEED_HANDSHAKE" => {
                        Some(("MULTIFEED_MANIFEST", format!(r#"{{"keys":["{offered}"]}}"#)))
                    }
                    "MULTIFEED_MANIFEST" => Some(("MULTIFEED_REQUEST_FEEDS", "[]".to_owned())),
                    // Offered, but not sent.
                    "MULTIFEED_REQUEST_FEEDS" => Some(("MULTIFEED_REPLICATE_FEEDS", "[]".to_owned())),
                    _ => None,
                },
                _ => None,
            };
            if let Some((name, body)) = reply {
                let _ = p.send_extension(now, name, body.as_bytes());
            }
        });
        handle.open_channel(root);
        async_std::task::block_on(session.run())
    });
    let o = kappa(&dir, &["--shared-key", &shared_hex, "sync", &addr]);
    let _ = peer.join();
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("incomplete") && stderr(&o).contains(offered), "{}", stderr(&o));
    assert!(!stdout(&o).contains("synced with"), "{}", stdout(&o));
}

/// A local feed that already holds non-JSON blocks (written by a library
/// user with the utf8 encoding: a feed's encoding is not kept on disk) gets
/// JSON blocks from `kappa append`, after the old ones, which stay as they
/// were; `kappa log` shows both (the old ones as `raw`).
#[test]
fn append_to_a_feed_written_with_another_encoding_adds_json_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("db");
    let key = hex_to_key(&key_of(&d));
    {
        let k = kappa_core::Kappa::builder()
            .dir(&d)
            .shared_key(key)
            .value_encoding(kappa_core::ValueEncoding::Utf8)
            .open()
            .unwrap();
        let w = k.writer("local").unwrap();
        assert_eq!(w.append(&"plain text").unwrap(), 0);
        k.close().unwrap();
    }
    let appended = json_lines(&d, &["append", r#"{"n": 1.0}"#]).remove(0);
    assert_eq!(appended["seq"], 1, "{appended}");
    let log = json_lines(&d, &["log"]);
    assert_eq!(log.len(), 2, "{log:?}");
    // Not JSON: shown as it is, not as a value.
    assert_eq!(log[0]["raw"], "plain text", "{log:?}");
    assert!(log[0].get("value").is_none(), "{log:?}");
    assert_eq!(log[1]["value"], serde_json::json!({"n": 1}), "{log:?}");
}

fn hex_to_key(s: &str) -> [u8; 32] {
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    k
}

/// `kappa sync --peer-timeout-ms`: a peer that accepts the connection and
/// then says nothing is given up after that long (the default is 20 s), with
/// an error and exit 1, and nothing is reported as synced.
#[test]
fn sync_gives_up_on_a_silent_peer_after_the_peer_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    // Accepts, reads what comes (so nothing blocks on our side), never answers.
    let silent = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stream, &mut sink);
    });
    let start = std::time::Instant::now();
    let o = kappa(&dir, &["sync", &addr, "--peer-timeout-ms", "700"]);
    let took = start.elapsed();
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(!stdout(&o).contains("synced"), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("stopped answering") || stderr(&o).contains("nothing received"),
        "{}",
        stderr(&o)
    );
    // Well before the 20 s default, and before the 10 s in which a peer must
    // prove the shared key (the bound is loose: a loaded machine).
    assert!(took < std::time::Duration::from_secs(8), "took {took:?}: {}", stderr(&o));
    let _ = silent.join();
    // A timeout of 0 is refused as a usage error, not taken as "never".
    fails(&dir, &["sync", &addr, "--peer-timeout-ms", "0"], 2, "peer-timeout-ms");
}
