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
fn a_short_key_file_is_rebuilt_and_the_feed_kept() {
    let disk = MemoryProvider::new();
    feed_with_batches(&disk);
    disk.storage("key").truncate(5).unwrap();
    let mut feed = Feed::builder(disk.clone()).open().unwrap();
    assert_eq!(feed.public_key(), &KeyPair::from_seed(&[4; 32]).public_key());
    assert_eq!((feed.len(), feed.is_writable()), (6, true));
    assert!(!feed.recovery().repaired.is_empty());
    assert_eq!(disk.storage("key").to_vec(), KeyPair::from_seed(&[4; 32]).public_key().as_bytes());
    assert_eq!(feed.get(5).unwrap(), Some(b"f".to_vec()));
}

#[test]
fn a_lost_key_that_nothing_can_rebuild_is_an_error_and_nothing_is_touched() {
    let disk = MemoryProvider::new();
    feed_with_batches(&disk);
    disk.storage("secret_key").truncate(0).unwrap();
    disk.storage("kappa-head").truncate(0).unwrap();
    disk.storage("key").truncate(0).unwrap();
    let before: Vec<Vec<u8>> =
        ["tree", "data", "signatures", "bitfield"].iter().map(|f| disk.storage(f).to_vec()).collect();
    assert_eq!(corrupt_file(Feed::builder(disk.clone()).open()), "key");
    let after: Vec<Vec<u8>> =
        ["tree", "data", "signatures", "bitfield"].iter().map(|f| disk.storage(f).to_vec()).collect();
    assert_eq!(before, after, "a failed open must not change the files");
}

#[test]
fn a_secret_key_of_another_feed_opens_read_only_and_refuses_appends() {
    let disk = MemoryProvider::new();
    feed_with_batches(&disk);
    let other = KeyPair::from_seed(&[5; 32]);
    disk.storage("secret_key").write(0, &other.secret_key_bytes()).unwrap();
    let mut feed = Feed::builder(disk).open().unwrap();
    assert_eq!(feed.public_key(), &KeyPair::from_seed(&[4; 32]).public_key());
    assert_eq!(feed.len(), 6);
    assert!(!feed.is_writable());
    assert_eq!(feed.recovery().secret_key.as_ref().map(|e| e.file), Some("secret_key"));
    let r = feed.append("g");
    assert!(matches!(r, Err(LogError::SecretKey(CorruptError { file: "secret_key", .. }))), "{r:?}");
}

#[test]
fn a_damaged_public_half_of_the_secret_key_is_rebuilt_from_its_seed() {
    let disk = MemoryProvider::new();
    feed_with_batches(&disk);
    let original = disk.storage("secret_key").to_vec();
    disk.storage("secret_key").write(40, &[0xaa; 4]).unwrap();
    let mut feed = Feed::builder(disk.clone()).open().unwrap();
    assert!(feed.is_writable());
    assert_eq!(disk.storage("secret_key").to_vec(), original);
    feed.append("g").unwrap();
}

#[test]
fn a_damaged_seed_opens_read_only() {
    let disk = MemoryProvider::new();
    feed_with_batches(&disk);
    disk.storage("secret_key").write(3, &[0xaa]).unwrap();
    let mut feed = Feed::builder(disk).open().unwrap();
    assert!(!feed.is_writable());
    assert_eq!(feed.len(), 6);
    assert!(matches!(feed.append("g"), Err(LogError::SecretKey(_))));
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
fn a_damaged_last_signature_is_restored_from_the_head_record() {
    let disk = MemoryProvider::new();
    feed_with_batches(&disk);
    let original = disk.storage("signatures").to_vec();
    // Slot 5 holds the signature of length 6.
    disk.storage("signatures").write(32 + 64 * 5 + 10, &[0x55]).unwrap();
    let mut feed = Feed::builder(disk.clone()).open().unwrap();
    assert_eq!(feed.len(), 6);
    feed.verify().unwrap();
    assert_eq!(disk.storage("signatures").to_vec(), original);
    assert_eq!(feed.get(5).unwrap(), Some(b"f".to_vec()));
}

#[test]
fn without_the_head_record_a_damaged_last_signature_is_signed_again() {
    // The tree and data of length 6 are whole: signing the same roots again
    // gives the very bytes that were lost (Ed25519 is deterministic).
    let disk = MemoryProvider::new();
    feed_with_batches(&disk);
    let original = disk.storage("signatures").to_vec();
    disk.storage("kappa-head").truncate(0).unwrap();
    disk.storage("signatures").write(32 + 64 * 5 + 10, &[0x55]).unwrap();
    let mut feed = Feed::builder(disk.clone()).open().unwrap();
    assert_eq!(feed.len(), 6);
    feed.verify().unwrap();
    assert_eq!(disk.storage("signatures").to_vec(), original);
    feed.append("g").unwrap();
}

/// Length 6 signed, but the tree lost the root and leaf of the last batch and
/// the head record is gone: only length 5 can be proven.
fn unprovable(disk: &MemoryProvider) {
    feed_with_batches(disk);
    disk.storage("kappa-head").truncate(0).unwrap();
    disk.storage("tree").truncate(32 + 40 * 9).unwrap();
}

#[test]
fn without_the_head_record_an_unprovable_length_refuses_appends() {
    let disk = MemoryProvider::new();
    unprovable(&disk);
    let mut feed = Feed::builder(disk.clone()).open().unwrap();
    assert_eq!(feed.len(), 5);
    feed.verify().unwrap();
    assert_eq!(feed.recovery().unproven_length, Some(6));
    assert_eq!(feed.append("g"), Err(LogError::WouldFork { signed: 6, length: 5 }));
    // Explicitly accepting the loss lets it append again, and a reopen agrees.
    assert_eq!(feed.accept_loss().unwrap(), 1);
    feed.append("g").unwrap();
    drop(feed);
    let mut feed = Feed::builder(disk).open().unwrap();
    assert!(feed.recovery().unproven_length.is_none(), "{:?}", feed.recovery());
    assert_eq!(feed.get(5).unwrap(), Some(b"g".to_vec()));
}

#[test]
fn a_bitfield_ahead_of_the_tree_file_keeps_the_signed_length() {
    // As after a power loss without syncs: the bitfield reached the disk, the tree
    // of the last batch did not. The head record still proves length 6 (root 9 is
    // restored from it), and block 5's lost leaf is rebuilt from the data file:
    // its parent and sibling pin its size and hash.
    let disk = MemoryProvider::new();
    feed_with_batches(&disk);
    let tree = disk.storage("tree").to_vec();
    disk.storage("tree").truncate(32 + 40 * 9).unwrap(); // nodes 0..=8 (length 5)
    let mut feed = Feed::builder(disk.clone()).open().unwrap();
    assert_eq!(feed.len(), 6);
    feed.verify().unwrap();
    assert_eq!(feed.audit().unwrap(), 6);
    assert_eq!(disk.storage("tree").to_vec(), tree);
    assert_eq!(feed.append("g").unwrap(), 6);
    assert_eq!(feed.get(6).unwrap(), Some(b"g".to_vec()));
}

#[test]
fn a_bitfield_ahead_of_the_data_file_keeps_the_signed_length() {
    let disk = MemoryProvider::new();
    feed_with_batches(&disk);
    disk.storage("data").truncate(3).unwrap();
    let mut feed = Feed::builder(disk.clone()).open().unwrap();
    assert_eq!(feed.len(), 6);
    assert_eq!(feed.recovery().missing_blocks, 3);
    assert_eq!(feed.audit().unwrap(), 3);
    assert!(!feed.has(3) && !feed.has(5));
    assert_eq!(feed.append("g").unwrap(), 6);
    drop(feed);
    let mut feed = Feed::builder(disk).open().unwrap();
    assert_eq!(feed.get(6).unwrap(), Some(b"g".to_vec()));
    assert_eq!(feed.get(2).unwrap(), Some(b"c".to_vec()));
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

#[test]
fn a_refusal_to_append_survives_reopening() {
    // The first open corrects the bitfield in memory; the head record then
    // carries the signed length too, so losing either record later still
    // leaves the other.
    let disk = MemoryProvider::new();
    unprovable(&disk);
    for round in 0..3 {
        let mut feed = Feed::builder(disk.clone()).open().unwrap();
        assert_eq!(feed.len(), 5, "round {round}");
        assert_eq!(feed.append("g"), Err(LogError::WouldFork { signed: 6, length: 5 }), "round {round}");
    }
    disk.storage("bitfield").truncate(0).unwrap();
    let mut feed = Feed::builder(disk.clone()).open().unwrap();
    assert_eq!(feed.append("g"), Err(LogError::WouldFork { signed: 6, length: 5 }));
}
