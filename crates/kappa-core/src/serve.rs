//! Connection caps for serving: how many sessions run at once, in all and per
//! peer address. Shared by [`Kappa::serve_with`](crate::Kappa::serve_with) and
//! by servers that accept connections themselves (the `kappa` CLI).
//!
//! A connection over a cap is closed at once, before the Noise handshake: it
//! costs nothing but the accept. What one admitted connection can cost before
//! it proves the shared key is bounded by the protocol's `PeerLimits` (64 KiB
//! frames, a 10 s deadline), so the caps bound the whole.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Caps on the sessions a server holds at once.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeOptions {
    /// Most sessions at once (default 128).
    pub max_connections: usize,
    /// Most sessions at once from one IP address (default 16). Connections
    /// whose address is unknown count only against `max_connections`.
    pub max_per_address: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions { max_connections: 128, max_per_address: 16 }
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
}
