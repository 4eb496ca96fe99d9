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
//! ends when every agreed feed is synced and both peers closed every channel.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::io::{AsyncRead, AsyncWrite};
use futures::StreamExt;
use kappa_log::PublicKey;
use kappa_protocol::{
    EndReason, Event, FeedOptions, FeedStats, Protocol, ProtocolOptions, Selection, Session, SessionHandle,
};
use serde_json::{json, Value};

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
}

impl std::fmt::Debug for ReplicateOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicateOptions")
            .field("initiator", &self.initiator)
            .field("live", &self.live)
            .field("custom_shared_key", &self.shared_key.is_some())
            .field("download", &self.download)
            .field("upload", &self.upload)
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
        }
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
}

/// What a feed-set replication did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SyncReport {
    /// Per replicated feed: what moved.
    pub feeds: Vec<(PublicKey, FeedStats)>,
    /// Feeds this set learned from the peer in this session.
    pub new_feeds: Vec<PublicKey>,
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
}

/// Removes a session from its feed set's registry when dropped.
struct Registration {
    mf: Multifeed,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.mf.unregister_session(self.id);
    }
}

fn lock(c: &Mutex<Conn>) -> MutexGuard<'_, Conn> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

struct Conn {
    mf: Multifeed,
    opts: ReplicateOptions,
    root: PublicKey,
    root_dkey: [u8; 32],
    first_open_seen: bool,
    remote_handshake: Option<Value>,
    offered: HashSet<PublicKey>,
    known: HashSet<PublicKey>,
    requested: HashSet<PublicKey>,
    replicating: Vec<PublicKey>,
    closed_feeds: HashSet<[u8; 32]>,
    sent_replicate: bool,
    got_replicate: bool,
    /// The peer's manifest arrived (and our request for its feeds went out).
    got_manifest: bool,
    /// The peer's requests for our feeds that came before its manifest: we
    /// answer them, in order, only after our own request went out (see
    /// `REQUEST_FEEDS`).
    deferred_requests: Vec<Value>,
    new_feeds: Vec<PublicKey>,
    handshake_done: bool,
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

impl Conn {
    fn new(mf: Multifeed, opts: ReplicateOptions, root: PublicKey) -> Conn {
        Conn {
            mf,
            opts,
            root,
            root_dkey: root.discovery_key(),
            first_open_seen: false,
            remote_handshake: None,
            offered: HashSet::new(),
            known: HashSet::new(),
            requested: HashSet::new(),
            replicating: Vec::new(),
            closed_feeds: HashSet::new(),
            sent_replicate: false,
            got_replicate: false,
            got_manifest: false,
            deferred_requests: Vec::new(),
            new_feeds: Vec::new(),
            handshake_done: false,
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

    fn handle(&mut self, p: &mut Protocol, now: Instant, ev: &Event) {
        match ev {
            Event::ChannelOpened { discovery_key } if *discovery_key == self.root_dkey => {
                self.first_open_seen = true;
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
            Event::ChannelClosed { discovery_key, .. } if *discovery_key != self.root_dkey => {
                self.closed_feeds.insert(*discovery_key);
                self.maybe_close_root(p, now);
            }
            _ => {}
        }
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
                p.set_peer_live(v.get("live").and_then(Value::as_bool) == Some(true));
                self.remote_handshake = Some(v);
                self.handshake_done = true;
                let keys: Vec<PublicKey> = self
                    .mf
                    .feeds()
                    .iter()
                    .map(|f| *f.public_key())
                    .filter(|k| self.opts.offer.as_ref().is_none_or(|f| f(k)))
                    .collect();
                self.offered.extend(keys.iter().copied());
                self.known.extend(keys.iter().copied());
                self.send(p, now, MANIFEST, &json!({"keys": keys_json(&keys)}));
            }
            MANIFEST => {
                let keys = parse_keys(v.get("keys"));
                self.known.extend(keys.iter().copied());
                let want: Vec<PublicKey> =
                    keys.into_iter().filter(|k| self.opts.accept.as_ref().is_none_or(|f| f(k))).collect();
                self.requested.extend(want.iter().copied());
                self.send(p, now, REQUEST_FEEDS, &Value::Array(keys_json(&want)));
                if !self.got_manifest {
                    self.got_manifest = true;
                    for request in std::mem::take(&mut self.deferred_requests) {
                        self.on_extension(p, now, REQUEST_FEEDS, request)?;
                    }
                }
            }
            REQUEST_FEEDS if !self.got_manifest && !p.peer_live() => {
                // A non-live JS peer may ask for our feeds before it sends its
                // manifest (multifeed 5 always sends one, possibly empty).
                // Answering at once would let it finish the exchange before our
                // request for its feeds arrives (it then counts only the feeds of
                // our answer and ends the stream, leaving its own feeds unsent):
                // we answer once our request has gone out. A live peer never ends
                // early, so its requests are answered at once.
                self.deferred_requests.push(v);
            }
            REQUEST_FEEDS => {
                let keys: BTreeSet<String> = parse_keys(Some(&v))
                    .into_iter()
                    .filter(|k| self.offered.contains(k))
                    .map(|k| k.to_hex())
                    .collect();
                let keys: Vec<PublicKey> = keys.iter().filter_map(|k| PublicKey::from_hex(k).ok()).collect();
                self.send(p, now, REPLICATE_FEEDS, &Value::Array(keys_json(&keys)));
                self.sent_replicate = true;
                for k in keys {
                    self.open(p, now, k, false)?;
                }
                self.maybe_close_root(p, now);
            }
            REPLICATE_FEEDS => {
                let keys: Vec<PublicKey> =
                    parse_keys(Some(&v)).into_iter().filter(|k| self.requested.contains(k)).collect();
                self.got_replicate = true;
                for k in keys {
                    if self.mf.feed(&k).is_none() {
                        self.new_feeds.push(k);
                    }
                    self.open(p, now, k, true)?;
                }
                self.maybe_close_root(p, now);
            }
            _ => {}
        }
        Ok(())
    }

    /// Non-live: once both feed lists were agreed and every feed channel closed,
    /// close the root channel (JS closes its root on the first Close it sees; we
    /// answer that automatically).
    fn maybe_close_root(&mut self, p: &mut Protocol, now: Instant) {
        if self.opts.live || !self.sent_replicate || !self.got_replicate {
            return;
        }
        let all_closed = self.replicating.iter().all(|k| self.closed_feeds.contains(&k.discovery_key()));
        if all_closed && p.is_open_locally(&self.root_dkey) {
            p.close_channel(now, &self.root);
            // A live peer never answers a Close on the root channel: we are done.
            if p.peer_live() {
                p.close(now);
            }
        }
    }

    /// A feed joined the set during the session: offer it if this peer has not
    /// heard of it.
    fn announce(&mut self, key: PublicKey) -> Option<Value> {
        if !self.handshake_done || self.known.contains(&key) {
            return None;
        }
        if !self.opts.offer.as_ref().is_none_or(|f| f(&key)) {
            return None;
        }
        self.known.insert(key);
        self.offered.insert(key);
        Some(json!({"keys": [key.to_hex()]}))
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
        let root = PublicKey::from_bytes(shared);
        let popts = ProtocolOptions::new(opts.initiator)
            .live(opts.live)
            .timeouts(opts.timeout, opts.timeout / 2)
            .extensions(vec![
                HANDSHAKE.into(),
                MANIFEST.into(),
                REPLICATE_FEEDS.into(),
                REQUEST_FEEDS.into(),
            ]);
        let conn = Arc::new(Mutex::new(Conn::new(self.clone(), opts, root)));
        let c2 = conn.clone();
        let (session, handle) = Session::new(stream, popts);
        let session = session.on_event(move |p, now, ev| lock(&c2).handle(p, now, ev));
        handle.open_channel(root);
        let announcer = handle.clone();
        let c3 = conn.clone();
        let mut added = self.subscribe();
        let registry = self.clone();
        let registered = handle.clone();
        let fut = async move {
            // Registered while running (for on-demand gets), also if dropped early.
            let _registration =
                Registration { mf: registry.clone(), id: registry.register_session(registered) };
            // Feeds added during the session are offered to the peer.
            let announce = async {
                while let Some(FeedAdded { feed, .. }) = added.next().await {
                    let msg = lock(&c3).announce(*feed.public_key());
                    if let Some(m) = msg {
                        if let Ok(bytes) = kappa_log::encoding::to_js_json(&m) {
                            announcer.send_extension(MANIFEST, bytes);
                        }
                    }
                }
                futures::future::pending::<()>().await;
            };
            futures::pin_mut!(announce);
            let run = session.run();
            futures::pin_mut!(run);
            let report = match futures::future::select(run, announce).await {
                futures::future::Either::Left((r, _)) => r,
                futures::future::Either::Right(_) => unreachable!("the announcer never ends"),
            };
            let c = lock(&conn);
            let feeds: Vec<(PublicKey, FeedStats)> = c
                .replicating
                .iter()
                .map(|k| {
                    let d = k.discovery_key();
                    let stats =
                        report.feeds.iter().find(|(dk, _)| *dk == d).map(|(_, s)| *s).unwrap_or_default();
                    (*k, stats)
                })
                .collect();
            match report.end {
                EndReason::Failed(e) => Err(MultifeedError::Replication(e)),
                _ => Ok(SyncReport {
                    feeds,
                    new_feeds: c.new_feeds.clone(),
                    bytes_sent: report.bytes_sent,
                    bytes_received: report.bytes_received,
                    duration: report.duration,
                    warnings,
                    remote_handshake: c.remote_handshake.clone(),
                }),
            }
        };
        Ok((fut, handle))
    }
}

/// Fuzzing entry point (see `crate::fuzzing::extensions`).
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
    let mut conn = Conn::new(mf.clone(), ReplicateOptions::new(false), root);
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
    /// it has our answer, counting only the feeds it names).
    #[test]
    fn a_request_before_the_manifest_is_answered_after_our_own_request() {
        // A non-live peer's early request waits for our own; a live peer's
        // (which never ends the exchange early) is answered at once.
        assert_eq!(exchange_order(false), vec![HANDSHAKE, MANIFEST, REQUEST_FEEDS, REPLICATE_FEEDS]);
        assert_eq!(exchange_order(true), vec![HANDSHAKE, MANIFEST, REPLICATE_FEEDS, REQUEST_FEEDS]);
    }

    /// The extension messages we send when the peer's handshake (live or not),
    /// an early request and then its manifest arrive in that order.
    fn exchange_order(live: bool) -> Vec<String> {
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
        let mut conn = Conn::new(mf, ReplicateOptions::new(false), root);
        let mut sent_by_us = Vec::new();
        let pump = |js: &mut Protocol, us: &mut Protocol, conn: &mut Conn, sent: &mut Vec<String>| {
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
        sent_by_us
    }
}
