//! Helpers shared by the JS interop test files (`interop_tcp.rs`,
//! `interop_kc7.rs`): the JS harness of each wire generation, feed summaries
//! on both sides, Rust writers.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::path::Path;

use kappa_log::encoding::{Codec, Json};
use kappa_log::SignatureForm;
use kappa_multifeed::{Multifeed, ReplicateOptions};
use kappa_protocol::Generation;
use kappa_testkit::{chaos, content_digest, js};
use serde_json::{json, Value};

pub const KEY: [u8; 32] = [0x33; 32];
pub const KC6: Generation = Generation::KappaCore6;
pub const KC7: Generation = Generation::KappaCore7;

pub fn key_hex() -> String {
    hex::encode(KEY)
}

pub fn spawn(harness: &Path, args: &[&str]) -> js::Peer {
    js::Peer::spawn(harness, "multifeed-peer.js", args)
}

/// A JS multifeed peer in `dir` with the test's shared key, listening in
/// `role`, and the route to it.
pub fn listening(harness: &Path, dir: &Path, role: js::Role, extra: &[&str]) -> (js::Peer, chaos::Route) {
    let key = key_hex();
    js::Peer::listening(
        harness,
        "multifeed-peer.js",
        dir,
        role,
        &[&["--shared-key", &key][..], extra].concat(),
    )
}

/// A live JS peer listening as the responder in `dir` that writes `a:10`,
/// and `late:5` once connected (the far end of a chain through Rust).
pub fn spawn_live_writer(harness: &Path, dir: &Path) -> (js::Peer, chaos::Route) {
    listening(
        harness,
        dir,
        js::Role::Responder,
        &["--live", "--write", "a:10", "--write-during-live", "late:5"],
    )
}

/// Rust's options against a peer of `generation`: an initiator detects it; a
/// responder answers in it.
pub fn opts(generation: Generation, initiator: bool) -> ReplicateOptions {
    ReplicateOptions::new(initiator).shared_key(KEY).responder_generation(generation)
}

/// Every feed of `mf` as key → (length, digest).
pub fn summary(mf: &Multifeed) -> HashMap<String, (u64, String)> {
    mf.feeds().iter().map(|f| (f.public_key().to_hex(), (f.len(), content_digest(&mut f.lock())))).collect()
}

pub fn js_summary(report: &Value) -> HashMap<String, (u64, String)> {
    report["feeds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["key"].as_str().unwrap().to_owned(),
                (f["length"].as_u64().unwrap(), f["digest"].as_str().unwrap().to_owned()),
            )
        })
        .collect()
}

pub fn rust_writer(mf: &Multifeed, name: &str, n: u64) {
    let codec = Json::<Value>::new();
    let w = mf.writer(name).unwrap();
    w.append_batch((0..n).map(|i| codec.encode(&json!({"n": i, "who": name})).unwrap())).unwrap();
}

/// The signature form of feed `key` of `mf`.
pub fn form(mf: &Multifeed, key: &str) -> Option<SignatureForm> {
    let key = kappa_log::PublicKey::from_hex(key).unwrap();
    mf.feed(&key).unwrap().lock().signature_form().unwrap()
}
