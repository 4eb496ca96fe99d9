//! Byte-for-byte checks against the JS-generated vectors in `tests/vectors/`.

use kappa_protocol::cipher::{capability, remote_capability, verify_remote_capability, TransportCipher};
use kappa_protocol::frame::{encode_frame, encode_message, Decoded, Frame, FrameDecoder, KEEP_ALIVE};
use kappa_protocol::message::*;
use kappa_protocol::noise::{Handshake, HandshakeError, HandshakeResult, KeyPair};
use kappa_protocol::rle;
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

fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::Null => None,
        Value::Object(o) => Some(unhex(o["hex"].as_str().unwrap())),
        other => panic!("not a byte field: {other}"),
    }
}

fn field_bytes(f: &Value, name: &str) -> Option<Vec<u8>> {
    f.get(name).and_then(bytes)
}

fn field_u64(f: &Value, name: &str) -> Option<u64> {
    f.get(name).map(|v| v.as_u64().unwrap())
}

fn field_bool(f: &Value, name: &str) -> Option<bool> {
    f.get(name).map(|v| v.as_bool().unwrap())
}

/// Builds the message a vector describes from its JSON fields.
fn build(type_id: i64, name: &str, f: &Value) -> (Option<Message>, Option<NoisePayload>) {
    let msg = match type_id {
        -1 => {
            assert_eq!(name, "NoisePayload");
            return (None, Some(NoisePayload { nonce: field_bytes(f, "nonce").unwrap() }));
        }
        0 => Message::Open(Open {
            discovery_key: field_bytes(f, "discoveryKey").unwrap(),
            capability: field_bytes(f, "capability"),
        }),
        1 => Message::Options(Options {
            extensions: f
                .get("extensions")
                .map(|e| e.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect())
                .unwrap_or_default(),
            ack: field_bool(f, "ack"),
        }),
        2 => Message::Status(Status {
            uploading: field_bool(f, "uploading"),
            downloading: field_bool(f, "downloading"),
        }),
        3 => Message::Have(Have {
            start: field_u64(f, "start").unwrap(),
            length: field_u64(f, "length"),
            bitfield: field_bytes(f, "bitfield"),
            ack: field_bool(f, "ack"),
        }),
        4 => {
            Message::Unhave(Unhave { start: field_u64(f, "start").unwrap(), length: field_u64(f, "length") })
        }
        5 => Message::Want(Want { start: field_u64(f, "start").unwrap(), length: field_u64(f, "length") }),
        6 => {
            Message::Unwant(Unwant { start: field_u64(f, "start").unwrap(), length: field_u64(f, "length") })
        }
        7 => Message::Request(Request {
            index: field_u64(f, "index").unwrap(),
            bytes: field_u64(f, "bytes"),
            hash: field_bool(f, "hash"),
            nodes: field_u64(f, "nodes"),
        }),
        8 => Message::Cancel(Cancel {
            index: field_u64(f, "index").unwrap(),
            bytes: field_u64(f, "bytes"),
            hash: field_bool(f, "hash"),
        }),
        9 => Message::Data(Data {
            index: field_u64(f, "index").unwrap(),
            value: field_bytes(f, "value"),
            nodes: f
                .get("nodes")
                .map(|n| {
                    n.as_array()
                        .unwrap()
                        .iter()
                        .map(|n| DataNode {
                            index: field_u64(n, "index").unwrap(),
                            hash: field_bytes(n, "hash").unwrap(),
                            size: field_u64(n, "size").unwrap(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            signature: field_bytes(f, "signature"),
        }),
        10 => Message::Close(Close { discovery_key: field_bytes(f, "discoveryKey") }),
        other => panic!("unexpected type {other}"),
    };
    assert_eq!(format!("{:?}", msg).split('(').next().unwrap(), name);
    (Some(msg), None)
}

#[test]
fn messages_encode_byte_for_byte() {
    let v = load("wire-messages.json");
    let messages = v["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 29);
    for m in messages {
        let expected = unhex(m["encodedHex"].as_str().unwrap());
        let (msg, payload) = build(m["type"].as_i64().unwrap(), m["message"].as_str().unwrap(), &m["fields"]);
        match (msg, payload) {
            (Some(msg), _) => {
                assert_eq!(msg.encode(), expected, "encode {m}");
                assert_eq!(Message::decode(u64::from(msg.type_id()), &expected).unwrap(), msg, "decode {m}");
            }
            (_, Some(p)) => {
                assert_eq!(p.encode(), expected);
                assert_eq!(NoisePayload::decode(&expected).unwrap(), p);
            }
            _ => unreachable!(),
        }
    }
}

#[test]
fn messages_decode_then_reencode_identically() {
    let v = load("wire-messages.json");
    for m in v["messages"].as_array().unwrap() {
        let encoded = unhex(m["encodedHex"].as_str().unwrap());
        let type_id = m["type"].as_i64().unwrap();
        let reencoded = if type_id < 0 {
            NoisePayload::decode(&encoded).unwrap().encode()
        } else {
            Message::decode(type_id as u64, &encoded).unwrap().encode()
        };
        assert_eq!(reencoded, encoded, "{m}");
    }
}

fn frame_vector_message(f: &Value) -> Message {
    let type_id = f["type"].as_i64().unwrap();
    if type_id == 15 {
        let payload = match (f.get("payloadUtf8"), f.get("payloadHex")) {
            (Some(s), _) => s.as_str().unwrap().as_bytes().to_vec(),
            (_, Some(h)) => unhex(h.as_str().unwrap()),
            _ => panic!("extension without payload"),
        };
        return Message::Extension(Extension { id: f["extensionId"].as_u64().unwrap(), payload });
    }
    let names = [
        "Open", "Options", "Status", "Have", "Unhave", "Want", "Unwant", "Request", "Cancel", "Data", "Close",
    ];
    build(type_id, names[type_id as usize], &f["fields"]).0.unwrap()
}

#[test]
fn frames_byte_for_byte() {
    let v = load("wire-messages.json");
    let frames = v["frames"].as_array().unwrap();
    assert_eq!(frames.len(), 11);
    let mut all = Vec::new();
    let mut expected_frames = Vec::new();
    for f in frames {
        let channel = f["channel"].as_u64().unwrap();
        let expected = unhex(f["frameHex"].as_str().unwrap());
        let msg = frame_vector_message(f);
        assert_eq!(u64::from(msg.type_id()) | channel << 4, f["header"].as_u64().unwrap());
        assert_eq!(encode_message(channel, &msg).unwrap(), expected, "{f}");
        assert_eq!(encode_frame(channel, msg.type_id(), &msg.encode()).unwrap(), expected);

        let mut d = FrameDecoder::new();
        d.push(&expected);
        let Some(Decoded::Frame(frame)) = d.next_frame().unwrap() else { panic!("no frame") };
        assert_eq!(frame.channel, channel);
        assert_eq!(frame.message().unwrap(), msg);
        assert_eq!(frame.encode().unwrap(), expected);
        assert_eq!(d.next_frame().unwrap(), None);

        all.extend_from_slice(&expected);
        all.extend_from_slice(&KEEP_ALIVE);
        expected_frames.push(Decoded::Frame(frame));
        expected_frames.push(Decoded::KeepAlive);
    }
    assert_eq!(unhex(v["keepAliveFrameHex"].as_str().unwrap()), KEEP_ALIVE);

    // All frames back to back, pushed in every chunk size from 1 to 17.
    for chunk in 1..=17 {
        let mut d = FrameDecoder::new();
        let mut got = Vec::new();
        for part in all.chunks(chunk) {
            d.push(part);
            while let Some(frame) = d.next_frame().unwrap() {
                got.push(frame);
            }
        }
        assert_eq!(got, expected_frames, "chunk size {chunk}");
        assert_eq!(d.buffered(), 0);
    }
}

#[test]
fn rle_vectors() {
    let v = load("wire-messages.json");
    let vectors = v["rleBitfield"]["vectors"].as_array().unwrap();
    assert_eq!(vectors.len(), 12);
    for t in vectors {
        let input = match t["bitfieldHex"].as_str() {
            Some(h) => unhex(h),
            None => {
                assert_eq!(t["bitfieldDescription"], "1024 bytes 0xff followed by one byte 0x0f");
                let mut b = vec![0xff; 1024];
                b.push(0x0f);
                b
            }
        };
        let encoded = unhex(t["encodedHex"].as_str().unwrap());
        let decoded = unhex(t["decodedHex"].as_str().unwrap());
        assert_eq!(rle::encode(&input), encoded, "{}", t["encodedHex"]);
        assert_eq!(rle::decode(&encoded, 1 << 20).unwrap(), decoded);
        assert_eq!(rle::decode(&encoded, decoded.len()).unwrap(), decoded);
        if !decoded.is_empty() {
            assert!(rle::decode(&encoded, decoded.len() - 1).is_err());
        }
    }
}

struct HandshakeVector {
    v: Value,
}

impl HandshakeVector {
    fn new() -> Self {
        HandshakeVector { v: load("handshake.json") }
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

    fn initiator(&self) -> Handshake {
        Handshake::new_initiator(
            self.keypair(&self.v["initiatorStatic"]),
            self.keypair(&self.v["generatedKeyPairsInOrder"][0]),
            arr(self.s(&["initiatorPayloadNonce"])),
        )
    }

    fn responder(&self) -> Handshake {
        Handshake::new_responder(
            self.keypair(&self.v["responderStatic"]),
            self.keypair(&self.v["generatedKeyPairsInOrder"][1]),
            arr(self.s(&["responderPayloadNonce"])),
        )
    }

    fn chunk(&self, dir: &str, i: usize) -> Vec<u8> {
        unhex(self.v[dir][i].as_str().unwrap())
    }

    fn check_results(&self, a: &HandshakeResult, b: &HandshakeResult) {
        assert_eq!(hex::encode(a.tx_key), self.s(&["initiatorSplit", "txKey"]));
        assert_eq!(hex::encode(a.rx_key), self.s(&["initiatorSplit", "rxKey"]));
        assert_eq!(hex::encode(b.tx_key), self.s(&["responderSplit", "txKey"]));
        assert_eq!(hex::encode(b.rx_key), self.s(&["responderSplit", "rxKey"]));
        assert_eq!(hex::encode(a.remote_static_key), self.s(&["initiatorSeesRemoteStatic"]));
        assert_eq!(hex::encode(b.remote_static_key), self.s(&["responderSeesRemoteStatic"]));
        assert_eq!(a.local_nonce, b.remote_nonce);
        assert_eq!(b.local_nonce, a.remote_nonce);
        assert!(a.is_initiator && !b.is_initiator);
    }
}

#[test]
fn handshake_byte_for_byte() {
    let hv = HandshakeVector::new();
    assert_eq!(hv.s(&["protocolName"]).as_bytes(), kappa_protocol::noise::PROTOCOL_NAME);
    let mut a = hv.initiator();
    let mut b = hv.responder();
    assert!(b.take_outgoing().is_empty());

    let m1 = a.take_outgoing();
    assert_eq!(m1, hv.chunk("handshakeChunksAtoB", 0));
    assert_eq!(m1.len(), 1 + 58);
    b.receive(&m1).unwrap();
    let m2 = b.take_outgoing();
    assert_eq!(m2, hv.chunk("handshakeChunksBtoA", 0));
    assert_eq!(m2.len(), 1 + 122);
    assert!(!a.is_finished() && !b.is_finished());

    a.receive(&m2).unwrap();
    assert!(a.is_finished());
    let m3 = a.take_outgoing();
    assert_eq!(m3, hv.chunk("handshakeChunksAtoB", 1));
    assert_eq!(m3.len(), 1 + 90);
    b.receive(&m3).unwrap();
    assert!(b.is_finished());
    assert!(b.take_outgoing().is_empty());
    assert!(a.take_leftover().is_empty() && b.take_leftover().is_empty());

    hv.check_results(a.result().unwrap(), b.result().unwrap());
}

#[test]
fn handshake_any_chunking_with_leftover() {
    let hv = HandshakeVector::new();
    let transport_a = unhex(hv.s(&["transport", "ciphertextAHex"]));
    for chunk in [1, 2, 3, 7, 31, 58, 59, 60, 1000] {
        let mut a = hv.initiator();
        let mut b = hv.responder();
        for part in a.take_outgoing().chunks(chunk) {
            b.receive(part).unwrap();
        }
        for part in b.take_outgoing().chunks(chunk) {
            a.receive(part).unwrap();
        }
        // Message 3 and the first transport bytes arrive coalesced.
        let mut wire = a.take_outgoing();
        wire.extend_from_slice(&transport_a);
        let mut leftover = Vec::new();
        for part in wire.chunks(chunk) {
            b.receive(part).unwrap();
            leftover.extend(b.take_leftover());
        }
        assert!(b.is_finished());
        assert_eq!(leftover, transport_a, "chunk {chunk}");
        hv.check_results(a.result().unwrap(), b.result().unwrap());
    }
}

#[test]
fn handshake_errors_are_typed() {
    let hv = HandshakeVector::new();

    // Corrupt message 2: bad MAC at the initiator, and the state stays failed.
    let mut a = hv.initiator();
    let mut b = hv.responder();
    b.receive(&a.take_outgoing()).unwrap();
    let mut m2 = b.take_outgoing();
    m2[50] ^= 1;
    assert_eq!(a.receive(&m2), Err(HandshakeError::BadMac));
    assert!(matches!(a.receive(&[0]), Err(HandshakeError::Failed(_))));

    // Message 1 without payload.
    let mut b = hv.responder();
    let mut m1 = vec![32u8];
    m1.extend_from_slice(&[9; 32]);
    assert_eq!(b.receive(&m1), Err(HandshakeError::MissingPayload));

    // Message 1 too short, nonce of the wrong length, oversize message.
    let mut b = hv.responder();
    assert!(matches!(b.receive(&[3, 1, 2, 3]), Err(HandshakeError::TooShort { message: 1, .. })));
    let mut b = hv.responder();
    let mut m1 = vec![36u8];
    m1.extend_from_slice(&[9; 32]);
    m1.extend_from_slice(&[0x0a, 0x02, 1, 2]);
    assert_eq!(b.receive(&m1), Err(HandshakeError::BadNonceLength(2)));
    let mut b = hv.responder();
    assert_eq!(b.receive(&[0xff, 0xff, 0x04]), Err(HandshakeError::TooLarge(81_919)));

    // Two responders never finish: message 1 from an impostor initiator with a
    // low-order ephemeral key is refused.
    let mut b = hv.responder();
    let mut m1 = vec![58u8];
    m1.extend_from_slice(&[0; 32]);
    m1.extend_from_slice(&NoisePayload { nonce: vec![1; 24] }.encode());
    assert_eq!(b.receive(&m1), Err(HandshakeError::WeakPublicKey));
}

#[test]
fn handshake_random_keys_interoperate() {
    let mut a = Handshake::initiator(KeyPair::generate());
    let mut b = Handshake::responder(KeyPair::generate());
    b.receive(&a.take_outgoing()).unwrap();
    a.receive(&b.take_outgoing()).unwrap();
    b.receive(&a.take_outgoing()).unwrap();
    let (ra, rb) = (a.result().unwrap(), b.result().unwrap());
    assert_eq!(ra.tx_key, rb.rx_key);
    assert_eq!(ra.rx_key, rb.tx_key);
    assert_eq!(&ra.remote_static_key, b.local_static_key());
    assert_eq!(&rb.remote_static_key, a.local_static_key());
}

#[test]
fn capabilities() {
    let hv = HandshakeVector::new();
    let key = unhex(hv.s(&["capabilityKey"]));
    let itx: [u8; 32] = arr(hv.s(&["initiatorSplit", "txKey"]));
    let irx: [u8; 32] = arr(hv.s(&["initiatorSplit", "rxKey"]));
    let rtx: [u8; 32] = arr(hv.s(&["responderSplit", "txKey"]));
    let rrx: [u8; 32] = arr(hv.s(&["responderSplit", "rxKey"]));
    assert_eq!(hex::encode(capability(&itx, &irx, &key)), hv.s(&["initiatorCapability"]));
    assert_eq!(hex::encode(capability(&rtx, &rrx, &key)), hv.s(&["responderCapability"]));
    assert_eq!(hex::encode(remote_capability(&itx, &irx, &key)), hv.s(&["initiatorExpectsRemoteCapability"]));
    assert_eq!(hex::encode(remote_capability(&rtx, &rrx, &key)), hv.s(&["responderExpectsRemoteCapability"]));
    assert!(verify_remote_capability(&itx, &irx, &key, &capability(&rtx, &rrx, &key)));
    assert!(!verify_remote_capability(&itx, &irx, &key, &capability(&itx, &irx, &key)));
    assert!(!verify_remote_capability(&itx, &irx, &key, &[0; 31]));

    // Through the handshake result as well.
    let mut a = hv.initiator();
    let mut b = hv.responder();
    b.receive(&a.take_outgoing()).unwrap();
    a.receive(&b.take_outgoing()).unwrap();
    b.receive(&a.take_outgoing()).unwrap();
    let (ra, rb) = (a.result().unwrap(), b.result().unwrap());
    assert_eq!(hex::encode(ra.capability(&key)), hv.s(&["initiatorCapability"]));
    assert_eq!(hex::encode(rb.capability(&key)), hv.s(&["responderCapability"]));
    assert_eq!(ra.remote_capability(&key), rb.capability(&key));
}

fn check_direction(
    hv: &HandshakeVector,
    frames: &str,
    plain: &str,
    cipher: &str,
    enc: TransportCipher,
    dec: TransportCipher,
) {
    let (mut enc, mut dec) = (enc, dec);
    let plaintext = unhex(hv.s(&["transport", plain]));
    let ciphertext = unhex(hv.s(&["transport", cipher]));
    // The plaintext is the concatenation of the listed frames.
    let listed: Vec<u8> = hv.v["transport"][frames]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| unhex(f["frameHex"].as_str().unwrap()))
        .collect();
    assert_eq!(listed, plaintext);
    // Encrypt frame by frame: one continuous key stream.
    let mut out = Vec::new();
    for f in hv.v["transport"][frames].as_array().unwrap() {
        out.extend(enc.apply_to_vec(&unhex(f["frameHex"].as_str().unwrap())));
    }
    assert_eq!(out, ciphertext);
    // Decrypt in odd chunks and decode every frame.
    let mut decoder = FrameDecoder::new();
    let mut count = 0;
    for part in ciphertext.chunks(5) {
        decoder.push(&dec.apply_to_vec(part));
        while let Some(d) = decoder.next_frame().unwrap() {
            if let Decoded::Frame(Frame { .. }) = &d {
                let Decoded::Frame(f) = d else { unreachable!() };
                let msg = f.message().unwrap();
                assert_eq!(encode_message(f.channel, &msg).unwrap(), f.encode().unwrap());
            }
            count += 1;
        }
    }
    assert_eq!(count, hv.v["transport"][frames].as_array().unwrap().len());
}

#[test]
fn transport_ciphertexts() {
    let hv = HandshakeVector::new();
    let mut a = hv.initiator();
    let mut b = hv.responder();
    b.receive(&a.take_outgoing()).unwrap();
    a.receive(&b.take_outgoing()).unwrap();
    b.receive(&a.take_outgoing()).unwrap();
    let (ra, rb) = (a.result().unwrap(), b.result().unwrap());
    check_direction(
        &hv,
        "plaintextFramesA",
        "plaintextAHex",
        "ciphertextAHex",
        ra.encryptor(),
        rb.decryptor(),
    );
    check_direction(
        &hv,
        "plaintextFramesB",
        "plaintextBHex",
        "ciphertextBHex",
        rb.encryptor(),
        ra.decryptor(),
    );

    // The explicit construction from the spec: key = own tx, nonce = own payload nonce.
    let tx: [u8; 32] = arr(hv.s(&["initiatorSplit", "txKey"]));
    let nonce: [u8; 24] = arr(hv.s(&["initiatorPayloadNonce"]));
    let mut c = TransportCipher::new(&tx, &nonce);
    let plain = unhex(hv.s(&["transport", "plaintextAHex"]));
    assert_eq!(hex::encode(c.apply_to_vec(&plain)), hv.s(&["transport", "ciphertextAHex"]));
}
