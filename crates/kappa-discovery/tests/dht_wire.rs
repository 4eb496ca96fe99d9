//! dht-rpc 4 and `@hyperswarm/dht` 4 messages against bytes made by the real
//! JS packages (`interop/swarm/dht-vectors.js`, output in `vectors/dht.json`).

use std::net::SocketAddrV4;

use kappa_discovery::dht::wire::{
    decode_nodes, encode_nodes, Kind, Message, PeersInput, PeersOutput, WireError,
};

fn vectors() -> Vec<(String, String, Vec<u8>)> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/dht.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap().to_owned();
            (s("name"), s("kind"), hex::decode(s("hex")).unwrap())
        })
        .collect()
}

fn vector(name: &str) -> Vec<u8> {
    vectors().into_iter().find(|(n, _, _)| n == name).unwrap().2
}

#[test]
fn every_js_message_decodes_and_encodes_to_the_same_bytes() {
    let all = vectors();
    assert!(all.len() >= 10);
    for (name, kind, bytes) in all {
        if kind == "message" {
            let m = Message::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(m.encode(), bytes, "{name}");
        }
    }
}

#[test]
fn our_requests_are_the_bytes_js_makes() {
    let to: SocketAddrV4 = "10.1.2.3:40000".parse().unwrap();
    let mut lookup = Message::request(Kind::Query, 7, to, "peers", &[0x42; 32]);
    lookup.value = Some(PeersInput::default().encode());
    assert_eq!(lookup.encode(), vector("peers lookup query"));

    let mut announce = Message::request(Kind::Update, 8, to, "peers", &[0x42; 32]);
    announce.roundtrip_token = Some(vec![7; 32]);
    announce.value = Some(PeersInput { port: Some(7000), ..PeersInput::default() }.encode());
    assert_eq!(announce.encode(), vector("peers announce update"));

    let ping = Message {
        target: None,
        command: Some("_ping".into()),
        ..Message::request(Kind::Query, 1234, "127.0.0.1:49737".parse().unwrap(), "", &[])
    };
    assert_eq!(ping.encode(), vector("ping query from an ephemeral node"));

    let input = PeersInput {
        port: Some(7000),
        local_address: Some(vec![192, 168, 1, 20, 0x1b, 0x58]),
        unannounce: None,
    };
    assert_eq!(input.encode(), vector("peers input with a local address"));
}

#[test]
fn a_response_gives_its_nodes_and_peers() {
    let m = Message::decode(&vector("response with closer nodes and a value")).unwrap();
    assert_eq!(m.kind, Kind::Response);
    assert_eq!(m.rid, 7);
    assert_eq!(m.id.as_deref(), Some(&[0xab; 32][..]));
    let nodes = decode_nodes(m.closer_nodes.as_deref().unwrap());
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[0].addr, "10.0.0.9:49737".parse().unwrap());
    assert_eq!(nodes[1].id, [0x42; 32]);
    assert_eq!(nodes[1].addr, "192.168.1.1:65535".parse().unwrap());
    assert_eq!(encode_nodes(&nodes), m.closer_nodes.clone().unwrap());
    let out = PeersOutput::decode(m.value.as_deref().unwrap()).unwrap();
    let want: Vec<SocketAddrV4> = vec!["10.0.0.5:7000".parse().unwrap(), "10.0.0.6:7001".parse().unwrap()];
    assert_eq!(out.addresses(), want);

    let err = Message::decode(&vector("error response")).unwrap();
    assert_eq!(err.error.as_deref(), Some("Unsupported command"));
    let old = Message::decode(&vector("message of an old version")).unwrap();
    assert_eq!(old.version, None);

    let local = PeersOutput::decode(&vector("peers output, local peers only")).unwrap();
    assert_eq!(local.local_peers, Some(vec![1, 20, 0x1b, 0x58]));
    assert!(local.addresses().is_empty());
}

#[test]
fn malformed_lists_are_dropped_whole_as_js_drops_them() {
    let mut bad = vec![0u8; 38 * 2];
    bad[32..38].copy_from_slice(&[10, 0, 0, 1, 0, 80]);
    // The second node has port 0.
    assert!(decode_nodes(&bad).is_empty());
    bad[74..76].copy_from_slice(&[0, 81]);
    assert_eq!(decode_nodes(&bad).len(), 2);
    // A partial entry at the end is ignored.
    bad.push(1);
    assert_eq!(decode_nodes(&bad).len(), 2);
    for peers in [vec![10, 0, 0, 1, 0, 80, 1], vec![10, 0, 0, 1, 0, 0], vec![0, 0, 0, 0, 0, 80]] {
        assert!(
            PeersOutput { peers: Some(peers.clone()), local_peers: None }.addresses().is_empty(),
            "{peers:?}"
        );
    }
}

#[test]
fn garbage_is_an_error_never_a_panic() {
    assert_eq!(Message::decode(&[]), Err(WireError::Missing("type")));
    assert_eq!(Message::decode(&[0x08, 0x01]), Err(WireError::Missing("rid")));
    assert_eq!(Message::decode(&[0x08, 0x04, 0x10, 0x00]), Err(WireError::Type(4)));
    assert_eq!(Message::decode(&[0x08]), Err(WireError::Varint));
    assert_eq!(Message::decode(&[0x08, 0x01, 0x10, 0x01, 0x4a, 0x05, 1]), Err(WireError::Truncated));
    assert_eq!(Message::decode(&[0x0b]), Err(WireError::WireType(3)));
    assert_eq!(Message::decode(&[0x08, 0x01, 0x10, 0x01, 0x3a, 0x01]), Err(WireError::Truncated));
    assert_eq!(Message::decode(&[0x0a, 0x00]), Err(WireError::FieldType(1)));
    assert!(Message::decode(&[0xff; 11]).is_err());
    assert!(Message::decode(&vec![0u8; 70_000]).is_err());
    // Every prefix and every one-byte change of a real message.
    let real = vector("response with closer nodes and a value");
    for n in 0..real.len() {
        let _ = Message::decode(&real[..n]);
        let mut b = real.clone();
        b[n] ^= 0xff;
        let _ = Message::decode(&b);
    }
}
