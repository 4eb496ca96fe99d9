//! The deterministic two-peer harness: two [`Protocol`]s joined by an in-memory
//! wire with a simulated clock, seeded chunking of the byte stream into random
//! pieces, and random delivery delays (order is kept per direction, as TCP does).

#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use kappa_log::SharedFeed;
use kappa_protocol::{Event, Protocol, ProtocolOptions};

/// A small deterministic RNG (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E3779B97F4A7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

pub struct Wire {
    queue: VecDeque<(Instant, Vec<u8>)>,
    last: Instant,
}

pub struct Pair {
    pub a: Protocol,
    pub b: Protocol,
    pub now: Instant,
    pub rng: Rng,
    pub max_chunk: u64,
    pub max_delay: Duration,
    ab: Wire,
    ba: Wire,
    pub events_a: Vec<Event>,
    pub events_b: Vec<Event>,
    pub feeds_a: Vec<SharedFeed>,
    pub feeds_b: Vec<SharedFeed>,
    versions_a: Vec<u64>,
    versions_b: Vec<u64>,
    pub bytes_ab: u64,
    pub bytes_ba: u64,
}

impl Pair {
    /// `a` is the initiator unless `b_initiates`.
    pub fn new(seed: u64, live: bool, b_initiates: bool) -> Pair {
        let now = Instant::now();
        let a = Protocol::new(now, ProtocolOptions::new(!b_initiates).live(live));
        let b = Protocol::new(now, ProtocolOptions::new(b_initiates).live(live));
        Self::from_protocols(seed, a, b, now)
    }

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
        }
    }

    /// Lets the pair notice local changes of these feeds (what a driver's watcher
    /// does).
    pub fn watch_a(&mut self, f: &SharedFeed) {
        self.versions_a.push(f.version());
        self.feeds_a.push(f.clone());
    }

    pub fn watch_b(&mut self, f: &SharedFeed) {
        self.versions_b.push(f.version());
        self.feeds_b.push(f.clone());
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

    /// One step: collect output, deliver what is due, advance the clock.
    /// Returns false when nothing can happen any more.
    pub fn step(&mut self) -> bool {
        // Local changes.
        for (i, f) in self.feeds_a.iter().enumerate() {
            if f.version() != self.versions_a[i] {
                self.versions_a[i] = f.version();
                self.a.feeds_changed(self.now);
            }
        }
        for (i, f) in self.feeds_b.iter().enumerate() {
            if f.version() != self.versions_b[i] {
                self.versions_b[i] = f.version();
                self.b.feeds_changed(self.now);
            }
        }
        while let Some(bytes) = self.a.poll_transmit() {
            self.bytes_ab += bytes.len() as u64;
            Self::chop(&mut self.rng, self.max_chunk, self.max_delay, &mut self.ab, self.now, bytes);
        }
        while let Some(bytes) = self.b.poll_transmit() {
            self.bytes_ba += bytes.len() as u64;
            Self::chop(&mut self.rng, self.max_chunk, self.max_delay, &mut self.ba, self.now, bytes);
        }
        while let Some(e) = self.a.poll_event() {
            self.events_a.push(e);
        }
        while let Some(e) = self.b.poll_event() {
            self.events_b.push(e);
        }
        let mut progressed = false;
        while let Some((at, _)) = self.ab.queue.front() {
            if *at > self.now {
                break;
            }
            let (_, chunk) = self.ab.queue.pop_front().unwrap_or_else(|| unreachable!());
            if !self.b.is_ended() {
                let _ = self.b.handle_input(self.now, &chunk);
            }
            progressed = true;
        }
        while let Some((at, _)) = self.ba.queue.front() {
            if *at > self.now {
                break;
            }
            let (_, chunk) = self.ba.queue.pop_front().unwrap_or_else(|| unreachable!());
            if !self.a.is_ended() {
                let _ = self.a.handle_input(self.now, &chunk);
            }
            progressed = true;
        }
        if progressed {
            return true;
        }
        // Nothing due now: jump to the next delivery or timer.
        let next = [
            self.ab.queue.front().map(|(t, _)| *t),
            self.ba.queue.front().map(|(t, _)| *t),
            self.a.poll_timeout(),
            self.b.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min();
        match next {
            Some(t) => {
                self.now = self.now.max(t);
                self.a.handle_timeout(self.now);
                self.b.handle_timeout(self.now);
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

    fn collect_events(&mut self) {
        while let Some(e) = self.a.poll_event() {
            self.events_a.push(e);
        }
        while let Some(e) = self.b.poll_event() {
            self.events_b.push(e);
        }
    }

    /// Steps until both sessions ended.
    pub fn drive_to_end(&mut self, max_steps: usize) -> bool {
        self.drive_until(max_steps, |p| {
            p.a.is_ended() && p.b.is_ended() && p.ab.queue.is_empty() && p.ba.queue.is_empty()
        })
    }
}
