//! `PeerLimits`: what a peer that has not proven a key (and one that trickles
//! bytes) can make a session hold, on the state machine with a simulated clock.
//! The attacker is a real `Protocol` (it completes the Noise handshake, which
//! needs no key) whose output we extend with raw frames.

use std::time::{Duration, Instant};

use kappa_log::storage::MemoryProvider;
use kappa_log::{Feed, KeyPair, PublicKey, SharedFeed};
use kappa_protocol::message::Open;
use kappa_protocol::{
    encode_message, varint, Event, FeedOptions, FrameError, FramingError, Message, PeerLimits, Protocol,
    ProtocolError, ProtocolOptions,
};

fn writer(n: u64, size: usize) -> SharedFeed {
    let mut f = Feed::builder(MemoryProvider::new()).key_pair(KeyPair::from_seed(&[9; 32])).open().unwrap();
    f.append_batch((0..n).map(|i| vec![i as u8; size])).unwrap();
    SharedFeed::new(f)
}

fn replica_of(w: &SharedFeed) -> SharedFeed {
    SharedFeed::new(Feed::builder(MemoryProvider::new()).public_key(*w.public_key()).open().unwrap())
}

/// Moves every pending byte both ways, in one piece, at `now`, until quiet.
fn pump(a: &mut Protocol, b: &mut Protocol, now: Instant) {
    for _ in 0..10_000 {
        let mut moved = false;
        while let Some(bytes) = a.poll_transmit(now) {
            moved = true;
            let _ = b.handle_input(now, &bytes);
        }
        while let Some(bytes) = b.poll_transmit(now) {
            moved = true;
            let _ = a.handle_input(now, &bytes);
        }
        if !moved {
            return;
        }
    }
    panic!("the pair never went quiet");
}

fn events(p: &mut Protocol) -> Vec<Event> {
    std::iter::from_fn(|| p.poll_event()).collect()
}

/// A victim (responder) replicating `feed`, and a live attacker (initiator)
/// that opens nothing, after the Noise handshake.
fn victim_and_stranger(feed: &SharedFeed, t0: Instant) -> (Protocol, Protocol) {
    let mut attacker = Protocol::new(
        t0,
        ProtocolOptions::new(true).live(true).extensions(vec!["MULTIFEED_HANDSHAKE".into()]),
    );
    let mut victim = Protocol::new(t0, ProtocolOptions::new(false));
    victim.open_feed(t0, feed.clone(), FeedOptions::default()).unwrap();
    pump(&mut attacker, &mut victim, t0);
    assert!(victim.handshake_result().is_some() && attacker.handshake_result().is_some());
    assert!(!victim.is_verified());
    (victim, attacker)
}

/// Sends `bytes` from the attacker (encrypted) to the victim.
fn inject(attacker: &mut Protocol, victim: &mut Protocol, now: Instant, bytes: &[u8]) {
    attacker.inject_plaintext(now, bytes);
    while let Some(b) = attacker.poll_transmit(now) {
        let _ = victim.handle_input(now, &b);
    }
}

fn frame_claim(len: usize) -> Vec<u8> {
    let mut v = Vec::new();
    varint::encode(len as u64, &mut v);
    v.push(0x17); // channel 1, type 7
    v
}

#[test]
fn before_verification_frames_are_small() {
    let t0 = Instant::now();
    let w = writer(1, 10);
    let (mut victim, mut attacker) = victim_and_stranger(&w, t0);
    inject(&mut attacker, &mut victim, t0, &frame_claim(65 << 10));
    match victim.error() {
        Some(
            e @ ProtocolError::Frame(FramingError::Receive {
                source: FrameError::TooLarge { len, max },
                unverified: true,
            }),
        ) => {
            assert_eq!((*len, *max), (65 << 10, PeerLimits::default().unverified_max_frame));
            assert!(e.to_string().contains("before the peer proved"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn after_verification_frames_may_be_large() {
    // Blocks of 1 MiB travel once the channel verified (the 8 MiB JS limit).
    let t0 = Instant::now();
    let w = writer(3, 1 << 20);
    let r = replica_of(&w);
    let mut a = Protocol::new(t0, ProtocolOptions::new(true));
    let mut b = Protocol::new(t0, ProtocolOptions::new(false));
    a.open_feed(t0, w.clone(), FeedOptions::default()).unwrap();
    b.open_feed(t0, r.clone(), FeedOptions::default()).unwrap();
    pump(&mut a, &mut b, t0);
    assert!(a.is_verified() && b.is_verified());
    assert!(a.error().is_none() && b.error().is_none(), "{:?} {:?}", a.error(), b.error());
    assert_eq!(r.len(), 3);
    assert!(r.lock().is_complete());
}

#[test]
fn a_stranger_that_proves_no_key_is_dropped_at_the_deadline() {
    let t0 = Instant::now();
    let w = writer(1, 10);
    let (mut victim, mut attacker) = victim_and_stranger(&w, t0);
    // Keep-alives are whole frames: they keep the silence limit away, not the
    // verification deadline.
    let deadline = victim.poll_timeout().unwrap();
    assert!(deadline <= t0 + Duration::from_secs(10));
    for s in [3, 6, 9] {
        inject(&mut attacker, &mut victim, t0 + Duration::from_secs(s), &[0]);
        victim.handle_timeout(t0 + Duration::from_secs(s));
        assert!(victim.error().is_none(), "{:?}", victim.error());
    }
    victim.handle_timeout(t0 + Duration::from_secs(10));
    assert!(matches!(victim.error(), Some(ProtocolError::NotVerified(_))), "{:?}", victim.error());
}

#[test]
fn the_deadline_can_be_lifted() {
    let t0 = Instant::now();
    let mut victim = Protocol::new(
        t0,
        ProtocolOptions::new(false).live(true).limits(PeerLimits::default().verify_timeout(None)),
    );
    let mut attacker = Protocol::new(t0, ProtocolOptions::new(true).live(true));
    pump(&mut attacker, &mut victim, t0);
    for s in (5..60).step_by(5) {
        let now = t0 + Duration::from_secs(s);
        inject(&mut attacker, &mut victim, now, &[0]);
        victim.handle_timeout(now);
    }
    assert!(victim.error().is_none(), "{:?}", victim.error());
}

#[test]
fn a_trickled_frame_does_not_keep_a_verified_session_alive() {
    // A peer that knows the key (it replicated) then announces a 1 MiB frame
    // and sends a byte every 5 s: the frame has 20 s + 1 MiB / 16 KiB/s = 84 s.
    let t0 = Instant::now();
    let w = writer(2, 10);
    let r = replica_of(&w);
    let mut a = Protocol::new(t0, ProtocolOptions::new(true).live(true));
    let mut b = Protocol::new(t0, ProtocolOptions::new(false).live(true));
    a.open_feed(t0, w.clone(), FeedOptions::default()).unwrap();
    b.open_feed(t0, r.clone(), FeedOptions::default()).unwrap();
    pump(&mut a, &mut b, t0);
    assert!(b.is_verified());
    assert_eq!(r.len(), 2);
    inject(&mut a, &mut b, t0, &frame_claim(1 << 20));
    let mut failed_at = None;
    for s in (5..400).step_by(5) {
        let now = t0 + Duration::from_secs(s);
        inject(&mut a, &mut b, now, &[0]);
        b.handle_timeout(now);
        if b.is_ended() {
            failed_at = Some(s);
            break;
        }
    }
    assert!(
        matches!(b.error(), Some(ProtocolError::Stalled { len, .. }) if *len == 1 << 20),
        "{:?}",
        b.error()
    );
    assert_eq!(failed_at, Some(85));
    assert!(b.input_memory() < 64 << 10, "{} bytes held", b.input_memory());
}

#[test]
fn a_trickled_handshake_is_dropped_by_the_silence_limit() {
    let t0 = Instant::now();
    let mut victim =
        Protocol::new(t0, ProtocolOptions::new(false).limits(PeerLimits::default().verify_timeout(None)));
    let mut attacker = Protocol::new(t0, ProtocolOptions::new(true));
    let first = attacker.poll_transmit(t0).unwrap();
    for (i, byte) in first.iter().take(first.len() - 1).enumerate() {
        let now = t0 + Duration::from_secs(i as u64);
        let _ = victim.handle_input(now, &[*byte]);
        victim.handle_timeout(now);
        if victim.is_ended() {
            break;
        }
    }
    assert!(matches!(victim.error(), Some(ProtocolError::Stalled { .. })), "{:?}", victim.error());
}

#[test]
fn a_stranger_cannot_make_us_hold_a_large_claimed_frame() {
    // The 536 MB of issue 13: 8 MiB claimed, a byte at a time. Refused before
    // verification, and nothing is allocated for the claim.
    let t0 = Instant::now();
    let w = writer(1, 10);
    let (mut victim, mut attacker) = victim_and_stranger(&w, t0);
    inject(&mut attacker, &mut victim, t0, &frame_claim((8 << 20) - 16));
    assert!(victim.is_ended());
    assert!(victim.input_memory() < 64 << 10, "{} bytes held", victim.input_memory());
    // A claim under the unverified limit is held as bytes arrive, no more.
    let (mut victim, mut attacker) = victim_and_stranger(&w, t0);
    inject(&mut attacker, &mut victim, t0, &frame_claim(60 << 10));
    for i in 0..100 {
        inject(&mut attacker, &mut victim, t0 + Duration::from_millis(i), &[0]);
    }
    assert!(victim.error().is_none());
    assert!(victim.input_memory() < 8 << 10, "{} bytes held", victim.input_memory());
}

#[test]
fn extension_messages_of_a_stranger_are_held_until_it_proves_a_key() {
    // Without this a stranger could send MULTIFEED_HANDSHAKE without opening the
    // shared key's channel and be answered with our feed list.
    let t0 = Instant::now();
    let w = writer(1, 10);
    let (mut victim, mut attacker) = victim_and_stranger(&w, t0);
    let _ = events(&mut victim);
    attacker.send_extension(t0, "MULTIFEED_HANDSHAKE", b"{}").unwrap();
    pump(&mut attacker, &mut victim, t0);
    let evs = events(&mut victim);
    assert!(!evs.iter().any(|e| matches!(e, Event::Extension { .. })), "{evs:?}");
    // Once it opens our channel with a valid capability (it knows the key), the
    // message is handed on, after the open.
    attacker.open_feed(t0, replica_of(&w), FeedOptions::default()).unwrap();
    pump(&mut attacker, &mut victim, t0);
    assert!(victim.is_verified());
    let evs = events(&mut victim);
    let opened = evs.iter().position(|e| matches!(e, Event::ChannelOpened { .. }));
    let ext =
        evs.iter().position(|e| matches!(e, Event::Extension { name, .. } if name == "MULTIFEED_HANDSHAKE"));
    assert!(opened.is_some() && ext.is_some() && opened < ext, "{evs:?}");
}

#[test]
fn a_stranger_that_floods_extension_messages_is_dropped() {
    let t0 = Instant::now();
    let w = writer(1, 10);
    let (mut victim, mut attacker) = victim_and_stranger(&w, t0);
    for _ in 0..20 {
        attacker.send_extension(t0, "MULTIFEED_HANDSHAKE", &[b' '; 4000]).unwrap();
        pump(&mut attacker, &mut victim, t0);
    }
    assert!(matches!(victim.error(), Some(ProtocolError::UnverifiedLimit { .. })), "{:?}", victim.error());
}

fn open_frame(channel: u64, dkey: [u8; 32]) -> Vec<u8> {
    encode_message(
        channel,
        &Message::Open(Open { discovery_key: dkey.to_vec(), capability: Some(vec![0; 32]) }),
    )
    .unwrap()
}

#[test]
fn a_stranger_may_open_only_a_few_channels() {
    let t0 = Instant::now();
    let w = writer(1, 10);
    let (mut victim, mut attacker) = victim_and_stranger(&w, t0);
    for i in 0..16u8 {
        inject(&mut attacker, &mut victim, t0, &open_frame(u64::from(i) + 1, [i; 32]));
        assert!(victim.error().is_none(), "{:?}", victim.error());
    }
    inject(&mut attacker, &mut victim, t0, &open_frame(17, [99; 32]));
    assert!(
        matches!(victim.error(), Some(ProtocolError::UnverifiedLimit { limit: 16, .. })),
        "{:?}",
        victim.error()
    );
}

#[test]
fn a_stranger_may_park_only_a_few_messages_on_its_channels() {
    let t0 = Instant::now();
    let w = writer(1, 10);
    let (mut victim, mut attacker) = victim_and_stranger(&w, t0);
    inject(&mut attacker, &mut victim, t0, &open_frame(1, [5; 32]));
    let ext = Message::Extension(kappa_protocol::Extension { id: 0, payload: vec![1; 8000] });
    for _ in 0..7 {
        inject(&mut attacker, &mut victim, t0, &encode_message(1, &ext).unwrap());
        assert!(victim.error().is_none(), "{:?}", victim.error());
    }
    inject(&mut attacker, &mut victim, t0, &encode_message(1, &ext).unwrap());
    inject(&mut attacker, &mut victim, t0, &encode_message(1, &ext).unwrap());
    assert!(matches!(victim.error(), Some(ProtocolError::UnverifiedLimit { .. })), "{:?}", victim.error());
}

#[test]
fn a_hang_up_before_verification_says_so() {
    let t0 = Instant::now();
    let w = writer(1, 10);
    let (mut victim, _attacker) = victim_and_stranger(&w, t0);
    victim.fail_transport(ProtocolError::UnexpectedEof);
    assert!(
        matches!(
            victim.error(),
            Some(ProtocolError::EndedUnverified { during_handshake: false, source })
                if **source == ProtocolError::UnexpectedEof
        ),
        "{:?}",
        victim.error()
    );
    // During the Noise handshake: said so (a server at its connection limit).
    let mut early = Protocol::new(t0, ProtocolOptions::new(true));
    early.fail_transport(ProtocolError::Io(std::io::ErrorKind::ConnectionReset.into()));
    assert!(
        matches!(
            early.error(),
            Some(ProtocolError::EndedUnverified { during_handshake: true, source })
                if matches!(&**source, ProtocolError::Io(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
        ),
        "{:?}",
        early.error()
    );
    // After verification a hang-up is a plain one.
    let r = replica_of(&w);
    let mut a = Protocol::new(t0, ProtocolOptions::new(true).live(true));
    let mut b = Protocol::new(t0, ProtocolOptions::new(false).live(true));
    a.open_feed(t0, w.clone(), FeedOptions::default()).unwrap();
    b.open_feed(t0, r, FeedOptions::default()).unwrap();
    pump(&mut a, &mut b, t0);
    b.fail_transport(ProtocolError::UnexpectedEof);
    assert_eq!(b.error(), Some(&ProtocolError::UnexpectedEof));
}

#[test]
fn the_peer_of_another_key_is_not_verified() {
    // Both open a channel, for different keys: neither is verified, and a
    // non-live session still ends (refusing each other's channel).
    let t0 = Instant::now();
    let w = writer(1, 10);
    let other = PublicKey::from_bytes([3; 32]);
    let mut a = Protocol::new(t0, ProtocolOptions::new(true));
    let mut b = Protocol::new(t0, ProtocolOptions::new(false));
    a.open_channel(t0, other).unwrap();
    b.open_feed(t0, w, FeedOptions::default()).unwrap();
    pump(&mut a, &mut b, t0);
    assert!(!a.is_verified() && !b.is_verified());
}

#[test]
fn a_verified_peer_may_park_only_16_mib_on_channels_we_did_not_open() {
    let t0 = Instant::now();
    let w = writer(1, 10);
    let mut a = Protocol::new(t0, ProtocolOptions::new(true).live(true));
    let mut b = Protocol::new(t0, ProtocolOptions::new(false).live(true));
    a.open_feed(t0, w.clone(), FeedOptions::default()).unwrap();
    b.open_feed(t0, replica_of(&w), FeedOptions::default()).unwrap();
    // Channel 2 of `a`: a key `b` never opens.
    a.open_channel(t0, PublicKey::from_bytes([4; 32])).unwrap();
    pump(&mut a, &mut b, t0);
    assert!(b.is_verified() && b.error().is_none());
    let ext = Message::Extension(kappa_protocol::Extension { id: 0, payload: vec![1; 6 << 20] });
    let frame = encode_message(2, &ext).unwrap();
    inject(&mut a, &mut b, t0, &frame);
    inject(&mut a, &mut b, t0, &frame);
    assert!(b.error().is_none(), "{:?}", b.error());
    inject(&mut a, &mut b, t0, &frame);
    assert!(matches!(b.error(), Some(ProtocolError::OutOfRange(_))), "{:?}", b.error());
}
