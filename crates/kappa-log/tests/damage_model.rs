//! Property test: random appends and random damage to any file, up to two
//! files damaged at once (more between two opens is beyond what redundancy
//! can tell apart: every copy of a fact may then be gone), against a model of
//! what must survive.
//!
//! The model is the list of entries the writer acknowledged, and a peer that
//! received every one of them. After any damage, an open either fails with a
//! clear corrupt-file error or gives the same feed in which every block reads
//! as the acknowledged entry or as a hole; a writer that takes appends holds
//! the whole acknowledged length (never a shorter history), and the peer
//! accepts everything it appends (no sequence number signed twice).
//! Replicating from the peer always restores every entry.

use kappa_log::storage::{MemoryProvider, RandomAccess};
use kappa_log::{CorruptError, Feed, KeyPair, LogError};
use proptest::prelude::*;

const FILES: [&str; 7] = ["data", "tree", "signatures", "bitfield", "key", "secret_key", "kappa-head"];

#[derive(Debug, Clone)]
enum Op {
    Append(u8),
    Batch(u8, u8),
    Damage { file: usize, kind: u8, at: u32 },
    Reopen,
    RepairFromPeer,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => any::<u8>().prop_map(Op::Append),
        2 => (1u8..20, any::<u8>()).prop_map(|(n, s)| Op::Batch(n, s)),
        3 => (0..FILES.len(), 0u8..4, any::<u32>()).prop_map(|(file, kind, at)| Op::Damage { file, kind, at }),
        2 => Just(Op::Reopen),
        1 => Just(Op::RepairFromPeer),
    ]
}

fn entry(seed: u8, i: usize) -> Vec<u8> {
    format!("{seed}-{i}-{}", "z".repeat(seed as usize % 9)).into_bytes()
}

struct World {
    disk: MemoryProvider,
    feed: Option<Feed>,
    peer: Feed,
    acked: Vec<Vec<u8>>,
    key: kappa_log::PublicKey,
    /// Files damaged since the last open (which restores what it can).
    damaged: std::collections::BTreeSet<&'static str>,
}

impl World {
    fn new() -> World {
        let kp = KeyPair::from_seed(&[21; 32]);
        let disk = MemoryProvider::new();
        let feed = Feed::builder(disk.clone()).key_pair(kp.clone()).open().unwrap();
        let peer = Feed::builder(MemoryProvider::new()).public_key(kp.public_key()).open().unwrap();
        World {
            disk,
            feed: Some(feed),
            peer,
            acked: Vec::new(),
            key: kp.public_key(),
            damaged: Default::default(),
        }
    }

    /// Opens the feed if it is closed. `false` when it cannot be opened with a
    /// clear error (then the case ends: nothing more can be asserted).
    fn open(&mut self) -> bool {
        if self.feed.is_some() {
            return true;
        }
        // Every copy of the identity damaged at once: nothing can tell the
        // feed's key any more (the model asks no more of it).
        if ["key", "secret_key", "kappa-head"].iter().all(|f| self.damaged.contains(f)) {
            return false;
        }
        match Feed::builder(self.disk.clone()).open() {
            Ok(f) => {
                self.feed = Some(f);
                self.check();
                true
            }
            Err(LogError::Corrupt(CorruptError { file, .. })) => {
                assert!(["key", "tree", "signatures", "bitfield"].contains(&file), "{file}");
                // A header is rewritten on request; a key nothing can rebuild stays an error.
                match Feed::builder(self.disk.clone()).repair_headers(true).open() {
                    Ok(f) => {
                        self.feed = Some(f);
                        self.check();
                        true
                    }
                    Err(LogError::Corrupt(CorruptError { file: "key", .. })) => false,
                    Err(e) => panic!("after rewriting headers: {e}"),
                }
            }
            Err(e) => panic!("open: {e}"),
        }
    }

    fn check(&mut self) {
        // A writer's open restores every copy of its identity (key file, head
        // record; the secret key it has); a read-only one may not.
        // Damage counts until the feed is whole again (a writer with nothing
        // missing, or one repaired from the peer).
        if self.feed.as_ref().is_some_and(|f| {
            f.is_writable() && f.recovery().unproven_length.is_none() && f.recovery().missing_blocks == 0
        }) {
            self.damaged.clear();
        }
        let n = self.acked.len() as u64;
        let feed = self.feed.as_mut().unwrap();
        assert_eq!(feed.public_key(), &self.key, "a new identity");
        feed.verify().unwrap();
        let writer = feed.is_writable();
        let unproven = feed.recovery().unproven_length;
        if writer && unproven.is_none() {
            assert_eq!(feed.len(), n, "a shorter history that accepts appends");
        }
        assert!(feed.len() <= n);
        for i in 0..feed.len() {
            if let Some(v) = feed.get(i).unwrap() {
                assert_eq!(v, self.acked[i as usize], "block {i}");
            }
        }
    }

    fn append(&mut self, values: Vec<Vec<u8>>) {
        let feed = self.feed.as_mut().unwrap();
        let start = feed.len();
        match feed.append_batch(&values) {
            Ok(r) => {
                assert_eq!(r.start, self.acked.len() as u64);
                self.acked.extend(values);
                // The peer takes every new block: no fork.
                for i in r {
                    let data = feed.get(i).unwrap().unwrap();
                    let proof = feed.proof(i, self.peer.digest(i), false).unwrap();
                    self.peer
                        .put(i, &data, &proof)
                        .unwrap_or_else(|e| panic!("the peer refused block {i}: {e}"));
                }
            }
            Err(LogError::WouldFork { signed, length }) => {
                assert_eq!(length, start);
                assert_eq!(signed, self.acked.len() as u64);
            }
            Err(LogError::SecretKey(_)) => {}
            Err(LogError::NotWritable) => {
                // Only when no evidence is left that it was a writer, and its
                // secret key is gone: it could not sign anyway.
                let sk = self.disk.storage("secret_key").to_vec();
                let usable = sk.len() == 64
                    && KeyPair::from_seed(sk[..32].try_into().unwrap()).public_key() == self.key;
                assert!(!usable, "a writer with a usable secret key refused to append");
            }
            Err(e) => panic!("append: {e}"),
        }
    }

    fn repair(&mut self) {
        let feed = self.feed.as_mut().unwrap();
        for i in 0..self.peer.len() {
            if feed.has(i) && i < feed.len() {
                continue;
            }
            let data = self.peer.get(i).unwrap().unwrap();
            let proof = self.peer.proof(i, feed.digest(i), false).unwrap();
            feed.put(i, &data, &proof).unwrap_or_else(|e| panic!("repair of block {i}: {e}"));
        }
        assert_eq!(feed.len(), self.acked.len() as u64);
        assert_eq!(feed.recovery().unproven_length, None);
        if feed.is_writable() {
            self.damaged.clear();
        }
        for (i, want) in self.acked.iter().enumerate() {
            assert_eq!(feed.get(i as u64).unwrap().as_ref(), Some(want), "after repair, block {i}");
        }
    }

    fn damage(&mut self, file: usize, kind: u8, at: u32) {
        self.feed = None;
        self.damaged.insert(FILES[file]);
        let mut s = self.disk.storage(FILES[file]);
        let len = s.len().unwrap();
        if len == 0 {
            return;
        }
        let at = u64::from(at) % len;
        match kind {
            0 => {
                let b = s.read(at, 1).unwrap()[0];
                s.write(at, &[b ^ 0x24]).unwrap();
            }
            1 => s.truncate(at).unwrap(),
            2 => s.truncate(len - 1).unwrap(),
            _ => s.truncate(0).unwrap(),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn damage_never_loses_more_than_it_touched_nor_forks(ops in prop::collection::vec(op(), 1..16)) {
        let mut w = World::new();
        for op in ops {
            match op {
                Op::Append(seed) => {
                    if !w.open() { return Ok(()); }
                    let i = w.acked.len();
                    w.append(vec![entry(seed, i)]);
                }
                Op::Batch(n, seed) => {
                    if !w.open() { return Ok(()); }
                    let i = w.acked.len();
                    w.append((i..i + n as usize).map(|k| entry(seed, k)).collect());
                }
                Op::Damage { file, kind, at } => {
                    // At most two files damaged at once: an open in between
                    // (which restores what redundancy it can) comes first.
                    if w.damaged.len() >= 2 && !w.damaged.contains(FILES[file]) {
                        if !w.open() { return Ok(()); }
                        if w.damaged.len() >= 2 { continue; }
                    }
                    w.damage(file, kind, at);
                }
                Op::Reopen => {
                    w.feed = None;
                    if !w.open() { return Ok(()); }
                }
                Op::RepairFromPeer => {
                    if !w.open() { return Ok(()); }
                    if w.feed.as_ref().unwrap().is_writable() || w.feed.as_ref().unwrap().recovery().secret_key.is_some() {
                        w.repair();
                    }
                }
            }
        }
        if w.open() {
            w.repair();
        }
    }
}
