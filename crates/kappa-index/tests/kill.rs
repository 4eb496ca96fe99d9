//! A real crash: a child process indexing into redb is killed with SIGKILL at
//! random moments, 50 times; each restart continues where the last committed
//! batch left off. In the end every entry has been applied exactly once and the
//! view equals the model.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use kappa_index::Indexer;
use kappa_log::encoding::{Codec, Json};
use kappa_multifeed::Multifeed;
use kappa_view::{Entry, Tx, View, ViewError, ViewStore};
use kappa_view_redb::RedbViews;

/// Entries appended before each round, so every child has work when killed.
const PER_ROUND: u64 = 5_000;
const ROUNDS: u32 = 50;

/// Counts how often each entry was applied (one row per entry id).
struct Counter(Arc<dyn ViewStore>);

impl View for Counter {
    fn store(&self) -> &dyn ViewStore {
        &*self.0
    }
    fn map(&self, entries: &[Entry], tx: &mut Tx<'_>) -> Result<(), ViewError> {
        for e in entries {
            let key = format!("{}:{:08}", &e.feed.to_hex()[..8], e.seq).into_bytes();
            let n = tx.get(&key)?.map_or(0, |v| u64::from_be_bytes(v.try_into().unwrap_or([0; 8])));
            tx.put(key, (n + 1).to_be_bytes().to_vec());
        }
        Ok(())
    }
}

/// The child: index until done (or killed).
fn child(dir: &std::path::Path) {
    let mf = Multifeed::open_dir(dir.join("feeds")).unwrap();
    let views = RedbViews::open(dir.join("views.redb")).unwrap();
    let store: Arc<dyn ViewStore> = Arc::new(views.store("counter").unwrap());
    let ix = Indexer::start("counter", Arc::new(Counter(store)), &mf).unwrap();
    futures::executor::block_on(ix.ready()).unwrap();
}

#[test]
fn sigkill_while_indexing_into_redb() {
    if let Ok(dir) = std::env::var("KAPPA_KILL_CHILD_DIR") {
        child(std::path::Path::new(&dir));
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let codec = Json::<serde_json::Value>::new();
    let mut seed = 0x5EED_u64;
    let mut killed = 0;
    let mut total = 0;
    for round in 0..ROUNDS {
        {
            // New entries for this round (the previous child is gone: no lock).
            let mf = Multifeed::open_dir(tmp.path().join("feeds")).unwrap();
            let w = mf.writer(["a", "b"][round as usize % 2]).unwrap();
            let start = w.len();
            let mut i = start;
            while i < start + PER_ROUND {
                let end = (i + 1000).min(start + PER_ROUND);
                let batch: Vec<Vec<u8>> =
                    (i..end).map(|k| codec.encode(&serde_json::json!({"key": k})).unwrap()).collect();
                w.append_batch(batch).unwrap();
                i = end;
            }
            total += PER_ROUND;
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut c = Command::new(&exe)
            .args(["sigkill_while_indexing_into_redb", "--exact", "--nocapture"])
            .env("KAPPA_KILL_CHILD_DIR", tmp.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(10 + seed % 50));
        if c.try_wait().unwrap().is_none() {
            c.kill().unwrap(); // SIGKILL
            killed += 1;
        }
        let _ = c.wait();
    }
    // Finish in this process and check.
    child(tmp.path());
    let views = RedbViews::open(tmp.path().join("views.redb")).unwrap();
    let store = views.store("counter").unwrap();
    let rows = store.scan((std::ops::Bound::Unbounded, std::ops::Bound::Unbounded), false, None).unwrap();
    assert_eq!(rows.len() as u64, total, "every entry indexed");
    for (k, v) in rows {
        assert_eq!(v, 1u64.to_be_bytes().to_vec(), "{} applied more than once", String::from_utf8_lossy(&k));
    }
    eprintln!("killed {killed} of {ROUNDS} children mid-way; {total} entries each indexed once");
    assert!(killed >= ROUNDS / 2, "only {killed} of {ROUNDS} children were killed mid-way");
}
