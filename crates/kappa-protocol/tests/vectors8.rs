//! The hypercore-protocol 8.0.7 (kappa-core 7) handshake vector made by the real
//! JS with `interop/kc7/gen-vectors.js` (`tests/vectors/handshake8.json`): the
//! standard `Noise_XX_25519_ChaChaPoly_BLAKE2b` of noise-protocol 3.0.1, then the
//! same XSalsa20 transport as hypercore-protocol 7.

use kappa_protocol::frame::{Decoded, FrameDecoder};
use kappa_protocol::noise::{Generation, Handshake, HandshakeError, HandshakeResult, KeyPair, Wire};
use kappa_protocol::{NoisePayload, Protocol, ProtocolError, ProtocolOptions};
use serde_json::Value;

fn load(name: &str) -> Value {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

fn arr<const N: usize>(s: &str) -> [u8; N] {
    unhex(s).try_into().unwrap()
}

struct Vector {
    v: Value,
}

impl Vector {
    fn load(name: &str) -> Self {
        Vector { v: load(name) }
    }

    fn s(&self, path: &[&str]) -> &str {
        let mut x = &self.v;
        for p in path {
            x = &x[*p];
        }
        x.as_str().unwrap()
    }

    fn keypair(&self, kp: &Value) -> KeyPair {
        let k = KeyPair::from_seed(&unhex(kp["seed"].as_str().unwrap()));
        assert_eq!(hex::encode(k.public_key()), kp["publicKey"].as_str().unwrap());
        assert_eq!(hex::encode(k.secret_key()), kp["secretKey"].as_str().unwrap());
        k
    }

    fn initiator(&self, wire: Wire) -> Handshake {
        Handshake::new_initiator_for(
            wire,
            self.keypair(&self.v["initiatorStatic"]),
            self.keypair(&self.v["generatedKeyPairsInOrder"][0]),
            arr(self.s(&["initiatorPayloadNonce"])),
        )
    }

    fn responder(&self, generation: Generation) -> Handshake {
        Handshake::new_responder_for(
            generation,
            self.keypair(&self.v["responderStatic"]),
            self.keypair(&self.v["generatedKeyPairsInOrder"][1]),
            arr(self.s(&["responderPayloadNonce"])),
        )
    }

    fn chunk(&self, dir: &str, i: usize) -> Vec<u8> {
        unhex(self.v[dir][i].as_str().unwrap())
    }

    fn check_results(&self, a: &HandshakeResult, b: &HandshakeResult, generation: Generation) {
        assert_eq!(hex::encode(a.tx_key), self.s(&["initiatorSplit", "txKey"]));
        assert_eq!(hex::encode(a.rx_key), self.s(&["initiatorSplit", "rxKey"]));
        assert_eq!(hex::encode(b.tx_key), self.s(&["responderSplit", "txKey"]));
        assert_eq!(hex::encode(b.rx_key), self.s(&["responderSplit", "rxKey"]));
        assert_eq!(hex::encode(a.remote_static_key), self.s(&["initiatorSeesRemoteStatic"]));
        assert_eq!(hex::encode(b.remote_static_key), self.s(&["responderSeesRemoteStatic"]));
        assert_eq!((a.generation, b.generation), (generation, generation));
    }
}

const KC6: Generation = Generation::KappaCore6;
const KC7: Generation = Generation::KappaCore7;

#[test]
fn handshake_8_byte_for_byte() {
    let hv = Vector::load("handshake8.json");
    assert_eq!(hv.s(&["protocolName"]).as_bytes(), KC7.protocol_name());
    for wire in [Wire::Only(KC7), Wire::Auto] {
        let mut a = hv.initiator(wire);
        let mut b = hv.responder(KC7);
        assert_eq!(b.generation(), Some(KC7));
        assert_eq!(a.generation(), if wire == Wire::Auto { None } else { Some(KC7) });
        let m1 = a.take_outgoing();
        assert_eq!(m1, hv.chunk("handshakeChunksAtoB", 0), "{wire}");
        b.receive(&m1).unwrap();
        assert!(b.answered());
        let m2 = b.take_outgoing();
        assert_eq!(m2, hv.chunk("handshakeChunksBtoA", 0));
        a.receive(&m2).unwrap();
        assert!(a.is_finished());
        assert_eq!(a.generation(), Some(KC7), "an auto initiator keeps the suite whose message 2 decrypts");
        let m3 = a.take_outgoing();
        assert_eq!(m3, hv.chunk("handshakeChunksAtoB", 1), "{wire}");
        b.receive(&m3).unwrap();
        assert!(b.is_finished());
        hv.check_results(a.result().unwrap(), b.result().unwrap(), KC7);
    }
}

#[test]
fn an_auto_initiator_also_detects_kappa_core_6_byte_for_byte() {
    let hv = Vector::load("handshake.json");
    let mut a = hv.initiator(Wire::Auto);
    let mut b = hv.responder(KC6);
    let m1 = a.take_outgoing();
    assert_eq!(m1, hv.chunk("handshakeChunksAtoB", 0));
    b.receive(&m1).unwrap();
    // Message 2 in any chunking.
    for part in b.take_outgoing().chunks(5) {
        a.receive(part).unwrap();
    }
    assert_eq!(a.generation(), Some(KC6));
    let m3 = a.take_outgoing();
    assert_eq!(m3, hv.chunk("handshakeChunksAtoB", 1));
    b.receive(&m3).unwrap();
    hv.check_results(a.result().unwrap(), b.result().unwrap(), KC6);
}

#[test]
fn message_1_is_the_same_in_both_suites_and_the_answers_differ() {
    let hv = Vector::load("handshake8.json");
    let m1_6 = hv.initiator(Wire::Only(KC6)).take_outgoing();
    let m1_7 = hv.initiator(Wire::Only(KC7)).take_outgoing();
    assert_eq!(m1_6, m1_7);
    let mut b6 = hv.responder(KC6);
    let mut b7 = hv.responder(KC7);
    b6.receive(&m1_6).unwrap();
    b7.receive(&m1_7).unwrap();
    assert_ne!(b6.take_outgoing(), b7.take_outgoing());
}

#[test]
fn one_generation_only_fails_on_the_other_and_auto_names_both_causes() {
    let hv = Vector::load("handshake8.json");
    // A kappa-core 6 initiator cannot read a kappa-core 7 answer, and the other way round.
    for (ours, theirs) in [(KC6, KC7), (KC7, KC6)] {
        let mut a = hv.initiator(Wire::Only(ours));
        let mut b = hv.responder(theirs);
        b.receive(&a.take_outgoing()).unwrap();
        assert_eq!(a.receive(&b.take_outgoing()), Err(HandshakeError::BadMac));
    }
    // Damaged answers fail in both suites under auto, with both causes named.
    let mut a = hv.initiator(Wire::Auto);
    let mut b = hv.responder(KC7);
    b.receive(&a.take_outgoing()).unwrap();
    let mut m2 = b.take_outgoing();
    m2[60] ^= 1;
    let err = a.receive(&m2).unwrap_err();
    assert_eq!(
        err,
        HandshakeError::BothGenerations {
            kc6: Box::new(HandshakeError::BadMac),
            kc7: Box::new(HandshakeError::BadMac)
        }
    );
    let text = err.to_string();
    assert!(text.contains("kappa-core 6") && text.contains("kappa-core 7"), "{text}");
    assert!(matches!(a.receive(&[0]), Err(HandshakeError::Failed(_))));
    // Errors that do not depend on the suite are reported as both too.
    let mut a = hv.initiator(Wire::Auto);
    assert!(matches!(a.receive(&[3, 1, 2, 3]), Err(HandshakeError::BothGenerations { .. })));
    // A low-order key from an impostor responder.
    let mut b = hv.responder(KC7);
    let mut m1 = vec![58u8];
    m1.extend_from_slice(&[0; 32]);
    m1.extend_from_slice(&NoisePayload { nonce: vec![1; 24] }.encode());
    assert_eq!(b.receive(&m1), Err(HandshakeError::WeakPublicKey));
}

#[test]
fn random_keys_interoperate_in_every_pairing() {
    for (wire, responder, expect) in [
        (Wire::Auto, KC6, Some(KC6)),
        (Wire::Auto, KC7, Some(KC7)),
        (Wire::Only(KC7), KC7, Some(KC7)),
        (Wire::Only(KC6), KC6, Some(KC6)),
        (Wire::Only(KC6), KC7, None),
        (Wire::Only(KC7), KC6, None),
    ] {
        let mut a = Handshake::initiator_for(wire, KeyPair::generate());
        let mut b = Handshake::responder_for(responder, KeyPair::generate());
        b.receive(&a.take_outgoing()).unwrap();
        let r = a.receive(&b.take_outgoing());
        match expect {
            None => assert!(r.is_err(), "{wire} vs {responder:?}"),
            Some(g) => {
                r.unwrap();
                b.receive(&a.take_outgoing()).unwrap();
                assert_eq!(a.result().unwrap().generation, g);
                assert_eq!(b.result().unwrap().tx_key, a.result().unwrap().rx_key);
            }
        }
    }
}

fn frames(plain: &[u8]) -> Vec<(u64, u64)> {
    let mut d = FrameDecoder::new();
    let mut out = Vec::new();
    d.push(plain);
    while let Some(f) = d.next_frame().unwrap() {
        if let Decoded::Frame(f) = f {
            out.push((f.channel, f.type_id as u64));
        }
    }
    out
}

#[test]
fn transport_8_is_xsalsa20_as_before() {
    let hv = Vector::load("handshake8.json");
    let mut a = hv.initiator(Wire::Auto);
    let mut b = hv.responder(KC7);
    b.receive(&a.take_outgoing()).unwrap();
    a.receive(&b.take_outgoing()).unwrap();
    b.receive(&a.take_outgoing()).unwrap();
    let (ra, rb) = (a.result().unwrap(), b.result().unwrap());
    for (enc, dec, plain, cipher, list) in [
        (ra.encryptor(), rb.decryptor(), "plaintextAHex", "ciphertextAHex", "plaintextFramesA"),
        (rb.encryptor(), ra.decryptor(), "plaintextBHex", "ciphertextBHex", "plaintextFramesB"),
    ] {
        let (mut enc, mut dec) = (enc, dec);
        let p = unhex(hv.s(&["transport", plain]));
        let c = unhex(hv.s(&["transport", cipher]));
        assert_eq!(enc.apply_to_vec(&p), c, "{plain}");
        assert_eq!(dec.apply_to_vec(&c), p, "{plain}");
        let expected: Vec<(u64, u64)> = hv.v["transport"][list]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["channel"].as_u64().unwrap(), f["type"].as_u64().unwrap()))
            .collect();
        assert_eq!(frames(&p), expected);
    }
    let key = unhex(hv.s(&["capabilityKey"]));
    assert_eq!(hex::encode(ra.capability(&key)), hv.s(&["initiatorCapability"]));
    assert_eq!(hex::encode(rb.capability(&key)), hv.s(&["responderCapability"]));
    assert_eq!(ra.remote_capability(&key), rb.capability(&key));
}

#[test]
fn a_protocol_reports_its_generation() {
    let now = std::time::Instant::now();
    for (wire, answer) in [(Wire::Auto, KC7), (Wire::Auto, KC6), (Wire::Only(KC7), KC7)] {
        let mut a = Protocol::new(now, ProtocolOptions::new(true).wire(wire));
        let mut b = Protocol::new(now, ProtocolOptions::new(false).responder_generation(answer));
        assert_eq!(b.generation(), Some(answer));
        for _ in 0..4 {
            if let Some(x) = a.poll_transmit(now) {
                b.handle_input(now, &x).unwrap();
            }
            if let Some(y) = b.poll_transmit(now) {
                a.handle_input(now, &y).unwrap();
            }
        }
        assert_eq!(a.generation(), Some(answer), "{wire}");
        assert_eq!(b.handshake_result().unwrap().generation, answer);
    }
    // A responder that answered and saw no message 3 says so.
    let mut a = Protocol::new(now, ProtocolOptions::new(true).wire(Wire::Only(KC6)));
    let mut b = Protocol::new(now, ProtocolOptions::new(false).responder_generation(KC7));
    assert!(!b.answered_unfinished_handshake());
    b.handle_input(now, &a.poll_transmit(now).unwrap()).unwrap();
    assert!(b.answered_unfinished_handshake());
    let err = a.handle_input(now, &b.poll_transmit(now).unwrap()).unwrap_err();
    assert!(matches!(err, ProtocolError::Handshake(HandshakeError::BadMac)), "{err}");
}
