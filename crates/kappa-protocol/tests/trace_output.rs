//! The session's tracing output names why a session failed: a peer that sends
//! a block with a forged signature shows up as the typed cause (the check that
//! failed), inside the victim's events.

mod util;

use kappa_log::storage::MemoryProvider;
use kappa_log::{Feed, KeyPair, SharedFeed};
use kappa_protocol::{FeedOptions, Message};
use kappa_testkit::trace::capture;
use util::Pair;

fn writer(n: u64) -> SharedFeed {
    let mut f = Feed::builder(MemoryProvider::new()).key_pair(KeyPair::from_seed(&[1; 32])).open().unwrap();
    f.append_batch((0..n).map(|i| format!("value-{i}"))).unwrap();
    SharedFeed::new(f)
}

#[test]
fn a_forged_signature_is_traced_with_its_cause() {
    let ((), out) = capture("kappa_protocol=debug", || {
        let mut pair = Pair::new(7, false, false);
        let w = writer(10);
        let r =
            SharedFeed::new(Feed::builder(MemoryProvider::new()).public_key(*w.public_key()).open().unwrap());
        pair.a.tamper_outgoing(|_, m| {
            if let Message::Data(d) = m {
                if let Some(s) = &mut d.signature {
                    s[10] ^= 1;
                }
            }
        });
        let now = pair.now;
        pair.a.open_feed(now, w, FeedOptions::default()).unwrap();
        pair.b.open_feed(now, r, FeedOptions::default()).unwrap();
        pair.drive_until(100_000, |p| p.b.is_ended());
        assert!(pair.b.error().is_some());
    });
    // Both sides' handshakes and channels, then the victim's failure: the
    // message and the typed cause (which check failed).
    assert!(out.contains("handshake done"), "{out}");
    assert!(out.contains("channel opened"), "{out}");
    let failure = out
        .lines()
        .find(|l| l.contains("session failed"))
        .unwrap_or_else(|| panic!("no failure event in:\n{out}"));
    assert!(failure.contains("error=bad block"), "{failure}");
    assert!(failure.contains("cause=BadBlock"), "{failure}");
    assert!(failure.contains("BadSignature"), "{failure}");
}

#[test]
fn a_clean_session_records_nothing_at_warn() {
    // At warn, a clean session records nothing.
    let ((), out) = capture("warn", || {
        let mut pair = Pair::new(8, false, false);
        let w = writer(3);
        let r =
            SharedFeed::new(Feed::builder(MemoryProvider::new()).public_key(*w.public_key()).open().unwrap());
        let now = pair.now;
        pair.a.open_feed(now, w, FeedOptions::default()).unwrap();
        pair.b.open_feed(now, r.clone(), FeedOptions::default()).unwrap();
        pair.drive_until(100_000, |p| p.a.is_ended() && p.b.is_ended());
        assert_eq!(r.len(), 3);
    });
    assert_eq!(out, "");
}
