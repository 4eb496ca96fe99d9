//! Replicating a whole feed set with a peer, as multifeed 5 does (spec §4).
//!
//! One protocol session carries everything. The **root channel** is opened by
//! the shared key (multifeed's `encryptionKey`): both peers open it first, and its
//! capability proves that both know the key, which is never sent. Four JSON stream
//! extensions then exchange feed lists:
//!
//! 1. `MULTIFEED_HANDSHAKE` `{"client":"MULTIFEED","version":"4.0.0", …}`: checked
//!    for the client name and the major version;
//! 2. `MULTIFEED_MANIFEST` `{"keys":[…]}`: the feeds we offer;
//! 3. `MULTIFEED_REQUEST_FEEDS` `[…]`: the offered feeds we want;
//! 4. `MULTIFEED_REPLICATE_FEEDS` `[…]`: the requested feeds we will replicate.
//!
//! Agreed feeds open at once (JS peers give us 4 s). Feeds added to the set later,
//! locally or from a third peer, are offered on every open connection with a
//! one-key manifest, so they travel along chains of peers. A non-live session
//! ends when every agreed feed is synced and both peers closed every channel,
//! never while a request of ours is unanswered. The exchange's rules (and why:
//! multifeed 5 may close its root channel early) are on [`Exchange`]; the
//! [`SyncReport`] says which offered feeds did not arrive.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::io::{AsyncRead, AsyncWrite};
use futures::StreamExt;
use kappa_log::{PublicKey, SharedFeed};
use kappa_protocol::{
    EndReason, Event, FeedOptions, FeedStats, Generation, Protocol, ProtocolOptions, Selection, Session,
    SessionHandle, SessionReport, Wire,
};
use serde_json::{json, Value};
use tracing::Instrument;

use crate::{FeedAdded, Multifeed, MultifeedError};

/// multifeed 5's default shared key. Anyone can use it: set your own with
/// [`ReplicateOptions::shared_key`] so only your peers can replicate with you.
pub const DEFAULT_SHARED_KEY: [u8; 32] = [
    0xbe, 0xe8, 0x0f, 0xf3, 0xa4, 0xee, 0x5e, 0x72, 0x7d, 0xc4, 0x41, 0x97, 0xcb, 0x9d, 0x25, 0xbf, 0x8f,
    0x19, 0xd5, 0x0b, 0x0f, 0x3a, 0xd2, 0x98, 0x4c, 0xfe, 0x5b, 0x7d, 0x14, 0xe7, 0x5d, 0xe7,
];

const HANDSHAKE: &str = "MULTIFEED_HANDSHAKE";
const MANIFEST: &str = "MULTIFEED_MANIFEST";
const REPLICATE_FEEDS: &str = "MULTIFEED_REPLICATE_FEEDS";
const REQUEST_FEEDS: &str = "MULTIFEED_REQUEST_FEEDS";
/// The multifeed protocol version we speak (multifeed 5's `PROTOCOL_VERSION`).
pub const PROTOCOL_VERSION: &str = "4.0.0";

/// Decides per feed key (offer: which of ours to offer; accept: which offers to
/// take).
pub type KeyFilter = Arc<dyn Fn(&PublicKey) -> bool + Send + Sync>;

/// How to replicate a feed set.
#[derive(Clone)]
#[non_exhaustive]
pub struct ReplicateOptions {
    /// Whether we dialled (the Noise initiator); the two peers must differ.
    pub initiator: bool,
    /// Keep replicating (and announcing new feeds) until closed.
    pub live: bool,
    /// The shared key; `None` uses [`DEFAULT_SHARED_KEY`] (see
    /// [`SyncReport::warnings`]).
    pub shared_key: Option<[u8; 32]>,
    /// Download feeds (default true).
    pub download: bool,
    /// Upload feeds (default true).
    pub upload: bool,
    /// Which local feeds to offer (default: all).
    pub offer: Option<KeyFilter>,
    /// Which offered feeds to accept (default: all).
    pub accept: Option<KeyFilter>,
    /// Which blocks to download of each accepted feed (default: all).
    pub selection: Selection,
    /// Fail if nothing is received for this long (default 20 s, as JS).
    pub timeout: Duration,
    /// Application data sent in the handshake (`userData`, visible to the peer).
    pub user_data: Option<Value>,
    /// Which wire generations the connection may speak (default
    /// [`Wire::Auto`]: as initiator, whichever the peer answers in).
    pub wire: Wire,
    /// The generation a responder with [`Wire::Auto`] answers in (default
    /// kappa-core 6; a server picks it per connection, see
    /// `kappa_core::GenerationMemory`).
    pub responder_generation: Generation,
    /// Who the peer is, for [`Multifeed::sessions`] (e.g. its address);
    /// never sent.
    pub peer: Option<String>,
}

impl std::fmt::Debug for ReplicateOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicateOptions")
            .field("initiator", &self.initiator)
            .field("live", &self.live)
            .field("custom_shared_key", &self.shared_key.is_some())
            .field("download", &self.download)
            .field("upload", &self.upload)
            .field("wire", &self.wire)
            .finish_non_exhaustive()
    }
}

impl ReplicateOptions {
    /// Non-live, everything, the default shared key.
    pub fn new(initiator: bool) -> Self {
        ReplicateOptions {
            initiator,
            live: false,
            shared_key: None,
            download: true,
            upload: true,
            offer: None,
            accept: None,
            selection: Selection::All,
            timeout: Duration::from_secs(20),
            user_data: None,
            wire: Wire::Auto,
            responder_generation: Generation::KappaCore6,
            peer: None,
        }
    }

    /// Sets [`wire`](Self::wire).
    pub fn wire(mut self, wire: Wire) -> Self {
        self.wire = wire;
        self
    }

    /// Sets [`responder_generation`](Self::responder_generation).
    pub fn responder_generation(mut self, generation: Generation) -> Self {
        self.responder_generation = generation;
        self
    }

    /// Sets `live`.
    pub fn live(mut self, live: bool) -> Self {
        self.live = live;
        self
    }

    /// Sets the shared key.
    pub fn shared_key(mut self, key: [u8; 32]) -> Self {
        self.shared_key = Some(key);
        self
    }

    /// Offers only the feeds `f` accepts.
    pub fn offer(mut self, f: impl Fn(&PublicKey) -> bool + Send + Sync + 'static) -> Self {
        self.offer = Some(Arc::new(f));
        self
    }

    /// Accepts only the offers `f` accepts.
    pub fn accept(mut self, f: impl Fn(&PublicKey) -> bool + Send + Sync + 'static) -> Self {
        self.accept = Some(Arc::new(f));
        self
    }

    /// Sets the silence timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets [`peer`](Self::peer).
    pub fn peer(mut self, peer: impl Into<String>) -> Self {
        self.peer = Some(peer.into());
        self
    }
}

/// A session of the set that is running now ([`Multifeed::sessions`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SessionInfo {
    /// Who the peer is, as [`ReplicateOptions::peer`] said.
    pub peer: Option<String>,
    /// Whether we dialled.
    pub initiator: bool,
    /// Whether the session is live.
    pub live: bool,
    /// How far it got (`None` if it has not started running yet).
    pub progress: Option<kappa_protocol::SessionProgress>,
}

/// What a feed-set replication did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SyncReport {
    /// Per replicated feed: what moved.
    pub feeds: Vec<(PublicKey, FeedStats)>,
    /// Feeds this set learned from the peer in this session.
    pub new_feeds: Vec<PublicKey>,
    /// The feeds the peer offered (its manifests), in the order they came.
    pub offered: Vec<PublicKey>,
    /// The offered feeds we asked for (all, unless
    /// [`ReplicateOptions::accept`] says otherwise).
    pub requested: Vec<PublicKey>,
    /// Requested feeds that did not arrive: the peer never agreed to send
    /// them, or (non-live, downloading) their download did not complete. A
    /// sync that leaves this non-empty did not do its job. Feeds this
    /// database blocks are never missing: they are [`refused`](Self::refused).
    pub missing: Vec<PublicKey>,
    /// Offered feeds we did not ask for (or took back) because this
    /// database blocks them (see [`Multifeed::block`]), in the order they
    /// came.
    pub refused: Vec<PublicKey>,
    /// Bytes sent and received on the stream.
    pub bytes_sent: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// How long it took.
    pub duration: Duration,
    /// Things the caller should know (e.g. the default shared key was used).
    pub warnings: Vec<String>,
    /// The peer's handshake object (its `userData` and options).
    pub remote_handshake: Option<Value>,
    /// The wire generation the peer spoke (`None` if the handshake never
    /// finished).
    pub generation: Option<Generation>,
    /// We answered the peer's handshake in this generation and it hung up
    /// before finishing it (a live session ends without an error then): most
    /// likely a peer of the other generation.
    pub handshake_abandoned: Option<Generation>,
    /// Our feeds not offered to this peer, or offered and not served whole,
    /// and why: a kappa-core 6 peer (hypercore 8) cannot verify a signature
    /// in the 40-byte hypercore 9 form, so a feed whose head is in that form
    /// is not offered to it, and an offered feed is served to it only up to
    /// its newest state signed in the 32-byte form (the reason then names
    /// the first block kept back; see [`FeedStats::withheld_from`]).
    pub withheld: Vec<(PublicKey, String)>,
}

impl SyncReport {
    /// Blocks received over all feeds.
    pub fn blocks_received(&self) -> u64 {
        self.feeds.iter().map(|(_, s)| s.blocks_down).sum()
    }

    /// Blocks sent over all feeds.
    pub fn blocks_sent(&self) -> u64 {
        self.feeds.iter().map(|(_, s)| s.blocks_up).sum()
    }

    /// Whether everything we asked the peer for arrived ([`missing`](Self::missing) is empty).
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
    }
}

/// Removes a session from its feed set's registry when dropped.
struct Registration {
    mf: Multifeed,
    id: u64,
}

/// What the registry keeps of a session besides its handle.
#[derive(Debug, Clone)]
pub(crate) struct SessionMeta {
    pub(crate) peer: Option<String>,
    pub(crate) initiator: bool,
    pub(crate) live: bool,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.mf.unregister_session(self.id);
    }
}

fn lock(c: &Mutex<Exchange>) -> MutexGuard<'_, Exchange> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

/// The multifeed-5 feed exchange of one session, as a sans-IO state machine:
/// feed it the session's [`Event`]s with the [`Protocol`] at hand
/// ([`handle`](Self::handle)); it sends the exchange's extension messages and
/// opens, holds and closes channels on that protocol.
/// [`Multifeed::session`] runs one inside a [`Session`]; tests drive one on an
/// in-memory pair of protocols.
///
/// Rules it keeps (see `docs/architecture.md`, "kappa-multifeed", for why):
///
/// - The peer's feed requests are answered in the order they came, and none
///   before the peer's manifest has arrived (so our own request goes out
///   first).
/// - An answer that names no feed waits, besides, until the peer has answered
///   our first request when that request named feeds: multifeed 5 closes its
///   root channel when an empty answer arrives while none of its feeds
///   replicates yet, live or not.
/// - The session is held open (see [`Protocol::hold`]) while a request of ours
///   is unanswered or an answer of ours is pending, whatever the peer closed.
/// - A non-live exchange closes the root channel once both sides' requests are
///   answered and every agreed feed's channel is closed.
pub struct Exchange {
    mf: Multifeed,
    opts: ReplicateOptions,
    root: PublicKey,
    root_dkey: [u8; 32],
    first_open_seen: bool,
    remote_handshake: Option<Value>,
    /// Our feeds offered to the peer (our manifests).
    offered: HashSet<PublicKey>,
    /// Keys the peer knows of (in a manifest of either side).
    known: HashSet<PublicKey>,
    /// The peer's offers, in the order they came (its manifests).
    remote_offer: Vec<PublicKey>,
    /// The offers we asked for.
    requested: Vec<PublicKey>,
    /// Offers refused because the feed is blocked here.
    refused: Vec<PublicKey>,
    /// Requested feeds the peer agreed to replicate (its answers).
    agreed: HashSet<PublicKey>,
    replicating: Vec<PublicKey>,
    closed_feeds: HashSet<[u8; 32]>,
    /// Feeds whose non-live download completed (`FeedSynced`).
    synced: HashSet<[u8; 32]>,
    /// Our `REQUEST_FEEDS` messages sent, and the peer's answers received
    /// (both peers answer in order, one answer per request).
    requests_sent: usize,
    answers_received: usize,
    /// When each of our unanswered requests went out, oldest first.
    request_times: VecDeque<Instant>,
    /// When the root channel opened on both sides (the peer's manifest is
    /// due from then on).
    root_opened_at: Option<Instant>,
    /// Whether our first request named feeds.
    first_request_named_feeds: bool,
    /// The peer's requests not answered yet, in order.
    queue: VecDeque<Value>,
    answers_sent: usize,
    /// The peer's manifest arrived (and our request for its feeds went out).
    got_manifest: bool,
    /// Whether we hold the protocol open ([`Protocol::hold`]).
    holding: bool,
    new_feeds: Vec<PublicKey>,
    handshake_done: bool,
    /// The generation the session speaks, once the handshake is done.
    generation: Option<Generation>,
    /// Feeds kept from the peer (see [`SyncReport::withheld`]).
    withheld: Vec<(PublicKey, String)>,
    /// Feeds not offered until their signature form is known.
    deferred: Vec<PublicKey>,
    /// Notified when a feed joins `deferred`, so whoever waits for deferred
    /// feeds to change ([`deferrals`](Exchange::deferrals)) watches it too.
    deferrals: Arc<event_listener::Event>,
    /// Set while [`announce_deferred`](Exchange::announce_deferred) looks at
    /// the deferred feeds again (one still deferred is no news).
    redeferring: bool,
}

fn keys_json(keys: &[PublicKey]) -> Vec<Value> {
    keys.iter().map(|k| Value::String(k.to_hex())).collect()
}

/// multifeed keeps keys of length 64 that start with a hex digit; we also
/// require valid hex.
fn parse_keys(v: Option<&Value>) -> Vec<PublicKey> {
    let Some(list) = v.and_then(Value::as_array) else { return Vec::new() };
    list.iter()
        .filter_map(Value::as_str)
        .filter(|s| s.len() == 64)
        .filter_map(|s| PublicKey::from_hex(s).ok())
        .collect()
}

/// The root channel's key for a shared key (`None`: [`DEFAULT_SHARED_KEY`]).
fn root_key(shared_key: Option<[u8; 32]>) -> PublicKey {
    PublicKey::from_bytes(shared_key.unwrap_or(DEFAULT_SHARED_KEY))
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange")
            .field("requests_sent", &self.requests_sent)
            .field("answers_received", &self.answers_received)
            .field("queued", &self.queue.len())
            .field("answers_sent", &self.answers_sent)
            .field("got_manifest", &self.got_manifest)
            .finish_non_exhaustive()
    }
}

impl Exchange {
    /// The exchange of `mf` with one peer. Open its [`root`](Self::root)
    /// channel on the protocol, then pass every event to
    /// [`handle`](Self::handle).
    pub fn new(mf: Multifeed, opts: ReplicateOptions) -> Exchange {
        let root = root_key(opts.shared_key);
        Exchange {
            mf,
            opts,
            root,
            root_dkey: root.discovery_key(),
            first_open_seen: false,
            remote_handshake: None,
            offered: HashSet::new(),
            known: HashSet::new(),
            remote_offer: Vec::new(),
            requested: Vec::new(),
            refused: Vec::new(),
            agreed: HashSet::new(),
            replicating: Vec::new(),
            closed_feeds: HashSet::new(),
            synced: HashSet::new(),
            requests_sent: 0,
            answers_received: 0,
            request_times: VecDeque::new(),
            root_opened_at: None,
            first_request_named_feeds: false,
            queue: VecDeque::new(),
            answers_sent: 0,
            got_manifest: false,
            holding: false,
            new_feeds: Vec::new(),
            handshake_done: false,
            generation: None,
            withheld: Vec::new(),
            deferred: Vec::new(),
            deferrals: Arc::new(event_listener::Event::new()),
            redeferring: false,
        }
    }

    /// Whether our feed `key` may be offered to this peer now. A kappa-core 6
    /// peer cannot verify a head signed in the 40-byte form: such a feed is
    /// withheld (recorded in [`SyncReport::withheld`]). A feed whose form is not
    /// known yet (an empty replica: its first blocks may come from a kappa-core
    /// 7 peer) is deferred until it has a verified head
    /// ([`announce_deferred`](Self::announce_deferred)); our own writers sign in
    /// a known form.
    fn offerable(&mut self, key: &PublicKey) -> bool {
        if self.generation.is_none_or(Generation::verifies_long_signatures) {
            return true;
        }
        let Some(feed) = self.mf.feed(key) else { return true };
        let (form, writable_short) = {
            let mut f = feed.lock();
            (f.signature_form(), f.is_writable() && f.signing_form().hypercore8_verifies())
        };
        match form {
            Ok(Some(form)) if !form.hypercore8_verifies() => {
                self.deferred.retain(|k| k != key);
                if !self.withheld.iter().any(|(k, _)| k == key) {
                    self.withheld.push((
                        *key,
                        format!(
                            "its newest signature is in the {form}, which a {} peer cannot verify",
                            Generation::KappaCore6
                        ),
                    ));
                }
                false
            }
            Ok(Some(_)) => true,
            _ if writable_short => true,
            _ => {
                if !self.deferred.contains(key) {
                    self.deferred.push(*key);
                    if !self.redeferring {
                        self.deferrals.notify(usize::MAX);
                    }
                }
                false
            }
        }
    }

    /// Notified whenever a feed is deferred (also while handling the peer's
    /// messages): listen to it before [`deferred_feeds`](Self::deferred_feeds)
    /// so that no deferral is missed.
    pub fn deferrals(&self) -> Arc<event_listener::Event> {
        self.deferrals.clone()
    }

    /// The feeds deferred from this peer until their signature form is known
    /// (see [`announce_deferred`](Self::announce_deferred)).
    pub fn deferred_feeds(&self) -> Vec<SharedFeed> {
        self.deferred.iter().filter_map(|k| self.mf.feed(k)).collect()
    }

    /// One-key manifests for deferred feeds that may now be offered (send each
    /// as a `MANIFEST` extension message); call it when a deferred feed
    /// changed. Feeds whose head turned out to be in the 40-byte form move to
    /// [`SyncReport::withheld`].
    pub fn announce_deferred(&mut self) -> Vec<Vec<u8>> {
        let keys = std::mem::take(&mut self.deferred);
        self.redeferring = true;
        let out = keys.into_iter().filter_map(|k| self.announce(k)).collect();
        self.redeferring = false;
        out
    }

    /// The key of the root channel (the shared key).
    pub fn root(&self) -> PublicKey {
        self.root
    }

    /// The feeds the peer offered (its manifests), in the order they came.
    pub fn offered_by_peer(&self) -> &[PublicKey] {
        &self.remote_offer
    }

    /// The offered feeds we asked for.
    pub fn requested(&self) -> &[PublicKey] {
        &self.requested
    }

    /// Whether every request of ours is answered and every request of the
    /// peer's answered, after the peer's manifest arrived.
    pub fn is_settled(&self) -> bool {
        self.got_manifest && self.requests_sent == self.answers_received && self.queue.is_empty()
    }

    /// Our requests the peer has not answered yet.
    pub fn unanswered_requests(&self) -> usize {
        self.requests_sent.saturating_sub(self.answers_received)
    }

    /// Requested feeds that did not arrive: the peer never agreed to send them,
    /// or (non-live, downloading) their download did not complete. A feed
    /// blocked here meanwhile is not missing but [`refused`](Self::refused).
    pub fn missing(&self) -> Vec<PublicKey> {
        if !self.opts.download {
            return Vec::new();
        }
        self.requested
            .iter()
            .filter(|k| {
                !self.agreed.contains(k) || (!self.opts.live && !self.synced.contains(&k.discovery_key()))
            })
            .filter(|k| !self.refused.contains(k) && !self.mf.is_blocked(k))
            .copied()
            .collect()
    }

    /// The peer's offers refused because this database blocks them.
    pub fn refused(&self) -> Vec<PublicKey> {
        let mut out = self.refused.clone();
        for k in &self.requested {
            if !out.contains(k) && self.mf.is_blocked(k) {
                out.push(*k);
            }
        }
        out
    }

    fn refuse(&mut self, key: PublicKey) {
        if !self.refused.contains(&key) {
            self.refused.push(key);
        }
    }

    fn send(&self, p: &mut Protocol, now: Instant, name: &str, payload: &Value) {
        let bytes = match kappa_log::encoding::to_js_json(payload) {
            Ok(b) => b,
            Err(_) => return,
        };
        let _ = p.send_extension(now, name, &bytes);
    }

    fn feed_options(&self) -> FeedOptions {
        let mut o = FeedOptions::default();
        o.upload = self.opts.upload;
        o.download = self.opts.download;
        o.selection = self.opts.selection.clone();
        o
    }

    fn open(&mut self, p: &mut Protocol, now: Instant, key: PublicKey, remote: bool) -> Result<(), String> {
        let feed = if remote {
            self.mf.add_remote(key).map_err(|e| e.to_string())?
        } else {
            match self.mf.feed(&key) {
                Some(f) => f,
                None => return Ok(()),
            }
        };
        if !self.replicating.contains(&key) {
            self.replicating.push(key);
        }
        p.open_feed(now, feed, self.feed_options()).map_err(|e| e.to_string())
    }

    /// Handles one session event (call it for every event, in order).
    pub fn handle(&mut self, p: &mut Protocol, now: Instant, ev: &Event) {
        match ev {
            Event::ChannelOpened { discovery_key } if *discovery_key == self.root_dkey => {
                self.first_open_seen = true;
                self.root_opened_at.get_or_insert(now);
                let mut hs = match &self.opts.user_data {
                    Some(u) => json!({"live": self.opts.live, "userData": u}),
                    None => json!({"live": self.opts.live}),
                };
                hs["client"] = json!("MULTIFEED");
                hs["version"] = json!(PROTOCOL_VERSION);
                self.send(p, now, HANDSHAKE, &hs);
            }
            // The first channel the peer opens must be the root channel: another
            // discovery key means another shared key. Feed channels we agreed on
            // are opened when the agreement arrives; anything else the peer opens
            // is left unanswered, as JS does.
            Event::RemoteOpen { discovery_key } if !self.first_open_seen => {
                self.first_open_seen = true;
                if *discovery_key != self.root_dkey {
                    p.reject("Exchange key did not match remote (the peer uses another shared key)");
                }
            }
            Event::Extension { name, payload } => {
                let v: Value = match serde_json::from_slice(payload) {
                    Ok(v) => v,
                    Err(_) => {
                        p.reject(format!("malformed {name} message from peer"));
                        return;
                    }
                };
                if let Err(e) = self.on_extension(p, now, name, v) {
                    p.reject(e);
                }
            }
            Event::FeedSynced { discovery_key } => {
                self.synced.insert(*discovery_key);
            }
            // multifeed 5 closes its root channel early (an empty answer while
            // none of its feeds replicates); its answers to our requests still
            // come. Before its manifest, though, it has given up.
            Event::ChannelClosed { discovery_key, .. }
                if *discovery_key == self.root_dkey && self.handshake_done && !self.got_manifest =>
            {
                p.reject("the peer closed the feed exchange before offering its feeds");
            }
            Event::ChannelClosed { discovery_key, .. } => {
                self.closed_feeds.insert(*discovery_key);
                self.maybe_close_root(p, now);
            }
            _ => {}
        }
        self.update_hold(p);
        self.update_deadline(p, now);
    }

    /// Bounds how long the peer may keep us waiting, whatever else it sends
    /// (keep-alives keep a connection from timing out, not the exchange): its
    /// manifest is due within [`ReplicateOptions::timeout`] of the root
    /// channel opening, and each answer to a request of ours within that
    /// timeout of the request.
    fn update_deadline(&mut self, p: &mut Protocol, now: Instant) {
        let t = self.opts.timeout;
        let want = if !self.got_manifest {
            self.root_opened_at.map(|at| (at, "feed manifest"))
        } else {
            self.request_times.front().map(|&at| (at, "answer to our feed request"))
        };
        let deadline = want.map(|(at, what)| (at + t, what));
        if p.deadline() != deadline {
            p.set_deadline(deadline, want.map_or(now, |(at, _)| at));
        }
    }

    /// Holds the protocol open while the exchange is not settled.
    fn update_hold(&mut self, p: &mut Protocol) {
        let hold = !self.is_settled() && !p.is_ended();
        if hold && !self.holding {
            p.hold();
        } else if !hold && self.holding {
            p.release();
        }
        self.holding = hold;
    }

    fn on_extension(&mut self, p: &mut Protocol, now: Instant, name: &str, v: Value) -> Result<(), String> {
        match name {
            HANDSHAKE => {
                if v.get("client").and_then(Value::as_str) != Some("MULTIFEED") {
                    return Err(format!(
                        "peer is not a multifeed client: {}",
                        v.get("client").unwrap_or(&Value::Null)
                    ));
                }
                let version = v.get("version").and_then(Value::as_str).unwrap_or("");
                let major = |s: &str| s.split('.').next().unwrap_or("").to_owned();
                if major(version) != major(PROTOCOL_VERSION) {
                    return Err(format!(
                        "incompatible multifeed protocol version {version:?} (we speak {PROTOCOL_VERSION})"
                    ));
                }
                if self.handshake_done {
                    return Ok(());
                }
                p.set_peer_live(v.get("live").and_then(Value::as_bool) == Some(true));
                tracing::debug!(version, peer_live = p.peer_live(), "feed exchange: the peer's handshake");
                self.remote_handshake = Some(v);
                self.handshake_done = true;
                self.generation = p.generation();
                let keys: Vec<PublicKey> = self
                    .mf
                    .feeds()
                    .iter()
                    .map(|f| *f.public_key())
                    .filter(|k| self.opts.offer.as_ref().is_none_or(|f| f(k)))
                    .collect();
                let keys: Vec<PublicKey> = keys.into_iter().filter(|k| self.offerable(k)).collect();
                self.offered.extend(keys.iter().copied());
                self.known.extend(keys.iter().copied());
                tracing::debug!(feeds = keys.len(), "feed exchange: feeds offered");
                self.send(p, now, MANIFEST, &json!({"keys": keys_json(&keys)}));
            }
            MANIFEST => {
                let keys = parse_keys(v.get("keys"));
                self.known.extend(keys.iter().copied());
                for k in &keys {
                    if !self.remote_offer.contains(k) {
                        self.remote_offer.push(*k);
                    }
                }
                // Blocked feeds are left out of our request (multifeed 5
                // replicates only the keys a request names).
                let (blocked, keys): (Vec<PublicKey>, Vec<PublicKey>) =
                    keys.into_iter().partition(|k| self.mf.is_blocked(k));
                let offered = keys.len() + blocked.len();
                for k in blocked {
                    tracing::debug!(feed = %k, "feed exchange: refused an offered feed (blocked here)");
                    self.refuse(k);
                }
                let want: Vec<PublicKey> =
                    keys.into_iter().filter(|k| self.opts.accept.as_ref().is_none_or(|f| f(k))).collect();
                tracing::debug!(offered, requested = want.len(), "feed exchange: the peer offered feeds");
                for k in &want {
                    if !self.requested.contains(k) {
                        self.requested.push(*k);
                    }
                }
                if self.requests_sent == 0 {
                    self.first_request_named_feeds = !want.is_empty();
                }
                self.send(p, now, REQUEST_FEEDS, &Value::Array(keys_json(&want)));
                self.requests_sent += 1;
                self.request_times.push_back(now);
                self.got_manifest = true;
                self.answer_queued(p, now)?;
            }
            REQUEST_FEEDS => {
                self.queue.push_back(v);
                self.answer_queued(p, now)?;
            }
            REPLICATE_FEEDS => {
                let keys: Vec<PublicKey> =
                    parse_keys(Some(&v)).into_iter().filter(|k| self.requested.contains(k)).collect();
                self.answers_received += 1;
                self.request_times.pop_front();
                tracing::debug!(feeds = keys.len(), "feed exchange: the peer agreed to replicate");
                for k in keys {
                    if self.mf.is_blocked(&k) {
                        // Blocked since we asked for it.
                        tracing::debug!(feed = %k, "feed exchange: refused an agreed feed (blocked since we asked)");
                        self.refuse(k);
                        continue;
                    }
                    self.agreed.insert(k);
                    if self.mf.feed(&k).is_none() {
                        self.new_feeds.push(k);
                    }
                    self.open(p, now, k, true)?;
                }
                self.answer_queued(p, now)?;
                self.maybe_close_root(p, now);
            }
            _ => {}
        }
        Ok(())
    }

    /// The feeds our answer to `request` names: the requested ones we offered.
    fn answer_keys(&self, request: &Value) -> Vec<PublicKey> {
        let keys: BTreeSet<String> = parse_keys(Some(request))
            .into_iter()
            .filter(|k| self.offered.contains(k) && !self.mf.is_blocked(k))
            .map(|k| k.to_hex())
            .collect();
        keys.iter().filter_map(|k| PublicKey::from_hex(k).ok()).collect()
    }

    /// Answers the peer's queued requests, in order, as far as the rules allow
    /// (see the type's docs).
    fn answer_queued(&mut self, p: &mut Protocol, now: Instant) -> Result<(), String> {
        while let Some(request) = self.queue.front() {
            if !self.got_manifest {
                break;
            }
            let keys = self.answer_keys(request);
            if keys.is_empty() && self.first_request_named_feeds && self.answers_received == 0 {
                break;
            }
            // What it asked for and we do not serve (not offered to it, or
            // blocked here) is left out of the answer.
            tracing::debug!(
                asked = parse_keys(Some(request)).len(),
                served = keys.len(),
                "feed exchange: answered the peer's request"
            );
            self.queue.pop_front();
            self.send(p, now, REPLICATE_FEEDS, &Value::Array(keys_json(&keys)));
            self.answers_sent += 1;
            for k in keys {
                self.open(p, now, k, false)?;
            }
        }
        self.maybe_close_root(p, now);
        Ok(())
    }

    /// Non-live: once both sides' requests were answered and every feed
    /// channel closed, close the root channel (JS closes its root on the first
    /// Close it sees; we answer that automatically).
    fn maybe_close_root(&mut self, p: &mut Protocol, now: Instant) {
        if self.opts.live || !self.is_settled() || self.answers_sent == 0 {
            return;
        }
        let all_closed = self.replicating.iter().all(|k| self.closed_feeds.contains(&k.discovery_key()));
        if all_closed && p.is_open_locally(&self.root_dkey) {
            self.update_hold(p);
            p.close_channel(now, &self.root);
            // A live peer never answers a Close on the root channel: we are done.
            if p.peer_live() {
                p.close(now);
            }
        }
    }

    /// A feed joined the set during the session: the one-key manifest that
    /// offers it, if this peer has not heard of it (send it as a `MANIFEST`
    /// extension message).
    pub fn announce(&mut self, key: PublicKey) -> Option<Vec<u8>> {
        if !self.handshake_done || self.known.contains(&key) || self.mf.is_blocked(&key) {
            return None;
        }
        if !self.opts.offer.as_ref().is_none_or(|f| f(&key)) || !self.offerable(&key) {
            return None;
        }
        self.known.insert(key);
        self.offered.insert(key);
        tracing::debug!(feed = %key, "feed exchange: offered a feed that joined the set");
        kappa_log::encoding::to_js_json(&json!({"keys": [key.to_hex()]})).ok()
    }

    /// The report of a session that ran this exchange.
    fn report(&self, session: &SessionReport, warnings: Vec<String>) -> SyncReport {
        let feeds: Vec<(PublicKey, FeedStats)> = self
            .replicating
            .iter()
            .map(|k| {
                let d = k.discovery_key();
                let stats =
                    session.feeds.iter().find(|(dk, _)| *dk == d).map(|(_, s)| *s).unwrap_or_default();
                (*k, stats)
            })
            .collect();
        let mut withheld = self.withheld.clone();
        for (k, stats) in &feeds {
            if let Some(from) = stats.withheld_from {
                if !withheld.iter().any(|(w, _)| w == k) {
                    withheld.push((
                        *k,
                        format!(
                            "its blocks from {from} on are signed only in the {}, which a {} peer cannot verify",
                            kappa_log::SignatureForm::TreeHashAndLength,
                            Generation::KappaCore6
                        ),
                    ));
                }
            }
        }
        SyncReport {
            feeds,
            new_feeds: self.new_feeds.clone(),
            offered: self.remote_offer.clone(),
            requested: self.requested.clone(),
            missing: self.missing(),
            refused: self.refused(),
            bytes_sent: session.bytes_sent,
            bytes_received: session.bytes_received,
            duration: session.duration,
            warnings,
            remote_handshake: self.remote_handshake.clone(),
            generation: session.generation,
            handshake_abandoned: session.handshake_abandoned,
            withheld,
        }
    }
}

impl Multifeed {
    /// Replicates the whole set with a peer over `stream` (see the module docs).
    ///
    /// Returns when a non-live session has synced everything both sides agreed
    /// on, when a live session is closed (by the peer, or by dropping the
    /// returned future), or with an error that says what went wrong: a peer with
    /// another shared key, an incompatible client, a timeout, or a misbehaving
    /// peer.
    pub async fn replicate<S>(&self, stream: S, opts: ReplicateOptions) -> Result<SyncReport, MultifeedError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (session, _handle) = self.session(stream, opts)?;
        session.await
    }

    /// Like [`replicate`](Self::replicate), also returning a handle to close a
    /// live session.
    #[allow(clippy::type_complexity)]
    pub fn session<S>(
        &self,
        stream: S,
        opts: ReplicateOptions,
    ) -> Result<
        (
            impl std::future::Future<Output = Result<SyncReport, MultifeedError>> + Send + 'static,
            SessionHandle,
        ),
        MultifeedError,
    >
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        if self.is_closed() {
            return Err(MultifeedError::Closed);
        }
        let mut warnings = Vec::new();
        let shared = opts.shared_key.unwrap_or_else(|| {
            warnings.push(
                "using multifeed's public default shared key: anyone can replicate with this database; \
                 set a shared key"
                    .to_owned(),
            );
            DEFAULT_SHARED_KEY
        });
        let root = root_key(Some(shared));
        let popts = ProtocolOptions::new(opts.initiator)
            .wire(opts.wire)
            .responder_generation(opts.responder_generation)
            .live(opts.live)
            .timeouts(opts.timeout, opts.timeout / 2)
            .extensions(vec![
                HANDSHAKE.into(),
                MANIFEST.into(),
                REPLICATE_FEEDS.into(),
                REQUEST_FEEDS.into(),
            ]);
        let (opts_peer, opts_initiator, opts_live) = (opts.peer.clone(), opts.initiator, opts.live);
        let conn = Arc::new(Mutex::new(Exchange::new(self.clone(), opts)));
        let c2 = conn.clone();
        let (session, handle) = Session::new(stream, popts);
        let session = session.on_event(move |p, now, ev| lock(&c2).handle(p, now, ev));
        handle.open_channel(root);
        let announcer = handle.clone();
        let c3 = conn.clone();
        let mut added = self.subscribe();
        let registry = self.clone();
        let registered = handle.clone();
        let span = tracing::info_span!(
            "replicate",
            peer = opts_peer.as_deref(),
            initiator = opts_initiator,
            live = opts_live
        );
        let meta = SessionMeta { peer: opts_peer, initiator: opts_initiator, live: opts_live };
        let fut = async move {
            // Registered while running (for on-demand gets), also if dropped early.
            let _registration =
                Registration { mf: registry.clone(), id: registry.register_session(registered, meta) };
            // Feeds added during the session are offered to the peer, and
            // feeds deferred until their signature form is known (a
            // kappa-core 6 peer) once they change.
            let announce = async {
                let mut ended = false;
                loop {
                    // Listen first, then look: no change is missed, and no
                    // deferral made while the exchange handled a message (its
                    // manifest at the handshake) either.
                    let deferrals = lock(&c3).deferrals();
                    let deferred_more = deferrals.listen();
                    let mut changed: Vec<_> =
                        lock(&c3).deferred_feeds().iter().map(|f| f.changed()).collect();
                    changed.push(deferred_more);
                    for bytes in lock(&c3).announce_deferred() {
                        announcer.send_extension(MANIFEST, bytes);
                    }
                    let some_changed = async {
                        if changed.is_empty() {
                            futures::future::pending::<()>().await;
                        }
                        futures::future::select_all(changed).await;
                    };
                    let next_added = async {
                        if ended {
                            futures::future::pending::<()>().await;
                        }
                        added.next().await
                    };
                    futures::pin_mut!(some_changed, next_added);
                    match futures::future::select(next_added, some_changed).await {
                        futures::future::Either::Left((Some(FeedAdded { feed, .. }), _)) => {
                            let msg = lock(&c3).announce(*feed.public_key());
                            if let Some(bytes) = msg {
                                announcer.send_extension(MANIFEST, bytes);
                            }
                        }
                        futures::future::Either::Left((None, _)) => ended = true,
                        futures::future::Either::Right(_) => {}
                    }
                }
            };
            futures::pin_mut!(announce);
            let run = session.run();
            futures::pin_mut!(run);
            let report = match futures::future::select(run, announce).await {
                futures::future::Either::Left((r, _)) => r,
                futures::future::Either::Right(_) => unreachable!("the announcer never ends"),
            };
            match &report.end {
                EndReason::Failed(e) => Err(MultifeedError::Replication(e.clone())),
                _ => {
                    let r = lock(&conn).report(&report, warnings);
                    tracing::info!(
                        feeds = r.feeds.len(),
                        new_feeds = r.new_feeds.len(),
                        offered = r.offered.len(),
                        requested = r.requested.len(),
                        missing = r.missing.len(),
                        refused = r.refused.len(),
                        blocks_received = r.blocks_received(),
                        blocks_sent = r.blocks_sent(),
                        "feed exchange done"
                    );
                    Ok(r)
                }
            }
        }
        .instrument(span);
        Ok((fut, handle))
    }
}

/// Fuzzing entry point (see `crate::fuzzing::extensions`).
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_extensions(data: &[u8]) {
    use kappa_protocol::noise::{Handshake, KeyPair as NoiseKeyPair};

    let now = Instant::now();
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
    let Ok(mf) = Multifeed::in_memory() else { return };
    if let Ok(w) = mf.writer("local") {
        let _ = w.append(b"x");
    }
    let root = PublicKey::from_bytes(DEFAULT_SHARED_KEY);
    let _ = a.open_channel(now, root);
    let _ = b.open_channel(now, root);
    let mut conn = Exchange::new(mf.clone(), ReplicateOptions::new(false));
    for _ in 0..6 {
        if let Some(bytes) = a.poll_transmit() {
            let _ = b.handle_input(now, &bytes);
        }
        if let Some(bytes) = b.poll_transmit() {
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
        let _ = b.poll_transmit();
    }
    // Feeds only ever come from agreed keys: the writer plus requested ones.
    for f in mf.feeds() {
        assert!(
            f.is_writable() || conn.requested.contains(f.public_key()),
            "a feed was added that was never requested"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kappa_protocol::noise::{Handshake, KeyPair as NoiseKeyPair};

    /// A JS peer may ask for our feeds before sending its manifest. We must
    /// request its feeds before answering (multifeed 5 ends the exchange once
    /// it has our answer, counting only the feeds it names), and, when our
    /// answer names no feed, answer only after the peer answered us
    /// (multifeed 5 closes its root channel on an empty answer while none of
    /// its feeds replicates yet, live or not).
    #[test]
    fn a_request_before_the_manifest_is_answered_after_our_own_request() {
        for live in [false, true] {
            let (before_answer, after_answer) = exchange_order(live);
            assert_eq!(before_answer, vec![HANDSHAKE, MANIFEST, REQUEST_FEEDS], "live {live}");
            assert_eq!(after_answer, vec![REPLICATE_FEEDS], "live {live}");
        }
    }

    /// The extension messages we send when the peer's handshake (live or not),
    /// an early request and then its manifest arrive in that order, and those
    /// we send once it answered our request.
    fn exchange_order(live: bool) -> (Vec<String>, Vec<String>) {
        let now = Instant::now();
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
        let mut js = Protocol::with_handshake(now, ProtocolOptions::new(true).extensions(ext()), hs_a);
        let mut us = Protocol::with_handshake(now, ProtocolOptions::new(false).extensions(ext()), hs_b);
        let mf = Multifeed::in_memory().unwrap();
        let root = PublicKey::from_bytes(DEFAULT_SHARED_KEY);
        js.open_channel(now, root).unwrap();
        us.open_channel(now, root).unwrap();
        let mut conn = Exchange::new(mf, ReplicateOptions::new(false));
        let mut sent_by_us = Vec::new();
        let pump = |js: &mut Protocol, us: &mut Protocol, conn: &mut Exchange, sent: &mut Vec<String>| {
            for _ in 0..4 {
                if let Some(bytes) = js.poll_transmit() {
                    us.handle_input(now, &bytes).unwrap();
                }
                while let Some(ev) = us.poll_event() {
                    conn.handle(us, now, &ev);
                }
                if let Some(bytes) = us.poll_transmit() {
                    js.handle_input(now, &bytes).unwrap();
                }
                while let Some(ev) = js.poll_event() {
                    if let Event::Extension { name, .. } = ev {
                        sent.push(name);
                    }
                }
            }
        };
        pump(&mut js, &mut us, &mut conn, &mut sent_by_us);
        let hs = json!({"client": "MULTIFEED", "version": PROTOCOL_VERSION, "live": live});
        let js_key = "022fa880da6f9c99a672e867f9bccdf6ef54dccf72e0abc2363cb1cc6dc706b7";
        // The JS order that lost feeds: handshake, request, then manifest.
        for (name, v) in
            [(HANDSHAKE, hs), (REQUEST_FEEDS, json!([])), (MANIFEST, json!({ "keys": [js_key] }))]
        {
            conn.handle(
                &mut us,
                now,
                &Event::Extension { name: name.into(), payload: v.to_string().into_bytes() },
            );
            pump(&mut js, &mut us, &mut conn, &mut sent_by_us);
        }
        assert_eq!(conn.unanswered_requests(), 1);
        let before = std::mem::take(&mut sent_by_us);
        let answer = json!([js_key]).to_string().into_bytes();
        conn.handle(&mut us, now, &Event::Extension { name: REPLICATE_FEEDS.into(), payload: answer });
        pump(&mut js, &mut us, &mut conn, &mut sent_by_us);
        assert!(conn.is_settled());
        (before, sent_by_us)
    }
}
