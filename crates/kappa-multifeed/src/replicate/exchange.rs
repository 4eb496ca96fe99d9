//! The feed exchange's state machine ([`Exchange`]).

use super::*;

/// Feeds opened per [`Event::Wake`] once the exchange agreed on them: a
/// feed the peer has and we do not is made on disk (a directory and five
/// files), and ten thousand of them in one step kept a session silent for
/// longer than the peer's timeout.
pub(crate) const OPEN_SLICE: usize = 64;

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
    pub(super) remote_handshake: Option<Value>,
    /// Our feeds offered to the peer (our manifests).
    offered: HashSet<PublicKey>,
    /// Keys the peer knows of (in a manifest of either side).
    known: HashSet<PublicKey>,
    /// The peer's offers, in the order they came (its manifests).
    pub(super) remote_offer: Vec<PublicKey>,
    /// The offers we asked for.
    pub(super) requested: Vec<PublicKey>,
    /// Offers refused because the feed is blocked here.
    refused: Vec<PublicKey>,
    /// Requested feeds the peer agreed to replicate (its answers).
    agreed: HashSet<PublicKey>,
    pub(super) replicating: Vec<PublicKey>,
    /// The discovery keys of `replicating` (thousands of feeds: no list scans).
    replicating_dkeys: HashSet<[u8; 32]>,
    /// How many of `replicating` have closed (are in `closed_feeds`).
    replicating_closed: usize,
    /// `remote_offer` and `requested` as sets, for lookups.
    remote_offer_set: HashSet<PublicKey>,
    requested_set: HashSet<PublicKey>,
    /// Feeds agreed on and not opened yet (`true`: the peer's, made here if
    /// new): opened [`OPEN_SLICE`] at a time, one slice per
    /// [`Event::Wake`], so that making thousands of feeds on disk does not
    /// keep the session from reading, writing and sending keep-alives.
    to_open: VecDeque<(PublicKey, bool)>,
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
    pub(super) new_feeds: Vec<PublicKey>,
    handshake_done: bool,
    /// The generation the session speaks, once the handshake is done.
    generation: Option<Generation>,
    /// Feeds kept from the peer (see [`SyncReport::withheld`]).
    pub(super) withheld: Vec<(PublicKey, String)>,
    /// Feeds not offered until their signature form is known.
    deferred: Vec<PublicKey>,
    /// Notified when a feed joins `deferred`, so whoever waits for deferred
    /// feeds to change ([`deferrals`](Exchange::deferrals)) watches it too.
    deferrals: Arc<event_listener::Event>,
    /// Set while [`announce_deferred`](Exchange::announce_deferred) looks at
    /// the deferred feeds again (one still deferred is no news).
    redeferring: bool,
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
            replicating_dkeys: HashSet::new(),
            replicating_closed: 0,
            remote_offer_set: HashSet::new(),
            requested_set: HashSet::new(),
            to_open: VecDeque::new(),
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
        p.open_feed(now, feed, self.feed_options()).map_err(|e| e.to_string())
    }

    /// Queues feed `key` (the peer's if `remote`) to be opened, and counts it
    /// as replicating from now on (the root channel stays open for it).
    fn queue_open(&mut self, p: &mut Protocol, now: Instant, key: PublicKey, remote: bool) {
        let dkey = key.discovery_key();
        if self.replicating_dkeys.insert(dkey) {
            self.replicating.push(key);
            if self.closed_feeds.contains(&dkey) {
                self.replicating_closed += 1;
            }
        }
        if self.to_open.is_empty() {
            p.wake_me(now);
        }
        self.to_open.push_back((key, remote));
    }

    /// Opens the next slice of the queued feeds, and asks for another
    /// wake-up if some are left.
    fn open_slice(&mut self, p: &mut Protocol, now: Instant) -> Result<(), String> {
        for _ in 0..OPEN_SLICE {
            let Some((key, remote)) = self.to_open.pop_front() else { break };
            self.open(p, now, key, remote)?;
        }
        if !self.to_open.is_empty() {
            p.wake_me(now);
        }
        Ok(())
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
            Event::Wake => {
                if let Err(e) = self.open_slice(p, now) {
                    p.reject(e);
                }
                self.maybe_close_root(p, now);
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
                if self.closed_feeds.insert(*discovery_key) && self.replicating_dkeys.contains(discovery_key)
                {
                    self.replicating_closed += 1;
                }
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
        let done = self.is_settled() && self.to_open.is_empty();
        let hold = !done && !p.is_ended();
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
                    if self.remote_offer_set.insert(*k) {
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
                    if self.requested_set.insert(*k) {
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
                    parse_keys(Some(&v)).into_iter().filter(|k| self.requested_set.contains(k)).collect();
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
                    self.queue_open(p, now, k, true);
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
                self.queue_open(p, now, k, false);
            }
        }
        self.maybe_close_root(p, now);
        Ok(())
    }

    /// Non-live: once both sides' requests were answered and every feed
    /// channel closed, close the root channel (JS closes its root on the first
    /// Close it sees; we answer that automatically).
    fn maybe_close_root(&mut self, p: &mut Protocol, now: Instant) {
        if self.opts.live || !self.is_settled() || !self.to_open.is_empty() || self.answers_sent == 0 {
            return;
        }
        let all_closed = self.replicating_closed == self.replicating.len();
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four rounds of bytes both ways at `now`: `us` runs the exchange
    /// `conn`; the names of the extension messages `js` receives go to `sent`.
    pub(super) fn pump(
        now: Instant,
        js: &mut Protocol,
        us: &mut Protocol,
        conn: &mut Exchange,
        sent: &mut Vec<String>,
    ) {
        for _ in 0..4 {
            if let Some(bytes) = js.poll_transmit(now) {
                us.handle_input(now, &bytes).unwrap();
            }
            while let Some(ev) = us.poll_event() {
                conn.handle(us, now, &ev);
            }
            if let Some(bytes) = us.poll_transmit(now) {
                js.handle_input(now, &bytes).unwrap();
            }
            while let Some(ev) = js.poll_event() {
                if let Event::Extension { name, .. } = ev {
                    sent.push(name);
                }
            }
        }
    }

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
        let (mut js, mut us) = super::super::fuzz::exchange_pair(now);
        let mf = Multifeed::in_memory().unwrap();
        let mut conn = Exchange::new(mf, ReplicateOptions::new(false));
        let mut sent_by_us = Vec::new();
        pump(now, &mut js, &mut us, &mut conn, &mut sent_by_us);
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
            pump(now, &mut js, &mut us, &mut conn, &mut sent_by_us);
        }
        assert_eq!(conn.unanswered_requests(), 1);
        let before = std::mem::take(&mut sent_by_us);
        let answer = json!([js_key]).to_string().into_bytes();
        conn.handle(&mut us, now, &Event::Extension { name: REPLICATE_FEEDS.into(), payload: answer });
        pump(now, &mut js, &mut us, &mut conn, &mut sent_by_us);
        assert!(conn.is_settled());
        (before, sent_by_us)
    }
}

#[cfg(test)]
mod slices {
    use super::*;

    /// Feeds agreed on are opened a slice at a time, one slice per wake-up
    /// the exchange asks for, and the exchange holds the session open until
    /// the last is: ten thousand feeds made on disk in one step kept a
    /// session silent past the peer's timeout (`cargo xtask soak feeds`).
    #[test]
    fn agreed_feeds_are_opened_one_slice_per_wake_up() {
        let now = Instant::now();
        let (mut js, mut us) = super::super::fuzz::exchange_pair(now);
        let mut conn = Exchange::new(Multifeed::in_memory().unwrap(), ReplicateOptions::new(false));
        super::tests::pump(now, &mut js, &mut us, &mut conn, &mut Vec::new());

        // The peer offers 3.5 slices of feeds we do not have, and agrees.
        let theirs = Multifeed::in_memory().unwrap();
        let n = OPEN_SLICE * 3 + OPEN_SLICE / 2;
        let keys: Vec<String> =
            (0..n).map(|i| theirs.writer(&format!("w{i}")).unwrap().public_key().to_hex()).collect();
        let hs = json!({"client": "MULTIFEED", "version": PROTOCOL_VERSION, "live": false});
        for (name, v) in
            [(HANDSHAKE, hs), (MANIFEST, json!({ "keys": keys })), (REPLICATE_FEEDS, json!(keys))]
        {
            let payload = v.to_string().into_bytes();
            conn.handle(&mut us, now, &Event::Extension { name: name.into(), payload });
        }
        assert!(conn.is_settled());
        assert_eq!(us.feeds().len(), 0, "nothing is opened in the step that agreed");
        assert_eq!(conn.replicating.len(), n);

        let mut opened = Vec::new();
        loop {
            let before = us.feeds().len();
            if before == n {
                break;
            }
            assert!(us.poll_timeout().is_some_and(|t| t <= now), "a wake-up is due while feeds wait");
            assert!(conn.holding, "the exchange holds the session while feeds wait");
            us.handle_timeout(now);
            while let Some(ev) = us.poll_event() {
                conn.handle(&mut us, now, &ev);
            }
            opened.push(us.feeds().len() - before);
            assert!(opened.len() <= 4, "{opened:?}");
        }
        assert_eq!(opened, [OPEN_SLICE, OPEN_SLICE, OPEN_SLICE, OPEN_SLICE / 2]);
    }
}
