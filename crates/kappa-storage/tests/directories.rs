//! How a [`DirectoryProvider`] finds and makes the directories of its
//! storages: new directories, existing ones with files missing, directories
//! deleted behind its back, reopening, and what a crash between the `mkdir`
//! and the files leaves.

use std::io;
use std::path::Path;

use kappa_storage::{BoxedStorage, DirectoryProvider, FilePool, Provider, RandomAccess, StorageError};

const FEED_FILES: [&str; 7] = ["kappa-head", "bitfield", "tree", "signatures", "data", "key", "secret_key"];

fn open_all(p: &DirectoryProvider, dir: &str) -> Vec<BoxedStorage> {
    FEED_FILES.iter().map(|n| p.open(&format!("{dir}/{n}")).unwrap()).collect()
}

fn on_disk(root: &Path, dir: &str) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(root.join(dir)) {
        Ok(rd) => rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return vec!["<no directory>".into()],
        Err(e) => panic!("{e}"),
    };
    names.sort();
    names
}

#[test]
fn a_new_directory_then_its_files() {
    let tmp = tempfile::tempdir().unwrap();
    let p = DirectoryProvider::with_pool(tmp.path(), FilePool::new(64));
    let mut files = open_all(&p, "0");
    // Reading a feed that is not there makes nothing.
    for f in &mut files {
        assert_eq!(f.len().unwrap(), 0);
        assert!(f.read(0, 1).is_err());
    }
    assert_eq!(on_disk(tmp.path(), "0"), ["<no directory>"]);
    for n in FEED_FILES {
        assert!(!p.exists(&format!("0/{n}")).unwrap(), "{n}");
    }
    // Writing makes the directory and the files written, and only those.
    for (i, f) in files.iter_mut().enumerate().skip(1).take(5) {
        f.write(0, &[i as u8; 4]).unwrap();
        f.sync().unwrap();
    }
    assert_eq!(on_disk(tmp.path(), "0"), ["bitfield", "data", "key", "signatures", "tree"]);
    for (i, f) in files.iter_mut().enumerate() {
        let written = (1..6).contains(&i);
        assert_eq!(f.len().unwrap(), if written { 4 } else { 0 }, "{}", FEED_FILES[i]);
        assert_eq!(p.exists(&format!("0/{}", FEED_FILES[i])).unwrap(), written);
        if written {
            assert_eq!(f.read(0, 4).unwrap(), [i as u8; 4]);
        }
    }
    // A second storage of a file made here, while the first is alive, sees it.
    assert_eq!(p.open("0/tree").unwrap().read(0, 4).unwrap(), [2; 4]);
    // Files in deeper new directories, and in the root itself.
    p.open("a/b/c/key").unwrap().write(0, b"deep").unwrap();
    p.open("top").unwrap().write(0, b"t").unwrap();
    assert_eq!(std::fs::read(tmp.path().join("a/b/c/key")).unwrap(), b"deep");
    assert_eq!(std::fs::read(tmp.path().join("top")).unwrap(), b"t");
}

#[test]
fn a_new_root_is_made_too() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("not/yet");
    let p = DirectoryProvider::with_pool(&root, FilePool::new(64));
    let mut files = open_all(&p, "3");
    assert_eq!(files[0].len().unwrap(), 0);
    files[5].write(0, b"key").unwrap();
    assert_eq!(std::fs::read(root.join("3/key")).unwrap(), b"key");
    let _lock = p.lock("LOCK").unwrap();
    assert!(root.join("LOCK").exists());
}

#[test]
fn an_existing_directory_with_some_files_missing() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("0")).unwrap();
    std::fs::write(tmp.path().join("0/key"), [9; 32]).unwrap();
    std::fs::write(tmp.path().join("0/data"), b"entries").unwrap();
    std::fs::write(tmp.path().join("0/tree"), b"").unwrap();
    let p = DirectoryProvider::with_pool(tmp.path(), FilePool::new(64));
    let mut files = open_all(&p, "0");
    let lens: Vec<u64> = files.iter_mut().map(|f| f.len().unwrap()).collect();
    assert_eq!(lens, [0, 0, 0, 0, 7, 32, 0]);
    assert_eq!(files[5].read(0, 32).unwrap(), [9; 32]);
    assert!(p.exists("0/key").unwrap() && p.exists("0/data").unwrap());
    assert!(!p.exists("0/tree").unwrap() && !p.exists("0/bitfield").unwrap());
    // Missing files are made where they belong; existing ones keep their bytes.
    files[1].write(0, b"bits").unwrap();
    files[4].write(7, b"+more").unwrap();
    files[2].write(0, b"nodes").unwrap();
    assert_eq!(std::fs::read(tmp.path().join("0/bitfield")).unwrap(), b"bits");
    assert_eq!(std::fs::read(tmp.path().join("0/data")).unwrap(), b"entries+more");
    assert_eq!(std::fs::read(tmp.path().join("0/tree")).unwrap(), b"nodes");
    assert_eq!(on_disk(tmp.path(), "0"), ["bitfield", "data", "key", "tree"]);
}

#[test]
fn a_directory_deleted_behind_our_back_is_made_again_or_a_typed_error() {
    let tmp = tempfile::tempdir().unwrap();
    // A pool of one: every storage's descriptor is closed as soon as another
    // one is used, so each operation below opens its file again.
    let p = DirectoryProvider::with_pool(tmp.path(), FilePool::new(1));
    let mut files = open_all(&p, "0");
    files[5].write(0, b"key").unwrap();
    files[2].write(0, b"tree").unwrap();
    std::fs::remove_dir_all(tmp.path().join("0")).unwrap();

    // A file made before: its reopen reports the cause.
    let err = files[5].read(0, 3).unwrap_err();
    assert!(
        matches!(&err, StorageError::Io { op: "reopen", source, .. } if source.kind() == io::ErrorKind::NotFound),
        "{err:?}"
    );
    let err = files[5].write(3, b"!").unwrap_err();
    assert!(matches!(&err, StorageError::Io { op: "reopen", .. }), "{err:?}");
    assert!(!p.exists("0/key").unwrap());
    // A file not made yet: the directory is made again.
    files[4].write(0, b"data").unwrap();
    assert_eq!(std::fs::read(tmp.path().join("0/data")).unwrap(), b"data");
    assert_eq!(files[4].read(0, 4).unwrap(), b"data");
    // A new storage of a file made before the deletion finds it missing.
    let mut key = p.open("0/key").unwrap();
    assert_eq!(key.len().unwrap(), 0);
    key.write(0, b"new key").unwrap();
    assert_eq!(std::fs::read(tmp.path().join("0/key")).unwrap(), b"new key");

    // The same with the whole root gone, and with a file where the directory was.
    std::fs::remove_dir_all(tmp.path()).unwrap();
    files[6].write(0, b"secret").unwrap();
    assert_eq!(std::fs::read(tmp.path().join("0/secret_key")).unwrap(), b"secret");
    std::fs::remove_dir_all(tmp.path().join("0")).unwrap();
    std::fs::write(tmp.path().join("0"), b"a file").unwrap();
    let err = files[0].write(0, b"head").unwrap_err();
    assert!(matches!(&err, StorageError::Io { .. }), "{err:?}");
    assert!(p.lock("0/bitfield").is_err());
    assert!(p.replace("0/policy", b"p").is_err());
}

#[test]
fn a_new_directory_made_by_somebody_else_before_ours_is_used() {
    let tmp = tempfile::tempdir().unwrap();
    let p = DirectoryProvider::with_pool(tmp.path(), FilePool::new(64));
    let mut files = open_all(&p, "0");
    assert_eq!(files[0].len().unwrap(), 0);
    // Found missing; then made by somebody else (empty) before our first write.
    std::fs::create_dir(tmp.path().join("0")).unwrap();
    files[5].write(0, b"key").unwrap();
    files[2].write(0, b"tree").unwrap();
    assert_eq!(on_disk(tmp.path(), "0"), ["key", "tree"]);
}

#[test]
fn reopening_after_creation_finds_every_file() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let p = DirectoryProvider::with_pool(tmp.path(), FilePool::new(64));
        let _lock = p.lock("0/bitfield").unwrap();
        let mut files = open_all(&p, "0");
        for (i, f) in files.iter_mut().enumerate() {
            assert_eq!(f.len().unwrap(), 0);
            if i % 2 == 0 {
                f.write(0, &[i as u8; 3]).unwrap();
            }
        }
        p.replace("0/policy", b"policy").unwrap();
    }
    // The same provider once its storages and lock dropped, a clone, and a new one.
    let first = DirectoryProvider::with_pool(tmp.path(), FilePool::new(64));
    let providers = [first.clone(), first, DirectoryProvider::with_pool(tmp.path(), FilePool::new(8))];
    for p in &providers {
        let _lock = p.lock("0/bitfield").unwrap();
        let mut files = open_all(p, "0");
        for (i, f) in files.iter_mut().enumerate() {
            if i % 2 == 0 {
                assert_eq!(f.read(0, 3).unwrap(), [i as u8; 3], "{}", FEED_FILES[i]);
            } else {
                assert_eq!(f.len().unwrap(), 0, "{}", FEED_FILES[i]);
            }
        }
        assert!(p.exists("0/policy").unwrap());
        drop(files);
    }
}

#[test]
fn a_crash_between_the_directory_and_its_files_reopens_fine() {
    // What a crash right after the `mkdir` leaves: an empty directory, or one
    // with some files made and empty.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("0")).unwrap();
    std::fs::create_dir(tmp.path().join("1")).unwrap();
    std::fs::write(tmp.path().join("1/tree"), b"").unwrap();
    std::fs::write(tmp.path().join("1/bitfield"), b"").unwrap();
    let p = DirectoryProvider::with_pool(tmp.path(), FilePool::new(64));
    for dir in ["0", "1"] {
        let _lock = p.lock(&format!("{dir}/bitfield")).unwrap();
        let mut files = open_all(&p, dir);
        for f in &mut files {
            assert_eq!(f.len().unwrap(), 0);
        }
        for f in &mut files {
            f.truncate(0).unwrap();
            f.write(0, b"x").unwrap();
        }
        drop(files);
        assert_eq!(on_disk(tmp.path(), dir), {
            let mut all = FEED_FILES.to_vec();
            all.sort();
            all
        });
    }
}

#[test]
fn many_feeds_in_new_directories_through_one_provider() {
    let tmp = tempfile::tempdir().unwrap();
    let pool = FilePool::new(32);
    let p = DirectoryProvider::with_pool(tmp.path(), pool.clone());
    let mut feeds: Vec<Vec<BoxedStorage>> = (0..50).map(|d| open_all(&p, &d.to_string())).collect();
    for (d, files) in feeds.iter_mut().enumerate() {
        for f in files.iter_mut() {
            assert_eq!(f.len().unwrap(), 0);
        }
        for f in files.iter_mut().skip(1).take(5) {
            f.truncate(0).unwrap();
            f.write(0, &[d as u8]).unwrap();
        }
    }
    for (d, files) in feeds.iter_mut().enumerate() {
        for (i, f) in files.iter_mut().enumerate() {
            match i {
                1..=5 => assert_eq!(f.read(0, 1).unwrap(), [d as u8]),
                _ => assert_eq!(f.len().unwrap(), 0),
            }
        }
    }
    assert!(pool.stats().open <= 32);
    drop(feeds);
    assert_eq!(pool.stats().storages, 0);
    assert_eq!(on_disk(tmp.path(), "49"), ["bitfield", "data", "key", "signatures", "tree"]);
}
