//! Keys and values from peers are printed safely by every command: no control
//! character (escape sequences, newlines, carriage returns, NUL, C1 controls,
//! bidi overrides) reaches the terminal in text output, a newline cannot forge
//! a table row, and `--json` round-trips the exact strings with every such
//! character escaped.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

const KAPPA: &str = env!("CARGO_BIN_EXE_kappa");

fn kappa(dir: &Path, args: &[&str]) -> Output {
    Command::new(KAPPA).env_remove("RUST_LOG").arg("--dir").arg(dir).args(args).output().expect("run kappa")
}

fn ok(dir: &Path, args: &[&str]) -> Vec<u8> {
    let o = kappa(dir, args);
    assert_eq!(o.status.code(), Some(0), "kappa {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    o.stdout
}

/// Keys (and values) a hostile peer writes.
fn hostile_keys() -> Vec<String> {
    vec![
        "red\u{1b}[31mRED".into(),
        "forged\nforged-key  \"forged\"  abcdef01…@0".into(),
        "cr\roverwritten".into(),
        "nul\u{0}x".into(),
        "c1\u{9b}2Jclear".into(),
        "bidi\u{202e}txt.exe".into(),
        "bell\u{7}del\u{7f}tab\t".into(),
    ]
}

/// No byte of `out` can steer a terminal: ASCII controls other than the line
/// ends, DEL, C1 controls and bidi overrides in UTF-8.
fn assert_terminal_safe(what: &str, out: &[u8]) {
    for (i, b) in out.iter().enumerate() {
        assert!(
            *b == b'\n' || (*b >= 0x20 && *b != 0x7f),
            "{what}: byte {b:#x} at {i}: {:?}",
            String::from_utf8_lossy(out)
        );
    }
    let text = String::from_utf8(out.to_vec()).unwrap_or_else(|e| panic!("{what}: not UTF-8: {e}"));
    for c in text.chars() {
        assert!(
            !(c.is_control() && c != '\n'
                || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}')),
            "{what}: {c:?} in {text:?}"
        );
    }
}

#[test]
fn hostile_keys_and_values_are_escaped_everywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let (peer, us) = (tmp.path().join("peer"), tmp.path().join("us"));
    // The peer writes entries with hostile keys and values, and raw blocks that
    // are not JSON (invalid UTF-8, an escape sequence).
    let mut lines = String::new();
    for k in hostile_keys() {
        lines.push_str(&json!({"key": k, "value": format!("v-{k}"), "links": []}).to_string());
        lines.push('\n');
    }
    let mut child = Command::new(KAPPA)
        .env_remove("RUST_LOG")
        .arg("--dir")
        .arg(&peer)
        .args(["append", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(lines.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
    {
        let mf = kappa_core::multifeed::Multifeed::open_dir(&peer).unwrap();
        let w = mf.writer("local").unwrap();
        w.append(b"\xff\xfe raw \x1b[2J\n\r\x00 end".as_slice()).unwrap();
        mf.close().unwrap();
    }
    let key = String::from_utf8(ok(&peer, &["key"])).unwrap().trim().to_owned();

    // We get them over the wire, as from any peer.
    let mut server = Command::new(KAPPA)
        .env_remove("RUST_LOG")
        .arg("--dir")
        .arg(&peer)
        .args(["serve", "--listen", "127.0.0.1:0", "--max-peers", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    let mut log = BufReader::new(server.stdout.take().unwrap());
    log.read_line(&mut first).unwrap();
    let addr = first.trim().strip_prefix("listening on ").unwrap().to_owned();
    // Keep reading the server's log (it stops when its output is closed).
    let served = std::thread::spawn(move || {
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut log, &mut rest).unwrap();
        rest
    });
    ok(&us, &["--shared-key", &key, "sync", &addr]);
    assert!(server.wait().unwrap().success());
    let served = served.join().unwrap();
    assert_terminal_safe("serve", served.as_bytes());

    // Text output: safe, and one table row per key (no forged rows).
    let table = ok(&us, &["table"]);
    assert_terminal_safe("table", &table);
    let rows = String::from_utf8(table).unwrap();
    assert_eq!(rows.lines().count(), 1 + hostile_keys().len(), "{rows}");
    assert!(rows.contains("red\\u{1b}[31mRED") && rows.contains("forged\\nforged-key"), "{rows}");
    let feeds = String::from_utf8(ok(&us, &["feeds"])).unwrap();
    let remote = feeds.lines().nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
    let log = ok(&us, &["log", &remote]);
    assert_terminal_safe("log", &log);
    let log = String::from_utf8(log).unwrap();
    assert!(log.contains(r#"(not JSON) "\xff\xfe raw \u{1b}[2J\n\r\0 end""#), "{log}");
    for args in [vec!["feeds"], vec!["views"]] {
        assert_terminal_safe(&format!("{args:?}"), &ok(&us, &args));
    }
    for k in hostile_keys() {
        if k.contains('\0') {
            continue; // not a possible command-line argument
        }
        let out = ok(&us, &["get", &k]);
        assert_terminal_safe(&format!("get {k:?}"), &out);
        assert_eq!(String::from_utf8(out).unwrap().lines().count(), 1);
        // Our own put with such a key prints safely too.
        let out = ok(&us, &["put", &k, &format!("new\u{1b}]0;title\u{7}{k}")]);
        assert_terminal_safe(&format!("put {k:?}"), &out);
    }

    // JSON output: escaped, and the very same strings.
    let table = ok(&us, &["--json", "table"]);
    assert_terminal_safe("table --json", &table);
    let keys: Vec<String> = String::from_utf8(table)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["key"].as_str().unwrap().to_owned())
        .collect();
    let mut want = hostile_keys();
    want.sort();
    let mut got = keys.clone();
    got.sort();
    assert_eq!(got, want);
    let log = ok(&us, &["--json", "log", &remote]);
    assert_terminal_safe("log --json", &log);
    let last: Value = serde_json::from_str(String::from_utf8(log).unwrap().lines().last().unwrap()).unwrap();
    assert_eq!(last["raw"], "\u{fffd}\u{fffd} raw \u{1b}[2J\n\r\u{0} end");
    for args in [vec!["--json", "feeds"], vec!["--json", "views"], vec!["--json", "get", "red\u{1b}[31mRED"]]
    {
        assert_terminal_safe(&format!("{args:?}"), &ok(&us, &args));
    }
}

#[test]
fn error_messages_are_escaped_too() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("d");
    let o = kappa(&d, &["log", "no\u{1b}[31msuch\nfeed"]);
    assert_eq!(o.status.code(), Some(2));
    assert_terminal_safe("stderr", &o.stderr);
    let o = kappa(&d, &["--json", "log", "no\u{1b}[31msuch\u{9b}feed"]);
    assert_eq!(o.status.code(), Some(2));
    assert_terminal_safe("stderr --json", &o.stderr);
}
