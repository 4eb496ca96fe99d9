//! The deterministic two-peer harness: two [`Protocol`]s joined by an in-memory
//! wire with a simulated clock, seeded chunking of the byte stream into random
//! pieces, and random delivery delays (order is kept per direction, as TCP does).
//!
//! Each side may have a [`Driver`]: the layer above the protocol (multifeed's
//! exchange, or a model of a JS peer), which sees every event with the
//! protocol at hand, as a `Session`'s event handler does, and may ask for
//! timers of its own (a model's asynchronous steps).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use kappa_log::SharedFeed;
use kappa_protocol::{Event, Protocol, ProtocolOptions};

/// A small deterministic RNG (xorshift64*).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// An RNG for `seed` (any value, 0 included).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E3779B97F4A7C15) | 1)
    }

    /// The next 64 random bits.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    /// True with probability `num/den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }
}

/// The layer above one side's protocol.
pub trait Driver: Send {
    /// An event of this side's protocol, with the protocol at hand.
    fn on_event(&mut self, p: &mut Protocol, now: Instant, ev: &Event) {
        let _ = (p, now, ev);
    }

    /// When this side next wants [`on_timer`](Self::on_timer).
    fn next_timer(&self) -> Option<Instant> {
        None
    }

    /// The clock reached `now` (called on every time step).
    fn on_timer(&mut self, p: &mut Protocol, now: Instant) {
        let _ = (p, now);
    }
}

struct Wire {
    queue: VecDeque<(Instant, Vec<u8>)>,
    last: Instant,
}

/// Two protocols on a simulated wire (see the module docs).
pub struct Pair {
    /// One side.
    pub a: Protocol,
    /// The other side.
    pub b: Protocol,
    /// The simulated clock.
    pub now: Instant,
    /// The wire's randomness.
    pub rng: Rng,
    /// Largest piece the byte stream is cut into.
    pub max_chunk: u64,
    /// Longest delivery delay of a piece.
    pub max_delay: Duration,
    ab: Wire,
    ba: Wire,
    /// Every event of `a`, in order.
    pub events_a: Vec<Event>,
    /// Every event of `b`, in order.
    pub events_b: Vec<Event>,
    /// Feeds of `a` whose local changes the pair notices.
    pub feeds_a: Vec<SharedFeed>,
    /// Feeds of `b` whose local changes the pair notices.
    pub feeds_b: Vec<SharedFeed>,
    versions_a: Vec<u64>,
    versions_b: Vec<u64>,
    /// Bytes sent from `a` to `b`.
    pub bytes_ab: u64,
    /// Bytes sent from `b` to `a`.
    pub bytes_ba: u64,
    /// Notice changes of every feed a protocol replicates (as a `Session`
    /// does), not only the watched ones.
    pub watch_all: bool,
    driver_a: Option<Box<dyn Driver>>,
    driver_b: Option<Box<dyn Driver>>,
}

impl Pair {
    /// `a` is the initiator unless `b_initiates`.
    pub fn new(seed: u64, live: bool, b_initiates: bool) -> Pair {
        let now = Instant::now();
        let a = Protocol::new(now, ProtocolOptions::new(!b_initiates).live(live));
        let b = Protocol::new(now, ProtocolOptions::new(b_initiates).live(live));
        Self::from_protocols(seed, a, b, now)
    }

    /// A pair of prepared protocols, created at `now`.
    pub fn from_protocols(seed: u64, a: Protocol, b: Protocol, now: Instant) -> Pair {
        let mut rng = Rng::new(seed);
        let max_chunk = 1 + rng.below(3000);
        let max_delay = Duration::from_micros(rng.below(5000));
        Pair {
            a,
            b,
            now,
            rng,
            max_chunk,
            max_delay,
            ab: Wire { queue: VecDeque::new(), last: now },
            ba: Wire { queue: VecDeque::new(), last: now },
            events_a: Vec::new(),
            events_b: Vec::new(),
            feeds_a: Vec::new(),
            feeds_b: Vec::new(),
            versions_a: Vec::new(),
            versions_b: Vec::new(),
            bytes_ab: 0,
            bytes_ba: 0,
            watch_all: false,
            driver_a: None,
            driver_b: None,
        }
    }

    /// Puts a driver above `a` (it sees every event from now on).
    pub fn drive_a(&mut self, d: impl Driver + 'static) {
        self.driver_a = Some(Box::new(d));
    }

    /// Puts a driver above `b`.
    pub fn drive_b(&mut self, d: impl Driver + 'static) {
        self.driver_b = Some(Box::new(d));
    }

    /// Lets the pair notice local changes of these feeds (what a driver's watcher
    /// does).
    pub fn watch_a(&mut self, f: &SharedFeed) {
        self.versions_a.push(f.version());
        self.feeds_a.push(f.clone());
    }

    /// Like [`watch_a`](Self::watch_a), for `b`.
    pub fn watch_b(&mut self, f: &SharedFeed) {
        self.versions_b.push(f.version());
        self.feeds_b.push(f.clone());
    }

    /// Whether both directions of the wire are empty.
    pub fn wire_is_empty(&self) -> bool {
        self.ab.queue.is_empty() && self.ba.queue.is_empty()
    }

    fn chop(
        rng: &mut Rng,
        max_chunk: u64,
        max_delay: Duration,
        wire: &mut Wire,
        now: Instant,
        bytes: Vec<u8>,
    ) {
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let n = (1 + rng.below(max_chunk)).min(rest.len() as u64) as usize;
            let delay = Duration::from_nanos(rng.below(max_delay.as_nanos() as u64 + 1));
            let at = (now + delay).max(wire.last);
            wire.last = at;
            wire.queue.push_back((at, rest[..n].to_vec()));
            rest = &rest[n..];
        }
    }

    fn notice_changes(
        p: &mut Protocol,
        feeds: &mut Vec<SharedFeed>,
        versions: &mut Vec<u64>,
        watch_all: bool,
        now: Instant,
    ) {
        if watch_all {
            for f in p.feeds() {
                if !feeds.iter().any(|g| g.discovery_key() == f.discovery_key()) {
                    versions.push(f.version());
                    feeds.push(f);
                }
            }
        }
        let mut changed = false;
        for (i, f) in feeds.iter().enumerate() {
            if f.version() != versions[i] {
                versions[i] = f.version();
                changed = true;
            }
        }
        if changed {
            p.feeds_changed(now);
        }
    }

    /// One step: collect output, deliver what is due, advance the clock.
    /// Returns false when nothing can happen any more.
    pub fn step(&mut self) -> bool {
        // Local changes.
        Self::notice_changes(&mut self.a, &mut self.feeds_a, &mut self.versions_a, self.watch_all, self.now);
        Self::notice_changes(&mut self.b, &mut self.feeds_b, &mut self.versions_b, self.watch_all, self.now);
        // Events first: what the drivers send in answer goes out in this step.
        self.collect_events();
        while let Some(bytes) = self.a.poll_transmit(self.now) {
            self.bytes_ab += bytes.len() as u64;
            Self::chop(&mut self.rng, self.max_chunk, self.max_delay, &mut self.ab, self.now, bytes);
        }
        while let Some(bytes) = self.b.poll_transmit(self.now) {
            self.bytes_ba += bytes.len() as u64;
            Self::chop(&mut self.rng, self.max_chunk, self.max_delay, &mut self.ba, self.now, bytes);
        }
        self.collect_events();
        let mut progressed = false;
        while let Some((at, _)) = self.ab.queue.front() {
            if *at > self.now {
                break;
            }
            let Some((_, chunk)) = self.ab.queue.pop_front() else { break };
            if !self.b.is_ended() {
                let _ = self.b.handle_input(self.now, &chunk);
            }
            progressed = true;
        }
        while let Some((at, _)) = self.ba.queue.front() {
            if *at > self.now {
                break;
            }
            let Some((_, chunk)) = self.ba.queue.pop_front() else { break };
            if !self.a.is_ended() {
                let _ = self.a.handle_input(self.now, &chunk);
            }
            progressed = true;
        }
        if progressed || self.a.pending_transmit_len() > 0 || self.b.pending_transmit_len() > 0 {
            return true;
        }
        // Nothing due now: jump to the next delivery or timer.
        let next = [
            self.ab.queue.front().map(|(t, _)| *t),
            self.ba.queue.front().map(|(t, _)| *t),
            self.a.poll_timeout(),
            self.b.poll_timeout(),
            self.driver_a.as_ref().and_then(|d| d.next_timer()),
            self.driver_b.as_ref().and_then(|d| d.next_timer()),
        ]
        .into_iter()
        .flatten()
        .min();
        match next {
            Some(t) => {
                self.now = self.now.max(t);
                self.a.handle_timeout(self.now);
                self.b.handle_timeout(self.now);
                if let Some(d) = &mut self.driver_a {
                    d.on_timer(&mut self.a, self.now);
                }
                if let Some(d) = &mut self.driver_b {
                    d.on_timer(&mut self.b, self.now);
                }
                true
            }
            None => false,
        }
    }

    /// Steps until `done` holds (checked after every step) or `max_steps` pass.
    pub fn drive_until(&mut self, max_steps: usize, mut done: impl FnMut(&Pair) -> bool) -> bool {
        for _ in 0..max_steps {
            self.collect_events();
            if done(self) {
                return true;
            }
            if !self.step() {
                self.collect_events();
                return done(self);
            }
        }
        self.collect_events();
        done(self)
    }

    /// Hands pending events to the drivers (and records them), until none is
    /// left.
    pub fn collect_events(&mut self) {
        loop {
            let mut any = false;
            while let Some(e) = self.a.poll_event() {
                any = true;
                if let Some(d) = &mut self.driver_a {
                    d.on_event(&mut self.a, self.now, &e);
                }
                self.events_a.push(e);
            }
            while let Some(e) = self.b.poll_event() {
                any = true;
                if let Some(d) = &mut self.driver_b {
                    d.on_event(&mut self.b, self.now, &e);
                }
                self.events_b.push(e);
            }
            if !any {
                return;
            }
        }
    }

    /// Steps until both sessions ended.
    pub fn drive_to_end(&mut self, max_steps: usize) -> bool {
        self.drive_until(max_steps, |p| p.a.is_ended() && p.b.is_ended() && p.wire_is_empty())
    }
}

/// A shared driver (keep a clone to inspect it after driving).
impl<D: Driver> Driver for std::sync::Arc<std::sync::Mutex<D>> {
    fn on_event(&mut self, p: &mut Protocol, now: Instant, ev: &Event) {
        self.lock().unwrap_or_else(|e| e.into_inner()).on_event(p, now, ev);
    }

    fn next_timer(&self) -> Option<Instant> {
        self.lock().unwrap_or_else(|e| e.into_inner()).next_timer()
    }

    fn on_timer(&mut self, p: &mut Protocol, now: Instant) {
        self.lock().unwrap_or_else(|e| e.into_inner()).on_timer(p, now);
    }
}
