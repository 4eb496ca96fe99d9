//! Connection caps for serving: how many sessions run at once, in all and per
//! peer address. Shared by [`Kappa::serve_with`](crate::Kappa::serve_with) and
//! by servers that accept connections themselves (the `kappa` CLI).
//!
//! A connection over a cap is closed at once, before the Noise handshake: it
//! costs nothing but the accept. What one admitted connection can cost before
//! it proves the shared key is bounded by the protocol's `PeerLimits` (64 KiB
//! frames, a 10 s deadline), so the caps bound the whole.
//!
//! Also here: [`GenerationMemory`], how a server answers peers of both wire
//! generations from one listener.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use kappa_multifeed::MultifeedError;
use kappa_protocol::{Generation, ProtocolError, Wire};

use crate::{KappaError, SyncReport};

/// Caps on the sessions a server holds at once.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeOptions {
    /// Most sessions at once (default 128).
    pub max_connections: usize,
    /// Most sessions at once from one IP address (default 16). Connections
    /// whose address is unknown count only against `max_connections`.
    pub max_per_address: usize,
    /// Which wire generations are served (default [`Wire::Auto`]: both, see
    /// [`GenerationMemory`]).
    pub wire: Wire,
    /// The generation a peer not seen before is answered in under
    /// [`Wire::Auto`] (default kappa-core 6).
    pub default_generation: Generation,
    /// How long a served peer may go without sending us a frame, or without
    /// reading any of what we send, before its session fails and frees its
    /// place (default 20 s). A live peer that idles sends keep-alives and
    /// stays; one that stopped reading is dropped, holding at most
    /// `kappa_protocol::MAX_BUFFERED_OUT` (8 MiB) plus one write turn until then.
    pub timeout: std::time::Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_connections: 128,
            max_per_address: 16,
            wire: Wire::Auto,
            default_generation: Generation::KappaCore6,
            timeout: std::time::Duration::from_secs(20),
        }
    }
}

impl ServeOptions {
    /// Sets [`max_connections`](Self::max_connections).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// Sets [`max_per_address`](Self::max_per_address).
    pub fn max_per_address(mut self, n: usize) -> Self {
        self.max_per_address = n;
        self
    }

    /// Sets [`wire`](Self::wire).
    pub fn wire(mut self, wire: Wire) -> Self {
        self.wire = wire;
        self
    }

    /// Sets [`timeout`](Self::timeout).
    pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets [`default_generation`](Self::default_generation).
    pub fn default_generation(mut self, generation: Generation) -> Self {
        self.default_generation = generation;
        self
    }
}

/// Most addresses a [`GenerationMemory`] remembers; the oldest entry goes first.
pub const GENERATION_MEMORY_SIZE: usize = 4096;

/// Which wire generation a server answers each peer address in.
///
/// Noise message 1 is the same bytes in both generations, so a responder has
/// to guess which suite to answer in, and a JS peer that cannot decrypt the
/// answer just hangs up (JS cannot tell why, and retries later, as hyperswarm
/// and Cabal do). The rule: a peer address not seen before is answered in the
/// default generation; a peer that hangs up on our answer
/// ([`ProtocolError::HandshakeAbandoned`], or in a live session
/// `SyncReport::handshake_abandoned`) is answered in the other generation
/// on its next connection; a handshake that finishes pins the generation it
/// spoke for that address. So a JS kappa-core 7 peer gets in on its second
/// attempt against a kappa-core 6 default, and every attempt after that. Peers
/// of both generations behind one address take turns (each hang-up flips it).
/// With [`Wire::Only`] every peer is answered in that generation.
///
/// Cheap to clone (clones share the memory); at most
/// [`GENERATION_MEMORY_SIZE`] addresses are kept.
#[derive(Debug, Clone)]
pub struct GenerationMemory {
    wire: Wire,
    default: Generation,
    inner: Arc<Mutex<MemoryInner>>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    by_address: HashMap<IpAddr, (Generation, u64)>,
    clock: u64,
}

impl GenerationMemory {
    /// A memory for a server that serves `wire`, answering new peers in `default`.
    pub fn new(wire: Wire, default: Generation) -> Self {
        GenerationMemory { wire, default, inner: Arc::new(Mutex::new(MemoryInner::default())) }
    }

    /// The memory of a server with these options.
    pub fn for_options(opts: &ServeOptions) -> Self {
        Self::new(opts.wire, opts.default_generation)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The generation to answer a new connection from `peer` in.
    pub fn answer_for(&self, peer: Option<IpAddr>) -> Generation {
        if let Wire::Only(g) = self.wire {
            return g;
        }
        peer.and_then(|ip| self.lock().by_address.get(&ip).map(|(g, _)| *g)).unwrap_or(self.default)
    }

    /// Records how a session from `peer` ended (see the type's rule).
    pub fn record(&self, peer: Option<IpAddr>, outcome: &Result<SyncReport, KappaError>) {
        let (Some(ip), Wire::Auto) = (peer, self.wire) else { return };
        let next = match outcome {
            Ok(report) => match report.handshake_abandoned {
                Some(answered_in) => Some(answered_in.other()),
                None => report.generation,
            },
            Err(KappaError::Multifeed(MultifeedError::Replication(ProtocolError::HandshakeAbandoned {
                answered_in,
                ..
            }))) => Some(answered_in.other()),
            Err(_) => None,
        };
        let Some(next) = next else { return };
        let mut m = self.lock();
        m.clock += 1;
        let now = m.clock;
        if next == self.default {
            m.by_address.remove(&ip);
            return;
        }
        if m.by_address.len() >= GENERATION_MEMORY_SIZE && !m.by_address.contains_key(&ip) {
            if let Some(oldest) = m.by_address.iter().min_by_key(|(_, (_, t))| *t).map(|(ip, _)| *ip) {
                m.by_address.remove(&oldest);
            }
        }
        m.by_address.insert(ip, (next, now));
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Refusal {
    /// The peer's address, if known.
    pub peer: Option<IpAddr>,
    /// Whether the per-address cap was hit (else the total one).
    pub per_address: bool,
    /// The cap.
    pub limit: usize,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.peer, self.per_address) {
            (Some(ip), true) => write!(f, "{ip} is at the per-address limit of {} sessions", self.limit),
            (Some(ip), false) => {
                write!(f, "the server is at its limit of {} sessions; {ip} was turned away", self.limit)
            }
            (None, _) => write!(f, "the server is at its limit of {} sessions", self.limit),
        }
    }
}

impl std::error::Error for Refusal {}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// Counts open sessions against [`ServeOptions`]; cheap to clone (clones share
/// the counts).
#[derive(Debug, Clone)]
pub struct ConnectionGate {
    opts: ServeOptions,
    counts: Arc<Mutex<Counts>>,
}

/// One admitted session: dropping it frees its place.
#[derive(Debug)]
#[must_use = "the place is freed when the permit is dropped"]
pub struct Permit {
    peer: Option<IpAddr>,
    counts: Arc<Mutex<Counts>>,
}

fn lock(m: &Mutex<Counts>) -> std::sync::MutexGuard<'_, Counts> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ConnectionGate {
    /// A gate with these caps.
    pub fn new(opts: ServeOptions) -> Self {
        ConnectionGate { opts, counts: Arc::new(Mutex::new(Counts::default())) }
    }

    /// Admits a session from `peer`, or says why not.
    pub fn admit(&self, peer: Option<IpAddr>) -> Result<Permit, Refusal> {
        let mut c = lock(&self.counts);
        if c.total >= self.opts.max_connections {
            return Err(Refusal { peer, per_address: false, limit: self.opts.max_connections });
        }
        if let Some(ip) = peer {
            let n = c.by_address.entry(ip).or_insert(0);
            if *n >= self.opts.max_per_address {
                return Err(Refusal { peer, per_address: true, limit: self.opts.max_per_address });
            }
            *n += 1;
        }
        c.total += 1;
        Ok(Permit { peer, counts: self.counts.clone() })
    }

    /// Sessions open now.
    pub fn open(&self) -> usize {
        lock(&self.counts).total
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut c = lock(&self.counts);
        c.total = c.total.saturating_sub(1);
        if let Some(ip) = self.peer {
            if let Some(n) = c.by_address.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    c.by_address.remove(&ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_in_all_and_per_address() {
        let gate = ConnectionGate::new(ServeOptions::default().max_connections(3).max_per_address(2));
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let p1 = gate.admit(Some(a)).ok();
        let p2 = gate.admit(Some(a)).ok();
        assert!(p1.is_some() && p2.is_some());
        let refused = gate.admit(Some(a)).err();
        assert_eq!(refused, Some(Refusal { peer: Some(a), per_address: true, limit: 2 }));
        let p3 = gate.admit(Some(b)).ok();
        assert!(p3.is_some());
        assert_eq!(gate.admit(None).err().map(|r| r.per_address), Some(false));
        assert_eq!(gate.open(), 3);
        drop(p1);
        assert_eq!(gate.open(), 2);
        assert!(gate.admit(Some(a)).is_ok());
        drop((p2, p3));
        assert_eq!(gate.open(), 0);
        assert!(lock(&gate.counts).by_address.is_empty());
    }

    fn abandoned(g: Generation) -> Result<SyncReport, KappaError> {
        Err(KappaError::Multifeed(MultifeedError::Replication(ProtocolError::HandshakeAbandoned {
            answered_in: g,
            source: Box::new(ProtocolError::UnexpectedEof),
        })))
    }

    #[test]
    fn an_address_that_hung_up_on_our_answer_is_answered_in_the_other_generation() {
        use Generation::{KappaCore6 as KC6, KappaCore7 as KC7};
        let m = GenerationMemory::for_options(&ServeOptions::default());
        let (a, b): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        assert_eq!((m.answer_for(Some(a)), m.answer_for(None)), (KC6, KC6));
        m.record(Some(a), &abandoned(KC6));
        assert_eq!((m.answer_for(Some(a)), m.answer_for(Some(b))), (KC7, KC6));
        // It flips back when a peer of the other generation hangs up in turn.
        m.record(Some(a), &abandoned(KC7));
        assert_eq!(m.answer_for(Some(a)), KC6);
        assert!(m.lock().by_address.is_empty(), "the default is not stored");
        // Other failures change nothing; an unknown address is never stored.
        m.record(
            Some(b),
            &Err(KappaError::Multifeed(MultifeedError::Replication(ProtocolError::UnexpectedEof))),
        );
        m.record(None, &abandoned(KC6));
        assert_eq!((m.answer_for(Some(b)), m.answer_for(None)), (KC6, KC6));
        // A fixed wire answers every peer in it and remembers nothing.
        let only = GenerationMemory::new(Wire::Only(KC7), KC6);
        only.record(Some(a), &abandoned(KC7));
        assert_eq!(only.answer_for(Some(a)), KC7);
        // Bounded: the oldest address goes first.
        for i in 0..GENERATION_MEMORY_SIZE as u32 + 10 {
            m.record(Some(IpAddr::from(i.to_be_bytes())), &abandoned(KC6));
        }
        assert_eq!(m.lock().by_address.len(), GENERATION_MEMORY_SIZE);
        assert_eq!(m.answer_for(Some(IpAddr::from(0u32.to_be_bytes()))), KC6);
        assert_eq!(m.answer_for(Some(IpAddr::from((GENERATION_MEMORY_SIZE as u32 + 9).to_be_bytes()))), KC7);
    }
}
