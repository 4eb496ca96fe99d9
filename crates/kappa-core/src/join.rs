//! Joining the swarm of a database: announce and look up its topic, and
//! replicate live with every peer found ([`Kappa::join`]).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use futures::io::{AsyncRead, AsyncWrite};
use futures::stream::{FuturesUnordered, StreamExt};
use kappa_discovery::Discovery;
use kappa_protocol::Wire;

use crate::{Kappa, KappaError, ReplicateOptions, SyncReport};

/// How [`Kappa::join`] keeps up its sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JoinOptions {
    /// Most peers dialled at once (default 32); a peer found beyond is
    /// reported as [`JoinEvent::OverCap`] and not dialled.
    pub max_peers: usize,
    /// The wait before the first redial of a peer whose session dropped
    /// (default 500 ms); doubled at each failure in a row.
    pub backoff_min: Duration,
    /// The longest wait between redials (default 30 s).
    pub backoff_max: Duration,
    /// Redials in a row that fail before the peer is given up (default 6);
    /// it is dialled again when it is found again.
    pub max_retries: u32,
    /// The wire generations spoken (default [`Wire::Auto`]).
    pub wire: Wire,
    /// How long a dialled peer may go without sending us a frame, or without
    /// reading any of what we send, before its session fails (default 20 s,
    /// as [`ServeOptions::timeout`](crate::ServeOptions::timeout) for
    /// accepted sessions). A peer that accepts the connection and then goes
    /// silent is dropped after this long and redialled with backoff like any
    /// session that failed; the other sessions go on meanwhile.
    ///
    /// ```
    /// use std::time::Duration;
    /// use kappa_core::JoinOptions;
    ///
    /// let opts = JoinOptions::default().timeout(Duration::from_secs(5));
    /// assert_eq!(opts.timeout, Duration::from_secs(5));
    /// // Keep-alives go out at half the timeout unless set.
    /// assert_eq!(opts.keep_alive, None);
    /// let opts = opts.keep_alive(Duration::from_secs(1));
    /// assert_eq!(opts.keep_alive, Some(Duration::from_secs(1)));
    /// ```
    pub timeout: Duration,
    /// Send a keep-alive after sending nothing for this long (default `None`:
    /// half of [`timeout`](Self::timeout), so a peer with the same timeout
    /// never times us out).
    pub keep_alive: Option<Duration>,
}

impl Default for JoinOptions {
    fn default() -> Self {
        JoinOptions {
            max_peers: 32,
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            max_retries: 6,
            wire: Wire::Auto,
            timeout: Duration::from_secs(20),
            keep_alive: None,
        }
    }
}

impl JoinOptions {
    /// Sets [`max_peers`](Self::max_peers).
    pub fn max_peers(mut self, n: usize) -> Self {
        self.max_peers = n;
        self
    }

    /// Sets [`backoff_min`](Self::backoff_min) and [`backoff_max`](Self::backoff_max).
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max;
        self
    }

    /// Sets [`max_retries`](Self::max_retries).
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// Sets [`wire`](Self::wire).
    pub fn wire(mut self, wire: Wire) -> Self {
        self.wire = wire;
        self
    }

    /// Sets [`timeout`](Self::timeout).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets [`keep_alive`](Self::keep_alive).
    pub fn keep_alive(mut self, every: Duration) -> Self {
        self.keep_alive = Some(every);
        self
    }
}

/// What [`Kappa::join`] did.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per session: boxing buys nothing
#[non_exhaustive]
pub enum JoinEvent {
    /// Discovery found a peer that has no session with us: it is dialled.
    Found(SocketAddr),
    /// A peer was found while [`JoinOptions::max_peers`] sessions are open.
    OverCap(SocketAddr),
    /// Dialling a peer failed; `retry_in` says when it is dialled again
    /// (`None`: given up until it is found again).
    ConnectFailed {
        /// The peer.
        peer: SocketAddr,
        /// What the dialler said.
        error: std::io::Error,
        /// When the next attempt is.
        retry_in: Option<Duration>,
    },
    /// A session with a peer started.
    Connected(SocketAddr),
    /// A session with a peer ended (the peer closed it, or it failed);
    /// `retry_in` as for `ConnectFailed`.
    Ended {
        /// The peer.
        peer: SocketAddr,
        /// How the session ended.
        result: Result<SyncReport, KappaError>,
        /// When the peer is dialled again.
        retry_in: Option<Duration>,
    },
}

#[derive(Debug, Default)]
struct PeerState {
    /// Dialling, in a session, or waiting to redial.
    busy: bool,
    failures: u32,
}

type Session = Pin<Box<dyn Future<Output = Result<SyncReport, KappaError>> + Send>>;

#[allow(clippy::large_enum_variant)] // one per session
enum Step {
    Connected(SocketAddr, Session),
    ConnectFailed(SocketAddr, std::io::Error),
    Ended(SocketAddr, Result<SyncReport, KappaError>),
    Redial(SocketAddr),
}

type StepFuture = Pin<Box<dyn Future<Output = Step> + Send>>;

/// Stops the topic when the join ends or is dropped.
struct Leave<'a, D: Discovery>(&'a D, [u8; 32]);

impl<D: Discovery> Drop for Leave<'_, D> {
    fn drop(&mut self) {
        self.0.stop(&self.1);
    }
}

impl Kappa {
    /// The topic peers of this database meet on: the discovery key of its
    /// shared key (`BLAKE2b-256("hypercore", key = shared key)`), what Cabal
    /// joins on hyperswarm for a cabal key. It does not reveal the shared key.
    pub fn topic(&self) -> [u8; 32] {
        kappa_log::discovery_key(&self.shared_key())
    }

    /// Joins this database's swarm: announces [`topic`](Self::topic) with
    /// `port` (if given: the port a server of ours accepts on, such as
    /// [`serve_with`](Self::serve_with) over a listener; `None` only looks
    /// up), looks it up, and replicates live with every peer found, dialled
    /// with `connect`. One session per peer address; a session that drops is
    /// redialled with backoff; at most [`JoinOptions::max_peers`] at once.
    /// Each step is reported to `on_event`.
    ///
    /// Runs until the lookup ends (the discovery was stopped) and the last
    /// session ended; drop the future to leave (that closes every session and
    /// stops the topic). Nothing is spawned: it runs on any executor.
    ///
    /// Two peers that find each other may both dial: they then hold two
    /// sessions, which replicate the same feeds (harmless, hyperswarm does
    /// the same).
    pub async fn join<D, C, F, S>(
        &self,
        discovery: &D,
        port: Option<u16>,
        mut connect: C,
        opts: JoinOptions,
        mut on_event: impl FnMut(JoinEvent),
    ) -> Result<(), KappaError>
    where
        D: Discovery,
        C: FnMut(SocketAddr) -> F,
        F: Future<Output = std::io::Result<S>> + Send + 'static,
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.check_open()?;
        let topic = self.topic();
        let _leave = Leave(discovery, topic);
        if let Some(port) = port {
            discovery.announce(topic, port).map_err(KappaError::Discovery)?;
        }
        let mut lookup = discovery.lookup(topic).map_err(KappaError::Discovery)?.fuse();
        let mut peers: HashMap<SocketAddr, PeerState> = HashMap::new();
        let mut steps: FuturesUnordered<StepFuture> = FuturesUnordered::new();
        let mut lookup_done = false;
        let (wire, timeout, keep_alive) = (opts.wire, opts.timeout, opts.keep_alive);
        let dial = |peer: SocketAddr, connect: &mut C| -> StepFuture {
            let conn = connect(peer);
            let kappa = self.clone();
            Box::pin(async move {
                let stream = match conn.await {
                    Ok(stream) => stream,
                    Err(e) => return Step::ConnectFailed(peer, e),
                };
                let mut ropts = ReplicateOptions::new(true).live(true).wire(wire).timeout(timeout);
                ropts.keep_alive = keep_alive;
                match kappa.replicate_session(stream, ropts) {
                    Ok((session, _handle)) => Step::Connected(peer, Box::pin(session)),
                    Err(e) => Step::Ended(peer, Err(e)),
                }
            })
        };
        loop {
            if lookup_done && steps.is_empty() {
                return Ok(());
            }
            futures::select! {
                found = lookup.next() => match found {
                    Some(peer) => {
                        let state = peers.entry(peer).or_default();
                        if state.busy {
                            continue;
                        }
                        let open = peers.values().filter(|p| p.busy).count();
                        if open >= opts.max_peers {
                            on_event(JoinEvent::OverCap(peer));
                            continue;
                        }
                        let state = peers.entry(peer).or_default();
                        state.busy = true;
                        state.failures = 0;
                        on_event(JoinEvent::Found(peer));
                        steps.push(dial(peer, &mut connect));
                    }
                    None => lookup_done = true,
                },
                step = steps.select_next_some() => match step {
                    Step::Connected(peer, session) => {
                        on_event(JoinEvent::Connected(peer));
                        steps.push(Box::pin(async move { Step::Ended(peer, session.await) }));
                    }
                    Step::Redial(peer) => steps.push(dial(peer, &mut connect)),
                    Step::ConnectFailed(peer, error) => {
                        let retry_in = retry(&mut peers, peer, &opts, true, &mut steps);
                        on_event(JoinEvent::ConnectFailed { peer, error, retry_in });
                    }
                    Step::Ended(peer, result) => {
                        let retry_in = retry(&mut peers, peer, &opts, result.is_err(), &mut steps);
                        on_event(JoinEvent::Ended { peer, result, retry_in });
                    }
                },
            }
        }
    }
}

/// Schedules a redial of `peer` after a failure (or a clean end), or gives it
/// up; returns the wait.
fn retry(
    peers: &mut HashMap<SocketAddr, PeerState>,
    peer: SocketAddr,
    opts: &JoinOptions,
    failed: bool,
    steps: &mut FuturesUnordered<StepFuture>,
) -> Option<Duration> {
    let state = peers.entry(peer).or_default();
    state.failures = if failed { state.failures + 1 } else { 0 };
    if state.failures > opts.max_retries {
        peers.remove(&peer);
        return None;
    }
    let wait = opts
        .backoff_min
        .saturating_mul(1u32 << state.failures.saturating_sub(1).min(16))
        .min(opts.backoff_max);
    steps.push(Box::pin(async move {
        futures_timer::Delay::new(wait).await;
        Step::Redial(peer)
    }));
    Some(wait)
}
