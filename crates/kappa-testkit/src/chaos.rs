//! A chaos proxy: a loopback TCP relay that cuts the byte stream into random
//! pieces and delays each at random, in each direction, from a seed. Order is
//! kept (it is TCP), and an end of stream is passed on as a half-close, so
//! both peers see every legal timing of the same bytes. Delays are bounded
//! (a budget of 100 ms plus a fifth of the connection's age) so bulk transfers
//! still end at a fair rate.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::pair::Rng;

/// A running proxy (see the module docs); stops accepting when dropped.
#[derive(Debug)]
pub struct ChaosProxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    relayed: Arc<AtomicU64>,
    accept: Option<JoinHandle<()>>,
}

/// How a proxy cuts and delays.
#[derive(Debug, Clone, Copy)]
pub struct Chaos {
    /// The seed of every choice.
    pub seed: u64,
    /// Largest piece passed on at once.
    pub max_chunk: usize,
    /// Longest delay before a piece.
    pub max_delay: Duration,
}

impl Chaos {
    /// Pieces of 1 byte to 1500 bytes, delays up to 3 ms, chosen by `seed`.
    pub fn new(seed: u64) -> Chaos {
        let mut r = Rng::new(seed);
        Chaos { seed, max_chunk: 1 + r.below(1500) as usize, max_delay: Duration::from_micros(r.below(3000)) }
    }
}

/// Delays add up to at most this much beyond a fifth of a connection's age,
/// so the first exchanges see every timing and a bulk transfer still ends at
/// a fair rate (an unbounded delay per piece of a byte or two would slow it
/// to a few KB/s, and the peers' own deadlines would end it instead).
const DELAY_BUDGET: Duration = Duration::from_millis(100);

fn relay(mut from: TcpStream, mut to: TcpStream, mut rng: Rng, chaos: Chaos, relayed: Arc<AtomicU64>) {
    let mut buf = vec![0u8; 64 * 1024];
    let started = std::time::Instant::now();
    let mut slept = Duration::ZERO;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            let k = (1 + rng.below(chaos.max_chunk as u64) as usize).min(rest.len());
            // A third of the pieces go at once, the others after a delay.
            if !rng.chance(1, 3) {
                let d = Duration::from_nanos(rng.below(chaos.max_delay.as_nanos() as u64 + 1));
                if slept + d <= DELAY_BUDGET + started.elapsed() / 5 {
                    std::thread::sleep(d);
                    slept += d;
                }
            }
            if to.write_all(&rest[..k]).is_err() {
                let _ = from.shutdown(Shutdown::Both);
                return;
            }
            relayed.fetch_add(k as u64, Ordering::Relaxed);
            rest = &rest[k..];
        }
    }
    // Pass the end on (a half-close), as the peer did.
    let _ = to.shutdown(Shutdown::Write);
}

impl ChaosProxy {
    /// Listens on 127.0.0.1 (a free port) and relays every connection to
    /// `target` with `chaos`.
    ///
    /// # Errors
    /// If it cannot listen.
    pub fn start(target: SocketAddr, chaos: Chaos) -> std::io::Result<ChaosProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let relayed = Arc::new(AtomicU64::new(0));
        let (s, r) = (stop.clone(), relayed.clone());
        let accept = std::thread::spawn(move || {
            let mut conn = 0u64;
            loop {
                // Once stopped, it still takes what already connected (a
                // client's connect returns before we accept), then ends.
                let stopping = s.load(Ordering::SeqCst);
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if stopping {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    Err(_) if stopping => break,
                    Err(_) => continue,
                };
                conn += 1;
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect(target) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else { continue };
                let up = Rng::new(chaos.seed ^ conn.wrapping_mul(0x51));
                let down = Rng::new(chaos.seed ^ conn.wrapping_mul(0x93) ^ 0xd0);
                let (r1, r2) = (r.clone(), r.clone());
                std::thread::spawn(move || relay(client, server, up, chaos, r1));
                std::thread::spawn(move || relay(s2, c2, down, chaos, r2));
            }
        });
        Ok(ChaosProxy { addr, stop, relayed, accept: Some(accept) })
    }

    /// Where to connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Bytes relayed so far (both directions).
    pub fn relayed(&self) -> u64 {
        self.relayed.load(Ordering::Relaxed)
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// The environment variable that routes the interop suites through chaos
/// proxies: its value is the base seed (see [`route`]).
pub const CHAOS_SEED_VAR: &str = "KAPPA_CHAOS_SEED";

/// A way to a listening peer: straight to it, or through a [`ChaosProxy`]
/// (kept running while the route lives).
#[derive(Debug)]
pub struct Route {
    addr: SocketAddr,
    proxy: Option<ChaosProxy>,
    seed_used: u64,
}

impl Route {
    /// Where to connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port to connect to (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The proxy's seed, if the route goes through one.
    pub fn seed(&self) -> Option<u64> {
        self.proxy.as_ref().map(|_| self.seed_used)
    }
}

static ROUTES: AtomicU64 = AtomicU64::new(0);

/// The route an interop test dials `target` by: straight, unless
/// [`CHAOS_SEED_VAR`] holds a number, then through a chaos proxy seeded from
/// it and the count of routes made so far in this process (so each
/// connection of a run cuts and delays differently, and a run replays from
/// its seed). `cargo xtask soak interop` runs the JS interop suites this way.
///
/// # Panics
/// If the proxy cannot listen (the test cannot run as asked).
pub fn route(target: SocketAddr) -> Route {
    let Some(base) = std::env::var(CHAOS_SEED_VAR).ok().and_then(|s| s.trim().parse::<u64>().ok()) else {
        return Route { addr: target, proxy: None, seed_used: 0 };
    };
    let n = ROUTES.fetch_add(1, Ordering::SeqCst);
    let seed = base ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    #[allow(clippy::expect_used)]
    let proxy = ChaosProxy::start(target, Chaos::new(seed)).expect("start a chaos proxy on 127.0.0.1");
    Route { addr: proxy.addr(), proxy: Some(proxy), seed_used: seed }
}

/// [`route`] to a port on 127.0.0.1.
pub fn route_to_port(port: u16) -> Route {
    route(SocketAddr::from(([127, 0, 0, 1], port)))
}
