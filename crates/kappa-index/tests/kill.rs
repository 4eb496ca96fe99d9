//! A real crash: a child process indexing into redb is killed with SIGKILL at
//! random moments, 50 times; each restart continues where the last committed
//! batch left off. In the end every entry has been applied exactly once and the
//! view equals the model.
//!
//! The first children are killed on purpose while they create `views.redb`
//! (between its temporary file appearing and the file being in place): the next
//! child must open the directory as if nothing had been there.

use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kappa_index::Indexer;
use kappa_log::encoding::{Codec, Json};
use kappa_multifeed::Multifeed;
use kappa_view::{Entry, Tx, View, ViewError, ViewStore};
use kappa_view_redb::RedbViews;

/// Entries appended before each round, so every child has work when killed.
const PER_ROUND: u64 = 5_000;
const ROUNDS: u32 = 50;
/// Children killed while creating the view database, before the rounds.
const CREATION_KILLS: u32 = 12;

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

fn spawn_child(exe: &std::path::Path, dir: &std::path::Path) -> Child {
    Command::new(exe)
        .args(["sigkill_while_indexing_into_redb", "--exact", "--nocapture"])
        .env("KAPPA_KILL_CHILD_DIR", dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Whether a temporary file of a view file being created is in `dir`.
fn creating(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("views.redb.new-"))
}

/// Polls (without sleeping) until `cond` holds, returning when; `None` if the
/// child exited first.
fn wait_for(c: &mut Child, mut cond: impl FnMut() -> bool) -> Option<Instant> {
    loop {
        if cond() {
            return Some(Instant::now());
        }
        if c.try_wait().unwrap().is_some() {
            return cond().then(Instant::now);
        }
    }
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
    let views_file = tmp.path().join("views.redb");
    // How long creating the view file takes here: from its temporary file
    // appearing to the file being in place, in a child left alone.
    let creation = {
        let mut c = spawn_child(&exe, tmp.path());
        let started = wait_for(&mut c, || creating(tmp.path()) || views_file.exists());
        let started = started.expect("the child creates the view file");
        let done = wait_for(&mut c, || views_file.exists()).expect("the child finishes creating it");
        let _ = c.kill();
        let _ = c.wait();
        done.duration_since(started)
    };
    let mut mid_creation = 0;
    for attempt in 0..CREATION_KILLS {
        // Each attempt starts without a view file (views are derived: a missing
        // file is a rebuild from scratch, which counts every entry once again).
        std::fs::remove_file(&views_file)
            .unwrap_or_else(|e| assert_eq!(e.kind(), std::io::ErrorKind::NotFound));
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut c = spawn_child(&exe, tmp.path());
        let seen = wait_for(&mut c, || creating(tmp.path()) || views_file.exists());
        // Somewhere inside the creation (the first attempts at once).
        let delay =
            if attempt < 3 { Duration::ZERO } else { creation.mul_f64((seed % 1000) as f64 / 1000.0) };
        if let Some(seen) = seen {
            while seen.elapsed() < delay {
                std::hint::spin_loop();
            }
        }
        let _ = c.kill();
        let _ = c.wait();
        if !views_file.exists() && creating(tmp.path()) {
            mid_creation += 1;
        }
        // Whatever the moment, the file opens afterwards (created if missing).
        drop(RedbViews::open(&views_file).unwrap_or_else(|e| panic!("after kill {attempt}: {e}")));
    }
    eprintln!("{mid_creation} of {CREATION_KILLS} children killed while creating the view file ({creation:?} to create)");
    assert!(mid_creation >= 1, "no child was killed while creating the view file");
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
        let mut c = spawn_child(&exe, tmp.path());
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
