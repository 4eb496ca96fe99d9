//! What lives in the file: reopening, several views, locking, files that are not
//! view databases, durability and crashes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ops::Bound::Unbounded;
use std::path::Path;
use std::process::Command;

use kappa_view::{Batch, StoreError, StoreErrorKind, ViewStore};
use kappa_view_redb::{Durability, RedbError, RedbViews};

fn put(k: &[u8], v: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
    (k.to_vec(), Some(v.to_vec()))
}

fn commit(s: &impl ViewStore, ops: Vec<(Vec<u8>, Option<Vec<u8>>)>, state: Option<&[u8]>) {
    s.commit(Batch { ops, state: state.map(<[u8]>::to_vec) }).unwrap();
}

fn all(s: &impl ViewStore) -> Vec<(Vec<u8>, Vec<u8>)> {
    s.scan((Unbounded, Unbounded), false, None).unwrap()
}

#[test]
fn rows_and_state_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("views.redb");
    {
        let views = RedbViews::open(&path).unwrap();
        let s = views.store("kv").unwrap();
        commit(&s, (0..1000u32).map(|i| put(&i.to_be_bytes(), b"v")).collect(), Some(b"st-1"));
        commit(&s, vec![(0u32.to_be_bytes().to_vec(), None), put(b"z", b"last")], Some(b"st-2"));
    }
    let views = RedbViews::open(&path).unwrap();
    let s = views.store("kv").unwrap();
    assert_eq!(s.state().unwrap(), Some(b"st-2".to_vec()));
    assert_eq!(s.get(&0u32.to_be_bytes()).unwrap(), None);
    assert_eq!(s.get(&999u32.to_be_bytes()).unwrap(), Some(b"v".to_vec()));
    assert_eq!(s.get(b"z").unwrap(), Some(b"last".to_vec()));
    assert_eq!(all(&s).len(), 1000);
    assert_eq!(views.views().unwrap(), ["kv"]);
}

#[test]
fn views_in_one_file_are_independent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("views.redb");
    {
        let views = RedbViews::open(&path).unwrap();
        let (a, b) = (views.store("a").unwrap(), views.store("b").unwrap());
        commit(&a, vec![put(b"k", b"from a")], Some(b"sa"));
        commit(&b, vec![put(b"k", b"from b"), put(b"only-b", b"1")], Some(b"sb"));
        assert_eq!(a.get(b"k").unwrap(), Some(b"from a".to_vec()));
        assert_eq!(a.get(b"only-b").unwrap(), None);
        // A view whose name is another's plus a suffix shares nothing either.
        let a2 = views.store("a/x").unwrap();
        assert_eq!(a2.get(b"k").unwrap(), None);
        assert_eq!(a2.state().unwrap(), None);

        a.clear().unwrap();
        assert_eq!(all(&a), vec![]);
        assert_eq!(a.state().unwrap(), None);
        assert_eq!(b.get(b"k").unwrap(), Some(b"from b".to_vec()), "clearing a leaves b");
        assert_eq!(b.state().unwrap(), Some(b"sb".to_vec()));
        assert_eq!(views.views().unwrap(), ["b"], "a cleared view is gone");
    }
    let views = RedbViews::open(&path).unwrap();
    let (a, b) = (views.store("a").unwrap(), views.store("b").unwrap());
    assert_eq!(all(&a), vec![]);
    assert_eq!(a.state().unwrap(), None);
    assert_eq!(all(&b).len(), 2);
    assert_eq!(b.state().unwrap(), Some(b"sb".to_vec()));
    // Clones and second handles of a view share it.
    let b2 = views.store("b").unwrap();
    commit(&b2.clone(), vec![put(b"new", b"1")], None);
    assert_eq!(b.get(b"new").unwrap(), Some(b"1".to_vec()));
}

#[test]
fn a_second_open_of_an_open_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("views.redb");
    let views = RedbViews::open(&path).unwrap();
    let err = RedbViews::open(&path).unwrap_err();
    assert!(matches!(err, RedbError::Locked { .. }), "{err:?}");
    assert!(err.to_string().contains("already open"), "{err}");
    assert_eq!(StoreError::from(err).kind(), StoreErrorKind::Backend);

    // The lock lives as long as any store made from the database.
    let store = views.store("v").unwrap();
    drop(views);
    assert!(matches!(RedbViews::open(&path), Err(RedbError::Locked { .. })));
    drop(store);
    let views = RedbViews::open(&path).unwrap();
    assert_eq!(views.views().unwrap(), Vec::<String>::new());
}

#[test]
fn a_second_process_is_refused_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("views.redb");
    let _views = RedbViews::open(&path).unwrap();
    let out = child("child_opens", &path);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("CHILD-OPEN: Err(Locked"), "{stdout}");
}

/// Run by `a_second_process_is_refused_too` in a child process.
#[test]
fn child_opens() {
    let Some(path) = std::env::var_os(CHILD_ENV) else { return };
    println!("CHILD-OPEN: {:?}", RedbViews::open(path).map(|_| ()));
}

fn assert_not_redb(path: &Path) {
    let err = RedbViews::open(path).unwrap_err();
    assert!(matches!(err, RedbError::NotRedb { .. } | RedbError::Corrupt { .. }), "{err:?}");
    assert_eq!(StoreError::from(err).kind(), StoreErrorKind::Corrupt);
}

#[test]
fn garbage_files_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for (i, len) in [1usize, 8, 100, 4096, 70_000, 1 << 20].into_iter().enumerate() {
        let path = dir.path().join(format!("garbage-{i}"));
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(&path, &bytes).unwrap();
        assert_not_redb(&path);
        // The file is left alone.
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }
    let text = dir.path().join("text");
    std::fs::write(&text, "not a database\n".repeat(1000)).unwrap();
    assert_not_redb(&text);
}

#[test]
fn open_errors_keep_their_typed_cause() {
    use std::error::Error as _;
    use std::io::ErrorKind;

    let dir = tempfile::tempdir().unwrap();
    // Not a redb file: redb's I/O error (invalid data) is the source.
    let text = dir.path().join("text");
    std::fs::write(&text, "not a database\n".repeat(1000)).unwrap();
    let err = RedbViews::open(&text).unwrap_err();
    let message = err.to_string();
    match &err {
        RedbError::NotRedb { reason, .. } => {
            let io = err.source().and_then(|s| s.downcast_ref::<std::io::Error>()).expect("the io::Error");
            assert_eq!(io.kind(), ErrorKind::InvalidData);
            // The message still says what redb said.
            assert!(message.ends_with(&io.to_string()) && reason == &io.to_string(), "{message}");
        }
        RedbError::Corrupt { .. } => assert!(err.source().is_some(), "{err:?}"),
        other => panic!("not NotRedb or Corrupt: {other:?}"),
    }
    // The StoreError made of it reaches the same cause.
    let store = StoreError::from(err.clone());
    assert_eq!(store.downcast_ref::<RedbError>(), Some(&err));
    assert!(store.downcast_ref::<std::io::Error>().is_some());

    // A path under a regular file: the file system's error is the source.
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let err = RedbViews::open(file.join("views.redb")).unwrap_err();
    assert!(matches!(err, RedbError::Backend { .. }), "{err:?}");
    let io = err.source().and_then(|s| s.downcast_ref::<std::io::Error>()).expect("the io::Error");
    assert_eq!(io.kind(), ErrorKind::NotADirectory);
    assert!(err.to_string().contains(&io.to_string()), "{err}");

    // A directory that does not exist: redb's open error is the source, with
    // the I/O error in it.
    let err = RedbViews::open(dir.path().join("missing/views.redb")).unwrap_err();
    assert!(matches!(err, RedbError::Backend { .. }), "{err:?}");
    let redb_err =
        err.source().and_then(|s| s.downcast_ref::<redb::DatabaseError>()).expect("redb's open error");
    match redb_err {
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) => {
            assert_eq!(io.kind(), ErrorKind::NotFound)
        }
        other => panic!("not an I/O error: {other:?}"),
    }
}

/// Every operation on `views`' view "v" returns (an error or a result), never panics.
fn exercise(views: &RedbViews) -> Vec<String> {
    let mut seen = Vec::new();
    let mut note = |r: Result<String, StoreError>| seen.push(r.unwrap_or_else(|e| format!("err {e}")));
    let s = views.store("v").unwrap();
    note(s.scan((Unbounded, Unbounded), false, None).map(|r| format!("{} rows", r.len())));
    note(s.scan((Unbounded, Unbounded), true, Some(10)).map(|r| format!("{} rows", r.len())));
    note(s.get(&4000u32.to_be_bytes()).map(|v| format!("{v:?}")));
    note(s.state().map(|v| format!("{v:?}")));
    note(s.commit(Batch { ops: vec![put(b"k", b"v")], state: None }).map(|()| "committed".into()));
    note(s.clear().map(|()| "cleared".into()));
    note(views.views().map(|v| format!("{v:?}")));
    seen
}

#[test]
fn a_damaged_view_database_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("views.redb");
    {
        let views = RedbViews::open(&path).unwrap();
        let s = views.store("v").unwrap();
        commit(&s, (0..5000u32).map(|i| put(&i.to_be_bytes(), &[7; 30])).collect(), Some(b"st"));
    }
    let good = std::fs::read(&path).unwrap();
    // Cut short: a `Corrupt` error ("truncated below stored layout").
    for cut in [10, 600, good.len() / 2, good.len() - 100] {
        std::fs::write(&path, &good[..cut]).unwrap();
        let err = RedbViews::open(&path).unwrap_err();
        assert!(matches!(err, RedbError::Corrupt { .. }), "cut at {cut}: {err:?}");
    }
    // Bytes overwritten inside: redb may not notice at open (it checks checksums
    // only when repairing), and panics on some damaged pages: every operation must
    // still come back with a result or an error.
    for at in [1, 2, 3, 4, 5, 6, 7].map(|n| good.len() * n / 8) {
        let mut bad = good.clone();
        bad[at..at + 4096].iter_mut().for_each(|b| *b ^= 0x55);
        std::fs::write(&path, &bad).unwrap();
        match RedbViews::open(&path) {
            Err(e) => assert_eq!(StoreError::from(e).kind(), StoreErrorKind::Corrupt),
            Ok(views) => {
                let _ = exercise(&views);
            }
        }
    }
}

#[test]
fn another_applications_redb_file_is_incompatible() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(redb::TableDefinition::<u64, u64>::new("their_table")).unwrap().insert(1, 2).unwrap();
        tx.commit().unwrap();
    }
    let err = RedbViews::open(&path).unwrap_err();
    assert!(matches!(err, RedbError::Incompatible { .. }), "{err:?}");
    assert!(err.to_string().contains("their_table"), "{err}");
    assert_eq!(StoreError::from(err).kind(), StoreErrorKind::Corrupt);
}

#[test]
fn empty_view_names_are_refused() {
    let views = RedbViews::in_memory().unwrap();
    assert!(views.store("").is_err());
    assert_eq!(views.store("x").unwrap().view_name(), "x");
}

#[test]
fn non_durable_commits_are_visible_at_once_and_kept_by_a_clean_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("views.redb");
    {
        let views = RedbViews::open(&path).unwrap();
        let s = views.store("v").unwrap();
        assert_eq!(s.durability(), Durability::Immediate);
        s.set_durability(Durability::None);
        assert_eq!(s.clone().durability(), Durability::None, "clones share the setting");
        for i in 0..50u32 {
            commit(&s, vec![put(&i.to_be_bytes(), b"x")], Some(&i.to_be_bytes()));
        }
        assert_eq!(all(&s).len(), 50);
        s.clear().unwrap();
        commit(&s, vec![put(b"after-clear", b"x")], Some(b"final"));
    }
    let views = RedbViews::open(&path).unwrap();
    let s = views.store("v").unwrap();
    assert_eq!(all(&s), vec![(b"after-clear".to_vec(), b"x".to_vec())]);
    assert_eq!(s.state().unwrap(), Some(b"final".to_vec()));
}

const CHILD_ENV: &str = "KAPPA_VIEW_REDB_CHILD_PATH";

/// Runs one test of this binary in a child process, with `path` in its environment.
fn child(test: &str, path: &Path) -> std::process::Output {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, path)
        .output()
        .unwrap()
}

/// Commits 20 durable batches, then non-durable ones, then aborts the process
/// (a crash: no clean close). Run by `a_crash_loses_non_durable_commits_whole`.
#[test]
fn child_crashes_after_non_durable_commits() {
    let Some(path) = std::env::var_os(CHILD_ENV) else { return };
    let views = RedbViews::open(path).unwrap();
    let s = views.store("v").unwrap();
    for round in 1..=20u32 {
        let ops = (0..100u32).map(|i| put(&i.to_be_bytes(), &round.to_be_bytes())).collect();
        commit(&s, ops, Some(&round.to_be_bytes()));
    }
    s.set_durability(Durability::None);
    for round in 21..=40u32 {
        let ops = (0..100u32).map(|i| put(&i.to_be_bytes(), &round.to_be_bytes())).collect();
        commit(&s, ops, Some(&round.to_be_bytes()));
    }
    assert_eq!(s.state().unwrap(), Some(40u32.to_be_bytes().to_vec()));
    std::process::abort();
}

#[test]
fn a_crash_loses_non_durable_commits_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("views.redb");
    let out = child("child_crashes_after_non_durable_commits", &path);
    assert!(!out.status.success(), "the child aborts");
    let views = RedbViews::open(&path).unwrap();
    let s = views.store("v").unwrap();
    // Back to the last durable commit: rows and state of round 20, together.
    assert_eq!(s.state().unwrap(), Some(20u32.to_be_bytes().to_vec()));
    let rows = all(&s);
    assert_eq!(rows.len(), 100);
    assert!(rows.iter().all(|(_, v)| v == &20u32.to_be_bytes()), "{rows:?}");
}

/// Commits durable batches until another thread aborts the process mid-stream.
/// Run by `a_crash_during_commits_keeps_batches_whole`.
#[test]
fn child_crashes_while_committing() {
    let Some(path) = std::env::var_os(CHILD_ENV) else { return };
    let views = RedbViews::open(path).unwrap();
    let s = views.store("v").unwrap();
    std::thread::spawn(|| {
        std::thread::sleep(std::time::Duration::from_millis(150));
        std::process::abort();
    });
    for round in 1u32.. {
        let ops = (0..500u32).map(|i| put(&i.to_be_bytes(), &round.to_be_bytes())).collect();
        commit(&s, ops, Some(&round.to_be_bytes()));
    }
}

#[test]
fn a_crash_during_commits_keeps_batches_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("views.redb");
    let out = child("child_crashes_while_committing", &path);
    assert!(!out.status.success(), "the child aborts");
    let views = RedbViews::open(&path).unwrap();
    let s = views.store("v").unwrap();
    let rows = all(&s);
    match s.state().unwrap() {
        None => assert!(rows.is_empty(), "rows without their state"),
        Some(state) => {
            eprintln!("recovered at round {:?} of the crashed writer", state);
            assert_eq!(rows.len(), 500);
            assert!(rows.iter().all(|(_, v)| v == &state), "rows of another batch than the state's");
        }
    }
}

#[test]
fn a_flipped_byte_in_a_row_fails_the_integrity_check_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("views.redb");
    {
        let views = RedbViews::open(&path).unwrap();
        let s = views.store("v").unwrap();
        commit(
            &s,
            (0..500u32).map(|i| put(&i.to_be_bytes(), format!("value-{i:08}").as_bytes())).collect(),
            None,
        );
    }
    let good = std::fs::read(&path).unwrap();
    let needle = b"value-00000321";
    let at = good.windows(needle.len()).position(|w| w == needle).expect("the row is in the file");
    let mut bad = good.clone();
    bad[at + 7] ^= 0x01; // "value-01000321": a plausible, wrong value
    std::fs::write(&path, &bad).unwrap();
    let err = RedbViews::open(&path).unwrap_err();
    assert!(matches!(err, RedbError::Corrupt { .. }), "{err:?}");
    assert_eq!(StoreError::from(err).kind(), StoreErrorKind::Corrupt);
}

#[test]
fn an_unusable_file_is_moved_aside_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("views.redb");
    // A healthy file is opened as it is.
    {
        let opened = RedbViews::open_or_move_aside(&path).unwrap();
        assert!(opened.moved_aside.is_none());
        commit(&opened.views.store("v").unwrap(), vec![put(b"k", b"v")], Some(b"st"));
    }
    let opened = RedbViews::open_or_move_aside(&path).unwrap();
    assert!(opened.moved_aside.is_none());
    assert_eq!(all(&opened.views.store("v").unwrap()).len(), 1);
    drop(opened);
    // Garbage, a cut file, another application's database: each is moved aside
    // (kept) and an empty view database takes its place.
    let foreign = {
        let p = dir.path().join("foreign");
        let db = redb::Database::create(&p).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(redb::TableDefinition::<u64, u64>::new("theirs")).unwrap().insert(1, 2).unwrap();
        tx.commit().unwrap();
        drop(db);
        std::fs::read(&p).unwrap()
    };
    let cut = std::fs::read(&path).unwrap()[..700].to_vec();
    for (what, bytes) in [("garbage", b"not a database\n".repeat(300)), ("cut", cut), ("foreign", foreign)] {
        std::fs::write(&path, &bytes).unwrap();
        let opened = RedbViews::open_or_move_aside(&path).unwrap();
        let moved = opened.moved_aside.clone().unwrap_or_else(|| panic!("{what}: not moved aside"));
        assert_eq!(moved.from, path);
        let name = moved.to.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("views.redb.damaged-"), "{what}: {name}");
        if what == "foreign" {
            // redb's open writes to a redb file (its header); the tables stay.
            let db = redb::Database::open(&moved.to).unwrap();
            let tx = redb::ReadableDatabase::begin_read(&db).unwrap();
            let t = tx.open_table(redb::TableDefinition::<u64, u64>::new("theirs")).unwrap();
            assert_eq!(redb::ReadableTable::get(&t, 1).unwrap().map(|v| v.value()), Some(2));
        } else {
            assert!(std::fs::read(&moved.to).unwrap() == bytes, "{what}: not kept as it was");
        }
        assert!(moved.to_string().contains(&name), "{what}: {moved}");
        assert_eq!(opened.views.views().unwrap(), Vec::<String>::new(), "{what}: a new, empty database");
        assert_eq!(opened.views.store("v").unwrap().state().unwrap(), None);
    }
    // Three moved aside in (about) one second: three names.
    let aside = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("views.redb.damaged-"))
        .count();
    assert_eq!(aside, 3);
}

#[test]
fn a_locked_file_is_not_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("views.redb");
    let _first = RedbViews::open(&path).unwrap();
    let err = RedbViews::open_or_move_aside(&path).unwrap_err();
    assert!(matches!(err, RedbError::Locked { .. }), "{err:?}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "nothing moved, nothing left behind");
}

#[test]
fn an_empty_file_or_a_killed_creation_leaves_nothing_in_the_way() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("views.redb");
    // What a creator killed part way leaves: a temporary file of another process.
    std::fs::write(dir.path().join("views.redb.new-999999999-1"), b"half a redb file").unwrap();
    std::fs::write(&path, b"").unwrap();
    {
        let views = RedbViews::open(&path).unwrap();
        commit(&views.store("v").unwrap(), vec![put(b"k", b"v")], None);
    }
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    // The seal a clean close writes beside the file (see the crate docs).
    let mut names = names;
    names.sort();
    assert_eq!(names, ["views.redb", "views.redb.seal"], "the leftover is gone, the empty file replaced");
    assert_eq!(all(&RedbViews::open(&path).unwrap().store("v").unwrap()).len(), 1);
}

/// A file a clean close left, with one view of 100 rows.
fn sealed_file(path: &Path) {
    let views = RedbViews::open(path).unwrap();
    assert!(views.is_open_for_writing(), "a new file is written at once");
    let s = views.store("kv").unwrap();
    commit(&s, (0..100u32).map(|i| put(&i.to_be_bytes(), b"v")).collect(), Some(b"st-1"));
}

#[test]
fn a_sealed_file_opens_read_only_until_the_first_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("views.redb");
    sealed_file(&path);
    let before = std::fs::read(&path).unwrap();
    {
        let views = RedbViews::open(&path).unwrap();
        assert!(!views.is_open_for_writing());
        let s = views.store("kv").unwrap();
        assert_eq!(all(&s).len(), 100);
        assert_eq!(s.state().unwrap(), Some(b"st-1".to_vec()));
        assert_eq!(views.views().unwrap(), ["kv"]);
        s.sync().unwrap();
        views.sync().unwrap();
        assert!(!views.is_open_for_writing(), "a sync with nothing to sync writes nothing");
    }
    assert_eq!(std::fs::read(&path).unwrap(), before, "reading changed not one byte of the file");
    {
        let views = RedbViews::open(&path).unwrap();
        assert!(!views.is_open_for_writing(), "still sealed");
        let s = views.store("kv").unwrap();
        commit(&s, vec![put(b"new", b"row")], Some(b"st-2"));
        assert!(views.is_open_for_writing(), "the first commit reopened it for writing");
        assert_eq!(s.get(b"new").unwrap(), Some(b"row".to_vec()));
        assert_eq!(all(&s).len(), 101);
    }
    let views = RedbViews::open(&path).unwrap();
    assert!(!views.is_open_for_writing(), "sealed again by the clean close");
    let s = views.store("kv").unwrap();
    assert_eq!(s.state().unwrap(), Some(b"st-2".to_vec()));
    assert_eq!(all(&s).len(), 101);
    s.clear().unwrap();
    assert!(views.is_open_for_writing(), "a clear writes too");
    assert_eq!(all(&s).len(), 0);
}

#[test]
fn readers_in_flight_survive_the_reopen_for_writing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("views.redb");
    sealed_file(&path);
    let views = RedbViews::open(&path).unwrap();
    assert!(!views.is_open_for_writing());
    let s = views.store("kv").unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (s, stop) = (s.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) || reads < 100 {
                    let rows = all(&s);
                    assert!(rows.len() == 100 || rows.len() == 101, "{}", rows.len());
                    assert_eq!(s.get(&7u32.to_be_bytes()).unwrap(), Some(b"v".to_vec()));
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    commit(&s, vec![put(b"new", b"row")], Some(b"st-2"));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for r in readers {
        assert!(r.join().unwrap() >= 100);
    }
    assert!(views.is_open_for_writing());
}

#[test]
fn a_damaged_sealed_file_gets_the_full_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("views.redb");
    sealed_file(&path);
    // A byte of a row value (they are all "v") turned into "w".
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.windows(5).rposition(|w| w == [0, 0, 0, 99, b'v']).map(|i| i + 4);
    let at = at.unwrap_or_else(|| bytes.iter().rposition(|&b| b == b'v').unwrap());
    bytes[at] = b'w';
    std::fs::write(&path, &bytes).unwrap();
    let err = RedbViews::open(&path).unwrap_err();
    assert!(matches!(err, RedbError::Corrupt { .. }), "{err:?}");
}

#[test]
fn readers_share_a_sealed_file_and_a_writer_needs_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("views.redb");
    sealed_file(&path);
    let first = RedbViews::open(&path).unwrap();
    let second = RedbViews::open(&path).unwrap();
    assert!(!first.is_open_for_writing() && !second.is_open_for_writing());
    assert_eq!(all(&second.store("kv").unwrap()).len(), 100);
    // Neither can write while the other has the file open.
    let err =
        second.store("kv").unwrap().commit(Batch { ops: vec![put(b"x", b"y")], state: None }).unwrap_err();
    assert!(err.to_string().contains("already open"), "{err}");
    assert_eq!(all(&second.store("kv").unwrap()).len(), 100, "the refused writer still reads");
    drop(second);
    commit(&first.store("kv").unwrap(), vec![put(b"x", b"y")], None);
    assert_eq!(all(&first.store("kv").unwrap()).len(), 101);
    // And a writer keeps every other open out.
    assert!(matches!(RedbViews::open(&path), Err(RedbError::Locked { .. })));
}
