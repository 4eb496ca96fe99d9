//! How long opening a damaged feed takes: a writer of N entries (default
//! 1,000,000, in batches of 1,000) on files, opened healthy and after each of
//! several damages, each on a fresh copy. Prints a Markdown table.
//!
//! ```text
//! cargo run --release -p kappa-log --example open_damaged [-- N]
//! ```

use std::fs;
use std::path::Path;
use std::time::Instant;

use kappa_log::{Feed, KeyPair};

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    fs::create_dir_all(to)?;
    for e in fs::read_dir(from)? {
        let e = e?;
        fs::copy(e.path(), to.join(e.file_name()))?;
    }
    Ok(())
}

fn truncate(path: &Path, keep: impl FnOnce(u64) -> u64) -> std::io::Result<()> {
    let f = fs::OpenOptions::new().write(true).open(path)?;
    let len = f.metadata()?.len();
    f.set_len(keep(len))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(1_000_000);
    let tmp = tempfile::tempdir()?;
    let base = tmp.path().join("base");
    {
        let mut feed = Feed::builder(kappa_log::storage::DirectoryProvider::new(&base))
            .key_pair(KeyPair::from_seed(&[1; 32]))
            .open()?;
        let mut i = 0;
        while i < n {
            let end = (i + 1000).min(n);
            feed.append_batch((i..end).map(|k| format!("{{\"n\":{k},\"pad\":\"xxxxxxxxxxxx\"}}\n")))?;
            i = end;
        }
    }
    type Damage = fn(&Path) -> std::io::Result<()>;
    let cases: [(&str, Damage); 7] = [
        ("healthy", |_| Ok(())),
        ("one byte cut from data", |d| truncate(&d.join("data"), |l| l - 1)),
        ("data truncated to half", |d| truncate(&d.join("data"), |l| l / 2)),
        ("last signature damaged", |d| {
            let mut s = fs::read(d.join("signatures"))?;
            let at = s.len() - 10;
            s[at] ^= 0x55;
            fs::write(d.join("signatures"), s)
        }),
        ("bitfield deleted", |d| fs::remove_file(d.join("bitfield"))),
        ("tree truncated to half", |d| truncate(&d.join("tree"), |l| l / 2)),
        ("head record and last signature lost", |d| {
            fs::remove_file(d.join("kappa-head"))?;
            truncate(&d.join("signatures"), |l| l - 64)
        }),
    ];
    println!("| damage ({n} entries) | open | length | holes | repaired on open |");
    println!("| --- | --- | --- | --- | --- |");
    for (i, (name, damage)) in cases.iter().enumerate() {
        let dir = tmp.path().join(format!("case{i}"));
        copy_dir(&base, &dir)?;
        damage(&dir)?;
        let started = Instant::now();
        let feed = Feed::open_dir(&dir)?;
        let took = started.elapsed();
        let r = feed.recovery();
        println!(
            "| {name} | {:.1} ms | {} | {} | {} |",
            took.as_secs_f64() * 1e3,
            feed.len(),
            r.missing_blocks,
            if r.repaired.is_empty() { "-".to_owned() } else { r.repaired.join("; ") }
        );
        drop(feed);
        fs::remove_dir_all(&dir)?;
    }
    Ok(())
}
