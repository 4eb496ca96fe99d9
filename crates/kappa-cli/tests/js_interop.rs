//! The `kappa` binary with real JS peers of both generations over loopback
//! TCP and on disk: kappa-core 6 (multifeed 5, kappa-view-kv 2) from
//! `interop/`, kappa-core 7 (multifeed 6, hypercore 9, hypercore-protocol 8,
//! kappa-view-kv 2) from `interop/kc7/`. For both, one body per scenario
//! (`kc6_…`, `kc7_…`): a JS kv view over the CLI's table, `kappa sync` with
//! live and non-live JS peers, a live JS peer with `kappa serve`. kappa-core 7 only: a directory JS wrote, the wrong `--wire`, and
//! one `kappa serve` that JS kappa-core 6 and 7 peers sync with in turn.
//! Skipped (loudly) when a harness is missing, except under CI. Every
//! connection goes through the seeded chaos relay when `KAPPA_CHAOS_SEED` is
//! set.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use kappa_core::protocol::Generation;
use kappa_testkit::js::Role;
use kappa_testkit::{chaos, js};
use serde_json::{json, Value};

const KC6: Generation = Generation::KappaCore6;

kappa_testkit::both_generations! {
    a_js_kv_view_sees_the_cli_table => kc6_a_js_kv_view_sees_the_cli_table, kc7_a_js_kv_view_sees_the_cli_table;
    a_live_js_peer_replicates_with_kappa_serve =>
        kc6_a_live_js_peer_replicates_with_kappa_serve,
        kc7_a_live_js_peer_replicates_with_kappa_serve;
    kappa_sync_with_js_peers_live_and_non_live =>
        kc6_kappa_sync_with_js_peers_live_and_non_live,
        kc7_kappa_sync_with_js_peers_live_and_non_live;
}

const KAPPA: &str = env!("CARGO_BIN_EXE_kappa");

fn run(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(KAPPA).env_remove("RUST_LOG").arg("--dir").arg(dir).args(args).output().unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let o = run(dir, args);
    assert!(
        o.status.success(),
        "kappa {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json_lines(dir: &Path, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    ok(dir, &all).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// `kappa serve --json --listen 127.0.0.1:0 --max-peers N` on `dir`.
struct Server {
    child: Child,
    out: BufReader<ChildStdout>,
    addr: String,
}

impl Server {
    fn start(dir: &Path, max_peers: usize, extra: &[&str]) -> Server {
        let max = max_peers.to_string();
        let mut child = Command::new(KAPPA)
            .env_remove("RUST_LOG")
            .arg("--dir")
            .arg(dir)
            .args(["--json", "serve", "--listen", "127.0.0.1:0", "--max-peers", &max])
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        let v: Value = serde_json::from_str(&first).unwrap();
        let addr = v["addr"].as_str().unwrap().to_owned();
        Server { child, out, addr }
    }

    /// The next event the server logged whose kind is one of `kinds`.
    fn next(&mut self, kinds: &[&str]) -> Value {
        loop {
            let mut line = String::new();
            assert!(self.out.read_line(&mut line).unwrap() > 0, "kappa serve ended");
            let v: Value = serde_json::from_str(&line).unwrap();
            if kinds.contains(&v["event"].as_str().unwrap_or("")) {
                return v;
            }
        }
    }

    /// Waits for the exit; returns the events not read yet.
    fn wait(mut self) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                assert!(s.success());
                break;
            }
            assert!(Instant::now() < deadline, "kappa serve did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut rest = String::new();
        self.out.read_to_string(&mut rest).unwrap();
        rest.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the JS kv app (`tests/js/kv-table.js`) over `dir` on the stack of `harness`.
fn js_kv(harness: &Path, dir: &Path, key: &str, keys: &[&str]) -> Vec<Value> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js/kv-table.js");
    let o = Command::new("node")
        .arg(script)
        .arg(dir)
        .arg(key)
        .args(keys)
        .env("NODE_PATH", harness.join("node_modules"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "kv-table.js: {stdout}{}", String::from_utf8_lossy(&o.stderr));
    stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The heads of `key` as the CLI shows them: [{id, value}].
fn cli_heads(dir: &Path, key: &str) -> Value {
    json_lines(dir, &["get", key]).remove(0)["heads"].clone()
}

/// The CLI's table as JS kappa-view-kv sees it from the same directory
/// (kappa-core 7 opens the directory the CLI wrote too), fork and merge.
fn a_js_kv_view_sees_the_cli_table(generation: Generation) {
    let Some(harness) = js::harness_for(generation) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let key = ok(&a, &["key"]).trim().to_owned();
    ok(&b, &["--shared-key", &key, "key"]);
    ok(&a, &["put", "monday", "soup"]);
    ok(&a, &["put", "tuesday", "5"]);
    ok(&a, &["put", "tuesday", r#"{"n":6}"#]);
    ok(&b, &["put", "monday", "salad"]);
    let server = Server::start(&a, 1, &[]);
    ok(&b, &["sync", &server.addr]);
    server.wait();

    // The fork, as JS kappa-view-kv sees it from the same directory.
    let keys = ["monday", "tuesday", "never"];
    let seen = js_kv(&harness, &a, &key, &keys);
    assert_eq!(seen.len(), 3);
    for (row, k) in seen.iter().zip(keys) {
        assert_eq!(row["key"], k);
        assert_eq!(row["heads"], cli_heads(&a, k), "{k}");
    }
    assert_eq!(seen[0]["heads"].as_array().unwrap().len(), 2);
    assert_eq!(seen[1]["heads"], json!([{"id": cli_heads(&a, "tuesday")[0]["id"], "value": {"n": 6}}]));

    // Merged by a later put, for JS too.
    ok(&a, &["put", "monday", "both"]);
    let seen = js_kv(&harness, &a, &key, &["monday"]);
    assert_eq!(seen[0]["heads"], cli_heads(&a, "monday"));
    assert_eq!(seen[0]["heads"].as_array().unwrap().len(), 1);
    assert_eq!(seen[0]["heads"][0]["value"], "both");
}

fn kappa_sync_with_js_peers_live_and_non_live(generation: Generation) {
    let Some(harness) = js::harness_for(generation) else { return };
    for live in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let b = tmp.path().join("b");
        let js_dir = tmp.path().join("js");
        let key = ok(&b, &["key"]).trim().to_owned();
        ok(&b, &["put", "y", "2"]);
        let mut args = vec!["--shared-key", &key, "--write", "local:5"];
        if live {
            args.push("--live");
        }
        let (mut peer, route) =
            js::Peer::listening(&harness, "multifeed-peer.js", &js_dir, Role::Responder, &args);
        let addr = route.addr().to_string();
        let report = json_lines(&b, &["sync", &addr]).remove(0);
        assert_eq!(report["blocks_received"], 5, "live {live}: {report}");
        assert_eq!(report["blocks_sent"], 1, "live {live}: {report}");
        let wire = if generation == KC6 { 6 } else { 7 };
        assert_eq!(report["wire"], wire, "live {live}: {report}");
        let done = peer.until("done");
        assert_eq!(done["feedCount"], 2, "live {live}: {done}");
        assert_eq!(done["totalLength"], 6, "live {live}: {done}");
        assert_eq!(done["complete"], true, "live {live}: {done}");
        assert!(peer.finish().success());
        let feeds = json_lines(&b, &["feeds"]);
        assert_eq!(feeds.iter().map(|f| f["length"].as_u64().unwrap()).sum::<u64>(), 6);
        // The text report says which generation the peer spoke.
        let (mut peer, route) =
            js::Peer::listening(&harness, "multifeed-peer.js", &js_dir, Role::Responder, &args);
        let text = ok(&b, &["sync", &route.addr().to_string()]);
        assert!(text.contains(&format!("over the {generation} wire")), "{text}");
        peer.until("done");
        assert!(peer.finish().success());
    }
}

fn a_live_js_peer_replicates_with_kappa_serve(generation: Generation) {
    let Some(harness) = js::harness_for(generation) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let js_dir = tmp.path().join("js");
    let key = ok(&a, &["key"]).trim().to_owned();
    ok(&a, &["put", "x", "1"]);
    // A responder cannot tell the generations apart (see
    // `one_kappa_serve_syncs_js_kc6_and_kc7_peers_in_turn` for what `--wire
    // auto` does with a new kappa-core 7 peer): pin the wire here.
    let wire: &[&str] = if generation == KC6 { &[] } else { &["--wire", "7"] };
    let server = Server::start(&a, 1, wire);
    let route = chaos::route(server.addr.parse().unwrap());
    let mut peer = js::Peer::spawn(
        &harness,
        "multifeed-peer.js",
        &[
            "--dir",
            js_dir.to_str().unwrap(),
            "--connect",
            &route.addr().to_string(),
            "--initiator",
            "--live",
            "--shared-key",
            &key,
            "--write",
            "local:3",
            "--expect-feeds",
            "2",
            "--expect-total",
            "4",
            // Hang up only once kappa serve has acked storing our 3 entries.
            "--await-acks",
        ],
    );
    let done = peer.until("done");
    assert_eq!(done["complete"], true);
    assert!(peer.finish().success());
    let events = server.wait();
    let kinds: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(kinds[0], "peer_connected", "{events:?}");
    assert_eq!(kinds[1], "peer_done", "{events:?}");
    assert_eq!(events[1]["blocks_received"], 3);
    assert_eq!(events[1]["blocks_sent"], 1);
    let feeds = json_lines(&a, &["feeds"]);
    assert_eq!(feeds.len(), 2);
    assert!(feeds.iter().any(|f| f["name"].is_null() && f["length"] == 3 && f["downloaded"] == 3));
    let log = json_lines(
        &a,
        &["log", feeds.iter().find(|f| f["name"].is_null()).unwrap()["key"].as_str().unwrap()],
    );
    assert_eq!(log[2]["value"], json!({"n": 2, "who": "local"}));
    // The JS peer's kv view (kappa-view-kv) sees the put made through the CLI,
    // with the same head id.
    let seen = js_kv(&harness, &js_dir, &key, &["x"]);
    assert_eq!(seen[0]["heads"], cli_heads(&a, "x"));
    assert_eq!(seen[0]["heads"][0]["value"], 1);
}

#[test]
fn the_cli_opens_a_directory_js_kc7_wrote() {
    let Some(harness) = js::harness_kc7() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("db");
    let written = &js::run(&harness, "multifeed-tool.js", &["write", d.to_str().unwrap(), "local:12"])[0];
    let feeds = json_lines(&d, &["feeds"]);
    assert_eq!(feeds.len(), 1);
    assert_eq!(feeds[0]["key"], written["feeds"][0]["key"]);
    assert_eq!(feeds[0]["length"], 12);
    let log = json_lines(&d, &["log", feeds[0]["key"].as_str().unwrap()]);
    assert_eq!(log[11]["value"], json!({"n": 11, "who": "local"}));
    let o = run(&d, &["check"]);
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn kappa_sync_with_the_wrong_wire_fails_and_says_so() {
    let Some(harness) = js::harness_kc7() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let b = tmp.path().join("b");
    let key = ok(&b, &["key"]).trim().to_owned();
    let js_dir = tmp.path().join("js");
    let extra = ["--shared-key", &key, "--write", "local:1"];
    let (peer, route) = js::Peer::listening(&harness, "multifeed-peer.js", &js_dir, Role::Responder, &extra);
    let o = run(&b, &["sync", "--wire", "6", &route.addr().to_string()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("another wire generation") && err.contains("--wire auto"), "{err}");
    assert!(!err.contains("same shared key"), "{err}");
    let _ = peer.finish();
    let o = run(&b, &["sync", "--wire", "8", "127.0.0.1:1"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("expected auto, 6 or 7"));
}

/// One `kappa serve` (answering new peers in kappa-core 6) synced by a JS
/// kappa-core 6 peer, then a JS kappa-core 7 peer (whose first attempt the
/// server answers in kappa-core 6: it hangs up, and is answered in kappa-core 7
/// when it tries again, as JS apps do), then another kappa-core 6 peer (one
/// failed attempt: the address is now remembered as kappa-core 7). Each ends
/// with everything it may have: the kappa-core 6 peer never gets the feed
/// hypercore 9 signed in the 40-byte form, and the server's log says why.
#[test]
fn one_kappa_serve_syncs_js_kc6_and_kc7_peers_in_turn() {
    let Some(kc6) = js::harness() else { return };
    let Some(kc7) = js::harness_kc7() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let key = ok(&a, &["key"]).trim().to_owned();
    ok(&a, &["put", "x", "1"]);
    let mut server = Server::start(&a, 5, &[]);
    let route = chaos::route(server.addr.parse().unwrap());
    let addr = route.addr().to_string();
    // A live JS peer in a fresh folder that writes `write`, and hangs up once it
    // holds `feeds` feeds and `total` entries and the server acked its own.
    let peer = |harness: &Path, dir: &str, write: &str, feeds: u64, total: u64| {
        let d = tmp.path().join(dir);
        let (feeds, total) = (feeds.to_string(), total.to_string());
        let mut p = js::Peer::spawn(
            harness,
            "multifeed-peer.js",
            &[
                "--dir",
                d.to_str().unwrap(),
                "--connect",
                &addr,
                "--initiator",
                "--live",
                "--shared-key",
                &key,
                "--write",
                write,
                "--expect-feeds",
                &feeds,
                "--expect-total",
                &total,
                "--await-acks",
            ],
        );
        let v = loop {
            let e = p.next_event();
            if ["done", "error", "timeout"].contains(&e["event"].as_str().unwrap()) {
                break e;
            }
        };
        (v, p.finish().success())
    };
    let ended = ["peer_done", "peer_failed"];

    // 1. kappa-core 6: the server's feed and its own.
    let (done, success) = peer(&kc6, "six", "six:3", 2, 4);
    assert!(success, "{done}");
    let ev = server.next(&ended);
    assert_eq!((&ev["event"], &ev["wire"]), (&json!("peer_done"), &json!(6)), "{ev}");

    // 2. kappa-core 7: the first attempt is answered in kappa-core 6 and fails.
    let (done, success) = peer(&kc7, "seven-a", "seven:2", 3, 6);
    assert!(!success && done["event"] == "error", "{done}");
    let ev = server.next(&ended);
    assert_eq!(ev["event"], "peer_failed", "{ev}");
    assert!(ev["error"].as_str().unwrap().contains("hung up on our handshake answer"), "{ev}");
    // The next attempt gets in, with every feed.
    let (done, success) = peer(&kc7, "seven-b", "seven:2", 3, 6);
    assert!(success, "{done}");
    assert_eq!(done["complete"], true);
    let ev = server.next(&ended);
    assert_eq!((&ev["event"], &ev["wire"]), (&json!("peer_done"), &json!(7)), "{ev}");
    let seven =
        done["feeds"].as_array().unwrap().iter().find(|f| f["localname"] == "seven").unwrap()["key"].clone();

    // 3. kappa-core 6 again: one failed attempt (the address is remembered as
    // kappa-core 7), then in, with everything but the kappa-core 7 feed.
    let (done, success) = peer(&kc6, "six-b", "six:1", 3, 5);
    assert!(!success, "{done}");
    assert_eq!(server.next(&ended)["event"], "peer_failed");
    let (done, success) = peer(&kc6, "six-c", "six:1", 3, 5);
    assert!(success, "{done}");
    let ev = server.next(&ended);
    assert_eq!((&ev["event"], &ev["wire"]), (&json!("peer_done"), &json!(6)), "{ev}");
    assert_eq!(ev["withheld"][0]["key"], seven, "{ev}");
    assert!(ev["withheld"][0]["reason"].as_str().unwrap().contains("40-byte"), "{ev}");
    let got: Vec<&Value> = done["feeds"].as_array().unwrap().iter().map(|f| &f["key"]).collect();
    assert_eq!(got.len(), 3);
    assert!(!got.contains(&&seven));
    server.wait();
    let feeds = json_lines(&a, &["feeds"]);
    assert_eq!(feeds.len(), 4);
    assert_eq!(feeds.iter().map(|f| f["length"].as_u64().unwrap()).sum::<u64>(), 1 + 3 + 2 + 1);
}
