//! Entry points for fuzzers (cargo-fuzz). Each feeds arbitrary bytes to a
//! decoder or state machine; none of them may panic. Not part of the stable API.

use crate::frame::{Decoded, FrameDecoder};
use crate::message::{self, Message};
use crate::noise::{Generation, Handshake, KeyPair, Wire};

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

/// Feeds `data` to a responder as if it came from an initiator, once per
/// wire generation.
pub fn handshake_responder(data: &[u8]) {
    for generation in Generation::ALL {
        let (s, e) = fixed_keys();
        let mut hs = Handshake::new_responder_for(generation, s, e, [1; 24]);
        feed(&mut hs, data);
    }
}

/// Feeds `data` to an initiator as if it came from a responder: one of each
/// generation, and one detecting the generation ([`Wire::Auto`], both states
/// side by side), which must agree with the one of its generation that
/// finished.
pub fn handshake_initiator(data: &[u8]) {
    let mut finished = Vec::new();
    for wire in [Wire::Only(Generation::KappaCore6), Wire::Only(Generation::KappaCore7), Wire::Auto] {
        let (s, e) = fixed_keys();
        let mut hs = Handshake::new_initiator_for(wire, s, e, [2; 24]);
        feed(&mut hs, data);
        finished.push(hs.result().cloned());
    }
    if let Some(auto) = &finished[2] {
        let same = finished[..2].iter().flatten().any(|r| r == auto);
        assert!(same, "an auto initiator finished where its generation's own state did not");
    }
}

/// A full session fed arbitrary frames after a valid handshake and channel open,
/// once per wire generation.
///
/// Two protocols handshake with fixed keys; `a` serves a 10-block writer and `b`
/// opens a replica of it; once the channel is open on both sides, `data` is sent
/// from `a` to `b` as plaintext (encrypted with the real transport key, so it
/// reaches `b`'s frame decoder and message handling). Input starting with `0x00`
/// is split into frames: `channel byte, type byte, length byte, body` repeated, to
/// reach message handling more often. `b` must never panic, and every block `b`
/// stores must be the writer's.
pub fn session(data: &[u8]) {
    for generation in Generation::ALL {
        session_in(generation, data);
    }
}

/// [`session`] with the handshake in one generation (`a` detects it).
fn session_in(generation: Generation, data: &[u8]) {
    use std::time::{Duration, Instant};

    use kappa_log::storage::MemoryProvider;
    use kappa_log::{Feed, KeyPair as FeedKeyPair, SharedFeed};

    use crate::session::{FeedOptions, Protocol, ProtocolOptions};

    let now = Instant::now();
    let hs_a = Handshake::new_initiator_for(
        Wire::Auto,
        KeyPair::from_seed(&[1; 32]),
        KeyPair::from_seed(&[2; 32]),
        [3; 24],
    );
    let hs_b = Handshake::new_responder_for(
        generation,
        KeyPair::from_seed(&[4; 32]),
        KeyPair::from_seed(&[5; 32]),
        [6; 24],
    );
    let mut a = Protocol::with_handshake(now, ProtocolOptions::new(true), hs_a);
    let mut b = Protocol::with_handshake(now, ProtocolOptions::new(false), hs_b);

    let Ok(mut w) = Feed::builder(MemoryProvider::new()).key_pair(FeedKeyPair::from_seed(&[7; 32])).open()
    else {
        return;
    };
    if w.append_batch((0..10u8).map(|i| vec![i; 1 + i as usize])).is_err() {
        return;
    }
    let writer = SharedFeed::new(w);
    let Ok(r) = Feed::builder(MemoryProvider::new()).public_key(*writer.public_key()).open() else { return };
    let replica = SharedFeed::new(r);
    let _ = a.open_feed(now, writer.clone(), FeedOptions::default());
    let _ =
        b.open_feed(now, replica.clone(), FeedOptions { upload: true, download: true, ..Default::default() });
    // Handshake and opens; stop before any block moves, so the fuzz input
    // meets a session mid-way.
    for _ in 0..6 {
        if let Some(bytes) = a.poll_transmit(now) {
            let _ = b.handle_input(now, &bytes);
        }
        if let Some(bytes) = b.poll_transmit(now) {
            let _ = a.handle_input(now, &bytes);
        }
    }
    let _ = a.poll_transmit(now);
    if data.first() == Some(&0) {
        let mut rest = &data[1..];
        while rest.len() >= 3 {
            let (channel, ty, len) = (rest[0] as u64 % 4, rest[1] & 15, rest[2] as usize);
            let body = &rest[3..(3 + len).min(rest.len())];
            rest = &rest[(3 + len).min(rest.len())..];
            if let Ok(frame) = crate::frame::encode_frame(channel, ty, body) {
                a.inject_plaintext(now, &frame);
            }
        }
    } else {
        a.inject_plaintext(now, data);
    }
    if let Some(bytes) = a.poll_transmit(now) {
        let _ = b.handle_input(now, &bytes);
    }
    b.handle_timeout(now + Duration::from_secs(30));
    while b.poll_event().is_some() {}
    let _ = b.poll_transmit(now);
    for i in 0..12 {
        if let Ok(Some(v)) = replica.get(i) {
            assert_eq!(
                writer.get(i).ok().flatten(),
                Some(v),
                "replica stored a block the writer never wrote"
            );
        }
    }
    assert!(replica.lock().verify().is_ok(), "replica does not verify");
}
