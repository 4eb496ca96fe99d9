//! The feed exchange (kappa_multifeed::Exchange) against a model of multifeed
//! 5's (kappa_testkit::mux5) on the deterministic in-memory pair: every seed
//! picks who dials, live or not on each side, which side holds feeds, how the
//! byte stream is cut and delayed, and how long each of the model's
//! asynchronous steps takes (so its manifest may come after its request, its
//! feed streams may start after its early close, ...).
//!
//! The property, for every seed:
//! - we never end a session while a request of ours is unanswered;
//! - a session of ours that ends well with data left behind says so
//!   (`missing`), never "synced" without the data;
//! - unless the model itself gave up on a feed (JS would lose it against
//!   JS too), the sync completes: every feed on both sides, whole.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kappa_log::{PublicKey, SharedFeed};
use kappa_multifeed::{Exchange, Multifeed, ReplicateOptions, DEFAULT_SHARED_KEY};
use kappa_protocol::{Event, Protocol, ProtocolOptions};
use kappa_testkit::mux5::{self, Mux5};
use kappa_testkit::pair::{Driver, Pair, Rng};

struct Ours(Exchange);

impl Driver for Ours {
    fn on_event(&mut self, p: &mut Protocol, now: Instant, ev: &Event) {
        self.0.handle(p, now, ev);
    }
}

#[derive(Debug, Clone, Copy)]
struct Case {
    seed: u64,
    we_initiate: bool,
    we_live: bool,
    js_live: bool,
    our_feeds: u8,
    js_feeds: u8,
    entries: u64,
    js_delay: Duration,
}

impl Case {
    fn from_seed(seed: u64) -> Case {
        let mut r = Rng::new(seed ^ 0xe8c4);
        Case {
            seed,
            we_initiate: r.chance(1, 2),
            we_live: r.chance(1, 2),
            js_live: r.chance(1, 2),
            our_feeds: r.below(3) as u8,
            js_feeds: r.below(3) as u8,
            entries: r.below(20),
            js_delay: Duration::from_micros(r.below(4000)),
        }
    }
}

/// Whether `have` holds every entry `of` has.
fn whole(have: Option<&SharedFeed>, of: &SharedFeed) -> bool {
    let Some(h) = have else { return false };
    let len = of.len();
    let h = h.lock();
    h.len() == len && h.downloaded(0..len) == len
}

struct Outcome {
    /// Every feed of each side is whole on the other.
    converged: bool,
}

fn run(case: Case) -> Result<Outcome, String> {
    let now = Instant::now();
    let mf = Multifeed::in_memory().map_err(|e| e.to_string())?;
    let mut ours = Vec::new();
    for i in 0..case.our_feeds {
        let w = mf.writer(&format!("w{i}")).map_err(|e| e.to_string())?;
        for n in 0..case.entries + u64::from(i) {
            w.append(format!("{{\"us\":{n}}}\n").as_bytes()).map_err(|e| e.to_string())?;
        }
        ours.push(w);
    }
    let js_feeds: Vec<SharedFeed> =
        (0..case.js_feeds).map(|i| mux5::feed_with(100 + i, case.entries + 2 * u64::from(i))).collect();

    let opts = ReplicateOptions::new(case.we_initiate).live(case.we_live);
    let ex = Exchange::new(mf.clone(), opts);
    let root = ex.root();
    let mut us = Protocol::new(
        now,
        ProtocolOptions::new(case.we_initiate).live(case.we_live).extensions(mux5::extensions()),
    );
    us.open_channel(now, root).map_err(|e| e.to_string())?;
    let ours_driver = Arc::new(Mutex::new(Ours(ex)));
    let (model, js) = Mux5::new(
        case.seed,
        now,
        !case.we_initiate,
        case.js_live,
        DEFAULT_SHARED_KEY,
        js_feeds.clone(),
        case.js_delay,
    );
    let model = Arc::new(Mutex::new(model));
    let mut pair = Pair::from_protocols(case.seed, us, js, now);
    pair.watch_all = true;
    pair.drive_a(ours_driver.clone());
    pair.drive_b(model.clone());

    let converged = |pair: &Pair| {
        let m = model.lock().unwrap();
        js_feeds.iter().all(|f| whole(mf.feed(f.public_key()).as_ref(), f))
            && ours.iter().all(|f| whole(m.feeds().iter().find(|g| g.public_key() == f.public_key()), f))
            && pair.wire_is_empty()
    };
    // Our request outstanding at the moment our session ended (checked as
    // it happens).
    let mut ended_while_requesting = None;
    let limit = now + Duration::from_secs(60);
    pair.drive_until(400_000, |p| {
        let ex = &ours_driver.lock().unwrap().0;
        if p.a.is_ended() && ended_while_requesting.is_none() {
            ended_while_requesting = Some(p.a.is_finished() && ex.unanswered_requests() > 0);
        }
        if p.now > limit {
            return true;
        }
        if case.we_live {
            converged(p) || (p.a.is_ended() && p.wire_is_empty())
        } else {
            p.a.is_ended() && p.wire_is_empty()
        }
    });
    let done = converged(&pair);
    let ex = &ours_driver.lock().unwrap().0;
    let m = model.lock().unwrap();
    let state = format!(
        "{case:?}: ended {} error {:?}, {ex:?}, missing {}, model {:?}, now +{:?}",
        pair.a.is_ended(),
        pair.a.error(),
        ex.missing().len(),
        m.log,
        pair.now - now
    );
    if ended_while_requesting == Some(true) {
        return Err(format!("our session ended with a request unanswered: {state}"));
    }
    let js_gave_up = !m.log.lost_after_finish.is_empty();
    if pair.a.is_finished() && !case.we_live {
        // Finished well: whatever did not arrive must be reported missing.
        let lost: Vec<PublicKey> = js_feeds
            .iter()
            .filter(|f| !whole(mf.feed(f.public_key()).as_ref(), f))
            .map(|f| *f.public_key())
            .collect();
        for k in &lost {
            if !ex.missing().contains(k) {
                return Err(format!("synced without feed {} and not reported missing: {state}", k.to_hex()));
            }
        }
    }
    if !done && !js_gave_up {
        return Err(format!("the sync did not complete: {state}"));
    }
    Ok(Outcome { converged: done })
}

fn seeds() -> u64 {
    std::env::var("EXCHANGE_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1000)
}

#[test]
fn every_interleaving_the_model_allows_completes_or_says_what_is_missing() {
    let mut failures = Vec::new();
    let mut gave_up = 0;
    let n = seeds();
    for seed in 0..n {
        match run(Case::from_seed(seed)) {
            Ok(o) if !o.converged => gave_up += 1,
            Ok(_) => {}
            Err(e) => failures.push(e),
        }
    }
    eprintln!("{n} seeds: {} failed, {gave_up} lost by the model's own early end", failures.len());
    assert!(failures.is_empty(), "{} of {n} seeds failed; first: {}", failures.len(), failures[0]);
}

/// The order that lost a live JS peer's feeds: an empty Rust peer, the
/// model's request before its manifest, every combination of live.
#[test]
fn an_empty_peer_gets_a_live_js_peers_feeds_whatever_the_order() {
    for seed in 0..300 {
        for we_initiate in [true, false] {
            for we_live in [false, true] {
                let case = Case {
                    seed,
                    we_initiate,
                    we_live,
                    js_live: true,
                    our_feeds: 0,
                    js_feeds: 1,
                    entries: 5,
                    js_delay: Duration::from_micros(seed * 10),
                };
                if let Err(e) = run(case) {
                    panic!("{e}");
                }
            }
        }
    }
}

/// A peer that proves the shared key, stays connected (its keep-alives keep
/// the connection from timing out) and then stops short in the exchange:
/// after its handshake (`manifest: false`), or after offering a feed whose
/// request it never answers.
struct Mute {
    manifest: bool,
}

impl kappa_testkit::pair::Driver for Mute {
    fn on_event(&mut self, p: &mut Protocol, now: Instant, ev: &Event) {
        if let Event::Extension { name, .. } = ev {
            if name == "MULTIFEED_HANDSHAKE" {
                let hs = br#"{"client":"MULTIFEED","version":"4.0.0","live":true}"#;
                let _ = p.send_extension(now, "MULTIFEED_HANDSHAKE", hs);
                if self.manifest {
                    let key = mux5::feed_with(7, 3).public_key().to_hex();
                    let m = format!(r#"{{"keys":["{key}"]}}"#);
                    let _ = p.send_extension(now, "MULTIFEED_MANIFEST", m.as_bytes());
                }
            }
        }
    }
}

fn against_a_mute_peer(
    manifest: bool,
    we_live: bool,
    seed: u64,
) -> (Option<kappa_protocol::ProtocolError>, Duration) {
    let now = Instant::now();
    let mf = Multifeed::in_memory().unwrap();
    let timeout = Duration::from_secs(20);
    let ex = Exchange::new(mf, ReplicateOptions::new(true).live(we_live).timeout(timeout));
    let root = ex.root();
    let mut us = Protocol::new(
        now,
        ProtocolOptions::new(true)
            .live(we_live)
            .timeouts(timeout, timeout / 2)
            .extensions(mux5::extensions()),
    );
    us.open_channel(now, root).unwrap();
    let mut them = Protocol::new(
        now,
        ProtocolOptions::new(false).live(true).timeouts(timeout, timeout / 2).extensions(mux5::extensions()),
    );
    them.hold();
    them.open_channel(now, root).unwrap();
    let mut pair = Pair::from_protocols(seed, us, them, now);
    pair.drive_a(Ours(ex));
    pair.drive_b(Mute { manifest });
    let limit = now + Duration::from_secs(600);
    pair.drive_until(1_000_000, |p| p.a.is_ended() || p.now > limit);
    (pair.a.error().cloned(), pair.now - now)
}

/// A peer that never answers our feed request (or never sends its manifest)
/// while it keeps the connection alive ends the session after the timeout,
/// with an error that says what it did not send, live or not.
#[test]
fn a_peer_that_never_answers_the_exchange_is_given_up_on_after_the_timeout() {
    for seed in 0..20 {
        for manifest in [true, false] {
            for we_live in [false, true] {
                let (err, took) = against_a_mute_peer(manifest, we_live, seed);
                let what = if manifest { "answer to our feed request" } else { "feed manifest" };
                match err {
                    Some(kappa_protocol::ProtocolError::Unresponsive { waiting_for, waited }) => {
                        assert_eq!(waiting_for, what, "seed {seed}");
                        assert!(waited >= Duration::from_secs(20), "seed {seed}: waited only {waited:?}");
                    }
                    other => panic!(
                        "seed {seed} manifest {manifest} live {we_live}: expected Unresponsive, got {other:?} after {took:?}"
                    ),
                }
                assert!(took < Duration::from_secs(25), "seed {seed}: took {took:?}");
            }
        }
    }
}
