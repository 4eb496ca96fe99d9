//! The fuzzing entry point of the feed exchange (the `fuzzing` feature).

use super::*;

/// Fuzzing entry point (see `crate::fuzzing::extensions`).
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_extensions(data: &[u8]) {
    let now = Instant::now();
    let (mut a, mut b) = exchange_pair(now);
    let Ok(mf) = Multifeed::in_memory() else { return };
    if let Ok(w) = mf.writer("local") {
        let _ = w.append(b"x");
    }
    let mut conn = Exchange::new(mf.clone(), ReplicateOptions::new(false));
    for _ in 0..6 {
        if let Some(bytes) = a.poll_transmit(now) {
            let _ = b.handle_input(now, &bytes);
        }
        if let Some(bytes) = b.poll_transmit(now) {
            let _ = a.handle_input(now, &bytes);
        }
        while let Some(ev) = b.poll_event() {
            conn.handle(&mut b, now, &ev);
        }
    }
    // Then arbitrary extension messages: name selector, length, payload.
    let names = [HANDSHAKE, MANIFEST, REPLICATE_FEEDS, REQUEST_FEEDS, "unknown"];
    let mut rest = data;
    while rest.len() >= 2 {
        let name = names[rest[0] as usize % names.len()];
        let len = (rest[1] as usize).min(rest.len() - 2);
        let payload = rest[2..2 + len].to_vec();
        rest = &rest[2 + len..];
        conn.handle(&mut b, now, &Event::Extension { name: name.to_owned(), payload });
        while let Some(ev) = b.poll_event() {
            conn.handle(&mut b, now, &ev);
        }
        let _ = b.poll_transmit(now);
    }
    // Feeds only ever come from agreed keys: the writer plus requested ones.
    for f in mf.feeds() {
        assert!(
            f.is_writable() || conn.requested.contains(f.public_key()),
            "a feed was added that was never requested"
        );
    }
}

/// Two protocols with the exchange's extensions, handshakes made from fixed
/// keys, and the default root channel opened on both: the initiator (a JS
/// peer's role in the tests) and the responder (ours).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn exchange_pair(now: Instant) -> (Protocol, Protocol) {
    use kappa_protocol::noise::{Handshake, KeyPair as NoiseKeyPair};

    let ext = || vec![HANDSHAKE.into(), MANIFEST.into(), REPLICATE_FEEDS.into(), REQUEST_FEEDS.into()];
    let hs_a = Handshake::new_initiator(
        NoiseKeyPair::from_seed(&[1; 32]),
        NoiseKeyPair::from_seed(&[2; 32]),
        [3; 24],
    );
    let hs_b = Handshake::new_responder(
        NoiseKeyPair::from_seed(&[4; 32]),
        NoiseKeyPair::from_seed(&[5; 32]),
        [6; 24],
    );
    let mut a = Protocol::with_handshake(now, ProtocolOptions::new(true).extensions(ext()), hs_a);
    let mut b = Protocol::with_handshake(now, ProtocolOptions::new(false).extensions(ext()), hs_b);
    let root = PublicKey::from_bytes(DEFAULT_SHARED_KEY);
    let _ = a.open_channel(now, root);
    let _ = b.open_channel(now, root);
    (a, b)
}
