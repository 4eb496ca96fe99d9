//! A model of multifeed 5.2.4's feed exchange (`mux.js` and
//! `Multifeed.prototype.replicate` in `index.js`) over hypercore-protocol 7
//! stream semantics, as a [`Driver`] for one side of a [`Pair`](crate::pair::Pair).
//!
//! What it does, as JS does:
//!
//! - When the root channel (the shared key) is open on both sides, it sends
//!   `MULTIFEED_HANDSHAKE` (`{client, version, live}`).
//! - On the peer's handshake it sends its manifest, *later* (JS emits `ready`
//!   on the next tick, and multifeed waits for its own `ready`): a random
//!   delay, so the peer's manifest can be answered first and our
//!   `REQUEST_FEEDS` may precede our `MANIFEST`.
//! - A manifest is answered at once with `REQUEST_FEEDS` of every key.
//! - A request is answered at once with `REPLICATE_FEEDS` of the requested
//!   keys it offered (sorted, unique), then `_replicateFeeds(keys, false)`.
//! - An answer starts `_replicateFeeds(answered ∩ requested, true)`.
//! - `_replicateFeeds` holds stream finalization (`prefinalize.wait`), creates
//!   missing feeds under multifeed's writer lock (FIFO; a random delay), then
//!   releases the hold and starts each feed's stream after `feed.ready` (its
//!   own random delay). **The early-close rule:** if no key was given, no feed
//!   stream is active yet and `terminateIfNoFeeds`, it closes the root
//!   channel ("terminating mux: no feeds to sync"), live or not.
//! - A feed stream stops being active when its channel closes.
//! - Non-live: the first channel Close from the peer (`prefinalize`) closes
//!   the root channel; the stream finishes once every channel is closed and
//!   no `_replicateFeeds` holds it. Live: it never finishes by itself, and it
//!   never answers a Close on the root channel.
//!
//! Wire-level replication of each feed is kappa-protocol's (hypercore 8's
//! rules, tested against JS elsewhere).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kappa_log::{Feed, KeyPair, PublicKey, SharedFeed};
use kappa_protocol::{Event, FeedOptions, Message, Options, Protocol, ProtocolOptions};
use kappa_storage::MemoryProvider;
use serde_json::{json, Value};

use crate::pair::{Driver, Rng};

const HANDSHAKE: &str = "MULTIFEED_HANDSHAKE";
const MANIFEST: &str = "MULTIFEED_MANIFEST";
const REPLICATE_FEEDS: &str = "MULTIFEED_REPLICATE_FEEDS";
const REQUEST_FEEDS: &str = "MULTIFEED_REQUEST_FEEDS";

/// The stream extensions of multifeed 5.
pub fn extensions() -> Vec<String> {
    vec![HANDSHAKE.into(), MANIFEST.into(), REPLICATE_FEEDS.into(), REQUEST_FEEDS.into()]
}

/// The root channel's local id: the model opens it first.
const ROOT_CHANNEL_ID: u64 = 1;

enum Task {
    /// `mux.ready` fired: send the manifest.
    Manifest,
    /// The writer lock of a `_replicateFeeds` call was taken.
    Replicate { keys: Vec<PublicKey>, terminate: bool },
    /// `feed.ready` of a feed to replicate fired.
    Activate(PublicKey),
}

/// What the model saw happen (for assertions).
#[derive(Debug, Default, Clone)]
pub struct Mux5Log {
    /// It closed its root channel by the early-close rule.
    pub terminated_early: bool,
    /// The peer answered a request of ours (`remote-feeds`).
    pub remote_feeds: bool,
    /// Agreed feeds whose stream could not start because the stream had
    /// already finished (a JS-side loss: JS itself gives up on them).
    pub lost_after_finish: Vec<PublicKey>,
    /// Extension messages sent, in order.
    pub sent: Vec<String>,
}

/// A multifeed 5 peer's exchange (see the module docs).
pub struct Mux5 {
    live: bool,
    rng: Rng,
    max_delay: Duration,
    root: PublicKey,
    feeds: Vec<SharedFeed>,
    local_offer: Vec<PublicKey>,
    requested: Vec<PublicKey>,
    remote_offer: Vec<PublicKey>,
    active: BTreeSet<[u8; 32]>,
    tasks: Vec<(Instant, u64, Task)>,
    task_seq: u64,
    lock_free_at: Option<Instant>,
    prefinalized: bool,
    allow_root_close: Arc<AtomicBool>,
    /// What happened.
    pub log: Mux5Log,
}

impl Mux5 {
    /// A model peer with `feeds` (its own and replicas), live or not, whose
    /// asynchronous steps take up to `max_delay` (chosen by `seed`). Returns it
    /// with its protocol (already opening the root channel for `shared_key`).
    pub fn new(
        seed: u64,
        now: Instant,
        initiator: bool,
        live: bool,
        shared_key: [u8; 32],
        feeds: Vec<SharedFeed>,
        max_delay: Duration,
    ) -> (Mux5, Protocol) {
        let mut p = Protocol::new(now, ProtocolOptions::new(initiator).live(live).extensions(extensions()));
        let root = PublicKey::from_bytes(shared_key);
        let allow_root_close = Arc::new(AtomicBool::new(false));
        if live {
            // A live JS peer never answers a Close on the root channel (it has
            // no close handler there): only its own closes go out.
            let allow = allow_root_close.clone();
            p.tamper_outgoing(move |channel, msg| {
                if channel == ROOT_CHANNEL_ID
                    && matches!(msg, Message::Close(_))
                    && !allow.load(Ordering::SeqCst)
                {
                    *msg = Message::Options(Options { extensions: Vec::new(), ack: None });
                }
            });
            // It never finishes by itself either.
            p.hold();
        }
        let _ = p.open_channel(now, root);
        let m = Mux5 {
            live,
            rng: Rng::new(seed ^ 0x6d75_7835),
            max_delay,
            root,
            feeds,
            local_offer: Vec::new(),
            requested: Vec::new(),
            remote_offer: Vec::new(),
            active: BTreeSet::new(),
            tasks: Vec::new(),
            task_seq: 0,
            lock_free_at: None,
            prefinalized: false,
            allow_root_close,
            log: Mux5Log::default(),
        };
        (m, p)
    }

    /// The feeds it holds (its own and those it received).
    pub fn feeds(&self) -> &[SharedFeed] {
        &self.feeds
    }

    /// The keys the peer offered.
    pub fn remote_offer(&self) -> &[PublicKey] {
        &self.remote_offer
    }

    fn delay(&mut self) -> Duration {
        // Often "the next tick" (no time), sometimes up to `max_delay`.
        if self.rng.chance(1, 3) {
            Duration::ZERO
        } else {
            Duration::from_nanos(self.rng.below(self.max_delay.as_nanos() as u64 + 1))
        }
    }

    fn schedule(&mut self, at: Instant, task: Task) {
        self.task_seq += 1;
        self.tasks.push((at, self.task_seq, task));
    }

    fn send(&mut self, p: &mut Protocol, now: Instant, name: &str, v: &Value) {
        self.log.sent.push(name.to_owned());
        let _ = p.send_extension(now, name, v.to_string().as_bytes());
    }

    fn feed(&self, key: &PublicKey) -> Option<SharedFeed> {
        self.feeds.iter().find(|f| f.public_key() == key).cloned()
    }

    fn close_root(&mut self, p: &mut Protocol, now: Instant) {
        self.allow_root_close.store(true, Ordering::SeqCst);
        p.close_channel(now, &self.root);
        self.allow_root_close.store(false, Ordering::SeqCst);
    }

    /// `_replicateFeeds(keys, terminateIfNoFeeds)`.
    fn replicate_feeds(&mut self, p: &mut Protocol, now: Instant, keys: Vec<PublicKey>, terminate: bool) {
        p.hold(); // prefinalize.wait()
        let d = self.delay();
        let at = (now + d).max(self.lock_free_at.unwrap_or(now));
        self.lock_free_at = Some(at);
        self.schedule(at, Task::Replicate { keys, terminate });
    }

    fn run(&mut self, p: &mut Protocol, now: Instant, task: Task) {
        match task {
            Task::Manifest => {
                let keys: Vec<PublicKey> = self.feeds.iter().map(|f| *f.public_key()).collect();
                for k in &keys {
                    if !self.local_offer.contains(k) {
                        self.local_offer.push(*k);
                    }
                }
                let hex: Vec<String> = keys.iter().map(|k| k.to_hex()).collect();
                self.send(p, now, MANIFEST, &json!({ "keys": hex }));
            }
            Task::Replicate { keys, terminate } => {
                // addMissingKeys: replicas for keys it does not hold.
                for k in &keys {
                    if self.feed(k).is_none() {
                        if let Ok(f) = Feed::builder(MemoryProvider::new()).public_key(*k).open() {
                            self.feeds.push(SharedFeed::new(f));
                        }
                    }
                }
                p.release(); // prefinalize.continue()
                for k in &keys {
                    let d = self.delay();
                    self.schedule(now + d, Task::Activate(*k));
                }
                if keys.is_empty() && self.active.is_empty() && terminate {
                    self.log.terminated_early = true;
                    self.close_root(p, now);
                }
                if terminate {
                    self.log.remote_feeds = true;
                }
            }
            Task::Activate(k) => {
                if self.active.contains(&k.discovery_key()) {
                    return;
                }
                let Some(feed) = self.feed(&k) else { return };
                if p.is_ended() {
                    self.log.lost_after_finish.push(k);
                    return;
                }
                self.active.insert(k.discovery_key());
                let _ = p.open_feed(now, feed, FeedOptions::default());
            }
        }
    }

    fn on_extension(&mut self, p: &mut Protocol, now: Instant, name: &str, v: Value) {
        let keys = |v: &Value| -> Vec<PublicKey> {
            let list = v.get("keys").unwrap_or(v);
            list.as_array()
                .map(|a| {
                    a.iter().filter_map(Value::as_str).filter_map(|s| PublicKey::from_hex(s).ok()).collect()
                })
                .unwrap_or_default()
        };
        match name {
            HANDSHAKE => {
                // Version and client checks pass for the peers under test.
                let d = self.delay();
                self.schedule(now + d, Task::Manifest);
            }
            MANIFEST => {
                let ks = keys(&v);
                for k in &ks {
                    if !self.remote_offer.contains(k) {
                        self.remote_offer.push(*k);
                    }
                    self.requested.push(*k);
                }
                let hex: Vec<String> = ks.iter().map(|k| k.to_hex()).collect();
                self.send(p, now, REQUEST_FEEDS, &json!(hex));
            }
            REQUEST_FEEDS => {
                let filtered: BTreeSet<String> = keys(&v)
                    .into_iter()
                    .filter(|k| self.local_offer.contains(k))
                    .map(|k| k.to_hex())
                    .collect();
                let filtered: Vec<String> = filtered.into_iter().collect();
                self.send(p, now, REPLICATE_FEEDS, &json!(filtered));
                let ks = filtered.iter().filter_map(|s| PublicKey::from_hex(s).ok()).collect();
                self.replicate_feeds(p, now, ks, false);
            }
            REPLICATE_FEEDS => {
                let ks: BTreeSet<String> =
                    keys(&v).into_iter().filter(|k| self.requested.contains(k)).map(|k| k.to_hex()).collect();
                let ks = ks.iter().filter_map(|s| PublicKey::from_hex(s).ok()).collect();
                self.replicate_feeds(p, now, ks, true);
            }
            _ => {}
        }
    }
}

impl Driver for Mux5 {
    fn on_event(&mut self, p: &mut Protocol, now: Instant, ev: &Event) {
        match ev {
            Event::ChannelOpened { discovery_key } if *discovery_key == self.root.discovery_key() => {
                let hs = json!({"live": self.live, "client": "MULTIFEED", "version": "4.0.0"});
                self.send(p, now, HANDSHAKE, &hs);
            }
            Event::Extension { name, payload } => {
                if let Ok(v) = serde_json::from_slice::<Value>(payload) {
                    self.on_extension(p, now, name, v);
                }
            }
            Event::ChannelClosed { discovery_key, .. } => {
                self.active.remove(discovery_key);
                if !self.live && !self.prefinalized {
                    // The first Close from the peer: prefinalize closes the root.
                    self.prefinalized = true;
                    self.close_root(p, now);
                }
            }
            _ => {}
        }
    }

    fn next_timer(&self) -> Option<Instant> {
        self.tasks.iter().map(|(t, _, _)| *t).min()
    }

    fn on_timer(&mut self, p: &mut Protocol, now: Instant) {
        loop {
            let due = self
                .tasks
                .iter()
                .enumerate()
                .filter(|(_, (t, _, _))| *t <= now)
                .min_by_key(|(_, (t, s, _))| (*t, *s))
                .map(|(i, _)| i);
            let Some(i) = due else { return };
            let (_, _, task) = self.tasks.remove(i);
            self.run(p, now, task);
        }
    }
}

/// A writable in-memory feed with `n` entries `{"n": i}` (appended in one
/// batch), from `seed`.
///
/// # Panics
/// If the in-memory feed fails.
pub fn feed_with(seed: u8, n: u64) -> SharedFeed {
    let mut f = Feed::builder(MemoryProvider::new())
        .key_pair(KeyPair::from_seed(&[seed; 32]))
        .open()
        .unwrap_or_else(|e| panic!("in-memory feed: {e}"));
    let entries: Vec<Vec<u8>> = (0..n).map(|i| format!("{{\"n\":{i}}}\n").into_bytes()).collect();
    if !entries.is_empty() {
        let refs: Vec<&[u8]> = entries.iter().map(|e| &e[..]).collect();
        f.append_batch(&refs).unwrap_or_else(|e| panic!("append: {e}"));
    }
    SharedFeed::new(f)
}
