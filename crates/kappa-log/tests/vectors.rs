//! The byte-exact vectors produced by the real JS packages (hypercore 8.14.0):
//! `tests/vectors/*.json`, copied from the project's shared vector set.

use kappa_log::encoding::{Codec, Json};
use kappa_log::storage::{MemoryProvider, Provider};
use kappa_log::{discovery_key, Feed, KeyPair, Node, Proof, PublicKey, Signature};
use serde_json::Value;

fn load(name: &str) -> Value {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn hex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn node(v: &Value) -> Node {
    Node {
        index: v["index"].as_u64().unwrap(),
        hash: hex(&v["hash"]).try_into().unwrap(),
        size: v["size"].as_u64().unwrap(),
    }
}

fn file(p: &MemoryProvider, name: &str) -> Vec<u8> {
    p.storage(name).to_vec()
}

fn seed_of(v: &Value) -> [u8; 32] {
    hex(v).try_into().unwrap()
}

fn entries(step: &Value) -> Vec<Vec<u8>> {
    // A `null` entry was too large to inline: byte k is (k·31 + 7) mod 256.
    let lengths = step["entryLengths"].as_array().unwrap();
    lengths
        .iter()
        .enumerate()
        .map(|(j, n)| match step["entriesHex"].get(j).and_then(Value::as_str) {
            Some(h) => hex::decode(h).unwrap(),
            None => (0..n.as_u64().unwrap()).map(|k| ((k * 31 + 7) % 256) as u8).collect(),
        })
        .collect()
}

/// Builds the feed of feed.json, checking every step.
fn build_feed(v: &Value) -> (Feed, MemoryProvider) {
    let disk = MemoryProvider::new();
    let kp = KeyPair::from_seed(&seed_of(&v["seed"]));
    assert_eq!(kp.public_key().to_hex(), v["publicKey"].as_str().unwrap());
    assert_eq!(kp.secret_key_bytes().to_vec(), hex(&v["secretKey"]));
    let mut feed = Feed::builder(disk.clone()).key_pair(kp).open().unwrap();
    assert_eq!(feed.discovery_key().to_vec(), hex(&v["discoveryKey"]));
    for step in v["steps"].as_array().unwrap() {
        let values = entries(step);
        let first = step["firstIndex"].as_u64().unwrap();
        let range = if step["operation"].as_str().unwrap().contains("batch") {
            feed.append_batch(&values).unwrap()
        } else {
            assert_eq!(values.len(), 1);
            let i = feed.append(&values[0]).unwrap();
            i..i + 1
        };
        assert_eq!(range.start, first);
        assert_eq!(feed.len(), step["length"].as_u64().unwrap());
        assert_eq!(feed.byte_len(), step["byteLength"].as_u64().unwrap());
        let roots: Vec<Node> = step["roots"].as_array().unwrap().iter().map(node).collect();
        assert_eq!(feed.roots(), &roots[..], "roots after step at {first}");
        assert_eq!(kappa_log::tree_hash(&roots).to_vec(), hex(&step["treeHash"]));
        let sig = &step["signature"];
        let slot = sig["index"].as_u64().unwrap();
        assert_eq!(feed.signature_slot(slot).unwrap().unwrap().0.to_vec(), hex(&sig["signature"]));
        feed.verify().unwrap();
    }
    (feed, disk)
}

#[test]
fn feed_steps_files_and_nodes() {
    let v = load("feed.json");
    let (mut feed, disk) = build_feed(&v);
    for leaf in v["leaves"].as_array().unwrap() {
        let i = leaf["index"].as_u64().unwrap();
        let data = feed.get(i).unwrap().unwrap();
        assert_eq!(data.len() as u64, leaf["length"].as_u64().unwrap());
        if leaf["dataHex"].is_string() {
            assert_eq!(data, hex(&leaf["dataHex"]));
        }
        assert_eq!(kappa_log::leaf_hash(&data).to_vec(), hex(&leaf["leafHash"]));
    }
    let nodes = v["treeNodes"].as_array().unwrap();
    for n in nodes {
        let want = node(n);
        assert_eq!(feed.node(want.index).unwrap(), Some(want));
    }
    for slot in v["signatureSlots"].as_array().unwrap() {
        let i = slot["index"].as_u64().unwrap();
        let got = feed.signature_slot(i).unwrap().map(|s| s.0.to_vec()).unwrap_or(vec![0; 64]);
        assert_eq!(got, hex(&slot["hex"]), "signature slot {i}");
    }
    drop(feed);
    for (name, f) in v["files"].as_object().unwrap() {
        let got = file(&disk, name);
        assert_eq!(got.len() as u64, f["size"].as_u64().unwrap(), "size of {name}");
        assert_eq!(hex::encode(&got), f["hex"].as_str().unwrap(), "bytes of {name}");
    }
    // Reopening gives the same state, and writes nothing.
    let before: Vec<Vec<u8>> = disk.names().iter().map(|n| file(&disk, n)).collect();
    let mut again = Feed::builder(disk.clone()).open().unwrap();
    assert!(again.is_writable());
    assert_eq!(again.len(), 10);
    assert_eq!(
        again.byte_len(),
        v["steps"].as_array().unwrap().last().unwrap()["byteLength"].as_u64().unwrap()
    );
    assert_eq!(again.audit().unwrap(), 10);
    let after: Vec<Vec<u8>> = disk.names().iter().map(|n| file(&disk, n)).collect();
    assert_eq!(before, after);
}

fn check_proof(got: &Proof, nodes: &Value, signature: &Value) {
    let want: Vec<Node> = nodes.as_array().unwrap().iter().map(node).collect();
    assert_eq!(got.nodes, want);
    match signature.as_str() {
        Some(_) => assert_eq!(got.signature.unwrap().0.to_vec(), hex(signature)),
        None => assert_eq!(got.signature, None),
    }
}

#[test]
fn proofs_for_digest_zero_and_hash_only() {
    let v = load("feed.json");
    let (mut feed, _) = build_feed(&v);
    for p in v["proofsDigest0"].as_array().unwrap() {
        let i = p["index"].as_u64().unwrap();
        let proof = feed.proof(i, p["requestNodes"].as_u64().unwrap(), false).unwrap();
        check_proof(&proof, &p["nodes"], &p["signature"]);
    }
    let h = &v["hashOnlyProofIndex3"];
    let proof = feed.proof(3, 0, true).unwrap();
    check_proof(&proof, &h["nodes"], &h["signature"]);
}

#[test]
fn sparse_reader_matches_js() {
    let v = load("feed.json");
    let (mut writer, _) = build_feed(&v);
    let s = &v["sparseReader"];
    let disk = MemoryProvider::new();
    let key = PublicKey::from_hex(v["publicKey"].as_str().unwrap()).unwrap();
    let mut reader = Feed::builder(disk.clone()).public_key(key).open().unwrap();
    assert!(!reader.is_writable());
    for r in s["received"].as_array().unwrap() {
        let i = r["index"].as_u64().unwrap();
        let digest = reader.digest(i);
        assert_eq!(digest, r["requestNodes"].as_u64().unwrap(), "digest for {i}");
        let proof = writer.proof(i, digest, false).unwrap();
        check_proof(&proof, &r["proofNodes"], &r["signature"]);
        let data = writer.get(i).unwrap().unwrap();
        reader.put(i, &data, &proof).unwrap();
        assert_eq!(reader.get(i).unwrap().unwrap(), data);
    }
    assert_eq!(reader.len(), s["lengthAfter"].as_u64().unwrap());
    let present: Vec<u64> = (0..40).filter(|&x| reader.has_node(x)).collect();
    let want: Vec<u64> = s["treeNodesPresent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().or_else(|| n["index"].as_u64()).unwrap())
        .collect();
    assert_eq!(present, want);
    for d in s["digests"].as_array().unwrap() {
        let i = d["index"].as_u64().unwrap();
        assert_eq!(reader.digest(i), d["digest"].as_u64().unwrap(), "digest {i}");
        let proof = writer.proof(i, d["digest"].as_u64().unwrap(), false).unwrap();
        let idx: Vec<u64> = proof.nodes.iter().map(|n| n.index).collect();
        let want: Vec<u64> =
            d["responderProofNodeIndexes"].as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).collect();
        assert_eq!(idx, want, "proof nodes for {i}");
        assert_eq!(proof.signature.is_some(), d["responderIncludesSignature"].as_bool().unwrap());
    }
    drop(reader);
    for (name, f) in s["files"].as_object().unwrap() {
        let got = file(&disk, name);
        assert_eq!(got.len() as u64, f["size"].as_u64().unwrap(), "size of {name}");
        assert_eq!(hex::encode(&got), f["hex"].as_str().unwrap(), "bytes of {name}");
    }
    assert!(!disk.exists("secret_key").unwrap());
    // Reopened, the reader has the same blocks and verifies.
    let mut again = Feed::builder(disk).open().unwrap();
    assert_eq!(again.len(), 10);
    assert!(again.has(0) && again.has(5) && again.has(9) && !again.has(1));
    again.verify().unwrap();
    assert_eq!(again.audit().unwrap(), 3);
}

#[test]
fn bitfield_files_for_many_lengths() {
    let v = load("bitfield.json");
    let f = load("feed.json");
    let kp = KeyPair::from_seed(&seed_of(&f["seed"]));
    for case in v["cases"].as_array().unwrap() {
        let n = case["length"].as_u64().unwrap();
        let disk = MemoryProvider::new();
        let mut feed = Feed::builder(disk.clone()).key_pair(kp.clone()).open().unwrap();
        let mut i = 0;
        while i < n {
            let end = (i + 1000).min(n);
            feed.append_batch((i..end).map(|k| [(k % 256) as u8])).unwrap();
            i = end;
        }
        let roots: Vec<Node> = case["roots"].as_array().unwrap().iter().map(node).collect();
        assert_eq!(feed.roots(), &roots[..], "roots for {n}");
        assert_eq!(
            feed.signature().unwrap().unwrap(),
            Signature::try_from_slice(&hex(&case["lastSignature"]["signature"])).unwrap()
        );
        drop(feed);
        let bits = file(&disk, "bitfield");
        assert_eq!(bits.len() as u64, case["bitfieldFileSize"].as_u64().unwrap(), "bitfield size for {n}");
        assert_eq!(hex::encode(&bits), case["bitfieldHex"].as_str().unwrap(), "bitfield for {n}");
        assert_eq!(file(&disk, "tree").len() as u64, case["treeFileSize"].as_u64().unwrap());
        assert_eq!(file(&disk, "signatures").len() as u64, case["signaturesFileSize"].as_u64().unwrap());
        assert_eq!(file(&disk, "data").len() as u64, case["dataFileSize"].as_u64().unwrap());
        let tree_hash = blake2_256(&file(&disk, "tree"));
        assert_eq!(hex::encode(tree_hash), case["treeFileBlake2b256"].as_str().unwrap());
        let reopened = Feed::builder(disk).open().unwrap();
        assert_eq!(reopened.len(), n);
    }
}

fn blake2_256(data: &[u8]) -> [u8; 32] {
    use blake2::digest::consts::U32;
    use blake2::{Blake2b, Digest};
    Blake2b::<U32>::digest(data).into()
}

#[test]
fn discovery_keys() {
    for case in load("discovery-key.json")["vectors"].as_array().unwrap() {
        let pk: [u8; 32] = hex(&case["publicKey"]).try_into().unwrap();
        assert_eq!(discovery_key(&pk).to_vec(), hex(&case["discoveryKey"]));
        assert_eq!(PublicKey::from_bytes(pk).discovery_key(), discovery_key(&pk));
    }
}

#[test]
fn json_codec_matches_js() {
    let codec = Json::<Value>::new();
    for case in load("codecs.json")["vectors"].as_array().unwrap() {
        let bytes = codec.encode(&case["value"]).unwrap();
        assert_eq!(hex::encode(&bytes), case["storedHex"].as_str().unwrap());
        assert_eq!(codec.decode(&bytes).unwrap(), case["value"]);
    }
}
