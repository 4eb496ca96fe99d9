//! Exactly-once through SIGKILL during rebuilds and swaps: every child
//! process starts with a new view version, so it rebuilds the whole view in
//! the redb store's shadow while the live view stays; children are killed at
//! random moments and, every other round, the moment the swap begins. After
//! each kill the live view is whole (its rows agree with its stored
//! progress, each entry applied once), and in the end every entry is indexed
//! exactly once at the last version.

use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use kappa_index::{Indexer, Progress};
use kappa_multifeed::Multifeed;
use kappa_testkit::store::HookedStore;
use kappa_view::{Entry, Tx, View, ViewError, ViewStore};
use kappa_view_redb::RedbViews;

const ROUNDS: u64 = 24;
const PER_ROUND: u64 = 2_000;

/// Counts how often each entry was applied in this generation.
struct Counter {
    store: Arc<dyn ViewStore>,
    version: u64,
}

impl View for Counter {
    fn store(&self) -> &dyn ViewStore {
        &*self.store
    }
    fn map(&self, entries: &[Entry], tx: &mut Tx<'_>) -> Result<(), ViewError> {
        for e in entries {
            let key = format!("{}:{:08}", &e.feed.to_hex()[..8], e.seq).into_bytes();
            let n = tx.get(&key)?.map_or(0, |v| u64::from_be_bytes(v.try_into().unwrap_or([0; 8])));
            tx.put(key, (n + 1).to_be_bytes().to_vec());
        }
        Ok(())
    }
    fn version(&self) -> u64 {
        self.version
    }
}

fn child(dir: &Path, version: u64) {
    let mf = Multifeed::open_dir(dir.join("feeds")).unwrap();
    let views = RedbViews::open(dir.join("views.redb")).unwrap();
    let marker = dir.join("swapping");
    let store =
        HookedStore::new(views.store("counter").unwrap(), |_, s, b| s.commit(b)).shadowed(move || {
            std::fs::write(&marker, b"").unwrap();
        });
    let ix = Indexer::start("counter", Arc::new(Counter { store: Arc::new(store), version }), &mf).unwrap();
    futures::executor::block_on(ix.ready()).unwrap();
}

fn spawn_child(exe: &Path, dir: &Path, version: u64) -> Child {
    Command::new(exe)
        .args(["sigkill_during_rebuilds_and_swaps", "--exact", "--nocapture"])
        .env("KAPPA_SHADOW_KILL_DIR", dir)
        .env("KAPPA_SHADOW_KILL_VERSION", version.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// The live view is whole: as many rows as its progress counts, each applied
/// once. Returns the version and the count.
fn live_is_whole(dir: &Path) -> (Option<u64>, u64) {
    let views = RedbViews::open(dir.join("views.redb")).unwrap();
    let store = views.store("counter").unwrap();
    let rows = store.scan((std::ops::Bound::Unbounded, std::ops::Bound::Unbounded), false, None).unwrap();
    let progress = store.state().unwrap().map(|b| Progress::decode(&b).expect("a readable progress"));
    let counted = progress.as_ref().map_or(0, Progress::count);
    assert_eq!(rows.len() as u64, counted, "the live rows agree with the live progress");
    for (k, v) in rows {
        assert_eq!(v, 1u64.to_be_bytes().to_vec(), "{} applied more than once", String::from_utf8_lossy(&k));
    }
    (progress.map(|p| p.version), counted)
}

#[test]
fn sigkill_during_rebuilds_and_swaps() {
    if let Ok(dir) = std::env::var("KAPPA_SHADOW_KILL_DIR") {
        let version = std::env::var("KAPPA_SHADOW_KILL_VERSION").unwrap().parse().unwrap();
        child(Path::new(&dir), version);
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let marker = tmp.path().join("swapping");
    let mut seed = 0xC0FFEE_u64;
    let (mut total, mut killed, mut at_swap, mut swapped_before_kill) = (0, 0, 0, 0);
    for round in 0..ROUNDS {
        {
            let mf = Multifeed::open_dir(tmp.path().join("feeds")).unwrap();
            let w = mf.writer("local").unwrap();
            let start = w.len();
            w.append_batch((start..start + PER_ROUND).map(|k| format!("{{\"k\":{k}}}"))).unwrap();
            total += PER_ROUND;
        }
        let _ = std::fs::remove_file(&marker);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // A new version every round: each child rebuilds everything.
        let version = round + 2;
        let mut c = spawn_child(&exe, tmp.path(), version);
        if round % 2 == 0 {
            // Killed as the swap begins (or, if the child is quicker, after it).
            while !marker.exists() && c.try_wait().unwrap().is_none() {
                std::hint::spin_loop();
            }
            if marker.exists() {
                at_swap += 1;
            }
        } else {
            std::thread::sleep(Duration::from_millis(5 + seed % 120));
        }
        if c.try_wait().unwrap().is_none() {
            c.kill().unwrap(); // SIGKILL
            killed += 1;
        }
        let _ = c.wait();
        let (live_version, _) = live_is_whole(tmp.path());
        if live_version == Some(version) {
            swapped_before_kill += 1;
        }
    }
    // Finish in this process and check.
    let last = ROUNDS + 2;
    child(tmp.path(), last);
    let (version, count) = live_is_whole(tmp.path());
    assert_eq!((version, count), (Some(last), total), "every entry indexed once at the last version");
    eprintln!(
        "killed {killed} of {ROUNDS} children ({at_swap} as the swap began); {swapped_before_kill} swaps \
         landed before the kill; {total} entries each indexed once"
    );
    assert!(killed >= ROUNDS / 2, "only {killed} of {ROUNDS} children were killed mid-way");
    assert!(at_swap >= ROUNDS / 4, "only {at_swap} children reached the swap");
}
