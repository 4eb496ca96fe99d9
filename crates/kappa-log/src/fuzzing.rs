//! Entry points shared by the cargo-fuzz targets in `fuzz/` and the corpus replay
//! tests (`tests/fuzz_corpus.rs`). Not part of the public API: they exist so that
//! CI replays exactly what the fuzzers ran.
//!
//! Each function must never panic for any input, and checks an oracle where one
//! exists (a block `put` accepts must be the writer's block; the bitfield index
//! never claims a region full that is not).

use std::sync::OnceLock;

use kappa_storage::{MemoryProvider, RandomAccess};

use crate::{Bitfield, Feed, KeyPair, Node, Proof, Signature};

const FILES: [&str; 7] = ["key", "secret_key", "tree", "data", "signatures", "bitfield", "kappa-head"];

/// A little cursor over fuzz input.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.byte()?, self.byte()?]))
    }
    fn u64(&mut self) -> Option<u64> {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.byte()?;
        }
        Some(u64::from_le_bytes(b))
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

/// A writer of 10 blocks (the shape of the JS vector feed), built once.
fn writer_disk() -> &'static MemoryProvider {
    static DISK: OnceLock<MemoryProvider> = OnceLock::new();
    DISK.get_or_init(|| {
        let disk = MemoryProvider::new();
        if let Ok(mut feed) = Feed::builder(disk.clone()).key_pair(KeyPair::from_seed(&[0; 32])).open() {
            let _ = feed.append(b"hello");
            let _ = feed.append_batch([&b"world"[..], b"", b"kappa"]);
            let _ = feed.append(vec![7u8; 700]);
            let _ = feed.append(b"x");
            let _ = feed.append_batch([&b"a"[..], b"bc", b"def"]);
            let _ = feed.append(b"end");
        }
        disk
    })
}

/// Opens a feed whose six files hold arbitrary bytes, then exercises it.
///
/// Input: six little-endian u16 lengths, then the files' bytes in the order `key,
/// secret_key, tree, data, signatures, bitfield`. Inputs starting with `0xff` patch
/// a valid feed instead: `0xff, file, u16 offset, bytes...` overwrites bytes of one
/// of the writer's files, which reaches much deeper states.
pub fn open_feed(data: &[u8]) {
    let mut input = Input(data);
    let disk = if data.first() == Some(&0xff) {
        input.byte();
        let disk = writer_disk().snapshot();
        while let (Some(file), Some(offset)) = (input.byte(), input.u16()) {
            let n = input.byte().unwrap_or(0) as usize % 17;
            let bytes = input.take(n).to_vec();
            let name = FILES[file as usize % FILES.len()];
            let _ = disk.storage(name).write(offset as u64, &bytes);
        }
        disk
    } else {
        let disk = MemoryProvider::new();
        let mut lens = [0usize; 7];
        for l in &mut lens {
            *l = input.u16().unwrap_or(0) as usize;
        }
        for (name, len) in FILES.iter().zip(lens) {
            let bytes = input.take(len).to_vec();
            let _ = disk.storage(name).write(0, &bytes);
        }
        disk
    };
    let Ok(mut feed) = Feed::builder(disk).create(false).open() else { return };
    // Whatever opened must be a verified state.
    assert!(feed.verify().is_ok(), "open returned a feed whose signature does not verify");
    let _ = feed.audit();
    if let Ok(report) = feed.check() {
        let _ = feed.repair(&report);
    }
    for i in 0..feed.len().min(64) {
        let _ = feed.get(i);
        let _ = feed.digest(i);
        let _ = feed.proof(i, 0, false);
        let _ = feed.proof(i, feed.digest(i), true);
    }
    if feed.is_writable() {
        let _ = feed.append(b"more");
    }
}

/// Feeds an arbitrary proof for an arbitrary block into a fresh replica of the
/// 10-block writer. Anything accepted must be the writer's true block.
///
/// Input: block index (byte), then the value (length byte + bytes), a flag byte
/// (bit 0: include a signature, bit 1: start from a valid proof and mutate it),
/// then nodes as (u64 index, 32-byte hash, u64 size) until the input ends.
pub fn verify_proof(data: &[u8]) {
    let mut input = Input(data);
    let Some(index) = input.byte().map(|b| b as u64 % 12) else { return };
    let len = input.byte().unwrap_or(0) as usize;
    let value = input.take(len).to_vec();
    let flags = input.byte().unwrap_or(0);

    let mut writer = match Feed::builder(writer_disk().snapshot()).open() {
        Ok(f) => f,
        Err(_) => return,
    };
    let mut replica = match Feed::builder(MemoryProvider::new()).public_key(*writer.public_key()).open() {
        Ok(f) => f,
        Err(_) => return,
    };
    let mut proof = Proof::default();
    let mut value = value;
    if flags & 2 != 0 {
        if let (Ok(p), Ok(Some(v))) = (writer.proof(index, 0, false), writer.get(index)) {
            proof = p;
            value = v;
        }
        // Mutate: flip one bit somewhere in a node hash, a size, the value, or the
        // signature, chosen by the rest of the input.
        if let (Some(which), Some(bit)) = (input.byte(), input.byte()) {
            let bit = bit as usize;
            match which % 4 {
                0 if !proof.nodes.is_empty() => {
                    let k = bit % proof.nodes.len();
                    proof.nodes[k].hash[bit % 32] ^= 1 << (bit % 8);
                }
                1 if !proof.nodes.is_empty() => {
                    let k = bit % proof.nodes.len();
                    proof.nodes[k].size ^= 1 << (bit % 64);
                }
                2 if !value.is_empty() => {
                    let k = bit % value.len();
                    value[k] ^= 1 << (bit % 8);
                }
                _ => {
                    if let Some(sig) = &mut proof.signature {
                        sig.0[bit % 64] ^= 1 << (bit % 8);
                    }
                }
            }
        }
    } else {
        while let Some(i) = input.u64() {
            let mut hash = [0u8; 32];
            hash.copy_from_slice(&{
                let mut h = input.take(32).to_vec();
                h.resize(32, 0);
                h
            });
            let size = input.u64().unwrap_or(0);
            proof.nodes.push(Node { index: i % 64, hash, size });
        }
        if flags & 1 != 0 {
            proof.signature = writer.signature().ok().flatten().or(Some(Signature([1; 64])));
        }
    }
    if replica.put(index, &value, &proof).is_ok() {
        let truth = writer.get(index).ok().flatten();
        assert_eq!(truth.as_deref(), Some(&value[..]), "replica accepted a block the writer never wrote");
        assert!(replica.verify().is_ok(), "replica's state does not verify after an accepted put");
        assert_eq!(replica.get(index).ok().flatten().as_deref(), Some(&value[..]));
    }
}

/// Arbitrary operations on a bitfield (loaded from bytes, then set blocks and
/// nodes); the index must never claim a data byte full when it is not, and the
/// derived length must be covered by present nodes.
///
/// Input: u16 length of an initial body, the body, then 3-byte operations.
pub fn bitfield(data: &[u8]) {
    let mut input = Input(data);
    let body_len = input.u16().unwrap_or(0) as usize;
    let body = input.take(body_len).to_vec();
    let mut bf = Bitfield::from_bytes(&body);
    let loaded_with_index = !body.is_empty();
    while let (Some(op), Some(a), Some(b)) = (input.byte(), input.byte(), input.byte()) {
        let x = u64::from(u16::from_le_bytes([a, b])) * (1 + (op >> 4) as u64);
        match op & 3 {
            0 => {
                bf.set_block(x, true);
            }
            1 => {
                bf.set_block(x, false);
            }
            2 => {
                bf.set_node(x);
            }
            _ => {
                bf.clear_node(x);
            }
        }
    }
    let len = bf.verified_length();
    if len > 0 {
        for r in crate::flat::full_roots(2 * len) {
            assert!(bf.has_node(r), "length {len} claims root {r}, which is absent");
        }
    }
    let _ = bf.take_dirty();
    if !loaded_with_index {
        assert_index_sound(&bf);
    }
    bf.rebuild_index();
    assert_index_sound(&bf);
}

fn assert_index_sound(bf: &Bitfield) {
    for (b, full) in bf.index_leaf_claims() {
        if full {
            assert_eq!(bf.data_byte(b), 0xff, "index claims data byte {b} full");
        }
    }
}

/// JSON text re-encoded without a value tree
/// ([`encoding::js_json_from_str`](crate::encoding::js_json_from_str)) must
/// agree with the value-tree path (parse to `serde_json::Value`, then
/// [`to_js_json`](crate::encoding::to_js_json)): the same bytes, or both fail.
///
/// Input: the text (bytes that are not UTF-8 are cut at the first bad one).
pub fn js_json(data: &[u8]) {
    let text = match std::str::from_utf8(data) {
        Ok(t) => t,
        Err(e) => std::str::from_utf8(&data[..e.valid_up_to()]).unwrap_or_default(),
    };
    let streamed = crate::encoding::js_json_from_str(text).ok();
    let tree = serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| crate::encoding::to_js_json(&v).ok());
    assert_eq!(streamed, tree, "js_json_from_str disagrees with the value tree on {text:?}");
}
