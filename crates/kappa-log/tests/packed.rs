//! Packed batches (`SharedFeed::append_packed`, the path of `kappa append -`)
//! write exactly what the same blocks appended as separate buffers write,
//! durable (through the group commit) or not, and fail as they do.

use std::path::Path;

use kappa_log::storage::DirectoryProvider;
use kappa_log::{Feed, KeyPair, LogError, PackedBlocks, SharedFeed, SyncPolicy, MAX_BLOCK_SIZE};
use proptest::prelude::*;

fn open(dir: &Path, sync: SyncPolicy) -> SharedFeed {
    SharedFeed::new(
        Feed::builder(DirectoryProvider::new(dir))
            .key_pair(KeyPair::from_seed(&[9; 32]))
            .sync(sync)
            .open()
            .unwrap(),
    )
}

/// Every file of a feed directory, by name.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut all: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap())
        })
        .collect();
    all.sort();
    all
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn packed_batches_write_what_separate_blocks_write(
        batches in proptest::collection::vec(
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..300),
            1..6,
        ),
        durable in any::<bool>(),
    ) {
        let sync = if durable { SyncPolicy::PerBatch } else { SyncPolicy::None };
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (plain, packed) = (open(a.path(), sync), open(b.path(), sync));
        for batch in &batches {
            let r1 = plain.append_batch_owned(batch.clone()).unwrap();
            let r2 = packed.append_packed(batch.iter().collect()).unwrap();
            prop_assert_eq!(r1, r2);
        }
        plain.lock().sync_all().unwrap();
        packed.lock().sync_all().unwrap();
        let mut at = 0;
        for batch in &batches {
            for block in batch {
                prop_assert_eq!(packed.get(at).unwrap(), Some(block.clone()));
                at += 1;
            }
        }
        drop((plain, packed));
        prop_assert_eq!(files(a.path()), files(b.path()));
    }
}

#[test]
fn a_packed_batch_with_a_block_too_large_appends_nothing() {
    for sync in [SyncPolicy::None, SyncPolicy::PerBatch] {
        let dir = tempfile::tempdir().unwrap();
        let feed = open(dir.path(), sync);
        feed.append_packed(["a", "b"].into_iter().collect()).unwrap();
        let mut blocks = PackedBlocks::new();
        blocks.push(b"fine");
        blocks.push(&vec![7; MAX_BLOCK_SIZE + 1]);
        let err = feed.append_packed(blocks).unwrap_err();
        assert!(matches!(err, LogError::BlockTooLarge { .. }), "{err}");
        assert_eq!(feed.len(), 2);
        assert_eq!(feed.append_packed(["c"].into_iter().collect()).unwrap(), 2..3);
        assert_eq!(feed.lock().audit().unwrap(), 3);
    }
}

#[test]
fn concurrent_packed_and_plain_durable_appends_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let feed = open(dir.path(), SyncPolicy::PerBatch);
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let f = feed.clone();
            s.spawn(move || {
                for i in 0..25u32 {
                    let blocks: Vec<String> = (0..10).map(|k| format!("{t}/{i}/{k}")).collect();
                    let seqs = if t % 2 == 0 {
                        f.append_packed(blocks.iter().collect()).unwrap()
                    } else {
                        f.append_batch_owned(blocks.iter().map(|b| b.clone().into_bytes()).collect()).unwrap()
                    };
                    for (seq, b) in seqs.zip(&blocks) {
                        assert_eq!(f.get(seq).unwrap(), Some(b.clone().into_bytes()));
                    }
                }
            });
        }
    });
    assert_eq!(feed.len(), 1000);
    assert_eq!(feed.lock().audit().unwrap(), 1000);
}

/// A batch large enough that its leaves are hashed on two threads: the same
/// files as the blocks appended one buffer each, durable or not.
#[test]
fn a_large_packed_batch_writes_what_separate_blocks_write() {
    for sync in [SyncPolicy::None, SyncPolicy::PerBatch] {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (plain, packed) = (open(a.path(), sync), open(b.path(), sync));
        for round in 0..2u32 {
            let blocks: Vec<Vec<u8>> = (0..20_001u32)
                .map(|i| format!("{{\"round\":{round},\"i\":{i}}}").repeat(1 + (i % 3) as usize).into_bytes())
                .collect();
            let r1 = plain.append_batch_owned(blocks.clone()).unwrap();
            let r2 = packed.append_packed(blocks.iter().collect()).unwrap();
            assert_eq!(r1, r2);
        }
        assert_eq!(packed.lock().audit().unwrap(), 40_002);
        drop((plain, packed));
        assert!(files(a.path()) == files(b.path()), "the files differ ({sync:?})");
    }
}
