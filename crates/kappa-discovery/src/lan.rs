//! The LAN driver: one UDP socket on the mDNS group, its reads on a thread.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::RngCore;
use socket2::{Domain, Protocol, Socket, Type};

use crate::codec::MAX_PACKET;
use crate::lookup::{EndLookup, Lookup, Queue};
use crate::machine::{Mdns, Requery};
use crate::{Discovery, DiscoveryError};

/// The mDNS group.
pub const MDNS_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);
/// The mDNS port.
pub const MDNS_PORT: u16 = 5353;
/// The longest the socket thread sleeps before checking whether it should end.
const TICK: Duration = Duration::from_millis(250);

/// Settings of a [`LanDiscovery`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LanOptions {
    /// The interface to join the group on and send from, by its IPv4 address
    /// (default unspecified: the kernel picks by its route to 224.0.0.251).
    pub interface: Ipv4Addr,
    /// The UDP port (default 5353; another only for tests).
    pub port: u16,
    /// How often a lookup asks again (default 30 to 60 s, as hyperswarm).
    pub requery: Requery,
}

impl Default for LanOptions {
    fn default() -> Self {
        LanOptions { interface: Ipv4Addr::UNSPECIFIED, port: MDNS_PORT, requery: Requery::default() }
    }
}

impl LanOptions {
    /// Sets [`interface`](Self::interface).
    pub fn interface(mut self, ip: Ipv4Addr) -> Self {
        self.interface = ip;
        self
    }

    /// Sets [`port`](Self::port).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Sets [`requery`](Self::requery).
    pub fn requery(mut self, min: Duration, max: Duration) -> Self {
        self.requery = Requery { min, max };
        self
    }
}

#[derive(Debug)]
struct State {
    machine: Mdns,
    /// The lookups of each topic.
    lookups: HashMap<[u8; 32], Vec<(u64, Arc<Queue>)>>,
    next_lookup: u64,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    socket: UdpSocket,
    group: SocketAddr,
    ended: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends what the machine has queued and hands found peers to lookups.
    fn flush(&self, state: &mut State) {
        while let Some(bytes) = state.machine.poll_transmit() {
            if let Err(e) = self.socket.send_to(&bytes, self.group) {
                tracing::debug!(error = %e, "mdns: send failed");
            }
        }
        while let Some(found) = state.machine.poll_event() {
            tracing::debug!(topic = %hex::encode(&found.topic[..8]), addr = %found.addr, "mdns: peer found");
            if let Some(list) = state.lookups.get(&found.topic) {
                for (_, q) in list {
                    q.push(found.addr);
                }
            }
        }
    }
}

/// LAN discovery interoperable with hyperswarm 2 (@hyperswarm/discovery 2 over
/// multicast-dns 7): announces and looks up topics with multicast DNS on
/// 224.0.0.251:5353. One UDP socket, read on a thread of its own; dropping the
/// last handle ends the thread within a quarter second and closes the socket.
///
/// Cheap to clone: clones share the socket.
#[derive(Debug, Clone)]
pub struct LanDiscovery {
    shared: Arc<Shared>,
    _owner: Arc<Owner>,
}

/// Ends the thread when the last [`LanDiscovery`] clone goes.
#[derive(Debug)]
struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.ended.store(true, Ordering::Relaxed);
        let mut state = self.0.lock();
        for (_, list) in state.lookups.drain() {
            for (_, q) in list {
                q.close();
            }
        }
    }
}

fn socket(opts: &LanOptions) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
    s.set_reuse_port(true)?;
    s.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, opts.port).into())?;
    s.join_multicast_v4(&MDNS_GROUP, &opts.interface)?;
    s.set_multicast_loop_v4(true)?;
    s.set_multicast_ttl_v4(255)?;
    if !opts.interface.is_unspecified() {
        s.set_multicast_if_v4(&opts.interface)?;
    }
    s.set_read_timeout(Some(TICK))?;
    Ok(s.into())
}

impl LanDiscovery {
    /// Opens the socket and starts its thread.
    pub fn new(opts: LanOptions) -> Result<Self, DiscoveryError> {
        let socket = socket(&opts).map_err(|source| DiscoveryError::Socket { port: opts.port, source })?;
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                machine: Mdns::new(seed, opts.requery),
                lookups: HashMap::new(),
                next_lookup: 0,
            }),
            socket,
            group: SocketAddrV4::new(MDNS_GROUP, opts.port).into(),
            ended: AtomicBool::new(false),
        });
        let reader = shared.clone();
        std::thread::Builder::new()
            .name("kappa-mdns".into())
            .spawn(move || run(&reader))
            .map_err(|source| DiscoveryError::Thread { source })?;
        Ok(LanDiscovery { _owner: Arc::new(Owner(shared.clone())), shared })
    }

    /// On the default port with default settings.
    pub fn open() -> Result<Self, DiscoveryError> {
        Self::new(LanOptions::default())
    }

    /// Stops announcing `topic` (its lookups go on).
    pub fn unannounce(&self, topic: &[u8; 32]) {
        let mut state = self.shared.lock();
        state.machine.stop_announce(topic);
    }

    /// Queries `topic` again now (if it is being looked up), instead of at
    /// the next re-query.
    pub fn refresh(&self, topic: &[u8; 32]) {
        let mut state = self.shared.lock();
        state.machine.requery(Instant::now(), topic);
        self.shared.flush(&mut state);
    }
}

impl EndLookup for LanDiscovery {
    fn end_lookup(&self, topic: &[u8; 32], key: u64) {
        let mut state = self.shared.lock();
        let Some(list) = state.lookups.get_mut(topic) else { return };
        list.retain(|(k, _)| *k != key);
        if list.is_empty() {
            state.lookups.remove(topic);
            state.machine.stop_lookup(topic);
        }
    }
}

/// The socket thread: reads datagrams, fires timers.
fn run(shared: &Shared) {
    let mut buf = vec![0u8; MAX_PACKET + 1];
    let socket = &shared.socket;
    while !shared.ended.load(Ordering::Relaxed) {
        let wait = {
            let state = shared.lock();
            match state.machine.poll_timeout() {
                Some(at) => {
                    at.saturating_duration_since(Instant::now()).clamp(Duration::from_millis(1), TICK)
                }
                None => TICK,
            }
        };
        let _ = socket.set_read_timeout(Some(wait));
        let received = socket.recv_from(&mut buf);
        let now = Instant::now();
        let mut state = shared.lock();
        match received {
            Ok((n, from)) => {
                if let Err(e) = state.machine.handle_packet(now, from, &buf[..n]) {
                    tracing::trace!(%from, error = %e, "mdns: packet ignored");
                }
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!(error = %e, "mdns: receive failed");
                drop(state);
                std::thread::sleep(TICK);
                continue;
            }
        }
        state.machine.handle_timeout(now);
        shared.flush(&mut state);
    }
}

impl Discovery for LanDiscovery {
    type Lookup = Lookup;

    fn announce(&self, topic: [u8; 32], port: u16) -> Result<(), DiscoveryError> {
        if port == 0 {
            return Err(DiscoveryError::NoPort);
        }
        let mut state = self.shared.lock();
        state.machine.announce(topic, port);
        self.shared.flush(&mut state);
        Ok(())
    }

    fn lookup(&self, topic: [u8; 32]) -> Result<Lookup, DiscoveryError> {
        let queue = Arc::new(Queue::default());
        let mut state = self.shared.lock();
        let key = state.next_lookup;
        state.next_lookup += 1;
        state.lookups.entry(topic).or_default().push((key, queue.clone()));
        state.machine.lookup(Instant::now(), topic);
        self.shared.flush(&mut state);
        Ok(Lookup::new(queue, topic, key, Arc::new(self.clone())))
    }

    fn stop(&self, topic: &[u8; 32]) {
        let mut state = self.shared.lock();
        state.machine.stop(topic);
        if let Some(list) = state.lookups.remove(topic) {
            for (_, q) in list {
                q.close();
            }
        }
    }
}
