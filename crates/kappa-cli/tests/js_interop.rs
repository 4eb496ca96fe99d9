//! The `kappa` binary with real JS kappa-core 6 (multifeed 5, kappa-view-kv 2)
//! over loopback TCP and on disk. Skipped (loudly) when `interop/node_modules` is
//! missing, except under CI.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use kappa_testkit::{chaos, js};
use serde_json::{json, Value};

const KAPPA: &str = env!("CARGO_BIN_EXE_kappa");

fn ok(dir: &Path, args: &[&str]) -> String {
    let o = Command::new(KAPPA).arg("--dir").arg(dir).args(args).output().unwrap();
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

/// `kappa serve --json --listen 127.0.0.1:0 --max-peers 1` on `dir`.
struct Server {
    child: Child,
    out: BufReader<ChildStdout>,
    addr: String,
}

impl Server {
    fn start(dir: &Path) -> Server {
        let mut child = Command::new(KAPPA)
            .arg("--dir")
            .arg(dir)
            .args(["--json", "serve", "--listen", "127.0.0.1:0", "--max-peers", "1"])
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

    /// Waits for the exit; returns the logged events.
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

/// Runs the JS kv app (`tests/js/kv-table.js`) over `dir`.
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

#[test]
fn a_js_kv_view_sees_the_cli_table() {
    let Some(harness) = js::harness() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let key = ok(&a, &["key"]).trim().to_owned();
    ok(&b, &["--shared-key", &key, "key"]);
    ok(&a, &["put", "monday", "soup"]);
    ok(&a, &["put", "tuesday", "5"]);
    ok(&a, &["put", "tuesday", r#"{"n":6}"#]);
    ok(&b, &["put", "monday", "salad"]);
    let server = Server::start(&a);
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

#[test]
fn a_live_js_peer_replicates_with_kappa_serve() {
    let Some(harness) = js::harness() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let js_dir = tmp.path().join("js");
    let key = ok(&a, &["key"]).trim().to_owned();
    ok(&a, &["put", "x", "1"]);
    let server = Server::start(&a);
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
fn kappa_sync_with_js_peers_live_and_non_live() {
    let Some(harness) = js::harness() else { return };
    for live in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let b = tmp.path().join("b");
        let js_dir = tmp.path().join("js");
        let key = ok(&b, &["key"]).trim().to_owned();
        ok(&b, &["put", "y", "2"]);
        let mut args = vec![
            "--dir",
            js_dir.to_str().unwrap(),
            "--listen",
            "0",
            "--responder",
            "--shared-key",
            &key,
            "--write",
            "local:5",
        ];
        if live {
            args.push("--live");
        }
        let mut peer = js::Peer::spawn(&harness, "multifeed-peer.js", &args);
        let port = peer.until("listening")["port"].as_u64().unwrap();
        let route = chaos::route_to_port(port as u16);
        let addr = route.addr().to_string();
        let report = json_lines(&b, &["sync", &addr]).remove(0);
        assert_eq!(report["blocks_received"], 5, "live {live}: {report}");
        assert_eq!(report["blocks_sent"], 1, "live {live}: {report}");
        let done = peer.until("done");
        assert_eq!(done["feedCount"], 2, "live {live}: {done}");
        assert_eq!(done["totalLength"], 6, "live {live}: {done}");
        assert_eq!(done["complete"], true, "live {live}: {done}");
        assert!(peer.finish().success());
        let feeds = json_lines(&b, &["feeds"]);
        assert_eq!(feeds.iter().map(|f| f["length"].as_u64().unwrap()).sum::<u64>(), 6);
    }
}
