//! The DHT client against the real JS hyperswarm 2 DHT (`@hyperswarm/dht`
//! 4.0.1 on dht-rpc 4.9.6, pinned in interop/swarm), all on 127.0.0.1: a JS
//! bootstrap node and two more JS nodes make the DHT; Rust announces and JS
//! finds it, JS announces and Rust finds it, Rust finds Rust, a peer of
//! another topic is never reported, an announcer that stops is forgotten and
//! one that comes back found again, and many announcers are all found.

use std::collections::BTreeSet;
use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use kappa_discovery::dht::DhtOptions;
use kappa_discovery::{DhtDiscovery, Discovery, Lookup};
use kappa_testkit::lines::LineChild;

const TOPIC: [u8; 32] = [0xab; 32];
const OTHER: [u8; 32] = [0xcd; 32];
const WAIT: Duration = Duration::from_secs(15);

/// The pinned JS harness, if installed (else a loud skip, or a failure
/// under CI).
fn js_harness(test: &str) -> Option<PathBuf> {
    kappa_testkit::js::swarm(test, &["swarm/node_modules/@hyperswarm/dht"])
}

fn js(dir: &std::path::Path, args: &[&str]) -> LineChild {
    let mut c = Command::new("node");
    c.arg(dir.join("dht-peer.js")).args(args);
    LineChild::start(c)
}

/// A JS DHT of three nodes; the bootstrap node's port.
fn js_dht(dir: &std::path::Path) -> (Vec<LineChild>, u16) {
    let mut boot = js(dir, &["node"]);
    let line = boot.wait_for("the bootstrap node's port", WAIT, |l| l.starts_with("{\"port\""));
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let port = v["port"].as_u64().unwrap() as u16;
    let mut nodes = vec![boot];
    for _ in 0..2 {
        let mut n = js(dir, &["node", &port.to_string()]);
        n.wait_for("a node's port", WAIT, |l| l.starts_with("{\"port\""));
        nodes.push(n);
    }
    (nodes, port)
}

fn rust(boot: u16) -> DhtDiscovery {
    let opts = DhtOptions {
        bootstrap: vec![SocketAddrV4::new([127, 0, 0, 1].into(), boot)],
        refresh: Duration::from_millis(500),
        ..DhtOptions::default()
    };
    DhtDiscovery::new("127.0.0.1:0".parse().unwrap(), opts).unwrap()
}

/// Waits for `want` on `lookup`; returns everything it found meanwhile.
fn wait_found(lookup: &mut Lookup, want: SocketAddr) -> BTreeSet<SocketAddr> {
    let deadline = Instant::now() + WAIT;
    let mut seen = BTreeSet::new();
    while !seen.contains(&want) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{want} not found within {WAIT:?}; found {seen:?}");
        if let Some(a) = lookup.next_timeout(left) {
            seen.insert(a);
        }
    }
    seen
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[test]
fn js_finds_rust_and_rust_finds_js_on_the_dht() {
    let Some(dir) = js_harness("js_finds_rust_and_rust_finds_js_on_the_dht") else { return };
    let (_dht, boot) = js_dht(&dir);
    let topic = hex::encode(TOPIC);

    // Rust announces; a JS lookup finds it.
    let announcer = rust(boot);
    announcer.announce(TOPIC, 7101).unwrap();
    let mut js_lookup = js(&dir, &["lookup", &boot.to_string(), &topic]);
    js_lookup.wait_for("the Rust announcer", WAIT, |l| l == "found 127.0.0.1:7101");

    // JS announces; a Rust lookup finds it (and the Rust announcer).
    let _js_announcer = js(&dir, &["announce", &boot.to_string(), &topic, "7102"]);
    let looker = rust(boot);
    let mut lookup = looker.lookup(TOPIC).unwrap();
    let seen = wait_found(&mut lookup, addr(7102));
    let seen = seen.union(&wait_found(&mut lookup, addr(7101))).copied().collect::<BTreeSet<_>>();

    // A peer of another topic is never reported.
    let other = rust(boot);
    other.announce(OTHER, 7103).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut later = seen.clone();
    while let Some(a) = lookup.next_timeout(deadline.saturating_duration_since(Instant::now())) {
        later.insert(a);
    }
    assert_eq!(later, [addr(7101), addr(7102)].into_iter().collect(), "found beyond the topic's peers");
}

#[test]
fn rust_finds_rust_and_a_stopped_announcer_is_forgotten_until_it_comes_back() {
    let Some(dir) = js_harness("rust_finds_rust_and_a_stopped_announcer_is_forgotten_until_it_comes_back")
    else {
        return;
    };
    let (_dht, boot) = js_dht(&dir);
    let a = rust(boot);
    a.announce(TOPIC, 7201).unwrap();
    let b = rust(boot);
    b.announce(TOPIC, 7202).unwrap();
    let looker = rust(boot);
    let mut lookup = looker.lookup(TOPIC).unwrap();
    wait_found(&mut lookup, addr(7201));
    wait_found(&mut lookup, addr(7202));
    // `a` stops: the nodes are told to forget it, and later runs no longer
    // return it.
    a.stop(&TOPIC);
    std::thread::sleep(Duration::from_millis(300));
    drop(lookup);
    let mut lookup = looker.lookup(TOPIC).unwrap();
    wait_found(&mut lookup, addr(7202));
    let deadline = Instant::now() + Duration::from_secs(2);
    while let Some(x) = lookup.next_timeout(deadline.saturating_duration_since(Instant::now())) {
        assert_ne!(x, addr(7201), "a stopped announcer was still returned");
    }
    // Back: found again.
    a.announce(TOPIC, 7201).unwrap();
    wait_found(&mut lookup, addr(7201));
}

#[test]
fn many_announcers_on_one_topic_are_all_found_on_the_dht() {
    let Some(dir) = js_harness("many_announcers_on_one_topic_are_all_found_on_the_dht") else { return };
    let (_dht, boot) = js_dht(&dir);
    let announcers: Vec<DhtDiscovery> = (0..8)
        .map(|i| {
            let d = rust(boot);
            d.announce(TOPIC, 7300 + i).unwrap();
            d
        })
        .collect();
    let looker = rust(boot);
    let mut lookup = looker.lookup(TOPIC).unwrap();
    let mut seen = BTreeSet::new();
    for i in 0..8 {
        seen.extend(wait_found(&mut lookup, addr(7300 + i)));
    }
    assert_eq!(seen, (0..8).map(|i| addr(7300 + i)).collect(), "found beyond the announcers");
    drop(announcers);
}
