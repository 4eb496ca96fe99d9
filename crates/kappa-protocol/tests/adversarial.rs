//! Misbehaving peers on the deterministic pair. Each attack ends the victim's
//! session with a clear, typed error; the victim's feed keeps only verified blocks
//! and still verifies.

mod util;

use std::time::Instant;

use kappa_log::storage::MemoryProvider;
use kappa_log::ProofError;
use kappa_log::{Feed, KeyPair, SharedFeed};
use kappa_protocol::frame::MAX_FRAME_LEN;
use kappa_protocol::message::{Data, Have, Request};
use kappa_protocol::varint::VarintError;
use kappa_protocol::{
    encode_frame, DecodeError, FeedOptions, FrameError, FramingError, Message, ProtocolError,
};
use util::Pair;

fn writer(n: u64) -> SharedFeed {
    let mut f = Feed::builder(MemoryProvider::new()).key_pair(KeyPair::from_seed(&[1; 32])).open().unwrap();
    f.append_batch((0..n).map(|i| format!("value-{i}"))).unwrap();
    SharedFeed::new(f)
}

fn replica_of(w: &SharedFeed) -> SharedFeed {
    SharedFeed::new(Feed::builder(MemoryProvider::new()).public_key(*w.public_key()).open().unwrap())
}

/// Runs a session where `a` (serving `w`) misbehaves as `attack` says and `b`
/// (replica `r`) is the victim; returns the victim's error.
fn attack(attack: impl FnMut(u64, &mut Message) + Send + 'static) -> (ProtocolError, SharedFeed, SharedFeed) {
    let mut pair = Pair::new(42, false, false);
    let w = writer(40);
    let r = replica_of(&w);
    pair.a.tamper_outgoing(attack);
    let now = pair.now;
    pair.a.open_feed(now, w.clone(), FeedOptions::default()).unwrap();
    pair.b.open_feed(now, r.clone(), FeedOptions::default()).unwrap();
    pair.drive_until(100_000, |p| p.b.is_ended());
    let err = pair
        .b
        .error()
        .cloned()
        .unwrap_or_else(|| panic!("victim did not fail; finished={}", pair.b.is_finished()));
    (err, w, r)
}

fn victim_is_intact(w: &SharedFeed, r: &SharedFeed) {
    let mut f = r.lock();
    f.verify().unwrap();
    for i in 0..f.len() {
        if let Some(v) = f.get(i).unwrap() {
            assert_eq!(Some(v), w.get(i).unwrap(), "victim stored a forged block {i}");
        }
    }
}

/// Tamper with Data messages after the first `skip` of them.
fn on_data(
    skip: usize,
    mut f: impl FnMut(&mut Data) + Send + 'static,
) -> impl FnMut(u64, &mut Message) + Send {
    let mut seen = 0;
    move |_, m| {
        if let Message::Data(d) = m {
            seen += 1;
            if seen > skip {
                f(d);
            }
        }
    }
}

#[test]
fn flipped_bit_in_a_proof_node() {
    let (err, w, r) = attack(on_data(5, |d| {
        if let Some(n) = d.nodes.first_mut() {
            n.hash[3] ^= 0x10;
        }
    }));
    // The hash recomputed from the proof disagrees with a node the victim holds
    // (for a block it does not hold): its own copy might be the damaged one, so
    // only a complete path to the signed roots could settle it, and a compact
    // proof leaves out nodes sent before.
    assert!(matches!(err, ProtocolError::BadBlock { source: ProofError::MissingNode { .. }, .. }), "{err}");
    victim_is_intact(&w, &r);
}

#[test]
fn wrong_signature() {
    let (err, w, r) = attack(on_data(0, |d| {
        if let Some(s) = &mut d.signature {
            s[10] ^= 1;
        }
    }));
    assert!(matches!(err, ProtocolError::BadBlock { source: ProofError::BadSignature, .. }), "{err}");
    victim_is_intact(&w, &r);
    assert_eq!(r.len(), 0);
}

#[test]
fn flipped_bit_in_a_value() {
    let (err, w, r) = attack(on_data(3, |d| {
        if let Some(v) = &mut d.value {
            v[0] ^= 0x80;
        }
    }));
    // As for a flipped proof node: the leaf disagrees with a node held.
    assert!(matches!(err, ProtocolError::BadBlock { source: ProofError::MissingNode { .. }, .. }), "{err}");
    victim_is_intact(&w, &r);
}

#[test]
fn signature_of_another_key() {
    let other = KeyPair::from_seed(&[9; 32]);
    let (err, w, r) = attack(on_data(0, move |d| {
        if let Some(s) = &mut d.signature {
            *s = other.sign(b"whatever").0.to_vec();
        }
    }));
    assert!(matches!(err, ProtocolError::BadBlock { source: ProofError::BadSignature, .. }), "{err}");
    victim_is_intact(&w, &r);
}

#[test]
fn a_proof_without_its_signature() {
    let (err, w, r) = attack(on_data(0, |d| d.signature = None));
    assert!(matches!(err, ProtocolError::BadBlock { source: ProofError::MissingSignature, .. }), "{err}");
    assert_eq!(r.len(), 0);
    victim_is_intact(&w, &r);
}

#[test]
fn data_of_one_block_sent_as_another() {
    let (err, w, r) = attack(on_data(0, |d| d.index ^= 1));
    // The block's value and proof lead to roots the signature does not sign.
    assert!(matches!(err, ProtocolError::BadBlock { source: ProofError::BadSignature, .. }), "{err}");
    assert_eq!(r.len(), 0);
    victim_is_intact(&w, &r);
}

#[test]
fn out_of_range_data_index() {
    let (err, w, r) = attack(on_data(0, |d| d.index = 1 << 60));
    assert_eq!(err, ProtocolError::OutOfRange("Data index"));
    victim_is_intact(&w, &r);
}

#[test]
fn out_of_range_have() {
    let (err, w, r) = attack(|_, m| {
        if let Message::Have(h) = m {
            *h = Have { start: u64::MAX - 2, length: Some(10), bitfield: None, ack: None };
        }
    });
    assert_eq!(err, ProtocolError::OutOfRange("Have"));
    victim_is_intact(&w, &r);
}

#[test]
fn malformed_node_hash_length() {
    let (err, w, r) = attack(on_data(0, |d| {
        if let Some(n) = d.nodes.first_mut() {
            n.hash.truncate(5);
        }
    }));
    assert_eq!(err, ProtocolError::Malformed("tree node hash is not 32 bytes"));
    victim_is_intact(&w, &r);
}

#[test]
fn capability_for_a_different_key() {
    let (err, w, r) = attack(|_, m| {
        if let Message::Open(o) = m {
            o.capability = Some(vec![7; 32]);
        }
    });
    assert_eq!(err, ProtocolError::BadCapability(hex::encode(w.discovery_key())));
    victim_is_intact(&w, &r);
}

/// Sets up a pair that has synced a little, then lets `a` inject raw frames.
fn injected(frame: Vec<u8>) -> (ProtocolError, SharedFeed, SharedFeed) {
    let mut pair = Pair::new(5, true, false);
    let w = writer(10);
    let r = replica_of(&w);
    let now = pair.now;
    pair.a.open_feed(now, w.clone(), FeedOptions::default()).unwrap();
    pair.b.open_feed(now, r.clone(), FeedOptions::default()).unwrap();
    assert!(pair.drive_until(100_000, |_| r.len() == 10 && r.lock().is_complete()));
    let now = pair.now;
    pair.a.inject_plaintext(now, &frame);
    pair.drive_until(100_000, |p| p.b.is_ended());
    let err = pair.b.error().cloned().expect("victim did not fail");
    (err, w, r)
}

#[test]
fn oversized_frame() {
    // A frame header announcing 9 MiB (over the 8 MiB limit JS also enforces).
    let mut frame = Vec::new();
    kappa_protocol::varint::encode(9 << 20, &mut frame);
    frame.extend_from_slice(&[0x17, 0, 0, 0]);
    let (err, w, r) = injected(frame);
    assert_eq!(
        err,
        ProtocolError::Frame(FramingError::Receive {
            source: FrameError::TooLarge { len: 9 << 20, max: MAX_FRAME_LEN },
            unverified: false,
        })
    );
    victim_is_intact(&w, &r);
    assert_eq!(r.len(), 10);
}

#[test]
fn message_on_an_unopened_channel() {
    let frame = encode_frame(99, 7, &Request::new(0).encode()).unwrap();
    let (err, w, r) = injected(frame);
    assert_eq!(err, ProtocolError::UnknownChannel(99));
    victim_is_intact(&w, &r);
}

#[test]
fn undecodable_message_body() {
    // A Request (type 7) on channel 1 whose body is a truncated varint.
    let frame = encode_frame(1, 7, &[0x08, 0xff]).unwrap();
    let (err, w, r) = injected(frame);
    assert_eq!(err, ProtocolError::Frame(FramingError::Message(DecodeError::Varint(VarintError::Truncated))));
    victim_is_intact(&w, &r);
}

#[test]
fn garbage_instead_of_a_handshake() {
    let now = Instant::now();
    let mut p = kappa_protocol::Protocol::new(now, kappa_protocol::ProtocolOptions::new(false));
    let r = p.handle_input(now, &[0x3a; 200]);
    assert!(matches!(r, Err(ProtocolError::Handshake(_))), "{r:?}");
    assert!(p.is_ended());
}

#[test]
fn silence_times_out() {
    let mut pair = Pair::new(1, true, false);
    let w = writer(1);
    let now = pair.now;
    pair.a.open_feed(now, w.clone(), FeedOptions::default()).unwrap();
    // The peer never answers: nothing is delivered to `a`, and 21 s pass.
    let _ = pair.a.poll_transmit(now);
    let later = now + std::time::Duration::from_secs(21);
    pair.a.handle_timeout(later);
    assert!(matches!(pair.a.error(), Some(ProtocolError::Timeout(_))));
}

#[test]
fn a_data_for_an_unrequested_block_is_dropped_not_stored() {
    let mut pair = Pair::new(3, true, false);
    let w = writer(10);
    let r = replica_of(&w);
    let now = pair.now;
    pair.a.open_feed(now, w.clone(), FeedOptions::default()).unwrap();
    pair.b.open_feed(now, r.clone(), FeedOptions::sparse_range(0..2)).unwrap();
    assert!(pair.drive_until(100_000, |_| r.has(0) && r.has(1)));
    // Push block 5 unasked, with a valid proof: JS drops such Data; so do we.
    let proof = w.lock().proof(5, 0, false).unwrap();
    let data = Data {
        index: 5,
        value: w.get(5).unwrap(),
        nodes: proof
            .nodes
            .iter()
            .map(|n| kappa_protocol::DataNode { index: n.index, hash: n.hash.to_vec(), size: n.size })
            .collect(),
        signature: proof.signature.map(|s| s.0.to_vec()),
    };
    let now = pair.now;
    pair.a.inject_plaintext(now, &encode_frame(1, 9, &data.encode()).unwrap());
    pair.drive_until(10_000, |_| false);
    assert!(!r.has(5));
    assert!(!pair.b.is_ended());
}

/// A peer asking for many large blocks at once is answered as our output
/// drains: what waits to be sent stays near `OUT_LOW_WATER`, never the whole
/// request backlog (1024 × 64 KiB here), and everything still arrives.
#[test]
fn many_large_requests_are_answered_as_the_output_drains() {
    let mut f = Feed::builder(MemoryProvider::new()).key_pair(KeyPair::from_seed(&[2; 32])).open().unwrap();
    f.append_batch((0..300u32).map(|i| vec![i as u8; 64 << 10])).unwrap();
    let w = SharedFeed::new(f);
    let r = replica_of(&w);
    let mut pair = Pair::new(7, false, false);
    let now = pair.now;
    pair.a.open_feed(now, w.clone(), FeedOptions::default()).unwrap();
    pair.b.open_feed(now, r.clone(), FeedOptions::default()).unwrap();
    let mut most = 0;
    let done = pair.drive_until(1_000_000, |p| {
        most = most.max(p.a.pending_transmit_len());
        p.a.is_ended() && p.b.is_ended()
    });
    assert!(done && pair.b.is_finished(), "{:?}", pair.b.error());
    assert_eq!(r.lock().downloaded(0..300), 300);
    let bound = kappa_protocol::OUT_LOW_WATER + (64 << 10) + 4096;
    assert!(most <= bound, "{most} bytes waited to be sent (bound {bound})");
    victim_is_intact(&w, &r);
}
