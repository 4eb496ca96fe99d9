//! Crash recovery with the fault-injecting storage: fail, tear or fail to sync
//! every single write of a scenario, then reopen what reached "disk". The reopened
//! feed must verify and hold every batch whose append returned `Ok`, and nothing
//! that was never signed.

use kappa_log::storage::{Fault, FaultyProvider, MemoryProvider};
use kappa_log::{Feed, KeyPair, SyncPolicy};

/// Batch sizes; 8190 makes the bitfield cross its first page (8192 blocks).
const BATCHES: &[usize] = &[1, 3, 1, 8190, 2, 1, 7];

fn value(i: usize) -> Vec<u8> {
    format!("entry-{i}").into_bytes()
}

/// Runs the scenario on `provider`; returns the number of entries acknowledged.
fn scenario(provider: FaultyProvider<MemoryProvider>, sync: SyncPolicy) -> usize {
    let kp = KeyPair::from_seed(&[3; 32]);
    let Ok(mut feed) = Feed::builder(provider).key_pair(kp).sync(sync).open() else { return 0 };
    let mut acked = 0;
    for &n in BATCHES {
        let values: Vec<Vec<u8>> = (acked..acked + n).map(value).collect();
        match feed.append_batch(&values) {
            Ok(_) => acked += n,
            Err(_) => break,
        }
    }
    acked
}

fn boundaries() -> Vec<usize> {
    let mut b = vec![0];
    for n in BATCHES {
        b.push(b.last().unwrap() + n);
    }
    b
}

fn check_recovery(disk: &MemoryProvider, acked: usize, what: &str) {
    let mut feed = match Feed::builder(disk.clone()).open() {
        Ok(f) => f,
        Err(e) => panic!("{what}: reopen failed: {e}"),
    };
    let len = feed.len() as usize;
    assert!(len >= acked, "{what}: lost acknowledged entries ({len} < {acked})");
    assert!(boundaries().contains(&len), "{what}: length {len} is not a signed batch boundary");
    feed.verify().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(feed.audit().unwrap() as usize, len, "{what}");
    for i in (0..len).step_by(97).chain(len.saturating_sub(3)..len) {
        assert_eq!(feed.get(i as u64).unwrap(), Some(value(i)), "{what}: entry {i}");
    }
    // The recovered feed keeps working: append, reopen, verify.
    if feed.is_writable() {
        feed.append_batch([b"after".to_vec(), b"crash".to_vec()]).unwrap();
        drop(feed);
        let mut again = Feed::builder(disk.clone()).open().unwrap();
        assert_eq!(again.len() as usize, len + 2, "{what}");
        assert_eq!(again.get(len as u64 + 1).unwrap(), Some(b"crash".to_vec()));
        assert_eq!(again.audit().unwrap() as usize, len + 2);
    }
}

fn run_all(sync: SyncPolicy) {
    let counter = FaultyProvider::new(MemoryProvider::new(), None);
    let total = scenario(counter.clone(), sync);
    assert_eq!(total, boundaries().last().copied().unwrap());
    let (writes, syncs) = (counter.writes(), counter.syncs());
    assert!(writes > 20);
    let mut faults = Vec::new();
    for n in 0..writes {
        faults.push(Fault::FailWrite(n));
        faults.push(Fault::TearWrite(n));
    }
    for n in 0..syncs {
        faults.push(Fault::FailSync(n));
    }
    for fault in faults {
        let disk = MemoryProvider::new();
        let faulty = FaultyProvider::new(disk.clone(), Some(fault));
        let acked = scenario(faulty.clone(), sync);
        assert!(faulty.crashed(), "{fault:?} never fired");
        check_recovery(&disk, acked, &format!("{fault:?} ({sync:?})"));
    }
}

#[test]
fn every_fault_recovers_with_sync_per_batch() {
    run_all(SyncPolicy::PerBatch);
}

#[test]
fn every_fault_recovers_without_sync() {
    run_all(SyncPolicy::None);
}

#[test]
fn a_torn_bitfield_page_is_rebuilt_from_the_tree_file() {
    // Write two batches, then hand-tear the bitfield: keep the data view of the
    // newest page but drop its tree view (as a half-written page would). The
    // second batch was acknowledged and its tree and signature are intact: the
    // reopened feed takes the lost tree bits back from the tree file, with or
    // without the head record.
    for keep_head in [true, false] {
        let disk = MemoryProvider::new();
        let mut feed = Feed::builder(disk.clone()).key_pair(KeyPair::from_seed(&[5; 32])).open().unwrap();
        feed.append_batch((0..10).map(value)).unwrap();
        // Under `SyncPolicy::None` the bitfield is written every 64 appends
        // or at a flush: write this batch's page now, as the old page.
        feed.flush_deferred().unwrap();
        let before = disk.storage("bitfield").to_vec();
        feed.append_batch((10..30).map(value)).unwrap();
        drop(feed);
        let mut torn = disk.storage("bitfield").to_vec();
        // Tree view bytes of page 0 come from the old file (bytes 32+1024 ..).
        torn[32 + 1024..32 + 3072].copy_from_slice(&before[32 + 1024..32 + 3072]);
        use kappa_log::storage::RandomAccess;
        disk.storage("bitfield").write(0, &torn).unwrap();
        if !keep_head {
            disk.storage("kappa-head").truncate(0).unwrap();
        }
        let mut feed = Feed::builder(disk.clone()).open().unwrap();
        assert_eq!(feed.len(), 30, "head kept: {keep_head}");
        feed.verify().unwrap();
        assert_eq!(feed.audit().unwrap(), 30);
        assert_eq!(feed.get(29).unwrap(), Some(value(29)));
        feed.append(b"next").unwrap();
        assert_eq!(feed.get(30).unwrap(), Some(b"next".to_vec()));
    }
}

/// A small scenario whose last batch is torn at every byte of every write.
const SMALL: &[usize] = &[3, 5, 2];

fn small_scenario(provider: FaultyProvider<MemoryProvider>, sync: SyncPolicy) -> usize {
    let kp = KeyPair::from_seed(&[8; 32]);
    let Ok(mut feed) = Feed::builder(provider).key_pair(kp).sync(sync).open() else { return 0 };
    let mut acked = 0;
    for &n in SMALL {
        let values: Vec<Vec<u8>> = (acked..acked + n).map(value).collect();
        match feed.append_batch(&values) {
            Ok(_) => acked += n,
            Err(_) => break,
        }
    }
    acked
}

fn torn_at_every_byte(sync: SyncPolicy) {
    // Count the writes before the last batch, and the size of each write.
    let before = FaultyProvider::new(MemoryProvider::new(), None);
    let first = {
        let kp = KeyPair::from_seed(&[8; 32]);
        let mut feed = Feed::builder(before.clone()).key_pair(kp).sync(sync).open().unwrap();
        let mut n = 0;
        for &k in &SMALL[..SMALL.len() - 1] {
            feed.append_batch((n..n + k).map(value).collect::<Vec<_>>()).unwrap();
            n += k;
        }
        // Counted before the feed closes: under `SyncPolicy::None` the close
        // writes the bitfield and head record the appends left for later,
        // which in the whole scenario come after the last batch.
        before.writes()
    };
    let counter = FaultyProvider::new(MemoryProvider::new(), None);
    assert_eq!(small_scenario(counter.clone(), sync), 10);
    let lens = counter.write_lens();
    let total: usize = SMALL.iter().sum();
    let prior = total - SMALL[SMALL.len() - 1];
    let mut cases = 0;
    for write in first..counter.writes() {
        for keep in 0..=lens[write as usize] {
            let disk = MemoryProvider::new();
            let faulty = FaultyProvider::new(disk.clone(), Some(Fault::TearWriteAt { write, keep }));
            let acked = small_scenario(faulty.clone(), sync);
            assert!(faulty.crashed());
            let what = format!("write {write} torn after {keep} bytes ({sync:?})");
            // A tear in the last batch fails it; a tear in what the close
            // writes afterwards (the bitfield and head record appends under
            // `SyncPolicy::None` leave for later) comes after every batch
            // was acknowledged, and then all of them must be there.
            assert!(acked == prior || (acked == total && sync == SyncPolicy::None), "{what}: acked {acked}");
            let mut feed = Feed::builder(disk.clone()).open().unwrap_or_else(|e| panic!("{what}: {e}"));
            let len = feed.len() as usize;
            assert!(len == prior || len == total, "{what}: length {len}");
            assert!(len >= acked, "{what}: length {len}, {acked} acknowledged");
            assert!(feed.recovery().unproven_length.is_none(), "{what}: {:?}", feed.recovery());
            feed.verify().unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(feed.audit().unwrap() as usize, len, "{what}");
            for i in 0..len {
                assert_eq!(feed.get(i as u64).unwrap(), Some(value(i)), "{what}: entry {i}");
            }
            // Still a writer that appends after what it holds.
            assert_eq!(feed.append(b"after").unwrap() as usize, len, "{what}");
            cases += 1;
        }
    }
    assert!(cases > 3000, "{cases} cases");
}

#[test]
fn a_torn_write_at_every_byte_of_the_last_batch_recovers_with_sync_per_batch() {
    torn_at_every_byte(SyncPolicy::PerBatch);
}

#[test]
fn a_torn_write_at_every_byte_of_the_last_batch_recovers_without_sync() {
    torn_at_every_byte(SyncPolicy::None);
}

/// A replica's deferred puts are readable at once; a block anyone has read is
/// in the files, so a process killed before the replication burst ends (no
/// flush, no drop) loses nothing that a reader saw (an indexer may have
/// committed it to a view).
#[test]
fn a_deferred_block_that_was_read_survives_a_kill_before_the_flush() {
    let mut writer =
        Feed::builder(MemoryProvider::new()).key_pair(KeyPair::from_seed(&[4; 32])).open().unwrap();
    writer.append_batch((0..10).map(value)).unwrap();
    let disk = MemoryProvider::new();
    let mut replica = Feed::builder(disk.clone()).public_key(*writer.public_key()).open().unwrap();
    for i in 0..10u64 {
        let digest = replica.digest(i);
        let proof = writer.proof(i, digest, false).unwrap();
        replica.put_deferred(i, &value(i as usize), &proof).unwrap();
    }
    assert_eq!(replica.get(6).unwrap(), Some(value(6)));
    // Killed: no flush, no drop.
    std::mem::forget(replica);
    let mut reopened = Feed::builder(disk.clone()).open().unwrap();
    assert_eq!(reopened.get(6).unwrap(), Some(value(6)), "a block that was read is on disk");
    assert_eq!(reopened.downloaded(0..10), 10, "and so is everything held with it");
    reopened.verify().unwrap();
}

/// Single appends under `SyncPolicy::None` write their bitfield bytes and head
/// record once per 64 entries: a process killed in between (every later write
/// fails, as after a SIGKILL) leaves a bitfield and a head record that lag by
/// up to 63 acknowledged appends. Each of them is there after reopening, and
/// the writer appends after the last one (no fork).
#[test]
fn single_appends_killed_before_their_bitfield_is_written_are_kept() {
    for n in [1u64, 2, 63, 64, 65, 130] {
        // Writes of n appends, counted with the feed still open; the files
        // of a clean close.
        let clean = MemoryProvider::new();
        let counter = FaultyProvider::new(clean.clone(), None);
        let writes = {
            let mut feed =
                Feed::builder(counter.clone()).key_pair(KeyPair::from_seed(&[9; 32])).open().unwrap();
            for i in 0..n {
                feed.append(value(i as usize)).unwrap();
            }
            counter.writes()
        };
        let disk = MemoryProvider::new();
        let faulty = FaultyProvider::new(disk.clone(), Some(Fault::FailWrite(writes)));
        {
            let mut feed =
                Feed::builder(faulty.clone()).key_pair(KeyPair::from_seed(&[9; 32])).open().unwrap();
            for i in 0..n {
                feed.append(value(i as usize)).unwrap();
            }
            // Dropped: the close's writes fail, as in a killed process.
        }
        assert_eq!(faulty.crashed(), n % 64 != 0, "{n} appends");
        // The open rewrites the lagging bitfield: after it, the file is what
        // a clean close writes (what JS hypercore reads the length from).
        drop(Feed::builder(disk.clone()).open().unwrap());
        assert_eq!(disk.storage("bitfield").to_vec(), clean.storage("bitfield").to_vec(), "{n} appends");
        let mut feed = Feed::builder(disk.clone()).open().unwrap();
        assert_eq!(feed.len(), n, "{n} appends");
        assert!(feed.recovery().unproven_length.is_none(), "{n}: {:?}", feed.recovery());
        feed.verify().unwrap();
        assert_eq!(feed.audit().unwrap(), n);
        for i in 0..n {
            assert_eq!(feed.get(i).unwrap(), Some(value(i as usize)), "{n}: entry {i}");
        }
        assert_eq!(feed.append(b"after").unwrap(), n);
    }
}
