//! `kappa serve --dht` and `kappa sync --dht` on a JS hyperswarm 2 DHT
//! (`@hyperswarm/dht` 4.0.1, nodes of interop/swarm/dht-peer.js). On
//! 127.0.0.1: a sync finds a serving peer and both replicate, a serve finds
//! and dials one that announced before it, a peer of another shared key is
//! never connected, and a sync with nobody there exits 1 with a message.
//! Across the hosts of a test LAN (network namespaces; skipped loudly
//! without root): a sync on one host finds a serve on another through JS
//! DHT nodes on two more. Skipped loudly without the JS harness; failing
//! under CI.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{ok, KAPPA};
use kappa_testkit::lines::LineChild;
use serde_json::Value;

const KEY: &str = "3333333333333333333333333333333333333333333333333333333333333333";
const OTHER_KEY: &str = "4444444444444444444444444444444444444444444444444444444444444444";
const WAIT: Duration = Duration::from_secs(20);

fn harness(test: &str) -> Option<PathBuf> {
    kappa_testkit::js::swarm(test, &["swarm/node_modules/@hyperswarm/dht"])
}

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|_| Value::String(line.to_owned()))
}

/// A JS DHT of three nodes on 127.0.0.1, and `--dht` for it.
fn js_dht(dir: &Path) -> (Vec<LineChild>, String) {
    let node = |args: &[&str]| {
        let mut c = Command::new("node");
        c.arg(dir.join("dht-peer.js")).arg("node").args(args);
        let mut p = LineChild::start(c);
        let line = p.wait_for("a DHT node's port", WAIT, |l| l.starts_with("{\"port\""));
        (p, json(&line)["port"].as_u64().unwrap())
    };
    let (boot, port) = node(&[]);
    let mut nodes = vec![boot];
    for _ in 0..2 {
        nodes.push(node(&[&port.to_string()]).0);
    }
    (nodes, format!("127.0.0.1:{port}"))
}

fn serve(dir: &Path, key: &str, dht: &str) -> LineChild {
    let mut c = Command::new(KAPPA);
    c.arg("--dir").arg(dir).args([
        "--shared-key",
        key,
        "--json",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--dht",
        dht,
    ]);
    let mut p = LineChild::start(c);
    p.wait_for("listening", WAIT, |l| json(l)["event"] == "listening");
    p
}

fn port_of(p: &LineChild) -> String {
    let listening = p.seen.iter().map(|l| json(l)).find(|v| v["event"] == "listening").unwrap();
    listening["addr"].as_str().unwrap().to_owned()
}

/// Two databases of `KEY`, `a` holding key `a` and `b` key `b` (in a
/// temporary directory that lives as long as the first value).
fn two_databases() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    ok(&a, &["--shared-key", KEY, "put", "a", "1"]);
    ok(&b, &["--shared-key", KEY, "put", "b", "2"]);
    (tmp, a, b)
}

fn keys(dir: &Path, key: &str) -> Vec<String> {
    common::table_keys(dir, key)
}

fn sync_dht(dir: &Path, key: &str, dht: &str, limit_ms: u64) -> std::process::Output {
    let mut c = Command::new(KAPPA);
    c.arg("--dir").arg(dir).args(["--shared-key", key, "sync", "--dht", dht, "--discover-timeout-ms"]);
    c.arg(limit_ms.to_string());
    c.output().expect("run kappa sync --dht")
}

#[test]
fn sync_dht_finds_a_serving_peer_and_both_replicate() {
    let Some(h) = harness("sync_dht_finds_a_serving_peer_and_both_replicate") else { return };
    let (_dht, boot) = js_dht(&h);
    let (_tmp, a, b) = two_databases();
    let mut server = serve(&a, KEY, &boot);
    let addr = port_of(&server);
    let out = sync_dht(&b, KEY, &boot, 15_000);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains(&format!("peer {addr}: found on the DHT")) && text.contains("synced with"),
        "{text}"
    );
    assert_eq!(keys(&b, KEY), ["a", "b"]);
    server.interrupt();
    assert_eq!(keys(&a, KEY), ["a", "b"]);
}

#[test]
fn a_serve_finds_and_dials_an_earlier_one_on_the_dht_and_another_key_is_never_dialled() {
    let Some(h) =
        harness("a_serve_finds_and_dials_an_earlier_one_on_the_dht_and_another_key_is_never_dialled")
    else {
        return;
    };
    let (_dht, boot) = js_dht(&h);
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (tmp.path().join("a"), tmp.path().join("b"), tmp.path().join("c"));
    ok(&a, &["--shared-key", KEY, "put", "a", "1"]);
    ok(&b, &["--shared-key", KEY, "put", "b", "2"]);
    ok(&c, &["--shared-key", OTHER_KEY, "put", "c", "3"]);
    let mut other = serve(&c, OTHER_KEY, &boot);
    let mut sa = serve(&a, KEY, &boot);
    let mut sb = serve(&b, KEY, &boot);
    let (addr_a, addr_b, addr_c) = (port_of(&sa), port_of(&sb), port_of(&other));
    let dialled = |to: String| {
        move |l: &str| {
            let v = json(l);
            v["event"] == "peer_dialled" && v["peer"] == to.as_str()
        }
    };
    // The later one finds the earlier one at once (the earlier one would find
    // it at its next refresh, minutes later, as hyperswarm does): one session
    // between them.
    sb.wait_for("b dialled a", WAIT, dialled(addr_a.clone()));
    sa.wait_for("a accepted b", WAIT, |l| json(l)["event"] == "peer_connected");
    // Long enough for `other` to have found them, were it to.
    std::thread::sleep(Duration::from_secs(2));
    sa.interrupt();
    sb.interrupt();
    other.interrupt();
    let mentions = |p: &LineChild, addrs: &[&str]| {
        p.seen.iter().find(|l| addrs.iter().any(|a| json(l)["peer"] == *a)).cloned()
    };
    assert_eq!(mentions(&sa, &[&addr_c]), None, "a saw the peer of another shared key");
    assert_eq!(mentions(&sb, &[&addr_c]), None, "b saw the peer of another shared key");
    assert_eq!(mentions(&other, &[&addr_a, &addr_b]), None, "the other key's peer saw a or b");
    assert!(other.seen.iter().all(|l| json(l)["event"] != "peer_connected"), "{:?}", other.seen);
}

#[test]
fn sync_dht_with_nobody_there_exits_1_and_says_so() {
    let Some(h) = harness("sync_dht_with_nobody_there_exits_1_and_says_so") else { return };
    let (_dht, boot) = js_dht(&h);
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    ok(&a, &["--shared-key", KEY, "put", "a", "1"]);
    let out = sync_dht(&a, KEY, &boot, 1500);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no peer of this database was found on the DHT within 1500 ms"), "{err}");
}

/// Across hosts: a JS DHT of two nodes on two hosts of a test LAN (network
/// namespaces), a `kappa serve --dht` on a third, found by a JS peer's lookup
/// on the second and by a `kappa sync --dht` on the fourth, which syncs
/// with it.
#[test]
fn peers_on_four_hosts_of_a_test_lan_meet_through_a_js_dht() {
    let test = "peers_on_four_hosts_of_a_test_lan_meet_through_a_js_dht";
    let Some(h) = harness(test) else { return };
    let Some(lan) = kappa_testkit::netns::Lan::new(test, 4) else { return };
    let node = |host: usize, args: &[&str]| {
        let mut c = lan.command(host, "node");
        c.env("DHT_HOST", lan.addr(host).to_string()).env("DHT_BOOTSTRAP_HOST", lan.addr(0).to_string());
        c.arg(h.join("dht-peer.js")).arg("node").args(args);
        let mut p = LineChild::start(c);
        let line = p.wait_for("a DHT node's port", WAIT, |l| l.starts_with("{\"port\""));
        (p, json(&line)["port"].as_u64().unwrap())
    };
    let (_boot, port) = node(0, &[]);
    let (_second, _) = node(1, &[&port.to_string()]);
    let dht = format!("{}:{port}", lan.addr(0));
    let (_tmp, a, b) = two_databases();
    let mut c = lan.command(2, KAPPA);
    c.arg("--dir").arg(&a).args([
        "--shared-key",
        KEY,
        "--json",
        "serve",
        "--listen",
        "0.0.0.0:0",
        "--dht",
        &dht,
    ]);
    let mut server = LineChild::start(c);
    let listening = json(&server.wait_for("listening", WAIT, |l| json(l)["event"] == "listening"));
    let server_port = listening["addr"].as_str().unwrap().rsplit(':').next().unwrap().to_owned();
    let topic = json(&server.wait_for("discovery", WAIT, |l| json(l)["event"] == "discovery"))["topic"]
        .as_str()
        .unwrap()
        .to_owned();
    // A JS peer on host 1 looks the database's topic up and finds the server.
    let mut c = lan.command(1, "node");
    c.env("DHT_HOST", lan.addr(1).to_string()).env("DHT_BOOTSTRAP_HOST", lan.addr(0).to_string());
    c.arg(h.join("dht-peer.js")).args(["lookup", &port.to_string(), &topic]);
    let mut js_lookup = LineChild::start(c);
    let want = format!("found {}:{server_port}", lan.addr(2));
    js_lookup.wait_for("the server, from JS", WAIT, |l| l == want);
    let mut c = lan.command(3, KAPPA);
    c.arg("--dir").arg(&b).args([
        "--shared-key",
        KEY,
        "sync",
        "--dht",
        &dht,
        "--discover-timeout-ms",
        "15000",
    ]);
    let out = c.output().expect("run kappa sync --dht");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("peer {}:", lan.addr(2))) && text.contains("found on the DHT"), "{text}");
    assert_eq!(keys(&b, KEY), ["a", "b"]);
    server.interrupt();
    assert_eq!(keys(&a, KEY), ["a", "b"]);
}

/// A sync that looked before the server announced finds it at its next
/// lookup, a second later (a long-running node looks again only every few
/// minutes; a sync waits no longer than its time limit).
#[test]
fn a_sync_started_before_the_server_finds_it_at_its_next_lookup() {
    let Some(h) = harness("a_sync_started_before_the_server_finds_it_at_its_next_lookup") else { return };
    let (_dht, boot) = js_dht(&h);
    let (_tmp, a, b) = two_databases();
    let mut c = Command::new(KAPPA);
    c.arg("--dir").arg(&b).args([
        "--shared-key",
        KEY,
        "sync",
        "--dht",
        &boot,
        "--discover-timeout-ms",
        "15000",
    ]);
    let mut sync = LineChild::start(c);
    sync.wait_for("the sync's lookup", WAIT, |l| l.starts_with("discovery:"));
    let mut server = serve(&a, KEY, &boot);
    sync.wait_for("the sync's end", WAIT, |l| l.contains("synced with"));
    sync.interrupt();
    server.interrupt();
    assert_eq!(keys(&b, KEY), ["a", "b"]);
    assert_eq!(keys(&a, KEY), ["a", "b"]);
}

/// Announcing a loopback-only listener to a DHT on another machine is a
/// usage error (nobody there could connect); nothing is sent.
#[test]
fn serve_dht_on_loopback_with_a_remote_dht_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    common::fails(
        tmp.path(),
        &["serve", "--listen", "127.0.0.1:0", "--dht", "192.0.2.1:49737"],
        2,
        "is reachable only from this machine",
    );
}
