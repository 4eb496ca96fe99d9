//! Model-based property test: random appends (single and batch), gets, reopens,
//! and replication into a sparse replica through digest / proof / put, compared
//! against a plain in-memory model. Tampered blocks, proofs and signatures must be
//! rejected, and a rejected put must leave the replica exactly as it was.

use std::collections::BTreeSet;

use kappa_log::storage::MemoryProvider;
use kappa_log::{Feed, KeyPair, LogError, Proof};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<u8>),
    Batch(Vec<Vec<u8>>),
    Get(u64),
    ReopenWriter,
    ReopenReplica,
    Replicate(u64),
    ReplicateDeferred(u64),
    Flush,
    Tamper(u64, Tamper, u16),
}

#[derive(Debug, Clone, Copy)]
enum Tamper {
    Value,
    NodeHash,
    NodeSize,
    Signature,
    DropNode,
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..40)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => value().prop_map(Op::Append),
        3 => prop::collection::vec(value(), 0..12).prop_map(Op::Batch),
        2 => any::<u64>().prop_map(Op::Get),
        1 => Just(Op::ReopenWriter),
        1 => Just(Op::ReopenReplica),
        4 => any::<u64>().prop_map(Op::Replicate),
        3 => any::<u64>().prop_map(Op::ReplicateDeferred),
        1 => Just(Op::Flush),
        3 => (any::<u64>(), prop_oneof![
                Just(Tamper::Value), Just(Tamper::NodeHash), Just(Tamper::NodeSize),
                Just(Tamper::Signature), Just(Tamper::DropNode)
            ], any::<u16>())
            .prop_map(|(i, t, r)| Op::Tamper(i, t, r)),
    ]
}

struct World {
    writer_disk: MemoryProvider,
    replica_disk: MemoryProvider,
    writer: Option<Feed>,
    replica: Option<Feed>,
    kp: KeyPair,
    model: Vec<Vec<u8>>,
    downloaded: BTreeSet<u64>,
}

impl World {
    fn new() -> World {
        let kp = KeyPair::from_seed(&[9; 32]);
        let writer_disk = MemoryProvider::new();
        let replica_disk = MemoryProvider::new();
        let writer = Feed::builder(writer_disk.clone()).key_pair(kp.clone()).open().unwrap();
        let replica = Feed::builder(replica_disk.clone()).public_key(kp.public_key()).open().unwrap();
        World {
            writer_disk,
            replica_disk,
            writer: Some(writer),
            replica: Some(replica),
            kp,
            model: Vec::new(),
            downloaded: BTreeSet::new(),
        }
    }

    fn writer(&mut self) -> &mut Feed {
        self.writer.as_mut().unwrap()
    }

    fn replica(&mut self) -> &mut Feed {
        self.replica.as_mut().unwrap()
    }

    /// Everything observable about the replica, to show a rejected put changed nothing.
    fn replica_state(&mut self) -> (u64, u64, Vec<bool>, Vec<bool>, Vec<u8>) {
        let n = self.model.len() as u64;
        let r = self.replica();
        let blocks = (0..n + 2).map(|i| r.has(i)).collect();
        let nodes = (0..2 * n + 2).map(|x| r.has_node(x)).collect();
        let sig = r.signature().unwrap().map(|s| s.0.to_vec()).unwrap_or_default();
        (r.len(), r.byte_len(), blocks, nodes, sig)
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Append(v) => {
                let i = self.writer().append(&v).unwrap();
                assert_eq!(i, self.model.len() as u64);
                self.model.push(v);
            }
            Op::Batch(vs) => {
                let r = self.writer().append_batch(&vs).unwrap();
                assert_eq!(r.start, self.model.len() as u64);
                assert_eq!(r.end - r.start, vs.len() as u64);
                self.model.extend(vs);
            }
            Op::Get(i) => {
                let n = self.model.len() as u64;
                let i = if n == 0 { i % 3 } else { i % (n + 2) };
                let want = self.model.get(i as usize).cloned();
                assert_eq!(self.writer().get(i).unwrap(), want);
            }
            Op::ReopenWriter => {
                self.writer = None;
                self.writer = Some(Feed::builder(self.writer_disk.clone()).open().unwrap());
                assert!(self.writer().is_writable());
            }
            Op::ReopenReplica => {
                self.replica = None;
                let r = Feed::builder(self.replica_disk.clone()).create(false).open().unwrap();
                assert!(!r.is_writable());
                self.replica = Some(r);
            }
            Op::Replicate(i) => {
                if self.model.is_empty() {
                    return;
                }
                let i = i % self.model.len() as u64;
                let digest = self.replica().digest(i);
                let proof = self.writer().proof(i, digest, false).unwrap();
                let data = self.model[i as usize].clone();
                self.replica().put(i, &data, &proof).unwrap();
                self.downloaded.insert(i);
            }
            Op::ReplicateDeferred(i) => {
                // Deferred puts are readable at once; their writes reach the disk on
                // flush (or when the feed is dropped, as ReopenReplica does).
                if self.model.is_empty() {
                    return;
                }
                let i = i % self.model.len() as u64;
                let digest = self.replica().digest(i);
                let proof = self.writer().proof(i, digest, false).unwrap();
                let data = self.model[i as usize].clone();
                self.replica().put_deferred(i, &data, &proof).unwrap();
                self.downloaded.insert(i);
            }
            Op::Flush => self.replica().flush_deferred().unwrap(),
            Op::Tamper(i, how, r) => {
                if self.model.is_empty() {
                    return;
                }
                let i = i % self.model.len() as u64;
                if self.downloaded.contains(&i) {
                    return;
                }
                let digest = self.replica().digest(i);
                let mut proof: Proof = self.writer().proof(i, digest, false).unwrap();
                let mut data = self.model[i as usize].clone();
                let r = r as usize;
                let changed = match how {
                    Tamper::Value => {
                        if data.is_empty() {
                            data.push(1);
                        } else {
                            let k = r % data.len();
                            data[k] ^= 1 << (r % 8);
                        }
                        true
                    }
                    Tamper::NodeHash if !proof.nodes.is_empty() => {
                        let k = r % proof.nodes.len();
                        proof.nodes[k].hash[r % 32] ^= 1 << (r % 8);
                        true
                    }
                    Tamper::NodeSize if !proof.nodes.is_empty() => {
                        let k = r % proof.nodes.len();
                        proof.nodes[k].size ^= 1 << (r % 64);
                        true
                    }
                    Tamper::Signature if proof.signature.is_some() => {
                        if let Some(s) = proof.signature.as_mut() {
                            s.0[r % 64] ^= 1 << (r % 8);
                        }
                        true
                    }
                    Tamper::DropNode if !proof.nodes.is_empty() => {
                        proof.nodes.remove(r % proof.nodes.len());
                        true
                    }
                    _ => false,
                };
                if !changed {
                    return;
                }
                let before = self.replica_state();
                let result = self.replica().put(i, &data, &proof);
                assert!(
                    matches!(result, Err(LogError::Proof { .. })),
                    "tampered ({how:?}) block {i} was not rejected: {result:?}"
                );
                assert_eq!(self.replica_state(), before, "a rejected put changed the replica");
            }
        }
        self.check();
    }

    fn check(&mut self) {
        let n = self.model.len() as u64;
        assert_eq!(self.writer().len(), n);
        assert_eq!(self.writer().byte_len(), self.model.iter().map(|v| v.len() as u64).sum::<u64>());
        self.writer().verify().unwrap();
        let pk = self.kp.public_key();
        assert_eq!(*self.writer().public_key(), pk);
        let downloaded = self.downloaded.clone();
        for i in 0..n {
            let want = downloaded.contains(&i).then(|| self.model[i as usize].clone());
            assert_eq!(self.replica().get(i).unwrap(), want, "replica block {i}");
        }
        if let Some(&max) = downloaded.iter().max() {
            assert!(self.replica().len() > max);
        }
        assert!(self.replica().len() <= n);
        self.replica().verify().unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn feed_matches_model(ops in prop::collection::vec(op(), 1..60)) {
        let mut w = World::new();
        for op in ops {
            w.apply(op);
        }
        // Finally replicate everything: the replica becomes a full copy.
        for i in 0..w.model.len() as u64 {
            w.apply(Op::Replicate(i));
        }
        let n = w.model.len() as u64;
        assert_eq!(w.replica().len(), n);
        assert!(n == 0 || w.replica().is_complete());
        assert_eq!(w.replica().audit().unwrap(), n);
    }
}
