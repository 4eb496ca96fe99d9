//! Damage to a feed set's files: a lost `key` never hides (and so never
//! recreates) a feed, a damaged `localname` never makes `writer(name)` create a
//! second writer, and a damaged feed folder is reported without locking the set.

use std::fs;
use std::path::Path;

use kappa_multifeed::{Multifeed, MultifeedError};

const N: usize = 1000;

fn setup(dir: &Path) -> String {
    let m = Multifeed::open_dir(dir).unwrap();
    let w = m.writer("local").unwrap();
    w.append_batch((0..N).map(|i| format!("entry {i}\n"))).unwrap();
    let key = w.public_key().to_hex();
    m.close().unwrap();
    key
}

fn damage(path: &Path, how: &str) {
    let mut bytes = fs::read(path).unwrap();
    let len = bytes.len();
    match how {
        "flip-head" => bytes[0] ^= 0x5a,
        "flip-tail" => bytes[len - 1] ^= 0x5a,
        "flip-random" => bytes[len / 3] ^= 0x01,
        "truncate-half" => bytes.truncate(len / 2),
        "cut-one-byte" => bytes.truncate(len - 1),
        "delete" => {
            fs::remove_file(path).unwrap();
            return;
        }
        other => panic!("{other}"),
    }
    fs::write(path, bytes).unwrap();
}

const DAMAGES: [&str; 6] =
    ["flip-head", "flip-tail", "flip-random", "truncate-half", "cut-one-byte", "delete"];

fn assert_same_writer(dir: &Path, key: &str, what: &str) {
    let m = Multifeed::open_dir(dir).unwrap();
    let w = m.writer("local").unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(w.public_key().to_hex(), key, "{what}: a second writer was created");
    assert_eq!(w.len(), N as u64, "{what}");
    assert_eq!(m.feeds().len(), 1, "{what}");
    w.append("after").unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(w.get(0).unwrap(), Some(b"entry 0\n".to_vec()), "{what}");
    m.close().unwrap();
    assert!(!dir.join("1").exists(), "{what}: folder 1 was created");
}

#[test]
fn a_damaged_localname_never_makes_a_second_writer() {
    for how in DAMAGES {
        let tmp = tempfile::tempdir().unwrap();
        let key = setup(tmp.path());
        damage(&tmp.path().join("0/localname"), how);
        assert_same_writer(tmp.path(), &key, &format!("localname {how}"));
        assert_eq!(
            fs::read(tmp.path().join("0/localname")).unwrap(),
            b"local",
            "localname {how} not restored"
        );
    }
}

#[test]
fn a_damaged_localname_backup_changes_nothing() {
    for how in DAMAGES {
        let tmp = tempfile::tempdir().unwrap();
        let key = setup(tmp.path());
        damage(&tmp.path().join("0/kappa-localname"), how);
        assert_same_writer(tmp.path(), &key, &format!("kappa-localname {how}"));
    }
}

#[test]
fn a_writer_whose_name_is_lost_is_not_replaced_but_can_be_renamed() {
    let tmp = tempfile::tempdir().unwrap();
    let key = setup(tmp.path());
    fs::remove_file(tmp.path().join("0/localname")).unwrap();
    fs::remove_file(tmp.path().join("0/kappa-localname")).unwrap();
    let m = Multifeed::open_dir(tmp.path()).unwrap();
    let r = m.writer("local");
    assert!(matches!(r, Err(MultifeedError::UnnamedWriter { dir: 0, .. })), "{r:?}");
    assert!(!tmp.path().join("1").exists());
    m.set_local_name(0, "local").unwrap();
    assert_eq!(m.writer("local").unwrap().public_key().to_hex(), key);
    m.close().unwrap();
    drop(m);
    assert_same_writer(tmp.path(), &key, "renamed");
}

#[test]
fn a_deleted_key_file_neither_hides_nor_wipes_the_feed() {
    for file in ["key", "bitfield", "tree", "signatures", "data", "kappa-head"] {
        let tmp = tempfile::tempdir().unwrap();
        let key = setup(tmp.path());
        let data_len = fs::metadata(tmp.path().join("0/data")).unwrap().len();
        fs::remove_file(tmp.path().join("0").join(file)).unwrap();
        let m = Multifeed::open_dir(tmp.path()).unwrap();
        let w = m.writer("local").unwrap();
        assert_eq!(w.public_key().to_hex(), key, "{file}");
        assert_eq!(w.len(), N as u64, "{file}");
        w.append("after").unwrap();
        m.close().unwrap();
        if file != "data" {
            assert!(fs::metadata(tmp.path().join("0/data")).unwrap().len() > data_len, "{file}: data shrank");
        }
    }
}

#[test]
fn a_damaged_feed_folder_is_reported_and_blocks_only_a_new_writer() {
    let tmp = tempfile::tempdir().unwrap();
    setup(tmp.path());
    // A header no feed can be told apart from a foreign file by.
    damage(&tmp.path().join("0/tree"), "flip-head");
    let m = Multifeed::open_dir(tmp.path()).unwrap();
    let damaged = m.damaged_feeds();
    assert_eq!(damaged.len(), 1);
    assert_eq!(
        (damaged[0].dir, damaged[0].name.as_deref(), damaged[0].error.file),
        (0, Some("local"), "tree")
    );
    let r = m.writer("local");
    assert!(matches!(r, Err(MultifeedError::UnnamedWriter { dir: 0, .. })), "{r:?}");
    assert!(!tmp.path().join("1").exists());
    // Remote feeds still join, in a folder of their own.
    let remote = kappa_log::KeyPair::generate().public_key();
    m.add_remote(remote).unwrap();
    assert!(tmp.path().join("1/key").exists());
}

#[test]
fn a_missing_folder_does_not_hide_the_ones_after_it() {
    let tmp = tempfile::tempdir().unwrap();
    let m = Multifeed::open_dir(tmp.path()).unwrap();
    m.writer("a").unwrap().append("a").unwrap();
    m.writer("b").unwrap().append("b").unwrap();
    m.writer("c").unwrap().append("c").unwrap();
    m.close().unwrap();
    drop(m);
    fs::remove_dir_all(tmp.path().join("1")).unwrap();
    let m = Multifeed::open_dir(tmp.path()).unwrap();
    assert_eq!(m.feeds().len(), 2);
    assert_eq!(m.writer("c").unwrap().get(0).unwrap(), Some(b"c".to_vec()));
    // A new writer takes a fresh folder, not the gap.
    m.writer("d").unwrap();
    assert!(tmp.path().join("3/key").exists());
}

#[test]
fn a_creation_cut_short_after_the_name_is_started_over() {
    // Killed after writing the name, before the key: nothing to keep.
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(tmp.path().join("0")).unwrap();
    fs::write(tmp.path().join("0/localname"), b"local").unwrap();
    let m = Multifeed::open_dir(tmp.path()).unwrap();
    assert!(m.feeds().is_empty());
    m.writer("local").unwrap().append("x").unwrap();
    assert!(tmp.path().join("0/key").exists());
    assert!(!tmp.path().join("1").exists());
}
