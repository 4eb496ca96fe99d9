//! Damaged feed files: each gives a typed error or recovers to an earlier signed
//! state; none panics and none yields a state whose signature does not verify.

use kappa_log::storage::{MemoryProvider, RandomAccess};
use kappa_log::{CorruptError, Feed, KeyPair, LogError};

fn feed_with_batches(disk: &MemoryProvider) {
    let mut feed = Feed::builder(disk.clone()).key_pair(KeyPair::from_seed(&[4; 32])).open().unwrap();
    feed.append_batch(["a", "b", "c"]).unwrap();
    feed.append_batch(["d", "e"]).unwrap();
    feed.append("f").unwrap();
}

fn corrupt_file(r: Result<Feed, LogError>) -> &'static str {
    match r {
        Err(LogError::Corrupt(CorruptError { file, .. })) => file,
        other => panic!("expected a corrupt-file error, got {other:?}"),
    }
}

#[test]
fn short_key_in_a_feed_with_blocks_is_an_error() {
    let disk = MemoryProvider::new();
    feed_with_batches(&disk);
    disk.storage("key").truncate(5).unwrap();
    assert_eq!(corrupt_file(Feed::builder(disk).open()), "key");
}

#[test]
fn secret_key_of_another_feed_is_an_error() {
    let disk = MemoryProvider::new();
    feed_with_batches(&disk);
    let other = KeyPair::from_seed(&[5; 32]);
    disk.storage("secret_key").write(0, &other.secret_key_bytes()).unwrap();
    assert_eq!(corrupt_file(Feed::builder(disk).open()), "secret_key");
}

#[test]
fn damaged_secret_key_is_an_error() {
    let disk = MemoryProvider::new();
    feed_with_batches(&disk);
    disk.storage("secret_key").write(40, &[0xaa; 4]).unwrap();
    assert_eq!(corrupt_file(Feed::builder(disk).open()), "secret_key");
}

#[test]
fn foreign_headers_are_errors() {
    for (file, at, byte) in [("tree", 0, 0x99), ("signatures", 3, 7), ("bitfield", 5, 0x20)] {
        let disk = MemoryProvider::new();
        feed_with_batches(&disk);
        disk.storage(file).write(at, &[byte]).unwrap();
        assert_eq!(corrupt_file(Feed::builder(disk).open()), file);
    }
}

#[test]
fn opening_with_the_wrong_key_is_an_error() {
    let disk = MemoryProvider::new();
    feed_with_batches(&disk);
    let r = Feed::builder(disk).public_key(KeyPair::from_seed(&[6; 32]).public_key()).open();
    assert!(matches!(r, Err(LogError::KeyMismatch { .. })), "{r:?}");
}

#[test]
fn empty_storage_without_create_is_not_found() {
    let r = Feed::builder(MemoryProvider::new()).create(false).open();
    assert!(matches!(r, Err(LogError::NotFound)), "{r:?}");
}

#[test]
fn a_damaged_last_signature_falls_back_to_the_previous_batch() {
    let disk = MemoryProvider::new();
    feed_with_batches(&disk);
    // Slot 5 holds the signature of length 6.
    disk.storage("signatures").write(32 + 64 * 5 + 10, &[0x55]).unwrap();
    let mut feed = Feed::builder(disk).open().unwrap();
    assert_eq!(feed.len(), 5);
    feed.verify().unwrap();
    assert!(!feed.has(5));
    assert_eq!(feed.get(4).unwrap(), Some(b"e".to_vec()));
}

#[test]
fn a_bitfield_ahead_of_the_tree_file_recovers() {
    // As after a power loss without syncs: the bitfield reached the disk, the tree
    // and data of the last batch did not.
    let disk = MemoryProvider::new();
    feed_with_batches(&disk);
    disk.storage("tree").truncate(32 + 40 * 9).unwrap(); // nodes 0..=8 (length 5)
    let mut feed = Feed::builder(disk.clone()).open().unwrap();
    assert_eq!(feed.len(), 5);
    feed.verify().unwrap();
    assert_eq!(feed.audit().unwrap(), 5);
    feed.append("g").unwrap();
    assert_eq!(feed.get(5).unwrap(), Some(b"g".to_vec()));
}

#[test]
fn a_bitfield_ahead_of_the_data_file_recovers() {
    let disk = MemoryProvider::new();
    feed_with_batches(&disk);
    disk.storage("data").truncate(3).unwrap();
    let mut feed = Feed::builder(disk).open().unwrap();
    assert_eq!(feed.len(), 3);
    assert_eq!(feed.audit().unwrap(), 3);
}

#[test]
fn garbage_everywhere_never_panics() {
    let mut seed = 0x9E3779B97F4A7C15u64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..300 {
        let disk = MemoryProvider::new();
        feed_with_batches(&disk);
        let names = ["key", "secret_key", "tree", "data", "signatures", "bitfield"];
        for _ in 0..(1 + rand() % 4) {
            let name = names[(rand() % 6) as usize];
            let mut f = disk.storage(name);
            let len = f.len().unwrap().max(1);
            if rand() % 5 == 0 {
                f.truncate(rand() % (len + 8)).unwrap();
            } else {
                f.write(rand() % (len + 4), &[(rand() & 0xff) as u8]).unwrap();
            }
        }
        if let Ok(mut feed) = Feed::builder(disk).open() {
            feed.verify().unwrap_or_else(|e| panic!("round {round}: opened an unverifiable state: {e}"));
            for i in 0..feed.len() {
                let _ = feed.get(i);
            }
            let _ = feed.audit();
        }
    }
}
