//! `kappa serve --discover` and `kappa sync --discover` on test LANs in network
//! namespaces: Rust peers find each other and replicate; a JS kappa-core 6
//! or 7 peer on hyperswarm 2's LAN discovery (interop/swarm) finds us and we find
//! it, and they replicate; a peer of another shared key is never connected; a
//! sync with nobody there exits 1 with a message. Skipped loudly without root
//! (`ip netns`) or without the JS harness; failing under CI.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{ok, KAPPA};
use kappa_testkit::lines::LineChild;
use kappa_testkit::netns::Lan;
use serde_json::Value;

const KEY: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const OTHER_KEY: &str = "2222222222222222222222222222222222222222222222222222222222222222";
const WAIT: Duration = Duration::from_secs(15);

/// A process in a namespace printing JSON lines; killed on drop.
struct Proc(LineChild);

impl Proc {
    fn start(cmd: Command) -> Proc {
        Proc(LineChild::start(cmd))
    }

    /// Waits for a line for which `pred` holds; returns it.
    fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        json(&self.0.wait_for(what, WAIT, |l| pred(&json(l))))
    }

    /// Stops the process with SIGINT (a clean stop) and waits for it.
    fn interrupt(&mut self) {
        self.0.interrupt();
    }

    /// Every line printed so far.
    fn seen(&self) -> Vec<Value> {
        self.0.seen.iter().map(|l| json(l)).collect()
    }
}

/// A printed line as JSON (a string if it is not JSON).
fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|_| Value::String(line.to_owned()))
}

fn event<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    (v["event"] == name).then_some(v)
}

fn serve(lan: &Lan, host: usize, dir: &Path, key: &str) -> Proc {
    let mut c = lan.command(host, KAPPA);
    c.arg("--dir").arg(dir).args([
        "--shared-key",
        key,
        "--json",
        "serve",
        "--listen",
        "0.0.0.0:0",
        "--discover",
    ]);
    let mut p = Proc::start(c);
    p.wait_for("listening", |v| event(v, "listening").is_some());
    p
}

fn put(dir: &Path, key: &str, k: &str, v: &str) {
    ok(dir, &["--shared-key", key, "put", k, v]);
}

fn keys(dir: &Path, key: &str) -> Vec<String> {
    common::table_keys(dir, key)
}

fn sync_discover(lan: &Lan, host: usize, dir: &Path, key: &str, limit_ms: u64) -> std::process::Output {
    let mut c = lan.command(host, KAPPA);
    c.arg("--dir").arg(dir).args(["--shared-key", key, "sync", "--discover", "--discover-timeout-ms"]);
    c.arg(limit_ms.to_string());
    c.output().expect("run kappa sync --discover")
}

fn peer_of(lan: &Lan, host: usize) -> impl Fn(&Value) -> bool {
    let ip = format!("{}:", lan.addr(host));
    move |v: &Value| v["peer"].as_str().is_some_and(|p| p.starts_with(&ip))
}

#[test]
fn sync_discover_finds_a_serving_peer_and_both_replicate() {
    let Some(lan) = Lan::new("sync_discover_finds_a_serving_peer_and_both_replicate", 2) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    put(&a, KEY, "a", "1");
    put(&b, KEY, "b", "2");
    let mut server = serve(&lan, 0, &a, KEY);
    let out = sync_discover(&lan, 1, &b, KEY, 10_000);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("peer {}:", lan.addr(0))) && text.contains("synced with"), "{text}");
    assert_eq!(keys(&b, KEY), ["a", "b"]);
    server.interrupt();
    assert_eq!(keys(&a, KEY), ["a", "b"]);
}

#[test]
fn two_serves_find_and_dial_each_other() {
    let Some(lan) = Lan::new("two_serves_find_and_dial_each_other", 2) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    put(&a, KEY, "a", "1");
    put(&b, KEY, "b", "2");
    let mut sa = serve(&lan, 0, &a, KEY);
    let mut sb = serve(&lan, 1, &b, KEY);
    let (to_b, to_a) = (peer_of(&lan, 1), peer_of(&lan, 0));
    sa.wait_for("a found b", |v| event(v, "peer_found").is_some_and(&to_b));
    sa.wait_for("a dialled b", |v| event(v, "peer_dialled").is_some_and(&to_b));
    sb.wait_for("b found a", |v| event(v, "peer_found").is_some_and(&to_a));
    sb.wait_for("b dialled a", |v| event(v, "peer_dialled").is_some_and(&to_a));
}

#[test]
fn a_peer_of_another_shared_key_is_never_connected() {
    let Some(lan) = Lan::new("a_peer_of_another_shared_key_is_never_connected", 2) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    put(&a, OTHER_KEY, "a", "1");
    let mut other = serve(&lan, 0, &a, OTHER_KEY);
    let started = Instant::now();
    let out = sync_discover(&lan, 1, &b, KEY, 1500);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no peer of this database was found on the LAN within 1500 ms"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    other.interrupt();
    let connected: Vec<Value> = other
        .seen()
        .into_iter()
        .filter(|v| v["event"].as_str().is_some_and(|e| e.starts_with("peer_")))
        .collect();
    assert!(connected.is_empty(), "{connected:?}");
}

/// The JS harness in interop/swarm (with the kappa-core 6 one beside it).
fn js_harness(test: &str) -> Option<PathBuf> {
    kappa_testkit::js::swarm(test, &["swarm/node_modules/@hyperswarm/discovery", "node_modules/kappa-core"])
}

fn js_peer(lan: &Lan, host: usize, harness: &Path, dir: &Path, args: &[&str]) -> Proc {
    let mut c = lan.command(host, "node");
    c.arg(harness.join("kappa-peer.js")).arg("--dir").arg(dir).args(["--shared-key", KEY]).args(args);
    let mut p = Proc::start(c);
    p.wait_for("ready", |v| event(v, "ready").is_some());
    p
}

/// JS finds our server (`serve --discover`, both wire generations) and they
/// replicate, with `stack` = `[]` (kappa-core 6) or `["--kc7"]` (kappa-core 7).
fn js_finds_our_server(test: &str, stack: &[&str]) {
    let Some(harness) = js_harness(test) else { return };
    let Some(lan) = Lan::new(test, 2) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    put(&a, KEY, "r", "1");
    let _server = serve(&lan, 0, &a, KEY);
    let args = [&["--put", "j=2", "--expect-keys", "2"], stack].concat();
    let mut js = js_peer(&lan, 1, &harness, &tmp.path().join("js"), &args);
    js.wait_for("JS found us", |v| event(v, "found").is_some_and(peer_of(&lan, 0)));
    let done = js.wait_for("JS holding both keys", |v| event(v, "done").is_some());
    assert_eq!(done["keys"], serde_json::json!(["j", "r"]));
}

/// We find a JS peer (`sync --discover`) and they replicate.
fn we_find_js(test: &str, stack: &[&str]) {
    let Some(harness) = js_harness(test) else { return };
    let Some(lan) = Lan::new(test, 2) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let b = tmp.path().join("b");
    put(&b, KEY, "r", "1");
    let args = [&["--put", "j=2", "--expect-keys", "2"], stack].concat();
    let mut js = js_peer(&lan, 0, &harness, &tmp.path().join("js"), &args);
    let out = sync_discover(&lan, 1, &b, KEY, 10_000);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("synced with {}:", lan.addr(0))), "{text}");
    assert_eq!(keys(&b, KEY), ["j", "r"]);
    let done = js.wait_for("JS holding both keys", |v| event(v, "done").is_some());
    assert_eq!(done["keys"], serde_json::json!(["j", "r"]));
}

#[test]
fn a_js_kappa_core_6_hyperswarm_peer_finds_our_server_and_they_replicate() {
    js_finds_our_server("a_js_kappa_core_6_hyperswarm_peer_finds_our_server_and_they_replicate", &[]);
}

#[test]
fn a_js_kappa_core_7_hyperswarm_peer_finds_our_server_and_they_replicate() {
    js_finds_our_server("a_js_kappa_core_7_hyperswarm_peer_finds_our_server_and_they_replicate", &["--kc7"]);
}

#[test]
fn we_find_a_js_kappa_core_6_hyperswarm_peer_and_they_replicate() {
    we_find_js("we_find_a_js_kappa_core_6_hyperswarm_peer_and_they_replicate", &[]);
}

#[test]
fn we_find_a_js_kappa_core_7_hyperswarm_peer_and_they_replicate() {
    we_find_js("we_find_a_js_kappa_core_7_hyperswarm_peer_and_they_replicate", &["--kc7"]);
}

#[test]
fn serve_discover_on_loopback_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    common::fails(
        tmp.path(),
        &["serve", "--listen", "127.0.0.1:0", "--discover"],
        2,
        "is reachable only from this machine",
    );
}
