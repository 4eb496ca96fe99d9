//! Entry points for fuzzers (cargo-fuzz). Each feeds arbitrary bytes to a
//! decoder or state machine; none of them may panic. Not part of the stable API.

use crate::frame::{Decoded, FrameDecoder};
use crate::message::{self, Message};
use crate::noise::{Handshake, KeyPair};

/// Feeds `data` to a [`FrameDecoder`] in uneven chunks and decodes every frame.
pub fn frame_decoder(data: &[u8]) {
    let mut decoder = FrameDecoder::with_max_frame_len(1 << 16);
    let chunk = usize::from(data.first().copied().unwrap_or(1)).max(1);
    for part in data.chunks(chunk) {
        decoder.push(part);
        loop {
            match decoder.next_frame() {
                Ok(Some(Decoded::Frame(frame))) => {
                    if let Ok(msg) = frame.message() {
                        let _ = msg.encode();
                    }
                }
                Ok(Some(Decoded::KeepAlive)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
}

/// Runs every message decoder (and the RLE decoder) on `data`, re-encoding
/// whatever decodes and checking it decodes again to the same value.
pub fn message_decoders(data: &[u8]) {
    for type_id in 0..=16u64 {
        if let Ok(msg) = Message::decode(type_id, data) {
            let again = Message::decode(type_id, &msg.encode());
            debug_assert_eq!(again.as_ref(), Ok(&msg));
        }
    }
    let _ = message::NoisePayload::decode(data);
    let _ = message::DataNode::decode(data);
    let _ = crate::rle::decode(data, 1 << 16);
    let _ = crate::varint::decode(data);
}

fn fixed_keys() -> (KeyPair, KeyPair) {
    (KeyPair::from_secret([7; 32]), KeyPair::from_secret([9; 32]))
}

fn feed(hs: &mut Handshake, data: &[u8]) {
    let chunk = usize::from(data.first().copied().unwrap_or(1) % 64).max(1);
    for part in data.chunks(chunk) {
        let _ = hs.take_outgoing();
        if hs.receive(part).is_err() {
            break;
        }
    }
    let _ = hs.result();
    let _ = hs.take_leftover();
}

/// Feeds `data` to a responder as if it came from an initiator.
pub fn handshake_responder(data: &[u8]) {
    let (s, e) = fixed_keys();
    let mut hs = Handshake::new_responder(s, e, [1; 24]);
    feed(&mut hs, data);
}

/// Feeds `data` to an initiator as if it came from a responder.
pub fn handshake_initiator(data: &[u8]) {
    let (s, e) = fixed_keys();
    let mut hs = Handshake::new_initiator(s, e, [2; 24]);
    feed(&mut hs, data);
}
