//! Property tests: random messages round-trip, decoders never panic.

use kappa_protocol::frame::{encode_message, Decoded, FrameDecoder};
use kappa_protocol::message::*;
use kappa_protocol::{fuzzing, rle, varint};
use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..40)
}

fn node() -> impl Strategy<Value = DataNode> {
    (any::<u64>(), bytes(), any::<u64>()).prop_map(|(index, hash, size)| DataNode { index, hash, size })
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (bytes(), of(bytes()))
            .prop_map(|(discovery_key, capability)| Open { discovery_key, capability }.into()),
        (vec(".{0,12}", 0..4), of(any::<bool>()))
            .prop_map(|(extensions, ack)| Options { extensions, ack }.into()),
        (of(any::<bool>()), of(any::<bool>())).prop_map(|(uploading, downloading)| Status {
            uploading,
            downloading
        }
        .into()),
        (any::<u64>(), of(any::<u64>()), of(bytes()), of(any::<bool>()))
            .prop_map(|(start, length, bitfield, ack)| Have { start, length, bitfield, ack }.into()),
        (any::<u64>(), of(any::<u64>())).prop_map(|(start, length)| Unhave { start, length }.into()),
        (any::<u64>(), of(any::<u64>())).prop_map(|(start, length)| Want { start, length }.into()),
        (any::<u64>(), of(any::<u64>())).prop_map(|(start, length)| Unwant { start, length }.into()),
        (any::<u64>(), of(any::<u64>()), of(any::<bool>()), of(any::<u64>()))
            .prop_map(|(index, bytes, hash, nodes)| Request { index, bytes, hash, nodes }.into()),
        (any::<u64>(), of(any::<u64>()), of(any::<bool>())).prop_map(|(index, bytes, hash)| Cancel {
            index,
            bytes,
            hash
        }
        .into()),
        (any::<u64>(), of(bytes()), vec(node(), 0..4), of(bytes()))
            .prop_map(|(index, value, nodes, signature)| Data { index, value, nodes, signature }.into()),
        of(bytes()).prop_map(|discovery_key| Close { discovery_key }.into()),
        (any::<u64>(), bytes()).prop_map(|(id, payload)| Extension { id, payload }.into()),
    ]
}

proptest! {
    #[test]
    fn varint_round_trips(v in any::<u64>()) {
        let enc = varint::encode_to_vec(v);
        prop_assert_eq!(enc.len(), varint::encoded_len(v));
        prop_assert_eq!(varint::decode(&enc), Ok((v, enc.len())));
    }

    #[test]
    fn messages_round_trip(msg in message(), channel in 0u64..100_000) {
        let body = msg.encode();
        prop_assert_eq!(&Message::decode(u64::from(msg.type_id()), &body).unwrap(), &msg);
        let frame = encode_message(channel, &msg).unwrap();
        let mut d = FrameDecoder::new();
        d.push(&frame);
        match d.next_frame().unwrap() {
            Some(Decoded::Frame(f)) => {
                prop_assert_eq!(f.channel, channel);
                prop_assert_eq!(f.message().unwrap(), msg);
            }
            other => prop_assert!(false, "unexpected {:?}", other),
        }
    }

    #[test]
    fn rle_round_trips(bits in vec(prop_oneof![Just(0u8), Just(0xff), any::<u8>()], 0..300)) {
        let enc = rle::encode(&bits);
        let mut dec = rle::decode(&enc, bits.len()).unwrap();
        dec.resize(bits.len(), 0);
        prop_assert_eq!(dec, bits);
    }

    #[test]
    fn decoders_never_panic(data in vec(any::<u8>(), 0..200)) {
        fuzzing::message_decoders(&data);
        fuzzing::frame_decoder(&data);
        fuzzing::handshake_responder(&data);
        fuzzing::handshake_initiator(&data);
    }
}

proptest! {
    #[test]
    fn mutated_messages_never_panic(msg in message(), pos in any::<usize>(), byte in any::<u8>(), cut in any::<usize>()) {
        let mut body = msg.encode();
        if !body.is_empty() {
            let i = pos % body.len();
            body[i] = byte;
            body.truncate(cut % (body.len() + 1));
        }
        fuzzing::message_decoders(&body);
        let mut frame = encode_message(3, &msg).unwrap();
        let i = pos % frame.len();
        frame[i] ^= byte;
        fuzzing::frame_decoder(&frame);
    }
}
