//! The feed policy: blocked feeds are never offered, never accepted and
//! purged; hidden feeds replicate as before; the policy survives reopening,
//! is never guessed when its file is damaged or lost, and a SIGKILL during a
//! block leaves a set that opens with the policy before or after.
//!
//! On the deterministic pair against the model of multifeed 5
//! (`kappa_testkit::mux5`), between Rust sets over socket pairs, and against
//! a real JS kappa-core 6 peer that holds the blocked feed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_std::os::unix::net::UnixStream;
use async_std::task;
use kappa_log::{PublicKey, SharedFeed};
use kappa_multifeed::{
    Exchange, FeedPolicy, Multifeed, MultifeedError, PolicyError, ReplicateOptions, SyncReport,
    BLOCKED_MARKER, POLICY_FILE,
};
use kappa_protocol::{Event, Protocol, ProtocolOptions};
use kappa_testkit::mux5::{self, Mux5};
use kappa_testkit::pair::{Driver, Pair, Rng};

const KEY: [u8; 32] = [0x5a; 32];

/// Held by the tests that spawn processes and by those that reopen a
/// directory: a process forked by one test thread holds the others' open
/// files (the `LOCK` of a set) until it execs, so a reopen racing a spawn
/// would find its own set locked.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

// ------------------------------------------------ the deterministic pair

struct Ours(Exchange);

impl Driver for Ours {
    fn on_event(&mut self, p: &mut Protocol, now: Instant, ev: &Event) {
        self.0.handle(p, now, ev);
    }
}

/// Whether `have` holds every entry `of` has.
fn whole(have: Option<&SharedFeed>, of: &SharedFeed) -> bool {
    let Some(h) = have else { return false };
    let len = of.len();
    let h = h.lock();
    h.len() == len && h.downloaded(0..len) == len
}

/// What one session of ours against the model left.
struct Run {
    missing: Vec<PublicKey>,
    refused: Vec<PublicKey>,
    /// What we offered the model.
    we_offered: Vec<PublicKey>,
    /// The keys the model holds afterwards.
    model_holds: Vec<PublicKey>,
    /// The model gave up on a feed by itself (JS would lose it against JS too).
    model_gave_up: bool,
    /// Our session finished well (not live, not failed).
    finished: bool,
}

/// One session of `mf` against a model holding `js_feeds`; every flag from
/// `seed`. Ends when our side has ended (non-live), or when everything but
/// the blocked feeds arrived both ways (live).
fn run(mf: &Multifeed, js_feeds: &[SharedFeed], seed: u64) -> Run {
    let mut r = Rng::new(seed ^ 0xb10c);
    let we_initiate = r.chance(1, 2);
    let we_live = r.chance(1, 2);
    let js_live = r.chance(1, 2);
    let js_delay = Duration::from_micros(r.below(4000));
    let now = Instant::now();
    let ex = Exchange::new(mf.clone(), ReplicateOptions::new(we_initiate).live(we_live));
    let root = ex.root();
    let mut us =
        Protocol::new(now, ProtocolOptions::new(we_initiate).live(we_live).extensions(mux5::extensions()));
    us.open_channel(now, root).unwrap();
    let ours = Arc::new(Mutex::new(Ours(ex)));
    let (model, js) = Mux5::new(
        seed,
        now,
        !we_initiate,
        js_live,
        kappa_multifeed::DEFAULT_SHARED_KEY,
        js_feeds.to_vec(),
        js_delay,
    );
    let model = Arc::new(Mutex::new(model));
    let mut pair = Pair::from_protocols(seed, us, js, now);
    pair.watch_all = true;
    pair.drive_a(ours.clone());
    pair.drive_b(model.clone());
    let ours_now = mf.feeds();
    let converged = |p: &Pair| {
        let m = model.lock().unwrap();
        js_feeds
            .iter()
            .filter(|f| !mf.is_blocked(f.public_key()))
            .all(|f| whole(mf.feed(f.public_key()).as_ref(), f))
            && ours_now.iter().all(|f| whole(m.feeds().iter().find(|g| g.public_key() == f.public_key()), f))
            && p.wire_is_empty()
    };
    let limit = now + Duration::from_secs(60);
    pair.drive_until(400_000, |p| {
        if p.now > limit {
            return true;
        }
        if we_live {
            converged(p) || (p.a.is_ended() && p.wire_is_empty())
        } else {
            p.a.is_ended() && p.wire_is_empty()
        }
    });
    let ex = &ours.lock().unwrap().0;
    let m = model.lock().unwrap();
    Run {
        missing: ex.missing(),
        refused: ex.refused(),
        we_offered: m.remote_offer().to_vec(),
        model_holds: m.feeds().iter().map(|f| *f.public_key()).collect(),
        model_gave_up: !m.log.lost_after_finish.is_empty(),
        finished: pair.a.is_finished() && !we_live,
    }
}

/// A feed the model offers and we block (before ever holding it) never comes
/// in, is reported refused (never missing), and the rest of the exchange
/// completes; once unblocked, the next session brings it. Every seed picks
/// roles, live or not on each side and the model's timing.
#[test]
fn a_blocked_feed_the_peer_offers_never_comes_in_and_the_rest_completes() {
    for seed in 0..150 {
        let mf = Multifeed::in_memory().unwrap();
        let w = mf.writer("local").unwrap();
        w.append_batch((0..(seed % 7)).map(|i| format!("{{\"us\":{i}}}\n"))).unwrap();
        let js_feeds = vec![mux5::feed_with(100, 5 + seed % 4), mux5::feed_with(101, 3)];
        let (spam, good) = (*js_feeds[0].public_key(), &js_feeds[1]);
        assert!(mf.block(&spam).unwrap().changed);
        let r = run(&mf, &js_feeds, seed);
        assert!(mf.feed(&spam).is_none(), "seed {seed}: the blocked feed came in");
        assert!(!r.missing.contains(&spam), "seed {seed}: a refused feed counted as missing");
        assert!(!r.we_offered.contains(&spam), "seed {seed}: we offered a blocked feed");
        if r.refused.is_empty() {
            // Only a model that gave up before its manifest offers nothing.
            assert!(r.model_gave_up || !r.finished, "seed {seed}: nothing refused");
        } else {
            assert_eq!(r.refused, vec![spam], "seed {seed}");
        }
        if !r.model_gave_up {
            assert!(whole(mf.feed(good.public_key()).as_ref(), good), "seed {seed}: the rest did not arrive");
            if r.finished {
                assert!(r.missing.is_empty(), "seed {seed}: {:?}", r.missing);
            }
        }

        assert!(mf.unblock(&spam).unwrap());
        let r = run(&mf, &js_feeds, seed + 1000);
        assert!(r.refused.is_empty(), "seed {seed}");
        if !r.model_gave_up {
            assert!(whole(mf.feed(&spam).as_ref(), &js_feeds[0]), "seed {seed}: unblocked, not back");
        }
    }
}

/// A feed we hold and then block is purged and never offered again: a
/// fresh peer neither hears of it nor gets it, whatever the order.
#[test]
fn a_feed_blocked_after_it_arrived_is_never_offered() {
    for seed in 0..100 {
        let mf = Multifeed::in_memory().unwrap();
        mf.writer("local").unwrap().append(b"{\"us\":1}\n").unwrap();
        let js_feeds = vec![mux5::feed_with(100, 4)];
        let spam = *js_feeds[0].public_key();
        let r = run(&mf, &js_feeds, seed);
        if r.model_gave_up || mf.feed(&spam).is_none() {
            continue;
        }
        let b = mf.block(&spam).unwrap();
        assert!(b.changed && b.dir.is_some());
        let r = run(&mf, &[], seed + 5000);
        assert!(!r.we_offered.contains(&spam), "seed {seed}: offered a blocked feed");
        assert!(!r.model_holds.contains(&spam), "seed {seed}: the peer got a blocked feed");
    }
}

// ------------------------------------------------ Rust sets on disk

async fn sync(a: &Multifeed, b: &Multifeed) -> (SyncReport, SyncReport) {
    let (s1, s2) = UnixStream::pair().unwrap();
    let (fa, _ha) = a.session(s1, ReplicateOptions::new(true).shared_key(KEY)).unwrap();
    let (fb, _hb) = b.session(s2, ReplicateOptions::new(false).shared_key(KEY)).unwrap();
    let (ra, rb) = futures::future::join(fa, fb).await;
    (ra.expect("a"), rb.expect("b"))
}

/// What a blocked feed's folder holds, as [`files_in`] lists it.
fn purged() -> Vec<String> {
    vec![BLOCKED_MARKER.to_owned(), "key".to_owned()]
}

/// The file names in folder `dir` of a set (that hold bytes or not).
fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn writer_with(mf: &Multifeed, name: &str, n: u64) -> PublicKey {
    let w = mf.writer(name).unwrap();
    w.append_batch((0..n).map(|i| format!("{{\"n\":{i},\"who\":\"{name}\"}}\n"))).unwrap();
    *w.public_key()
}

#[test]
fn block_purges_persists_refuses_and_unblock_brings_it_back() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let a = Multifeed::open_dir(tmp.path().join("a")).unwrap();
    let spam = writer_with(&a, "spam", 10);
    let good = writer_with(&a, "good", 5);
    let bdir = tmp.path().join("b");
    let b = Multifeed::open_dir(&bdir).unwrap();
    let mine = writer_with(&b, "mine", 2);
    task::block_on(sync(&a, &b));
    assert_eq!(b.feed(&spam).unwrap().len(), 10);

    // Our own writer cannot be blocked (it would destroy it).
    assert!(matches!(b.block(&mine), Err(MultifeedError::Policy(PolicyError::LocalWriter { .. }))));
    let blocked = b.block(&spam).unwrap();
    assert!(blocked.changed);
    let dir = blocked.dir.unwrap();
    assert!(blocked.freed > 10 * 20, "{blocked:?}");
    assert_eq!(files_in(&bdir.join(dir.to_string())), purged());
    assert!(b.feed(&spam).is_none());
    assert_eq!(b.feeds().len(), 2);
    assert!(!b.block(&spam).unwrap().changed, "blocking twice changes nothing");
    assert_eq!(b.policy_of(&spam), Some(FeedPolicy::Blocked));
    drop(b);

    // Reopened: still blocked, its folder not reused by a new feed.
    let b = Multifeed::open_dir(&bdir).unwrap();
    assert!(b.is_blocked(&spam));
    assert_eq!(b.blocked_feeds(), vec![(spam, Some(dir))]);
    assert!(b.feed(&spam).is_none());
    let later = writer_with(&b, "later", 1);
    let later_dir = b.feed_infos().iter().find(|(_, _, f)| *f.public_key() == later).unwrap().0;
    assert!(later_dir > dir);

    // A peer that holds it offers it: refused, not missing; nothing comes in.
    let (_, rb) = task::block_on(sync(&a, &b));
    assert_eq!(rb.refused, vec![spam]);
    assert!(rb.missing.is_empty(), "{rb:?}");
    assert!(rb.requested.iter().all(|k| *k != spam));
    assert!(b.feed(&spam).is_none());
    assert_eq!(files_in(&bdir.join(dir.to_string())), purged());
    // Nor is it passed on.
    let c = Multifeed::in_memory().unwrap();
    task::block_on(sync(&b, &c));
    assert!(c.feed(&spam).is_none());
    assert_eq!(c.feed(&good).unwrap().len(), 5);

    // Unblocked: the next sync brings it back, whole, in its old folder.
    assert!(b.unblock(&spam).unwrap());
    assert!(!b.unblock(&spam).unwrap());
    assert_eq!(b.feed(&spam).unwrap().len(), 0);
    let (_, rb) = task::block_on(sync(&a, &b));
    assert!(rb.refused.is_empty() && rb.missing.is_empty());
    let back = b.feed(&spam).unwrap();
    assert_eq!((back.len(), back.lock().downloaded(0..10)), (10, 10));
    assert!(!bdir.join(dir.to_string()).join(BLOCKED_MARKER).exists());
    assert_eq!(b.feed_infos().iter().find(|(_, _, f)| *f.public_key() == spam).unwrap().0, dir);
}

#[test]
fn a_feed_blocked_before_it_exists_is_never_accepted() {
    let a = Multifeed::in_memory().unwrap();
    let spam = writer_with(&a, "spam", 3);
    writer_with(&a, "good", 3);
    let b = Multifeed::in_memory().unwrap();
    let blocked = b.block(&spam).unwrap();
    assert!(blocked.changed && blocked.dir.is_none() && blocked.freed == 0);
    assert!(matches!(b.add_remote(spam), Err(MultifeedError::Policy(PolicyError::Blocked { .. }))));
    let (_, rb) = task::block_on(sync(&a, &b));
    assert_eq!(rb.refused, vec![spam]);
    assert!(rb.missing.is_empty());
    assert_eq!(b.feeds().len(), 1);
    assert_eq!(b.blocked_feeds(), vec![(spam, None)]);
}

#[test]
fn a_hidden_feed_is_kept_and_replicated_but_not_visible() {
    let a = Multifeed::in_memory().unwrap();
    let shy = writer_with(&a, "shy", 3);
    let b = Multifeed::in_memory().unwrap();
    assert!(b.hide(&shy).unwrap(), "a feed may be hidden before it arrives");
    task::block_on(sync(&a, &b));
    assert_eq!(b.feed(&shy).unwrap().len(), 3);
    assert!(b.visible_feeds().is_empty());
    a.writer("shy").unwrap().append(b"{\"more\":1}\n").unwrap();
    let c = Multifeed::in_memory().unwrap();
    task::block_on(sync(&a, &b));
    task::block_on(sync(&b, &c));
    assert_eq!(c.feed(&shy).unwrap().len(), 4, "a hidden feed is passed on");
    // Hiding and blocking: a blocked feed is not hidden; our writer may be hidden.
    let own = writer_with(&b, "own", 1);
    assert!(b.hide(&own).unwrap());
    assert!(!b.hide(&own).unwrap());
    assert!(b.block(&shy).unwrap().changed, "a hidden feed can be blocked");
    assert!(matches!(b.hide(&shy), Err(MultifeedError::Policy(PolicyError::Blocked { .. }))));
    assert!(!b.unhide(&shy).unwrap());
    assert!(b.unhide(&own).unwrap());
    assert_eq!(b.visible_feeds().len(), 1);
}

/// A damaged policy file never opens as a smaller policy: the set does not
/// open and says why; a lost one with blocked folders left does not either;
/// nothing is changed by the failed opens.
#[test]
fn a_damaged_or_lost_policy_is_an_error_never_an_unblock() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let a = Multifeed::in_memory().unwrap();
    let spam = writer_with(&a, "spam", 4);
    let bdir = tmp.path().join("b");
    let b = Multifeed::open_dir(&bdir).unwrap();
    task::block_on(sync(&a, &b));
    let dir = b.block(&spam).unwrap().dir.unwrap();
    drop(b);
    let policy_path = bdir.join(POLICY_FILE);
    let good = std::fs::read(&policy_path).unwrap();
    let damaged: Vec<Vec<u8>> = vec![
        good[..good.len() - 3].to_vec(),
        Vec::new(),
        b"kappa-policy 1\nend 00\n".to_vec(),
        {
            let mut g = good.clone();
            g[20] ^= 1;
            g
        },
        vec![0xff; 100],
    ];
    for bytes in damaged {
        std::fs::write(&policy_path, &bytes).unwrap();
        match Multifeed::open_dir(&bdir) {
            Err(MultifeedError::Policy(PolicyError::Damaged { .. })) => {}
            // An empty file reads as none: the markers say it is missing.
            Err(MultifeedError::Policy(PolicyError::Missing { .. })) if bytes.is_empty() => {}
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(&bytes)),
        }
        assert_eq!(std::fs::read(&policy_path).unwrap(), bytes, "a failed open changed the file");
    }
    let e = {
        std::fs::remove_file(&policy_path).unwrap();
        Multifeed::open_dir(&bdir).unwrap_err()
    };
    assert_eq!(e, MultifeedError::Policy(PolicyError::Missing { dirs: vec![dir] }));
    assert!(e.to_string().contains(BLOCKED_MARKER), "{e}");
    // Put back, it opens as before.
    std::fs::write(&policy_path, &good).unwrap();
    let b = Multifeed::open_dir(&bdir).unwrap();
    assert!(b.is_blocked(&spam) && b.feed(&spam).is_none());
    drop(b);
    // Deleting the file and the marker is the way to accept every feed again.
    std::fs::remove_file(&policy_path).unwrap();
    std::fs::remove_file(bdir.join(dir.to_string()).join(BLOCKED_MARKER)).unwrap();
    let b = Multifeed::open_dir(&bdir).unwrap();
    assert!(!b.is_blocked(&spam));
    assert_eq!(b.feed(&spam).unwrap().len(), 0, "an empty replica again");
}

// ------------------------------------------------ SIGKILL during a block

/// The child: block and unblock the feed `KAPPA_POLICY_CHILD_KEY` until killed.
fn child(dir: &Path, key: &str) {
    let key = PublicKey::from_hex(key).unwrap();
    let mf = Multifeed::open_dir(dir).unwrap();
    for _ in 0..100_000 {
        mf.block(&key).unwrap();
        mf.unblock(&key).unwrap();
    }
}

fn open_checked(dir: &Path, spam: &PublicKey, mine: &PublicKey, round: u32) -> Multifeed {
    let mf = Multifeed::open_dir(dir).unwrap_or_else(|e| panic!("round {round}: the set does not open: {e}"));
    assert_eq!(mf.feed(mine).unwrap().len(), 3, "round {round}: our writer changed");
    match mf.policy_of(spam) {
        Some(FeedPolicy::Blocked) => assert!(mf.feed(spam).is_none(), "round {round}"),
        None => assert!(mf.feed(spam).is_some(), "round {round}: neither blocked nor there"),
        Some(other) => panic!("round {round}: {other}"),
    }
    mf
}

#[test]
fn sigkill_during_block_and_unblock_leaves_a_set_that_opens() {
    if let (Ok(dir), Ok(key)) =
        (std::env::var("KAPPA_POLICY_CHILD_DIR"), std::env::var("KAPPA_POLICY_CHILD_KEY"))
    {
        child(Path::new(&dir), &key);
        return;
    }
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let a = Multifeed::in_memory().unwrap();
    let spam = writer_with(&a, "spam", 200);
    let dir: PathBuf = tmp.path().join("b");
    let mine = {
        let b = Multifeed::open_dir(&dir).unwrap();
        let mine = writer_with(&b, "mine", 3);
        task::block_on(sync(&a, &b));
        mine
    };
    let exe = std::env::current_exe().unwrap();
    let mut seed = 0x9E37_79B9_u64;
    let (mut killed, mut blocked_after) = (0, 0);
    const ROUNDS: u32 = 40;
    for round in 0..ROUNDS {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut c = std::process::Command::new(&exe)
            .args(["sigkill_during_block_and_unblock_leaves_a_set_that_opens", "--exact", "--nocapture"])
            .env("KAPPA_POLICY_CHILD_DIR", &dir)
            .env("KAPPA_POLICY_CHILD_KEY", spam.to_hex())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // The moment of the kill is the crash point being tested.
        std::thread::sleep(Duration::from_micros(5_000 + seed % 40_000));
        if c.try_wait().unwrap().is_none() {
            c.kill().unwrap();
            killed += 1;
        }
        let _ = c.wait();
        let mf = open_checked(&dir, &spam, &mine, round);
        if mf.is_blocked(&spam) {
            blocked_after += 1;
            // What the open left of the folder: the key and the marker.
            let (k, d) = mf.blocked_feeds()[0];
            assert_eq!(k, spam);
            let d = d.unwrap();
            let left = files_in(&dir.join(d.to_string()));
            assert_eq!(left, purged(), "round {round}");
        }
        // Every other round, the feed comes back whole from its writer.
        if round % 2 == 0 {
            mf.unblock(&spam).unwrap();
            task::block_on(sync(&a, &mf));
            assert_eq!(mf.feed(&spam).unwrap().lock().downloaded(0..200), 200, "round {round}");
        }
        drop(mf);
        open_checked(&dir, &spam, &mine, round);
    }
    eprintln!("killed {killed} of {ROUNDS} children mid-way; blocked after {blocked_after}");
    assert!(killed >= ROUNDS / 2, "only {killed} of {ROUNDS} children were killed mid-way");
}

// ------------------------------------------------ a real JS kappa-core 6 peer

mod common;

#[test]
fn a_js_peer_holding_a_blocked_feed_syncs_and_keeps_it() {
    let _serial = serial();
    use kappa_testkit::{chaos, content_digest, js};
    let Some(harness) = js::harness() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let js_dir = tmp.path().join("js");
    let rust_dir = tmp.path().join("rust");
    let kh = common::key_hex();
    let jd = js_dir.to_str().unwrap().to_owned();
    // One non-live JS session against our set; its done report.
    let sync_js = |mf: &Multifeed, writes: &[&str]| -> (SyncReport, serde_json::Value) {
        let mut args = vec!["--dir", &jd, "--listen", "0", "--responder", "--shared-key", &kh];
        for w in writes {
            args.extend(["--write", w]);
        }
        let mut peer = common::spawn(&harness, &args);
        let port = peer.until("listening")["port"].as_u64().unwrap() as u16;
        let report = task::block_on(async {
            let stream = async_std::net::TcpStream::connect(chaos::route_to_port(port).addr()).await.unwrap();
            mf.replicate(stream, common::opts(common::KC6, true)).await
        })
        .unwrap();
        let done = peer.until("done");
        assert!(peer.finish().success(), "the JS peer failed");
        (report, done)
    };
    let js_feed = |done: &serde_json::Value, name: &str| -> (PublicKey, u64, String) {
        let f = done["feeds"].as_array().unwrap().iter().find(|f| f["localname"] == name).unwrap();
        (
            PublicKey::from_hex(f["key"].as_str().unwrap()).unwrap(),
            f["length"].as_u64().unwrap(),
            f["digest"].as_str().unwrap().to_owned(),
        )
    };

    let mf = Multifeed::open_dir(&rust_dir).unwrap();
    common::rust_writer(&mf, "mine", 3);
    let (_, done) = sync_js(&mf, &["spam:10", "good:5"]);
    let (spam, _, spam_digest) = js_feed(&done, "spam");
    let (good, _, _) = js_feed(&done, "good");
    assert_eq!(mf.feed(&spam).unwrap().len(), 10);
    let dir = mf.block(&spam).unwrap().dir.unwrap();

    // The JS peer offers the blocked feed: nothing of it comes in, the rest
    // of the exchange completes (our new entries reach it), and it still has
    // its own copy.
    common::rust_writer(&mf, "mine", 2);
    let (report, done) = sync_js(&mf, &["good:1"]);
    assert_eq!(report.refused, vec![spam]);
    assert!(report.missing.is_empty(), "{report:?}");
    assert!(mf.feed(&spam).is_none());
    assert_eq!(files_in(&rust_dir.join(dir.to_string())), purged());
    assert_eq!(mf.feed(&good).unwrap().len(), 6);
    let (_, js_spam_len, _) = js_feed(&done, "spam");
    assert_eq!(js_spam_len, 10, "the peer keeps its copy");
    let mine = mf.writer("mine").unwrap();
    let js_mine =
        done["feeds"].as_array().unwrap().iter().find(|f| f["key"] == mine.public_key().to_hex()).unwrap();
    assert_eq!(js_mine["length"], 5);
    drop(mine);

    // JS kappa-core 6 opens the directory: the blocked feed is an empty feed
    // there, every other feed as it was.
    drop(mf);
    let read = &js::run(&harness, "multifeed-tool.js", &["read", rust_dir.to_str().unwrap()])[0];
    let feeds = read["feeds"].as_array().unwrap();
    assert_eq!(feeds.len(), 3, "{read}");
    let spam_in_js = feeds.iter().find(|f| f["key"] == spam.to_hex()).unwrap();
    assert_eq!(spam_in_js["length"], 0, "{read}");
    assert_eq!(feeds.iter().find(|f| f["key"] == good.to_hex()).unwrap()["length"], 6, "{read}");

    // Unblocked, the next sync brings it back, byte for byte.
    let mf = Multifeed::open_dir(&rust_dir).unwrap();
    assert!(mf.is_blocked(&spam), "JS opening the directory changed nothing");
    assert!(mf.unblock(&spam).unwrap());
    let (report, _) = sync_js(&mf, &[]);
    assert!(report.refused.is_empty() && report.missing.is_empty(), "{report:?}");
    let back = mf.feed(&spam).unwrap();
    assert_eq!(back.len(), 10);
    assert_eq!(content_digest(&mut back.lock()), spam_digest);
}

// ------------------------------------------------ a live session

/// A feed blocked during a live session: its channel closes, the session
/// goes on, and the other feeds keep flowing; blocks of the blocked feed
/// still on their way are dropped, not stored.
#[test]
fn a_block_during_a_live_session_closes_the_feed_and_the_session_goes_on() {
    task::block_on(async {
        let a = Multifeed::in_memory().unwrap();
        let spam = writer_with(&a, "spam", 5);
        let good = writer_with(&a, "good", 1);
        let b = Multifeed::in_memory().unwrap();
        let (s1, s2) = UnixStream::pair().unwrap();
        let (fa, ha) = a.session(s1, ReplicateOptions::new(true).shared_key(KEY).live(true)).unwrap();
        let (fb, hb) = b.session(s2, ReplicateOptions::new(false).shared_key(KEY).live(true)).unwrap();
        let ta = task::spawn(fa);
        let tb = task::spawn(fb);
        let arrived = |key: PublicKey, n: u64| {
            let b = b.clone();
            async move {
                loop {
                    if let Some(f) = b.feed(&key) {
                        let l = f.changed();
                        if f.lock().downloaded(0..n) == n && f.len() >= n {
                            return;
                        }
                        l.await;
                    } else {
                        task::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
        };
        // Every wait ends with the session, if it ends first.
        let mut tb = Box::pin(tb);
        let mut ta = Box::pin(ta);
        for (key, n) in [(spam, 5), (good, 1)] {
            match futures::future::select(
                Box::pin(arrived(key, n)),
                futures::future::select(&mut ta, &mut tb),
            )
            .await
            {
                futures::future::Either::Left(_) => {}
                futures::future::Either::Right((ended, _)) => {
                    panic!("a session ended early: {:?}", ended.factor_first().0)
                }
            }
        }
        b.block(&spam).unwrap();
        // The writer keeps writing both feeds.
        let (ws, wg) = (a.writer("spam").unwrap(), a.writer("good").unwrap());
        for i in 0..50 {
            ws.append(format!("{{\"more\":{i}}}\n").as_bytes()).unwrap();
            wg.append(format!("{{\"more\":{i}}}\n").as_bytes()).unwrap();
        }
        // The session must not end on its own meanwhile (before the
        // protocol dropped blocks on a closed channel, the put into the
        // blocked feed's cut-off storage failed it).
        let waited =
            futures::future::select(Box::pin(arrived(good, 51)), futures::future::select(&mut ta, &mut tb))
                .await;
        if let futures::future::Either::Right((ended, _)) = waited {
            panic!("a session ended after the block: {:?}", ended.factor_first().0);
        }
        assert!(b.feed(&spam).is_none());
        ha.close();
        hb.close();
        let (ra, rb) = (ta.await, tb.await);
        assert!(ra.is_ok(), "{ra:?}");
        let rb = rb.unwrap();
        assert!(rb.missing.is_empty(), "{rb:?}");
    });
}
