//! The DHT driver: one UDP socket, its reads on a thread of its own.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::RngCore;

use super::client::{DhtClient, DhtOptions};
use super::wire::MAX_DATAGRAM;
use crate::lookup::{EndLookup, Lookup, Queue};
use crate::{Discovery, DiscoveryError};

/// The longest the socket thread sleeps before checking whether it should end.
const TICK: Duration = Duration::from_millis(250);

#[derive(Debug)]
struct State {
    client: DhtClient,
    lookups: HashMap<[u8; 32], Vec<(u64, Arc<Queue>)>>,
    next_lookup: u64,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    socket: UdpSocket,
    ended: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn flush(&self, state: &mut State) {
        while let Some((to, bytes)) = state.client.poll_transmit() {
            if let Err(e) = self.socket.send_to(&bytes, to) {
                tracing::debug!(%to, error = %e, "dht: send failed");
            }
        }
        while let Some(found) = state.client.poll_event() {
            tracing::debug!(topic = %hex::encode(&found.topic[..8]), addr = %found.addr, node = %found.node, "dht: peer found");
            if let Some(list) = state.lookups.get(&found.topic) {
                for (_, q) in list {
                    q.push(SocketAddr::V4(found.addr));
                }
            }
        }
    }
}

/// Discovery over the hyperswarm 2 DHT, interoperable with
/// `@hyperswarm/dht` 4 (dht-rpc 4): announces and looks up topics at the
/// DHT nodes closest to them, starting from the bootstrap nodes. One UDP
/// socket, read on a thread of its own; dropping the last handle ends the
/// thread within a quarter second.
///
/// There is no default bootstrap list: give the nodes of the DHT you mean
/// to use (hyperswarm's public ones are `bootstrap1.hyperdht.org:49737` to
/// `bootstrap3`, resolved by you).
///
/// Cheap to clone: clones share the socket.
#[derive(Debug, Clone)]
pub struct DhtDiscovery {
    shared: Arc<Shared>,
    _owner: Arc<Owner>,
}

#[derive(Debug)]
struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.ended.store(true, Ordering::Relaxed);
        let mut state = self.0.lock();
        let topics: Vec<[u8; 32]> = state.client.topics().copied().collect();
        for t in &topics {
            state.client.stop(Instant::now(), t);
        }
        self.0.flush(&mut state);
        for (_, list) in state.lookups.drain() {
            for (_, q) in list {
                q.close();
            }
        }
    }
}

impl DhtDiscovery {
    /// Binds a UDP socket to `bind` (port 0: any) and starts its thread.
    pub fn new(bind: SocketAddrV4, opts: DhtOptions) -> Result<Self, DiscoveryError> {
        let socket = UdpSocket::bind(bind)
            .and_then(|s| s.set_read_timeout(Some(TICK)).map(|()| s))
            .map_err(|source| DiscoveryError::Socket { port: bind.port(), source })?;
        let mut id = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut id);
        let first_rid = (rand::rngs::OsRng.next_u32() & 0xffff) as u16;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                client: DhtClient::new(id, first_rid, opts),
                lookups: HashMap::new(),
                next_lookup: 0,
            }),
            socket,
            ended: AtomicBool::new(false),
        });
        let reader = shared.clone();
        std::thread::Builder::new()
            .name("kappa-dht".into())
            .spawn(move || run(&reader))
            .map_err(|source| DiscoveryError::Thread { source })?;
        Ok(DhtDiscovery { _owner: Arc::new(Owner(shared.clone())), shared })
    }

    /// On any local port, with the given bootstrap nodes and default
    /// settings otherwise.
    pub fn with_bootstrap(bootstrap: Vec<SocketAddrV4>) -> Result<Self, DiscoveryError> {
        let opts = DhtOptions { bootstrap, ..DhtOptions::default() };
        Self::new(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0), opts)
    }

    /// The local address of the socket.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.shared.socket.local_addr()
    }
}

impl EndLookup for DhtDiscovery {
    fn end_lookup(&self, topic: &[u8; 32], key: u64) {
        let mut state = self.shared.lock();
        let Some(list) = state.lookups.get_mut(topic) else { return };
        list.retain(|(k, _)| *k != key);
        if list.is_empty() {
            state.lookups.remove(topic);
            state.client.stop_lookup(topic);
        }
    }
}

fn run(shared: &Shared) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while !shared.ended.load(Ordering::Relaxed) {
        let wait = match shared.lock().client.poll_timeout() {
            Some(at) => at.saturating_duration_since(Instant::now()).clamp(Duration::from_millis(1), TICK),
            None => TICK,
        };
        let _ = shared.socket.set_read_timeout(Some(wait));
        let received = shared.socket.recv_from(&mut buf);
        let now = Instant::now();
        let mut state = shared.lock();
        match received {
            Ok((n, from)) => state.client.handle_datagram(now, from, &buf[..n]),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // An ICMP "port unreachable" from an earlier send surfaces here on
            // Linux: the request is retried and given up by the client.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(e) => {
                tracing::warn!(error = %e, "dht: receive failed");
                drop(state);
                std::thread::sleep(TICK);
                continue;
            }
        }
        state.client.handle_timeout(now);
        shared.flush(&mut state);
    }
}

impl Discovery for DhtDiscovery {
    type Lookup = Lookup;

    fn announce(&self, topic: [u8; 32], port: u16) -> Result<(), DiscoveryError> {
        if port == 0 {
            return Err(DiscoveryError::NoPort);
        }
        let mut state = self.shared.lock();
        state.client.announce(Instant::now(), topic, port);
        self.shared.flush(&mut state);
        Ok(())
    }

    fn lookup(&self, topic: [u8; 32]) -> Result<Lookup, DiscoveryError> {
        let queue = Arc::new(Queue::default());
        let mut state = self.shared.lock();
        let key = state.next_lookup;
        state.next_lookup += 1;
        state.lookups.entry(topic).or_default().push((key, queue.clone()));
        state.client.lookup(Instant::now(), topic);
        self.shared.flush(&mut state);
        Ok(Lookup::new(queue, topic, key, Arc::new(self.clone())))
    }

    fn stop(&self, topic: &[u8; 32]) {
        let mut state = self.shared.lock();
        state.client.stop(Instant::now(), topic);
        self.shared.flush(&mut state);
        if let Some(list) = state.lookups.remove(topic) {
            for (_, q) in list {
                q.close();
            }
        }
    }
}
