//! Byte vectors of hypercore 9.12.0 (kappa-core 7), made by the real JS with
//! `interop/kc7/gen-vectors.js`: `tests/vectors/feed9.json`, a feed signed in the
//! 40-byte form `tree_hash(roots) ‖ u64be(length)`.

use kappa_log::storage::{MemoryProvider, RandomAccess};
use kappa_log::{signable, tree_hash, Feed, KeyPair, Node, SignatureForm};
use serde_json::Value;

fn load(name: &str) -> Value {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn hex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn key_pair(v: &Value) -> KeyPair {
    let kp = KeyPair::from_seed(&hex(&v["keyPair"]["seed"]).try_into().unwrap());
    assert_eq!(kp.public_key().to_hex(), v["keyPair"]["publicKey"].as_str().unwrap());
    assert_eq!(kp.secret_key_bytes().to_vec(), hex(&v["keyPair"]["secretKey"]));
    kp
}

fn roots(step: &Value) -> Vec<Node> {
    step["roots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| Node {
            index: r["index"].as_u64().unwrap(),
            size: r["size"].as_u64().unwrap(),
            hash: hex(&r["hash"]).try_into().unwrap(),
        })
        .collect()
}

fn batches(v: &Value) -> Vec<Vec<Vec<u8>>> {
    v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s["appended"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e.as_str().unwrap().as_bytes().to_vec())
                .collect()
        })
        .collect()
}

#[test]
fn a_writer_in_the_40_byte_form_matches_hypercore_9_byte_for_byte() {
    let v = load("feed9.json");
    let disk = MemoryProvider::new();
    let mut feed = Feed::builder(disk.clone())
        .key_pair(key_pair(&v))
        .signature_form(SignatureForm::TreeHashAndLength)
        .open()
        .unwrap();
    assert_eq!(feed.signing_form(), SignatureForm::TreeHashAndLength);
    for (step, batch) in v["steps"].as_array().unwrap().iter().zip(batches(&v)) {
        feed.append_batch(&batch).unwrap();
        assert_eq!(feed.len(), step["length"].as_u64().unwrap());
        assert_eq!(feed.byte_len(), step["byteLength"].as_u64().unwrap());
        let roots = roots(step);
        assert_eq!(tree_hash(&roots).to_vec(), hex(&step["treeHash"]));
        assert_eq!(signable(&roots, feed.len()).to_vec(), hex(&step["signable"]));
        assert_eq!(feed.signature().unwrap().unwrap().0.to_vec(), hex(&step["signature"]));
        assert_eq!(feed.signature_form().unwrap(), Some(SignatureForm::TreeHashAndLength));
        // JS says: the 40-byte form verifies, the 32-byte one does not.
        assert!(step["verifies40"].as_bool().unwrap() && !step["verifies32"].as_bool().unwrap());
    }
    for name in ["key", "data", "tree", "signatures"] {
        assert_eq!(disk.storage(name).to_vec(), hex(&v["files"][name]), "file {name}");
    }
}

#[test]
fn a_feed_written_by_hypercore_9_opens_verifies_and_extends() {
    let v = load("feed9.json");
    let disk = MemoryProvider::new();
    for name in ["key", "secret_key", "data", "tree", "signatures", "bitfield"] {
        disk.storage(name).write(0, &hex(&v["files"][name])).unwrap();
    }
    let mut feed = Feed::builder(disk.clone()).open().unwrap();
    assert!(feed.is_writable());
    assert_eq!(feed.len(), 9);
    feed.verify().unwrap();
    assert_eq!(feed.audit().unwrap(), 9);
    assert_eq!(feed.signature_form().unwrap(), Some(SignatureForm::TreeHashAndLength));
    let all: Vec<u8> = batches(&v).concat().concat();
    let got: Vec<u8> = (0..9).flat_map(|i| feed.get(i).unwrap().unwrap()).collect();
    assert_eq!(got, all);
    let check = feed.check().unwrap();
    assert!(check.is_healthy(true), "{check:?}");

    // Our appends are signed in the 32-byte form by default: the head is then
    // readable by hypercore 8 again, and the older 40-byte signatures still verify.
    feed.append(b"from rust").unwrap();
    assert_eq!(feed.signature_form().unwrap(), Some(SignatureForm::TreeHash));
    drop(feed);
    let mut feed = Feed::builder(disk).open().unwrap();
    assert_eq!(feed.len(), 10);
    feed.verify().unwrap();
    let check = feed.check().unwrap();
    assert!(check.is_healthy(true), "{check:?}");
}

#[test]
fn a_replica_accepts_blocks_signed_in_either_form() {
    let v = load("feed9.json");
    let kp = key_pair(&v);
    for form in [SignatureForm::TreeHash, SignatureForm::TreeHashAndLength] {
        let mut writer =
            Feed::builder(MemoryProvider::new()).key_pair(kp.clone()).signature_form(form).open().unwrap();
        for batch in batches(&v) {
            writer.append_batch(&batch).unwrap();
        }
        let mut replica = Feed::builder(MemoryProvider::new()).public_key(kp.public_key()).open().unwrap();
        for i in (0..writer.len()).rev() {
            let digest = replica.digest(i);
            let proof = writer.proof(i, digest, false).unwrap();
            let value = writer.get(i).unwrap().unwrap();
            replica.put(i, &value, &proof).unwrap();
        }
        assert_eq!(replica.len(), 9, "{form}");
        replica.verify().unwrap();
        assert_eq!(replica.signature_form().unwrap(), Some(form));
        assert_eq!(form.hypercore8_verifies(), form == SignatureForm::TreeHash);
    }
}
