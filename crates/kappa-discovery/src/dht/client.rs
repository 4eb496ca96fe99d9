//! The DHT client as a sans-IO state machine: datagrams and time in,
//! datagrams and found peers out.
//!
//! It is an ephemeral dht-rpc node, as `@hyperswarm/discovery` makes it by
//! default: its requests carry no id, so other nodes never add it to their
//! routing tables or route queries to it, and it answers nothing. For each
//! topic it runs the iterative lookup of dht-rpc's `QueryStream`: ask the
//! closest known nodes (at first the bootstrap nodes) for the `peers`
//! command, move to the closer nodes they name, keep the 20 closest that
//! answered with a roundtrip token; to announce, then send those 20 an
//! update carrying their tokens. Each run ends when nothing is left to ask;
//! the next starts after [`DhtOptions::refresh`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use super::wire::{decode_nodes, Kind, Message, PeersInput, PeersOutput};

/// How many closest nodes a lookup keeps, and announces to (dht-rpc's `k`).
pub const K: usize = 20;

/// How a [`DhtClient`] behaves.
#[derive(Debug, Clone)]
pub struct DhtOptions {
    /// Nodes to start from when none is known yet.
    pub bootstrap: Vec<SocketAddrV4>,
    /// Requests in flight at once for one topic (dht-rpc: 16).
    pub concurrency: usize,
    /// Time between the runs of a topic (hyperswarm: 5 to 10 minutes).
    pub refresh: Duration,
    /// Time before a request is sent again.
    pub retry: Duration,
    /// Sends of one request before it is given up (dht-rpc: 3).
    pub tries: u8,
}

impl Default for DhtOptions {
    fn default() -> Self {
        DhtOptions {
            bootstrap: Vec::new(),
            concurrency: 16,
            refresh: Duration::from_secs(300),
            retry: Duration::from_millis(1500),
            tries: 3,
        }
    }
}

/// A peer found for a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DhtFound {
    /// The topic.
    pub topic: [u8; 32],
    /// Where the peer accepts connections.
    pub addr: SocketAddrV4,
    /// The DHT node that told us.
    pub node: SocketAddrV4,
}

#[derive(Debug, Clone)]
struct Candidate {
    id: [u8; 32],
    addr: SocketAddrV4,
    distance: [u8; 32],
    token: Option<Vec<u8>>,
    queried: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closer,
    Updating,
}

#[derive(Debug)]
struct Run {
    phase: Phase,
    /// Nodes that answered, with their tokens, closest first.
    closest: Vec<Candidate>,
    /// Nodes named as closer and not asked yet, closest first.
    unverified: Vec<Candidate>,
    /// Addresses asked in this run.
    asked: HashSet<SocketAddrV4>,
    in_flight: usize,
    /// Answers received in this run.
    answers: usize,
}

#[derive(Debug)]
struct Topic {
    port: Option<u16>,
    next_run: Option<Instant>,
    run: Option<Run>,
    /// The nodes the last finished run announced to, and when (told to
    /// forget the announcement when it stops, while their tokens are good).
    announced: Vec<Candidate>,
    announced_at: Option<Instant>,
    /// Peers the current run found so far (handed to a lookup that starts
    /// during the run).
    seen: Vec<(SocketAddrV4, SocketAddrV4)>,
    /// Runs in a row that nobody answered: the next one comes sooner than
    /// the refresh (1 s, doubling), so a DHT that was not reachable yet is
    /// joined soon after it is.
    unanswered: u32,
}

impl Topic {
    fn new() -> Self {
        Topic {
            port: None,
            next_run: None,
            run: None,
            announced: Vec::new(),
            announced_at: None,
            seen: Vec::new(),
            unanswered: 0,
        }
    }
}

#[derive(Debug)]
struct Request {
    topic: [u8; 32],
    to: SocketAddrV4,
    bytes: Vec<u8>,
    kind: Kind,
    sent: Instant,
    tries: u8,
}

/// The DHT client. Feed it datagrams ([`handle_datagram`](Self::handle_datagram))
/// and time ([`handle_timeout`](Self::handle_timeout)); send what
/// [`poll_transmit`](Self::poll_transmit) gives and report what
/// [`poll_event`](Self::poll_event) finds.
#[derive(Debug)]
pub struct DhtClient {
    id: [u8; 32],
    opts: DhtOptions,
    next_rid: u16,
    requests: HashMap<u64, Request>,
    /// Nodes that answered us: id → address (bounded).
    known: HashMap<[u8; 32], SocketAddrV4>,
    topics: HashMap<[u8; 32], Topic>,
    out: VecDeque<(SocketAddrV4, Vec<u8>)>,
    found: VecDeque<DhtFound>,
}

/// The wait before the run after one nobody answered (then doubling, up to
/// the refresh time).
const UNANSWERED_FIRST: Duration = Duration::from_secs(1);

/// Most queries one run sends.
const MAX_ASKED: usize = 256;

/// Most requests in flight at once, for all topics (well below the 65,536
/// request ids).
const MAX_REQUESTS: usize = 4096;

/// Most peers of a run kept to hand to a lookup that starts during it.
const MAX_SEEN: usize = 256;

/// How long a node's roundtrip token is surely good: dht-rpc rotates its
/// secret every 5 minutes and accepts the current and the previous one.
const TOKEN_LIFE: Duration = Duration::from_secs(300);

/// Most nodes remembered between runs.
const MAX_KNOWN: usize = 1024;

fn xor(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut d = [0u8; 32];
    for i in 0..32 {
        d[i] = a[i] ^ b[i];
    }
    d
}

/// Inserts `c` into `list` (sorted by distance, at most [`K`], one entry per
/// id), as dht-rpc's `insertSorted` does.
fn insert_sorted(list: &mut Vec<Candidate>, c: Candidate) {
    if list.iter().any(|x| x.id == c.id) {
        return;
    }
    if list.len() == K && list.last().is_some_and(|l| c.distance >= l.distance) {
        return;
    }
    let at = list.partition_point(|x| x.distance < c.distance);
    list.insert(at, c);
    list.truncate(K);
}

impl DhtClient {
    /// A client with node id `id` (used for distances only; an ephemeral
    /// node never sends it) and request ids starting from `first_rid`.
    pub fn new(id: [u8; 32], first_rid: u16, opts: DhtOptions) -> Self {
        DhtClient {
            id,
            opts,
            next_rid: first_rid,
            requests: HashMap::new(),
            known: HashMap::new(),
            topics: HashMap::new(),
            out: VecDeque::new(),
            found: VecDeque::new(),
        }
    }

    /// Announces `topic` with `port` (peers connect to the address our
    /// datagrams come from, at that port), and looks it up; now and at every
    /// refresh.
    pub fn announce(&mut self, now: Instant, topic: [u8; 32], port: u16) {
        let t = self.topics.entry(topic).or_insert_with(Topic::new);
        t.port = Some(port);
        if t.run.is_none() {
            t.next_run = Some(now);
        }
        self.handle_timeout(now);
    }

    /// Looks `topic` up, now and at every refresh. During a run of the topic
    /// (an announce's), the peers it found so far are reported again at once.
    pub fn lookup(&mut self, now: Instant, topic: [u8; 32]) {
        let t = self.topics.entry(topic).or_insert_with(Topic::new);
        if t.run.is_none() {
            t.next_run = Some(now);
        } else {
            for &(addr, node) in &t.seen {
                self.found.push_back(DhtFound { topic, addr, node });
            }
        }
        self.handle_timeout(now);
    }

    /// Stops announcing and looking up `topic`; the nodes it was announced to
    /// are told to forget it (those whose roundtrip tokens are still good:
    /// dht-rpc accepts a token for 5 to 10 minutes; an announcement not
    /// withdrawn expires after 12).
    pub fn stop(&mut self, now: Instant, topic: &[u8; 32]) {
        let Some(t) = self.topics.remove(topic) else { return };
        self.requests.retain(|_, r| r.topic != *topic);
        let Some(port) = t.port else { return };
        let mut told: Vec<Candidate> = t.run.into_iter().flat_map(|r| r.closest).collect();
        if t.announced_at.is_some_and(|at| now.saturating_duration_since(at) < TOKEN_LIFE) {
            for c in t.announced {
                if !told.iter().any(|x| x.id == c.id) {
                    told.push(c);
                }
            }
        }
        let value =
            PeersInput { port: Some(port.into()), local_address: None, unannounce: Some(true) }.encode();
        for c in told.iter().filter(|c| c.token.is_some()) {
            if self.requests.len() >= MAX_REQUESTS {
                break;
            }
            let rid = self.rid();
            let mut m = Message::request(Kind::Update, rid, c.addr, "peers", topic);
            m.roundtrip_token = c.token.clone();
            m.value = Some(value.clone());
            self.out.push_back((c.addr, m.encode()));
        }
    }

    /// Stops looking `topic` up if it is not announced (an announced topic
    /// is looked up as long as it is announced).
    pub fn stop_lookup(&mut self, topic: &[u8; 32]) {
        if self.topics.get(topic).is_some_and(|t| t.port.is_none()) {
            self.topics.remove(topic);
            self.requests.retain(|_, r| r.topic != *topic);
        }
    }

    /// Requests sent and not answered or given up yet.
    pub fn requests_in_flight(&self) -> usize {
        self.requests.len()
    }

    /// The topics announced or looked up.
    pub fn topics(&self) -> impl Iterator<Item = &[u8; 32]> {
        self.topics.keys()
    }

    fn rid(&mut self) -> u64 {
        // Request ids are 16 bits in dht-rpc; skip ones still in flight.
        loop {
            let rid = u64::from(self.next_rid);
            self.next_rid = self.next_rid.wrapping_add(1);
            if !self.requests.contains_key(&rid) {
                return rid;
            }
        }
    }

    fn send(&mut self, now: Instant, topic: [u8; 32], to: SocketAddrV4, kind: Kind, token: Option<Vec<u8>>) {
        let port = self.topics.get(&topic).and_then(|t| t.port);
        let value = PeersInput { port: port.map(u32::from), local_address: None, unannounce: None }.encode();
        let rid = self.rid();
        let mut m = Message::request(kind, rid, to, "peers", &topic);
        m.roundtrip_token = token;
        m.value = Some(value);
        let bytes = m.encode();
        self.out.push_back((to, bytes.clone()));
        self.requests.insert(rid, Request { topic, to, bytes, kind, sent: now, tries: 1 });
    }

    fn start_run(&mut self, now: Instant, topic: [u8; 32]) {
        let mut run = Run {
            phase: Phase::Closer,
            closest: Vec::new(),
            unverified: Vec::new(),
            asked: HashSet::new(),
            in_flight: 0,
            answers: 0,
        };
        for (id, addr) in &self.known {
            insert_sorted(
                &mut run.unverified,
                Candidate { id: *id, addr: *addr, distance: xor(id, &topic), token: None, queried: false },
            );
        }
        // The bootstrap nodes too when few nodes are known, or when the last
        // run got no answer (the nodes known may all be gone).
        let unanswered = self.topics.get(&topic).is_some_and(|t| t.unanswered > 0);
        let bootstrap = if run.unverified.len() < self.opts.bootstrap.len() || unanswered {
            self.opts.bootstrap.clone()
        } else {
            Vec::new()
        };
        if let Some(t) = self.topics.get_mut(&topic) {
            t.next_run = None;
            t.run = Some(run);
            t.seen.clear();
        }
        for b in bootstrap {
            self.ask(now, topic, b, Kind::Query, None);
        }
        self.advance(now, topic);
    }

    fn ask(&mut self, now: Instant, topic: [u8; 32], to: SocketAddrV4, kind: Kind, token: Option<Vec<u8>>) {
        if self.requests.len() >= MAX_REQUESTS {
            return;
        }
        let Some(run) = self.topics.get_mut(&topic).and_then(|t| t.run.as_mut()) else { return };
        run.in_flight += 1;
        if kind == Kind::Query {
            run.asked.insert(to);
        }
        self.send(now, topic, to, kind, token);
    }

    /// Sends what the run of `topic` can send next, or ends its phase.
    fn advance(&mut self, now: Instant, topic: [u8; 32]) {
        loop {
            let concurrency = self.opts.concurrency;
            let Some(t) = self.topics.get_mut(&topic) else { return };
            let announcing = t.port.is_some();
            let Some(run) = t.run.as_mut() else { return };
            let mut next = Vec::new();
            match run.phase {
                Phase::Closer => {
                    // Queries per run are bounded: nodes naming ever more
                    // nodes cannot keep a run going for ever.
                    let free = concurrency
                        .saturating_sub(run.in_flight)
                        .min(MAX_ASKED.saturating_sub(run.asked.len()));
                    for c in run.unverified.iter_mut().filter(|c| !c.queried) {
                        if next.len() == free {
                            break;
                        }
                        c.queried = true;
                        if !run.asked.contains(&c.addr) {
                            next.push((c.addr, Kind::Query, None));
                        }
                    }
                }
                Phase::Updating => {}
            }
            if next.is_empty() && run.in_flight == 0 {
                if run.phase == Phase::Closer && announcing {
                    run.phase = Phase::Updating;
                    let updates: Vec<_> = run
                        .closest
                        .iter()
                        .filter_map(|c| c.token.clone().map(|tok| (c.addr, Kind::Update, Some(tok))))
                        .collect();
                    if !updates.is_empty() {
                        for (to, kind, token) in updates {
                            self.ask(now, topic, to, kind, token);
                        }
                        return;
                    }
                }
                // The run is over: the next one after the refresh time.
                tracing::debug!(topic = %hex::encode(&topic[..8]), "dht: run done");
                if announcing {
                    t.announced = run.closest.iter().filter(|c| c.token.is_some()).cloned().collect();
                    t.announced_at = Some(now);
                }
                let wait = if run.answers == 0 {
                    t.unanswered = t.unanswered.saturating_add(1);
                    UNANSWERED_FIRST.saturating_mul(1 << (t.unanswered - 1).min(16)).min(self.opts.refresh)
                } else {
                    t.unanswered = 0;
                    self.opts.refresh
                };
                t.next_run = Some(now + wait);
                t.run = None;
                return;
            }
            if next.is_empty() {
                return;
            }
            for (to, kind, token) in next {
                self.ask(now, topic, to, kind, token);
            }
        }
    }

    /// Handles one datagram from `from`. Anything that is not an answer to a
    /// request of ours is ignored.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let SocketAddr::V4(from) = from else { return };
        let Ok(m) = Message::decode(bytes) else { return };
        if m.kind != Kind::Response {
            return;
        }
        let Some(req) = self.requests.get(&m.rid) else { return };
        if req.to != from {
            return;
        }
        let Some(req) = self.requests.remove(&m.rid) else { return };
        let topic = req.topic;
        // An id only counts from a node of the current version (dht-rpc
        // treats older ones as ephemeral).
        let id: Option<[u8; 32]> =
            m.id.as_deref()
                .filter(|_| m.version.is_some_and(|v| v >= super::wire::VERSION))
                .and_then(|b| b.try_into().ok());
        if let Some(id) = id {
            if id != self.id && (self.known.len() < MAX_KNOWN || self.known.contains_key(&id)) {
                self.known.insert(id, from);
            }
        }
        let Some(t) = self.topics.get_mut(&topic) else { return };
        let Some(run) = t.run.as_mut() else { return };
        run.in_flight = run.in_flight.saturating_sub(1);
        run.answers += 1;
        if req.kind == Kind::Query {
            if let (Some(id), Some(token)) = (id, m.roundtrip_token.clone()) {
                if id != self.id {
                    let c = Candidate {
                        id,
                        addr: from,
                        distance: xor(&id, &topic),
                        token: Some(token),
                        queried: true,
                    };
                    insert_sorted(&mut run.closest, c);
                }
            }
            if run.phase == Phase::Closer {
                for n in decode_nodes(m.closer_nodes.as_deref().unwrap_or_default()) {
                    if n.id != self.id && !run.asked.contains(&n.addr) {
                        let c = Candidate {
                            id: n.id,
                            addr: n.addr,
                            distance: xor(&n.id, &topic),
                            token: None,
                            queried: false,
                        };
                        insert_sorted(&mut run.unverified, c);
                    }
                }
            }
            if m.error.is_none() {
                if let Some(out) = m.value.as_deref().and_then(|v| PeersOutput::decode(v).ok()) {
                    for addr in out.addresses() {
                        if t.seen.len() < MAX_SEEN && !t.seen.iter().any(|s| s.0 == addr) {
                            t.seen.push((addr, from));
                        }
                        self.found.push_back(DhtFound { topic, addr, node: from });
                    }
                }
            }
        }
        self.advance(now, topic);
    }

    /// Resends requests not answered in time, gives up on those sent too
    /// often, and starts the runs that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let retry = self.opts.retry;
        let tries = self.opts.tries;
        let mut failed = Vec::new();
        for (rid, r) in &mut self.requests {
            if now.saturating_duration_since(r.sent) < retry {
                continue;
            }
            if r.tries >= tries {
                failed.push(*rid);
            } else {
                r.tries += 1;
                r.sent = now;
                self.out.push_back((r.to, r.bytes.clone()));
            }
        }
        for rid in failed {
            let Some(r) = self.requests.remove(&rid) else { continue };
            self.known.retain(|_, a| *a != r.to);
            if let Some(run) = self.topics.get_mut(&r.topic).and_then(|t| t.run.as_mut()) {
                run.in_flight = run.in_flight.saturating_sub(1);
            }
            self.advance(now, r.topic);
        }
        let due: Vec<[u8; 32]> = self
            .topics
            .iter()
            .filter(|(_, t)| t.next_run.is_some_and(|at| at <= now))
            .map(|(k, _)| *k)
            .collect();
        for topic in due {
            self.start_run(now, topic);
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let retries = self.requests.values().map(|r| r.sent + self.opts.retry);
        let runs = self.topics.values().filter_map(|t| t.next_run);
        retries.chain(runs).min()
    }

    /// The next datagram to send, and where.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddrV4, Vec<u8>)> {
        self.out.pop_front()
    }

    /// The next peer found.
    pub fn poll_event(&mut self) -> Option<DhtFound> {
        self.found.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dht::wire::{encode_nodes, encode_peer, NodeInfo};

    const TOPIC: [u8; 32] = [0x11; 32];

    fn addr(last: u8) -> SocketAddrV4 {
        SocketAddrV4::new([10, 0, 0, last].into(), 49737)
    }

    fn client(boot: &[SocketAddrV4]) -> DhtClient {
        let opts = DhtOptions {
            bootstrap: boot.to_vec(),
            refresh: Duration::from_secs(60),
            retry: Duration::from_secs(1),
            ..DhtOptions::default()
        };
        DhtClient::new([0xee; 32], 100, opts)
    }

    fn sent(c: &mut DhtClient) -> Vec<(SocketAddrV4, Message)> {
        std::iter::from_fn(|| c.poll_transmit()).map(|(to, b)| (to, Message::decode(&b).unwrap())).collect()
    }

    /// The answer node `id` at `from` gives to `req`.
    fn answer(req: &Message, id: u8, closer: &[NodeInfo], peers: &[SocketAddrV4]) -> Vec<u8> {
        let mut value = Vec::new();
        if !peers.is_empty() {
            let list: Vec<u8> = peers.iter().flat_map(|p| encode_peer(*p)).collect();
            value = vec![0x0a, list.len() as u8];
            value.extend(list);
        }
        Message {
            version: Some(1),
            kind: Kind::Response,
            rid: req.rid,
            to: None,
            id: Some(vec![id; 32]),
            target: None,
            closer_nodes: Some(encode_nodes(closer)),
            roundtrip_token: Some(vec![id; 32]),
            command: None,
            error: None,
            value: Some(value),
        }
        .encode()
    }

    #[test]
    fn an_announce_moves_closer_then_updates_the_closest_with_their_tokens() {
        let now = Instant::now();
        let mut c = client(&[addr(1)]);
        c.announce(now, TOPIC, 7000);
        let first = sent(&mut c);
        assert_eq!(first.len(), 1);
        let (to, req) = &first[0];
        assert_eq!((*to, req.kind, req.command.as_deref()), (addr(1), Kind::Query, Some("peers")));
        assert_eq!(req.id, None, "an ephemeral node sends no id");
        assert_eq!(req.target.as_deref(), Some(&TOPIC[..]));
        // The bootstrap node names two closer nodes and one announced peer.
        let closer = [NodeInfo { id: [0x12; 32], addr: addr(2) }, NodeInfo { id: [0x13; 32], addr: addr(3) }];
        let peer = SocketAddrV4::new([10, 9, 9, 9].into(), 7777);
        c.handle_datagram(now, addr(1).into(), &answer(req, 1, &closer, &[peer]));
        assert_eq!(c.poll_event(), Some(DhtFound { topic: TOPIC, addr: peer, node: addr(1) }));
        let second = sent(&mut c);
        let mut asked: Vec<SocketAddrV4> = second.iter().map(|(to, _)| *to).collect();
        asked.sort();
        assert_eq!(asked, vec![addr(2), addr(3)]);
        for (to, req) in &second {
            let id = to.ip().octets()[3];
            c.handle_datagram(now, (*to).into(), &answer(req, 0x10 + id, &[], &[]));
        }
        // Nothing closer: the update phase, one update per node that answered,
        // each with that node's token and our port.
        let updates = sent(&mut c);
        assert_eq!(updates.len(), 3);
        for (to, m) in &updates {
            assert_eq!(m.kind, Kind::Update);
            let id = if *to == addr(1) { 1 } else { 0x10 + to.ip().octets()[3] };
            assert_eq!(m.roundtrip_token, Some(vec![id; 32]), "token for {to}");
            assert_eq!(m.value, Some(PeersInput { port: Some(7000), ..PeersInput::default() }.encode()));
        }
        for (to, m) in &updates {
            c.handle_datagram(now, (*to).into(), &answer(m, 0, &[], &[]));
        }
        assert_eq!(c.requests_in_flight(), 0);
        assert_eq!(
            c.poll_timeout(),
            Some(now + Duration::from_secs(60)),
            "the next run is due at the refresh"
        );
        // Stopping tells the three nodes to forget the announcement.
        c.stop(now, &TOPIC);
        let forget = sent(&mut c);
        assert_eq!(forget.len(), 3);
        for (_, m) in forget {
            let want = PeersInput { port: Some(7000), unannounce: Some(true), ..PeersInput::default() };
            assert_eq!((m.kind, m.value), (Kind::Update, Some(want.encode())));
        }
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn an_unanswered_request_is_sent_again_then_given_up_and_the_run_ends() {
        let t0 = Instant::now();
        let mut c = client(&[addr(1)]);
        c.lookup(t0, TOPIC);
        let first = sent(&mut c);
        assert_eq!(first.len(), 1);
        let mut now = t0;
        for _ in 1..3 {
            now += Duration::from_secs(1);
            c.handle_timeout(now);
            let again = sent(&mut c);
            assert_eq!(again.len(), 1);
            assert_eq!(again[0].1, first[0].1, "the same request, again");
        }
        now += Duration::from_secs(1);
        c.handle_timeout(now);
        assert!(sent(&mut c).is_empty());
        assert_eq!(c.requests_in_flight(), 0);
        // Nobody answered: the next run comes after 1 s, not the refresh.
        assert_eq!(c.poll_timeout(), Some(now + Duration::from_secs(1)));
        // It asks the bootstrap node again; unanswered again, the wait doubles.
        now += Duration::from_secs(1);
        c.handle_timeout(now);
        assert_eq!(sent(&mut c).len(), 1);
        for _ in 0..3 {
            now += Duration::from_secs(1);
            c.handle_timeout(now);
        }
        assert_eq!(c.poll_timeout(), Some(now + Duration::from_secs(2)));
    }

    #[test]
    fn answers_from_elsewhere_or_to_nothing_are_ignored() {
        let now = Instant::now();
        let mut c = client(&[addr(1)]);
        c.lookup(now, TOPIC);
        let (_, req) = sent(&mut c).remove(0);
        let peer = SocketAddrV4::new([10, 9, 9, 9].into(), 7777);
        // From another address than the one asked.
        c.handle_datagram(now, addr(2).into(), &answer(&req, 1, &[], &[peer]));
        // To a request id never used.
        let mut other = req.clone();
        other.rid = req.rid + 1000;
        c.handle_datagram(now, addr(1).into(), &answer(&other, 1, &[], &[peer]));
        // A query, not an answer.
        c.handle_datagram(now, addr(1).into(), &req.encode());
        assert_eq!(c.poll_event(), None);
        assert_eq!(c.requests_in_flight(), 1);
        c.handle_datagram(now, addr(1).into(), &answer(&req, 1, &[], &[peer]));
        assert!(c.poll_event().is_some());
        // The same answer twice counts once.
        c.handle_datagram(now, addr(1).into(), &answer(&req, 1, &[], &[peer]));
        assert_eq!(c.poll_event(), None);
    }

    #[test]
    fn a_lookup_after_a_run_starts_one_at_once_and_one_during_a_run_gets_what_it_found() {
        let now = Instant::now();
        let mut c = client(&[addr(1)]);
        let peer = SocketAddrV4::new([10, 9, 9, 9].into(), 7777);
        // An announce run: the bootstrap node answers with a peer.
        c.announce(now, TOPIC, 7000);
        let (_, req) = sent(&mut c).remove(0);
        c.handle_datagram(now, addr(1).into(), &answer(&req, 1, &[], &[peer]));
        assert!(c.poll_event().is_some());
        // A lookup of the topic now, during the update phase: the peer again.
        c.lookup(now, TOPIC);
        assert_eq!(c.poll_event(), Some(DhtFound { topic: TOPIC, addr: peer, node: addr(1) }));
        let updates = sent(&mut c);
        assert!(updates.iter().all(|(_, m)| m.kind == Kind::Update), "no second run during the first");
        // The run ends; a lookup a little later does not wait for the refresh.
        for (to, m) in &updates {
            c.handle_datagram(now, (*to).into(), &answer(m, 1, &[], &[]));
        }
        assert_eq!(c.requests_in_flight(), 0);
        assert!(c.poll_timeout().is_some_and(|t| t > now + Duration::from_secs(30)));
        c.lookup(now + Duration::from_secs(6), TOPIC);
        assert_eq!(sent(&mut c).iter().filter(|(_, m)| m.kind == Kind::Query).count(), 1, "a run at once");
    }

    #[test]
    fn stopping_long_after_the_last_announce_uses_no_stale_tokens() {
        let now = Instant::now();
        let mut c = client(&[addr(1)]);
        c.announce(now, TOPIC, 7000);
        let (_, req) = sent(&mut c).remove(0);
        c.handle_datagram(now, addr(1).into(), &answer(&req, 1, &[], &[]));
        let (_, upd) = sent(&mut c).remove(0);
        c.handle_datagram(now, addr(1).into(), &answer(&upd, 1, &[], &[]));
        assert_eq!(c.requests_in_flight(), 0);
        // Six minutes on (the refresh here is a minute, but say the node
        // was unreachable): the old token may no longer be accepted.
        let mut later = c;
        later.stop(now + Duration::from_secs(360), &TOPIC);
        assert!(sent(&mut later).is_empty());
    }

    #[test]
    fn a_lookup_stops_only_if_the_topic_is_not_announced() {
        let now = Instant::now();
        let mut c = client(&[addr(1)]);
        c.lookup(now, TOPIC);
        c.announce(now, [0x22; 32], 7000);
        c.stop_lookup(&TOPIC);
        c.stop_lookup(&[0x22; 32]);
        assert_eq!(c.topics().copied().collect::<Vec<_>>(), vec![[0x22; 32]]);
    }

    proptest::proptest! {
        /// Whatever nodes answer (closer nodes, garbage, answers to requests
        /// long given up) and whenever time moves, nothing panics, requests
        /// stay bounded, and a topic always has something pending: a request
        /// or its next run (a run whose count of requests in flight went
        /// wrong would stall for ever).
        #[test]
        fn runs_never_stall_or_grow_unbounded(
            ops in proptest::collection::vec((0u8..4, proptest::prelude::any::<u64>(), 0usize..30), 1..120),
        ) {
            let mut now = Instant::now();
            let boots = [addr(1), addr(2)];
            let mut c = client(&boots);
            c.announce(now, TOPIC, 7000);
            c.lookup(now, [0x99; 32]);
            let mut outstanding: Vec<(SocketAddrV4, Message)> = sent(&mut c);
            for (op, r, n) in ops {
                match op {
                    0 | 1 if !outstanding.is_empty() => {
                        let (to, req) = outstanding.remove(r as usize % outstanding.len());
                        let closer: Vec<NodeInfo> = (0..n)
                            .map(|k| NodeInfo {
                                id: [(r as u8).wrapping_add(k as u8); 32],
                                addr: addr(10 + ((r as usize + k) % 40) as u8),
                            })
                            .collect();
                        let bytes = answer(&req, (r % 200) as u8 + 20, &closer, &[]);
                        c.handle_datagram(now, to.into(), &bytes);
                    }
                    2 => {
                        let junk: Vec<u8> = r.to_le_bytes().iter().cycle().take(n).copied().collect();
                        c.handle_datagram(now, addr(1).into(), &junk);
                    }
                    _ => {
                        now += Duration::from_millis(r % 3000);
                        c.handle_timeout(now);
                    }
                }
                outstanding.extend(sent(&mut c));
                while c.poll_event().is_some() {}
                proptest::prop_assert!(c.requests_in_flight() <= 2 * (K + boots.len()));
                proptest::prop_assert!(c.poll_timeout().is_some(), "a topic with nothing pending");
            }
        }
    }
}
