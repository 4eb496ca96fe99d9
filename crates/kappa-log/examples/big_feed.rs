//! Random gets over one very large feed on files, with the bounded caches
//! (issue 16): grows a feed to N entries of 30 bytes in batches of 1,000
//! (default 100,000,000), printing the peak RSS and a sample of random gets
//! every tenth of the way, then reopens the feed and runs random gets over its
//! whole range: reads/s and peak RSS (`VmHWM`), with the RSS the reopened feed
//! starts from.
//!
//! `cargo run --release -p kappa-log --example big_feed -- [N] [GETS] [DIR]`
//!
//! With DIR, the feed is made there (and reused on the next run if it already
//! has N entries); otherwise in a temporary directory, deleted at the end.
//! 100 million entries take about 11 GB of disk (the tree file alone is
//! 8 GB: two nodes of 40 bytes per entry).
#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout, clippy::expect_used)]

use std::path::Path;
use std::time::Instant;

use kappa_log::storage::DirectoryProvider;
use kappa_log::{Feed, KeyPair};

/// The feed's block cache, in bytes: bounded, and small beside the feed.
const BLOCK_CACHE: usize = 1 << 20;

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn entry(i: u64) -> String {
    format!("{{\"entry\":{i:>19}}}")
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn open(dir: &Path) -> Feed {
    Feed::builder(DirectoryProvider::new(dir))
        .key_pair(KeyPair::from_seed(&[5; 32]))
        .block_cache(BLOCK_CACHE)
        .open()
        .unwrap()
}

/// `gets` random gets over the whole feed, each checked; returns reads/s.
fn random_gets(feed: &mut Feed, rng: &mut Rng, gets: u64) -> f64 {
    let len = feed.len();
    let start = Instant::now();
    for _ in 0..gets {
        let i = rng.below(len);
        let got = feed.get(i).unwrap().expect("every entry is present");
        assert_eq!(got, entry(i).as_bytes(), "entry {i}");
    }
    gets as f64 / start.elapsed().as_secs_f64()
}

fn disk_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = e.metadata().unwrap();
        if meta.is_dir() {
            total += disk_bytes(&e.path());
        } else {
            // Blocks in use, not the length (the signatures file is sparse).
            total += std::os::unix::fs::MetadataExt::blocks(&meta) * 512;
        }
    }
    total
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000_000);
    let gets: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let temp;
    let dir = match args.next() {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            temp = tempfile::tempdir().unwrap();
            temp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);

    let mut feed = open(&dir);
    if feed.len() != n {
        assert_eq!(feed.len(), 0, "{} holds a feed of another length", dir.display());
        let step = (n / 10).max(1000);
        let start = Instant::now();
        let mut batch: Vec<String> = Vec::with_capacity(1000);
        while feed.len() < n {
            let at = feed.len();
            batch.clear();
            batch.extend((at..(at + 1000).min(n)).map(entry));
            feed.append_batch(&batch).unwrap();
            if feed.len().is_multiple_of(step) || feed.len() == n {
                let grown = start.elapsed().as_secs_f64();
                let rate = random_gets(&mut feed, &mut rng, 10_000);
                println!(
                    "grown to {:>11} entries in {grown:7.1} s ({:.0} appends/s): 10,000 random gets at {rate:.0}/s, peak RSS {} KiB, RSS {} KiB",
                    feed.len(),
                    feed.len() as f64 / grown,
                    status_kib("VmHWM:"),
                    status_kib("VmRSS:"),
                );
            }
        }
        feed.sync_all().unwrap();
    }
    drop(feed);

    let t = Instant::now();
    let mut feed = open(&dir);
    let opened = t.elapsed();
    let rss_open = status_kib("VmRSS:");
    println!(
        "reopened {} entries ({} bytes on disk) in {:.1} ms, RSS {rss_open} KiB",
        feed.len(),
        disk_bytes(&dir),
        opened.as_secs_f64() * 1e3
    );
    for pass in 1..=2 {
        let rate = random_gets(&mut feed, &mut rng, gets);
        println!(
            "pass {pass}: {gets} random gets over all {} entries at {rate:.0} reads/s; peak RSS {} KiB, RSS {} KiB",
            feed.len(),
            status_kib("VmHWM:"),
            status_kib("VmRSS:"),
        );
    }
}
