//! LAN discovery between processes on test LANs in network namespaces: Rust
//! finds Rust, JS hyperswarm 2 (@hyperswarm/discovery 2.0.1) finds Rust and
//! Rust finds JS; another topic is never reported; a peer that goes away and
//! comes back is found again; many announcers on one topic are all found.
//! Skipped loudly without root (`ip netns`), failing under CI.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use kappa_testkit::lines::LineChild;
use kappa_testkit::netns::Lan;

const TOPIC: &str = "ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01";
const OTHER: &str = "cd02cd02cd02cd02cd02cd02cd02cd02cd02cd02cd02cd02cd02cd02cd02cd02";
const WAIT: Duration = Duration::from_secs(10);

/// A peer process; killed and reaped on drop.
struct Peer(LineChild);

impl std::ops::Deref for Peer {
    type Target = LineChild;
    fn deref(&self) -> &LineChild {
        &self.0
    }
}

impl Peer {
    fn start(cmd: Command) -> Peer {
        let mut p = Peer(LineChild::start(cmd));
        p.wait_for("ready", WAIT);
        p
    }

    /// Waits until a line equal to `want` arrives (or has arrived).
    fn wait_for(&mut self, want: &str, within: Duration) {
        self.0.wait_for(&format!("{want:?}"), within, |l| l == want);
    }

    /// Every line printed until now, after `during` more.
    fn lines_after(&mut self, during: Duration) -> &[String] {
        self.0.lines_after(during)
    }
}

fn rust(lan: &Lan, host: usize, args: &[&str]) -> Peer {
    let mut c = lan.command(host, env!("CARGO_BIN_EXE_kappa-mdns"));
    c.args(["--requery-ms", "300"]).args(args);
    Peer::start(c)
}

/// The pinned JS harness in interop/swarm, if installed (else a loud skip,
/// or a failure under CI).
fn js_harness(test: &str) -> Option<PathBuf> {
    kappa_testkit::js::swarm(test, &["swarm/node_modules/@hyperswarm/discovery"])
}

fn js(lan: &Lan, host: usize, dir: &std::path::Path, args: &[&str]) -> Peer {
    let mut c = lan.command(host, "node");
    c.arg(dir.join("peer.js")).args(args);
    Peer::start(c)
}

fn found(lan: &Lan, host: usize, port: u16) -> String {
    format!("found {}:{port}", lan.addr(host))
}

#[test]
fn rust_finds_rust_and_never_another_topic() {
    let Some(lan) = Lan::new("rust_finds_rust_and_never_another_topic", 3) else { return };
    let _a = rust(&lan, 0, &["announce", TOPIC, "7000"]);
    let _other = rust(&lan, 1, &["both", OTHER, "7001"]);
    let mut looker = rust(&lan, 2, &["lookup", TOPIC]);
    looker.wait_for(&found(&lan, 0, 7000), WAIT);
    // Several re-query rounds (every 300 to 600 ms): still only the one peer.
    let lines = looker.lines_after(Duration::from_secs(2)).to_vec();
    let peers: std::collections::BTreeSet<&String> =
        lines.iter().filter(|l| l.starts_with("found")).collect();
    assert_eq!(peers.into_iter().cloned().collect::<Vec<_>>(), vec![found(&lan, 0, 7000)]);
}

#[test]
fn a_peer_that_goes_away_and_comes_back_is_found_again() {
    let Some(lan) = Lan::new("a_peer_that_goes_away_and_comes_back_is_found_again", 2) else { return };
    let mut looker = rust(&lan, 1, &["lookup", TOPIC]);
    let a = rust(&lan, 0, &["announce", TOPIC, "7000"]);
    looker.wait_for(&found(&lan, 0, 7000), WAIT);
    drop(a);
    // Gone: after its last answer has been taken, no more arrive.
    looker.lines_after(Duration::from_millis(200));
    let before = looker.seen.len();
    let lines = looker.lines_after(Duration::from_millis(1500));
    assert_eq!(lines.len(), before, "answers from a peer that is gone: {:?}", &lines[before..]);
    // Back, on another port.
    let _a = rust(&lan, 0, &["announce", TOPIC, "7005"]);
    looker.wait_for(&found(&lan, 0, 7005), WAIT);
}

#[test]
fn many_announcers_on_one_topic_are_all_found() {
    const N: usize = 6;
    let Some(lan) = Lan::new("many_announcers_on_one_topic_are_all_found", N + 1) else { return };
    let announcers: Vec<Peer> =
        (0..N).map(|i| rust(&lan, i, &["both", TOPIC, &(7000 + i).to_string()])).collect();
    let mut looker = rust(&lan, N, &["lookup", TOPIC]);
    for i in 0..N {
        looker.wait_for(&found(&lan, i, 7000 + i as u16), WAIT);
    }
    // And every announcer found every other (both ways), never itself.
    for (i, mut a) in announcers.into_iter().enumerate() {
        for j in (0..N).filter(|&j| j != i) {
            a.wait_for(&found(&lan, j, 7000 + j as u16), WAIT);
        }
        assert!(!a.seen.contains(&found(&lan, i, 7000 + i as u16)), "{i} found itself");
    }
}

#[test]
fn js_hyperswarm_finds_rust_both_ways_round() {
    let test = "js_hyperswarm_finds_rust_both_ways_round";
    let Some(dir) = js_harness(test) else { return };
    let Some(lan) = Lan::new(test, 3) else { return };
    // Rust announces first: JS's query at start is answered.
    let _r = rust(&lan, 0, &["announce", TOPIC, "7000"]);
    let mut j = js(&lan, 1, &dir, &["lookup", TOPIC]);
    j.wait_for(&found(&lan, 0, 7000), WAIT);
    // JS looks up first: Rust's unasked answer at start reaches it (JS asks
    // again only after 30 to 60 s, so this is the only way within WAIT).
    let _r2 = rust(&lan, 2, &["announce", TOPIC, "7002"]);
    j.wait_for(&found(&lan, 2, 7002), WAIT);
}

#[test]
fn rust_finds_js_hyperswarm() {
    let test = "rust_finds_js_hyperswarm";
    let Some(dir) = js_harness(test) else { return };
    let Some(lan) = Lan::new(test, 3) else { return };
    // JS announces first: our query is answered.
    let _j = js(&lan, 0, &dir, &["announce", TOPIC, "7000"]);
    let mut r = rust(&lan, 1, &["lookup", TOPIC]);
    r.wait_for(&found(&lan, 0, 7000), WAIT);
    // We look up first: JS's unasked answer at start reaches us; and a JS peer
    // of another topic is never reported.
    let _other = js(&lan, 2, &dir, &["both", OTHER, "7003"]);
    let _j2 = js(&lan, 2, &dir, &["both", TOPIC, "7002"]);
    r.wait_for(&found(&lan, 2, 7002), WAIT);
    let lines = r.lines_after(Duration::from_secs(1));
    assert!(!lines.contains(&found(&lan, 2, 7003)), "{lines:?}");
}
