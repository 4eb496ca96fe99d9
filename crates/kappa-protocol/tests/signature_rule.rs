//! The one-way signature rule inside a session, on the deterministic pair: a
//! kappa-core 6 (hypercore 8) peer is served a feed only as far as its newest
//! state signed in the 32-byte form, and every signature it is sent is in that
//! form, whatever older or newer states are signed in (see
//! `docs/semantics.md`). The peer here is a Rust protocol on the kappa-core 6
//! wire: it would verify 40-byte signatures too, so the test looks at every
//! signature it stored. `interop_kc7.rs` in kappa-multifeed shows the same
//! with a real JS kappa-core 6 peer.

mod util;

use std::time::Duration;

use kappa_log::storage::MemoryProvider;
use kappa_log::{Feed, KeyPair, Proof, SharedFeed, SignatureForm};
use kappa_protocol::{FeedOptions, FeedStats, Generation, Protocol, ProtocolOptions, Wire};
use util::Pair;

const SEED: [u8; 32] = [0x61; 32];

/// A writer on `provider` that signs in `form` (the files may hold a feed
/// signed in the other form before).
fn writer(provider: &MemoryProvider, form: SignatureForm) -> Feed {
    Feed::builder(provider.clone()).key_pair(KeyPair::from_seed(&SEED)).signature_form(form).open().unwrap()
}

fn append(w: &mut Feed, range: std::ops::Range<u64>, batch: u64) {
    let mut i = range.start;
    while i < range.end {
        let end = (i + batch).min(range.end);
        w.append_batch((i..end).map(|k| format!("entry-{k}"))).unwrap();
        i = end;
    }
}

fn replica() -> SharedFeed {
    let key = KeyPair::from_seed(&SEED).public_key();
    SharedFeed::new(Feed::builder(MemoryProvider::new()).public_key(key).open().unwrap())
}

/// Copies blocks of `w` into `r` with `w`'s proofs (as a replication from a
/// kappa-core 7 peer would store them).
fn copy(w: &mut Feed, r: &SharedFeed, blocks: impl IntoIterator<Item = u64>) {
    for i in blocks {
        let proof: Proof = w.proof(i, 0, false).unwrap();
        r.put(i, &w.get(i).unwrap().unwrap(), &proof).unwrap();
    }
}

/// Every signature `f` holds, as the form it verifies in.
fn stored_forms(f: &SharedFeed) -> Vec<(u64, Option<SignatureForm>)> {
    let mut f = f.lock();
    let mut out = Vec::new();
    for n in 1..=f.len() {
        if f.signature_slot(n - 1).unwrap().is_some() {
            out.push((n, f.signature_form_at(n).unwrap()));
        }
    }
    out
}

fn assert_all_short(f: &SharedFeed) {
    let forms = stored_forms(f);
    assert!(!forms.is_empty());
    for (n, form) in forms {
        assert_eq!(form, Some(SignatureForm::TreeHash), "the signature of length {n}");
    }
}

fn pair(seed: u64, live: bool, generation: Generation) -> Pair {
    let now = std::time::Instant::now();
    let opts = |initiator| ProtocolOptions::new(initiator).live(live).wire(Wire::Only(generation));
    Pair::from_protocols(seed, Protocol::new(now, opts(true)), Protocol::new(now, opts(false)), now)
}

fn stats_of(p: &Protocol) -> FeedStats {
    p.stats()[0].1
}

/// Drives the pair for `secs` simulated seconds.
fn settle(pair: &mut Pair, secs: u64) {
    let until = pair.now + Duration::from_secs(secs);
    assert!(pair.drive_until(1_000_000, |p| p.now >= until));
    assert!(
        pair.a.error().is_none() && pair.b.error().is_none(),
        "{:?} / {:?}",
        pair.a.error(),
        pair.b.error()
    );
}

/// A live session: the relaying side's replica gets blocks signed in the
/// 40-byte form during it; a kappa-core 6 peer is not sent them (the report
/// says from where), and gets them once a newer state is signed in the
/// 32-byte form, proven by that state's signature. A kappa-core 7 peer gets
/// everything as it comes.
#[test]
fn a_kc6_peer_gets_blocks_signed_in_the_40_byte_form_only_under_a_newer_32_byte_state() {
    for seed in 0..4 {
        for generation in Generation::ALL {
            let kc6 = generation == Generation::KappaCore6;
            let files = MemoryProvider::new();
            let mut w = writer(&files, SignatureForm::TreeHash);
            append(&mut w, 0..50, 7);
            drop(w);
            let mut w = writer(&files, SignatureForm::TreeHashAndLength);
            let relay = replica();
            copy(&mut w, &relay, 0..50);
            let theirs = replica();

            let mut pair = pair(seed, true, generation);
            let now = pair.now;
            pair.a.open_feed(now, relay.clone(), FeedOptions::default()).unwrap();
            pair.b.open_feed(now, theirs.clone(), FeedOptions::default()).unwrap();
            pair.watch_a(&relay);
            pair.watch_b(&theirs);
            assert!(pair.drive_until(200_000, |_| theirs.len() == 50 && theirs.lock().is_complete()));
            assert_eq!(stats_of(&pair.a).withheld_from, None);

            // Blocks 50..80 arrive at the relay signed in the 40-byte form.
            append(&mut w, 50..80, 10);
            copy(&mut w, &relay, 50..80);
            assert_eq!(relay.lock().signature_form().unwrap(), Some(SignatureForm::TreeHashAndLength));
            settle(&mut pair, 5);
            if kc6 {
                assert_eq!(theirs.len(), 50, "seed {seed}");
                assert_all_short(&theirs);
                assert_eq!(stats_of(&pair.a).withheld_from, Some(50));
            } else {
                assert_eq!(theirs.len(), 80, "seed {seed}");
                assert!(theirs.lock().is_complete());
                assert_eq!(stats_of(&pair.a).withheld_from, None);
            }

            // The writer signs in the 32-byte form again: block 80..85 under a
            // 32-byte head, which proves 50..80 to the kappa-core 6 peer too.
            drop(w);
            let mut w = writer(&files, SignatureForm::TreeHash);
            append(&mut w, 80..85, 5);
            copy(&mut w, &relay, 80..85);
            assert!(
                pair.drive_until(200_000, |_| theirs.len() == 85 && theirs.lock().is_complete()),
                "seed {seed}, {generation}: {} blocks",
                theirs.len()
            );
            settle(&mut pair, 2);
            theirs.lock().verify().unwrap();
            for i in 0..85 {
                assert_eq!(theirs.get(i).unwrap(), w.get(i).unwrap());
            }
            if kc6 {
                assert_all_short(&theirs);
            }
            let now = pair.now;
            pair.a.close(now);
            assert!(pair.drive_to_end(100_000));
        }
    }
}

/// A feed whose older states are signed in the 40-byte form and whose head is
/// not (hypercore 9's feed continued by a Rust writer) is served whole to a
/// kappa-core 6 peer, from the writer and from a sparse replica whose own
/// older signatures are in the 40-byte form; every signature it is sent is in
/// the 32-byte form.
#[test]
fn a_kc6_peer_gets_a_feed_with_older_40_byte_signatures_whole_under_its_32_byte_head() {
    for seed in 0..4 {
        let files = MemoryProvider::new();
        let mut w = writer(&files, SignatureForm::TreeHashAndLength);
        append(&mut w, 0..40, 6);
        // A sparse replica that took blocks 0..20 under the 40-byte head.
        let sparse = replica();
        copy(&mut w, &sparse, 0..20);
        drop(w);
        let mut w = writer(&files, SignatureForm::TreeHash);
        append(&mut w, 40..50, 4);
        copy(&mut w, &sparse, [45]);
        assert_eq!(sparse.lock().signature_form().unwrap(), Some(SignatureForm::TreeHash));
        assert!(stored_forms(&sparse).contains(&(40, Some(SignatureForm::TreeHashAndLength))));
        let w = SharedFeed::new(w);

        for (source, want) in [(&w, (0..50).collect::<Vec<u64>>()), (&sparse, (0..20).chain([45]).collect())]
        {
            let theirs = replica();
            let mut pair = pair(seed, false, Generation::KappaCore6);
            let now = pair.now;
            pair.a.open_feed(now, source.clone(), FeedOptions::default()).unwrap();
            pair.b.open_feed(now, theirs.clone(), FeedOptions::default()).unwrap();
            assert!(pair.drive_to_end(200_000));
            assert!(
                pair.a.is_finished() && pair.b.is_finished(),
                "{:?} / {:?}",
                pair.a.error(),
                pair.b.error()
            );
            let got: Vec<u64> = (0..50).filter(|&i| theirs.has(i)).collect();
            assert_eq!(got, want, "seed {seed}");
            assert_eq!(theirs.len(), 50);
            assert_all_short(&theirs);
            assert_eq!(stats_of(&pair.a).withheld_from, None);
        }
    }
}
