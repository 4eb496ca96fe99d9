//! The sans-IO state machine of LAN discovery: what to send, when, and which
//! peers were found. It reads no clock and no socket; [`crate::LanDiscovery`]
//! drives it from a thread.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::codec::{self, Answer, Message, ID_LEN, ID_PREFIX};

/// Most packets waiting to be sent; more are dropped (the next timer resends).
const MAX_TRANSMITS: usize = 64;
/// Most peers found and not yet taken with [`Mdns::poll_event`].
const MAX_EVENTS: usize = 1024;
/// Answers to queries: a bucket of this many, refilled at this many a second.
/// Answers are multicast, so one answer serves every asker of that moment.
const ANSWER_BURST: u32 = 20;

/// How often a lookup asks again (hyperswarm: a random time in 30 to 60 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requery {
    /// The shortest wait between two queries of one topic.
    pub min: Duration,
    /// The longest.
    pub max: Duration,
}

impl Default for Requery {
    fn default() -> Self {
        Requery { min: Duration::from_secs(30), max: Duration::from_secs(60) }
    }
}

/// A peer found: a topic and the address it serves on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Found {
    /// The topic.
    pub topic: [u8; 32],
    /// Where the peer accepts connections.
    pub addr: SocketAddr,
}

#[derive(Debug)]
struct TopicState {
    topic: [u8; 32],
    /// `id=` + 32 random bytes: answers carrying it are our own.
    id: [u8; ID_LEN],
    /// Announced with this port.
    port: Option<u16>,
    /// When to ask next, while looking up.
    next_query: Option<Instant>,
}

/// LAN discovery of hyperswarm 2 as a state machine.
///
/// Call [`announce`](Self::announce), [`lookup`](Self::lookup) and
/// [`stop`](Self::stop) as the user asks; [`handle_packet`](Self::handle_packet)
/// for each datagram received on the mDNS group; [`handle_timeout`](Self::handle_timeout)
/// when [`poll_timeout`](Self::poll_timeout)'s instant has come. After each
/// call, send every [`poll_transmit`](Self::poll_transmit) packet to the group
/// and take every [`poll_event`](Self::poll_event).
#[derive(Debug)]
pub struct Mdns {
    /// By record name.
    topics: HashMap<String, TopicState>,
    transmits: VecDeque<Vec<u8>>,
    events: VecDeque<Found>,
    rng: StdRng,
    requery: Requery,
    tokens: u32,
    refilled: Option<Instant>,
}

impl Mdns {
    /// A machine whose ids and timers come from `seed`.
    pub fn new(seed: [u8; 32], requery: Requery) -> Self {
        Mdns {
            topics: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            rng: StdRng::from_seed(seed),
            requery,
            tokens: ANSWER_BURST,
            refilled: None,
        }
    }

    fn entry(&mut self, topic: [u8; 32]) -> &mut TopicState {
        let rng = &mut self.rng;
        self.topics.entry(codec::record_name(&topic)).or_insert_with(|| {
            let mut id = [0u8; ID_LEN];
            id[..3].copy_from_slice(ID_PREFIX);
            rng.fill(&mut id[3..]);
            TopicState { topic, id, port: None, next_query: None }
        })
    }

    /// Announces `topic` on `port`: answers queries for it from now on, and
    /// sends one answer unasked at once (so lookers find us without waiting).
    pub fn announce(&mut self, topic: [u8; 32], port: u16) {
        let name = codec::record_name(&topic);
        let state = self.entry(topic);
        state.port = Some(port);
        let id = state.id;
        let bytes = codec::encode_response(&[Answer { name: &name, port, id: &id }], None);
        self.queue(bytes);
    }

    /// Looks `topic` up: queries at once, then again every
    /// [`Requery`] interval, until [`stop_lookup`](Self::stop_lookup).
    pub fn lookup(&mut self, now: Instant, topic: [u8; 32]) {
        let name = codec::record_name(&topic);
        let next = now + self.next_wait();
        self.entry(topic).next_query = Some(next);
        self.queue(codec::encode_query(&name));
    }

    /// Queries `topic` again now, if it is being looked up.
    pub fn requery(&mut self, now: Instant, topic: &[u8; 32]) {
        let name = codec::record_name(topic);
        if self.topics.get(&name).is_some_and(|t| t.next_query.is_some()) {
            self.lookup(now, *topic);
        }
    }

    /// Stops announcing `topic` (lookups go on).
    pub fn stop_announce(&mut self, topic: &[u8; 32]) {
        let name = codec::record_name(topic);
        if let Some(t) = self.topics.get_mut(&name) {
            t.port = None;
        }
        self.forget_idle(&name);
    }

    /// Stops looking `topic` up (an announcement goes on).
    pub fn stop_lookup(&mut self, topic: &[u8; 32]) {
        let name = codec::record_name(topic);
        if let Some(t) = self.topics.get_mut(&name) {
            t.next_query = None;
        }
        self.forget_idle(&name);
    }

    /// Stops announcing and looking up `topic`.
    pub fn stop(&mut self, topic: &[u8; 32]) {
        self.topics.remove(&codec::record_name(topic));
    }

    fn forget_idle(&mut self, name: &str) {
        if self.topics.get(name).is_some_and(|t| t.port.is_none() && t.next_query.is_none()) {
            self.topics.remove(name);
        }
    }

    fn next_wait(&mut self) -> Duration {
        let Requery { min, max } = self.requery;
        if max <= min {
            return min;
        }
        min + Duration::from_nanos(
            self.rng.gen_range(0..=(max - min).as_nanos().min(u64::MAX as u128) as u64),
        )
    }

    fn queue(&mut self, bytes: Vec<u8>) {
        if !bytes.is_empty() && self.transmits.len() < MAX_TRANSMITS {
            self.transmits.push_back(bytes);
        }
    }

    fn take_token(&mut self, now: Instant) -> bool {
        let last = *self.refilled.get_or_insert(now);
        let add = now.saturating_duration_since(last).as_millis() as u64 * ANSWER_BURST as u64 / 1000;
        if add > 0 {
            self.tokens = (self.tokens as u64 + add).min(ANSWER_BURST as u64) as u32;
            self.refilled = Some(now);
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }

    /// Handles one datagram received from `from`. Malformed packets are
    /// ignored (and say why, for a log).
    pub fn handle_packet(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), codec::DecodeError> {
        let message = codec::decode(bytes)?;
        match &message {
            Message::Query { srv_questions, .. } => {
                let mut answers = Vec::new();
                for name in srv_questions {
                    let Some(t) = self.topics.get(name) else { continue };
                    let Some(port) = t.port else { continue };
                    if message.id_for(name) == Some(&t.id[..]) {
                        continue;
                    }
                    if !answers.iter().any(|(n, _, _): &(String, u16, [u8; ID_LEN])| n == name) {
                        answers.push((name.clone(), port, t.id));
                    }
                }
                if answers.is_empty() || !self.take_token(now) {
                    return Ok(());
                }
                let list: Vec<Answer<'_>> =
                    answers.iter().map(|(name, port, id)| Answer { name, port: *port, id }).collect();
                let referrer = match from.ip() {
                    IpAddr::V4(ip) => Some(ip),
                    IpAddr::V6(_) => None,
                };
                let bytes = codec::encode_response(&list, referrer);
                self.queue(bytes);
            }
            Message::Response { srv, .. } => {
                for answer in srv {
                    let Some(t) = self.topics.get(&answer.name) else { continue };
                    if t.next_query.is_none() || message.id_for(&answer.name) == Some(&t.id[..]) {
                        continue;
                    }
                    let ip = if answer.target == "0.0.0.0" {
                        from.ip()
                    } else {
                        // A host name would need resolving; hyperswarm only sends 0.0.0.0.
                        match answer.target.parse::<IpAddr>() {
                            Ok(ip) => ip,
                            Err(_) => continue,
                        }
                    };
                    if answer.port == 0 || ip.is_unspecified() || ip.is_multicast() {
                        continue;
                    }
                    if self.events.len() < MAX_EVENTS {
                        self.events
                            .push_back(Found { topic: t.topic, addr: SocketAddr::new(ip, answer.port) });
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends the queries that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<[u8; 32]> = self
            .topics
            .values()
            .filter(|t| t.next_query.is_some_and(|at| at <= now))
            .map(|t| t.topic)
            .collect();
        for topic in due {
            self.lookup(now, topic);
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.topics.values().filter_map(|t| t.next_query).min()
    }

    /// The next packet to send to the group.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmits.pop_front()
    }

    /// The next peer found.
    pub fn poll_event(&mut self) -> Option<Found> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: [u8; 32] = [3; 32];
    const OTHER: [u8; 32] = [4; 32];

    fn pair() -> (Mdns, Mdns) {
        (Mdns::new([1; 32], Requery::default()), Mdns::new([2; 32], Requery::default()))
    }

    fn deliver(from: &mut Mdns, from_addr: SocketAddr, to: &mut Mdns, now: Instant) -> usize {
        let mut n = 0;
        while let Some(p) = from.poll_transmit() {
            to.handle_packet(now, from_addr, &p).unwrap();
            // Multicast loops back: the sender hears itself too.
            from.handle_packet(now, from_addr, &p).unwrap();
            n += 1;
        }
        n
    }

    #[test]
    fn a_lookup_finds_an_announcer_and_not_itself() {
        let now = Instant::now();
        let (mut a, mut b) = pair();
        let a_addr: SocketAddr = "10.0.0.1:5353".parse().unwrap();
        let b_addr: SocketAddr = "10.0.0.2:5353".parse().unwrap();
        a.announce(T, 7000);
        a.lookup(now, T);
        b.lookup(now, T);
        // a's unasked answer, a's query, and a's answer to its own query (as
        // hyperswarm does, the query carries no id); b hears all three.
        assert_eq!(deliver(&mut a, a_addr, &mut b, now), 3);
        assert_eq!(a.poll_event(), None, "a ignores its own answers");
        let found = Found { topic: T, addr: "10.0.0.1:7000".parse().unwrap() };
        assert_eq!((b.poll_event(), b.poll_event(), b.poll_event()), (Some(found), Some(found), None));
        // b's query is answered by a.
        deliver(&mut b, b_addr, &mut a, now);
        assert_eq!(deliver(&mut a, a_addr, &mut b, now), 1);
        assert_eq!((b.poll_event(), b.poll_event()), (Some(found), None));
    }

    #[test]
    fn another_topic_is_never_reported() {
        let now = Instant::now();
        let (mut a, mut b) = pair();
        a.announce(OTHER, 7000);
        b.lookup(now, T);
        deliver(&mut a, "10.0.0.1:5353".parse().unwrap(), &mut b, now);
        deliver(&mut b, "10.0.0.2:5353".parse().unwrap(), &mut a, now);
        assert_eq!(a.poll_transmit(), None, "a does not answer a query of another topic");
        assert_eq!(b.poll_event(), None);
    }

    #[test]
    fn lookups_requery_within_the_interval_and_stop() {
        let now = Instant::now();
        let mut a = Mdns::new([1; 32], Requery::default());
        a.lookup(now, T);
        assert!(a.poll_transmit().is_some());
        let at = a.poll_timeout().unwrap();
        assert!(at >= now + Duration::from_secs(30) && at <= now + Duration::from_secs(60));
        a.handle_timeout(at - Duration::from_millis(1));
        assert_eq!(a.poll_transmit(), None);
        a.handle_timeout(at);
        assert_eq!(a.poll_transmit(), Some(codec::encode_query(&codec::record_name(&T))));
        a.stop_lookup(&T);
        assert_eq!(a.poll_timeout(), None);
        assert!(a.topics.is_empty());
    }

    #[test]
    fn a_query_flood_gets_a_bounded_number_of_answers() {
        let now = Instant::now();
        let mut a = Mdns::new([1; 32], Requery::default());
        a.announce(T, 7000);
        a.poll_transmit();
        let q = codec::encode_query(&codec::record_name(&T));
        for _ in 0..1000 {
            a.handle_packet(now, "10.0.0.2:5353".parse().unwrap(), &q).unwrap();
        }
        let mut n = 0;
        while a.poll_transmit().is_some() {
            n += 1;
        }
        assert_eq!(n, ANSWER_BURST as usize);
        a.handle_packet(now + Duration::from_secs(1), "10.0.0.2:5353".parse().unwrap(), &q).unwrap();
        assert!(a.poll_transmit().is_some(), "the bucket refills");
    }
}
