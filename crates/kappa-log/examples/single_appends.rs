//! Appends N 30-byte entries one by one (one signature each) to a feed on
//! files without sync, then signs N messages alone, and prints both rates: a
//! fixed workload for `perf stat` (instructions per append against
//! instructions per signature), where criterion's iteration counts vary.
//!
//! `cargo run --release -p kappa-log --example single_appends -- [N] [append|sign|both]`
#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]

use std::time::Instant;

use kappa_log::{Feed, KeyPair};

const ENTRY: &[u8; 30] = b"{\"key\":\"k123456\",\"value\":1234}";

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let what = args.next().unwrap_or_else(|| "both".to_owned());
    let kp = KeyPair::from_seed(&[1; 32]);
    if what != "sign" {
        let dir = tempfile::tempdir().unwrap();
        let mut feed = Feed::builder(kappa_log::storage::DirectoryProvider::new(dir.path()))
            .key_pair(KeyPair::from_seed(&[1; 32]))
            .open()
            .unwrap();
        let start = Instant::now();
        for _ in 0..n {
            feed.append_batch([ENTRY]).unwrap();
        }
        let s = start.elapsed().as_secs_f64();
        println!("single appends: {n} in {s:.3} s, {:.0}/s", n as f64 / s);
    }
    if what != "append" {
        let mut msg = [7u8; 32];
        let start = Instant::now();
        for i in 0..n {
            msg[..8].copy_from_slice(&i.to_be_bytes());
            std::hint::black_box(kp.sign(&msg));
        }
        let s = start.elapsed().as_secs_f64();
        println!("signatures alone: {n} in {s:.3} s, {:.0}/s", n as f64 / s);
    }
}
