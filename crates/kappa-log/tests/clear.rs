//! `Feed::clear` (hypercore 8's `clear(start, end)`): the bits go, the data
//! file's bytes are released (its allocated size drops on a file system that
//! punches holes), the feed still verifies what it keeps, survives a reopen,
//! downloads the range again from a peer, and a crash at every write of a
//! clear leaves a feed that opens, verifies and finishes the clear when it is
//! run again.

use kappa_log::{Feed, KeyPair, SyncPolicy};
use kappa_storage::{DirectoryProvider, Fault, FaultyProvider, MemoryProvider, Provider, RandomAccess};

fn value(i: u64) -> Vec<u8> {
    // 1 KiB, distinct per entry.
    let mut v = format!("entry {i:08} ").into_bytes();
    v.resize(1024, b'x' ^ (i as u8));
    v
}

fn allocated(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir.join("data")).unwrap().blocks() * 512
}

#[test]
fn a_cleared_range_frees_its_space_and_the_rest_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let kp = KeyPair::from_seed(&[3; 32]);
    let mut feed = Feed::builder(DirectoryProvider::new(tmp.path())).key_pair(kp.clone()).open().unwrap();
    feed.append_batch((0..10_000).map(value)).unwrap();
    feed.sync_all().unwrap();
    let before = allocated(tmp.path());
    assert!(before >= 10_000 * 1024, "{before}");
    let cleared = feed.clear(2_000..8_000).unwrap();
    assert_eq!((cleared.blocks, cleared.bytes), (6_000, 6_000 * 1024));
    assert!(cleared.released, "ext4 and tmpfs punch holes");
    let after = allocated(tmp.path());
    let freed = before - after;
    assert!(freed >= 6_000 * 1024 - 8192, "freed only {freed} of {} bytes", 6_000 * 1024);
    assert_eq!(std::fs::metadata(tmp.path().join("data")).unwrap().len(), 10_000 * 1024, "the length stays");
    assert_eq!(feed.downloaded(0..10_000), 4_000);
    assert_eq!(feed.get(1_999).unwrap(), Some(value(1_999)));
    assert_eq!(feed.get(2_000).unwrap(), None);
    assert_eq!(feed.get(7_999).unwrap(), None);
    assert_eq!(feed.get(8_000).unwrap(), Some(value(8_000)));
    feed.verify().unwrap();
    assert_eq!(feed.audit().unwrap(), 4_000, "every kept block checks against its hash");
    // Again: nothing left to clear in the range; past the end is ignored.
    assert_eq!(feed.clear(2_000..8_000).unwrap().blocks, 0);
    assert_eq!(feed.clear(20_000..30_000).unwrap().blocks, 0);
    assert_eq!(feed.clear(5..5).unwrap().blocks, 0);
    // A writer appends on after a clear.
    feed.append(value(10_000)).unwrap();
    drop(feed);
    // Reopened: the same.
    let mut feed = Feed::builder(DirectoryProvider::new(tmp.path())).key_pair(kp).open().unwrap();
    assert_eq!((feed.len(), feed.downloaded(0..u64::MAX)), (10_001, 4_001));
    assert_eq!(feed.get(3_000).unwrap(), None);
    assert_eq!(feed.get(10_000).unwrap(), Some(value(10_000)));
    feed.verify().unwrap();
    assert_eq!(feed.audit().unwrap(), 4_001);
}

#[test]
fn a_cleared_replica_downloads_the_range_again() {
    let mut writer =
        Feed::builder(MemoryProvider::new()).key_pair(KeyPair::from_seed(&[4; 32])).open().unwrap();
    writer.append_batch((0..500).map(value)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut replica =
        Feed::builder(DirectoryProvider::new(tmp.path())).public_key(*writer.public_key()).open().unwrap();
    for i in 0..500 {
        let proof = writer.proof(i, replica.digest(i), false).unwrap();
        replica.put(i, &writer.get(i).unwrap().unwrap(), &proof).unwrap();
    }
    replica.sync_all().unwrap();
    assert_eq!(replica.clear(0..500).unwrap().blocks, 500);
    assert_eq!(replica.downloaded(0..500), 0);
    replica.verify().unwrap();
    // Every block comes back, verified against the tree the replica kept.
    for i in (0..500).rev() {
        let proof = writer.proof(i, replica.digest(i), false).unwrap();
        replica.put(i, &writer.get(i).unwrap().unwrap(), &proof).unwrap();
    }
    assert_eq!(replica.downloaded(0..500), 500);
    for i in 0..500 {
        assert_eq!(replica.get(i).unwrap(), Some(value(i)));
    }
    assert_eq!(replica.audit().unwrap(), 500);
    // A forged block for a cleared slot is refused.
    replica.clear(10..11).unwrap();
    let proof = writer.proof(10, replica.digest(10), false).unwrap();
    assert!(replica.put(10, &value(11), &proof).is_err(), "a wrong block in a cleared slot");
    assert_eq!(replica.get(10).unwrap(), None);
}

fn scenario(p: impl Provider + 'static) -> Result<(), kappa_log::LogError> {
    let mut feed =
        Feed::builder(p).key_pair(KeyPair::from_seed(&[5; 32])).sync(SyncPolicy::PerBatch).open()?;
    if feed.is_empty() {
        feed.append_batch((0..300).map(value))?;
        feed.sync_all()?;
    }
    feed.clear(100..250)?;
    Ok(())
}

#[test]
fn a_crash_at_every_write_of_a_clear_recovers() {
    // The writes of the whole scenario; those after `setup` are the clear's.
    let counter = FaultyProvider::new(MemoryProvider::new(), None);
    scenario(counter.clone()).unwrap();
    let total = counter.writes();
    let setup = {
        let p = FaultyProvider::new(MemoryProvider::new(), None);
        let mut feed = Feed::builder(p.clone())
            .key_pair(KeyPair::from_seed(&[5; 32]))
            .sync(SyncPolicy::PerBatch)
            .open()
            .unwrap();
        feed.append_batch((0..300).map(value)).unwrap();
        feed.sync_all().unwrap();
        p.writes()
    };
    assert!(total > setup, "the clear writes ({setup} of {total})");
    let mut faults = Vec::new();
    for n in setup..total {
        faults.push(Fault::FailWrite(n));
        faults.push(Fault::TearWrite(n));
    }
    for fault in faults {
        let disk = MemoryProvider::new();
        let faulty = FaultyProvider::new(disk.clone(), Some(fault));
        assert!(scenario(faulty.clone()).is_err(), "{fault:?}: the clear reports the failure");
        assert!(faulty.crashed(), "{fault:?} never fired");
        // Reopened from what reached the storage: it opens, every block it
        // claims verifies, nothing outside the range was lost.
        let mut feed = Feed::builder(disk.clone()).key_pair(KeyPair::from_seed(&[5; 32])).open().unwrap();
        assert_eq!(feed.len(), 300, "{fault:?}");
        let kept = feed.audit().unwrap();
        assert_eq!(kept, feed.downloaded(0..300), "{fault:?}: a claimed block is damaged");
        for i in (0..100).chain(250..300) {
            assert_eq!(feed.get(i).unwrap(), Some(value(i)), "{fault:?}: block {i} outside the range");
        }
        // Run again, the clear finishes: the range is gone, its bytes zeroed.
        feed.clear(100..250).unwrap();
        assert_eq!(feed.downloaded(0..300), 150, "{fault:?}");
        let data = disk.storage("data").to_vec();
        assert!(data[100 * 1024..250 * 1024].iter().all(|&b| b == 0), "{fault:?}: the range's bytes stay");
        assert_eq!(feed.audit().unwrap(), 150);
    }
}

#[test]
fn release_of_a_memory_storage_zeroes_and_says_so() {
    let p = MemoryProvider::new();
    let mut s = p.open("data").unwrap();
    s.write(0, &[7; 100]).unwrap();
    assert!(!s.release(10, 1000).unwrap(), "memory cannot give space back");
    let bytes = s.read(0, 100).unwrap();
    assert!(bytes[..10].iter().all(|&b| b == 7) && bytes[10..].iter().all(|&b| b == 0));
    assert_eq!(s.len().unwrap(), 100, "the length stays");
}
