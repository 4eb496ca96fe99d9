//! Replication over TCP: `serve` (live, every peer that connects) and `sync`
//! (once, non-live).

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_std::net::{TcpListener, TcpStream};
use futures::channel::mpsc;
use futures::StreamExt;
use kappa_core::protocol::{Generation, Selection, SessionHandle, Wire};
use kappa_core::{Kappa, KappaError, ReplicateOptions, SyncReport};
use serde_json::{json, Value};

use crate::error::{CliError, Result};
use crate::output::short_id;

/// Resolves `addr` (`HOST:PORT`); a malformed one is a usage error.
pub(crate) fn resolve(addr: &str) -> Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| {
            CliError::Usage(format!("bad address {addr:?}: {e} (expected HOST:PORT, e.g. 127.0.0.1:7000)"))
        })?
        .collect();
    if addrs.is_empty() {
        return Err(CliError::Usage(format!("bad address {addr:?}: it resolves to nothing")));
    }
    Ok(addrs)
}

/// Binds a listener on `addr`.
pub(crate) async fn bind(addr: &str) -> Result<TcpListener> {
    let addrs = resolve(addr)?;
    TcpListener::bind(&addrs[..])
        .await
        .map_err(|e| CliError::Runtime(format!("cannot listen on {addr}: {e}")))
}

/// Connects to `addr`, giving up after `timeout`.
pub(crate) async fn connect(addr: &str, timeout: Duration) -> Result<TcpStream> {
    let addrs = resolve(addr)?;
    match async_std::future::timeout(timeout, TcpStream::connect(&addrs[..])).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(e)) => Err(CliError::Runtime(format!("cannot reach {addr}: {e}"))),
        Err(_) => Err(CliError::Runtime(format!(
            "cannot reach {addr}: no answer within {} ms",
            timeout.as_millis()
        ))),
    }
}

/// What moved in a session, as JSON.
pub(crate) fn report_json(kappa: &Kappa, r: &SyncReport) -> Value {
    let feeds: Vec<Value> = r
        .feeds
        .iter()
        .map(|(k, s)| {
            json!({
                "key": k.to_hex(),
                "name": kappa.multifeed().name_of(k),
                "new": r.new_feeds.contains(k),
                "blocks_received": s.blocks_down,
                "blocks_sent": s.blocks_up,
            })
        })
        .collect();
    json!({
        "blocks_received": r.blocks_received(),
        "blocks_sent": r.blocks_sent(),
        "new_feeds": r.new_feeds.iter().map(|k| k.to_hex()).collect::<Vec<_>>(),
        "bytes_received": r.bytes_received,
        "bytes_sent": r.bytes_sent,
        "duration_ms": r.duration.as_millis() as u64,
        "feeds": feeds,
        "wire": generation_json(r.generation),
        "withheld": r.withheld.iter().map(|(k, why)| json!({"key": k.to_hex(), "reason": why})).collect::<Vec<_>>(),
    })
}

fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// What moved in a session, in one line.
pub(crate) fn report_summary(r: &SyncReport) -> String {
    let wire = match r.generation {
        Some(g) => format!(", over the {g} wire"),
        None => String::new(),
    };
    format!(
        "received {}, sent {}, {} ({:.2}s{wire})",
        plural(r.blocks_received(), "block"),
        plural(r.blocks_sent(), "block"),
        plural(r.new_feeds.len() as u64, "new feed"),
        r.duration.as_secs_f64()
    )
}

/// The generation a session spoke, for JSON: `6`, `7` or `null`.
fn generation_json(g: Option<Generation>) -> Value {
    g.map_or(Value::Null, |g| json!(g.number()))
}

/// Per feed that something moved on, one line.
pub(crate) fn report_feed_lines(kappa: &Kappa, r: &SyncReport) -> Vec<String> {
    let mut lines: Vec<String> = r
        .feeds
        .iter()
        .filter(|(_, s)| s.blocks_down > 0 || s.blocks_up > 0)
        .map(|(k, s)| {
            let name = kappa.multifeed().name_of(k).unwrap_or_else(|| "remote".into());
            let new = if r.new_feeds.contains(k) { ", new" } else { "" };
            format!(
                "  feed {} ({name}{new}): {} received, {} sent",
                short_id(&k.to_hex()),
                s.blocks_down,
                s.blocks_up
            )
        })
        .collect();
    for (k, why) in &r.withheld {
        let name = kappa.multifeed().name_of(k).unwrap_or_else(|| "remote".into());
        lines.push(format!("  feed {} ({name}): not offered to this peer: {why}", short_id(&k.to_hex())));
    }
    for k in &r.refused {
        lines.push(format!("  feed {}: offered by the peer, refused: blocked here", short_id(&k.to_hex())));
    }
    lines
}

/// Explains a failed replication, with a hint that matches its cause.
pub(crate) fn replication_error(peer: &str, e: &KappaError) -> CliError {
    let message = format!("replication with {peer} failed: {e}");
    match hint(e) {
        Some(h) => CliError::Runtime(format!("{message} ({h})")),
        None => CliError::Runtime(message),
    }
}

const KEY_HINT: &str = "both sides must use the same shared key: compare `kappa key`";

/// What to tell the user about a failed replication, by its cause. Only a
/// failure a peer with another shared key causes gets the shared-key hint.
pub(crate) fn hint(e: &KappaError) -> Option<String> {
    use kappa_core::multifeed::MultifeedError;
    use kappa_core::protocol::ProtocolError as P;
    let pe = match e {
        KappaError::Multifeed(MultifeedError::Replication(pe)) => pe,
        KappaError::Multifeed(MultifeedError::Feed { .. } | MultifeedError::Storage(_))
        | KappaError::Log(_) => return Some(storage_hint(&e.to_string())),
        _ => return None,
    };
    Some(match pe {
        P::BadCapability(_) => format!("the peer's proof of the shared key failed: {KEY_HINT}"),
        P::Rejected(m) if m.contains("shared key") => KEY_HINT.to_owned(),
        P::Rejected(_) => return None,
        P::NotVerified(_) => format!(
            "the peer never opened the exchange for our shared key: it may use another shared key \
             ({KEY_HINT}), or not be a kappa peer"
        ),
        P::EndedUnverified { during_handshake: true, .. } => {
            "the peer closed the connection during the \
             encrypted handshake: it may be at its connection limit (try again later), or not be a kappa peer"
                .to_owned()
        }
        P::EndedUnverified { .. } => {
            format!("the peer hung up before proving the shared key: it may use another one ({KEY_HINT})")
        }
        P::Handshake(kappa_core::protocol::HandshakeError::BothGenerations { .. }) => {
            "the peer's handshake answer fails in both wire generations (kappa-core 6 and 7): it is not a \
             kappa peer, or the bytes were damaged on the way (a peer with another shared key gets through \
             the handshake)"
                .to_owned()
        }
        P::Handshake(_) => "the encrypted handshake failed: the peer may speak another wire generation \
             (`--wire auto` tries kappa-core 6 and 7), or not be a kappa peer"
            .to_owned(),
        P::HandshakeAbandoned { answered_in, .. } => format!(
            "the peer may speak {}: it is answered in that generation when it connects again",
            answered_in.other()
        ),
        P::Timeout(_) | P::Stalled { .. } | P::NotReading { .. } => {
            "the peer stopped answering: check the network and try again".to_owned()
        }
        P::Unresponsive { .. } => "the peer stayed connected but did not answer the feed exchange: \
                                   it may be overloaded or misbehaving; try again later"
            .to_owned(),
        P::UnexpectedEof | P::Io(_) => {
            "the connection was lost before the sync finished: try again (what arrived is kept)".to_owned()
        }
        P::BadBlock { .. } => {
            "the peer sent data that failed verification (a damaged or forged log): nothing of it was stored"
                .to_owned()
        }
        P::Storage(e) => storage_hint(&e.to_string()),
        P::Frame(_)
        | P::Malformed(_)
        | P::OutOfRange(_)
        | P::UnknownChannel(_)
        | P::UnverifiedLimit { .. } => {
            "the peer broke the protocol (an incompatible or misbehaving peer)".to_owned()
        }
        _ => return None,
    })
}

/// A hint for a local storage failure (the disk full, or another I/O error).
fn storage_hint(message: &str) -> String {
    let m = message.to_ascii_lowercase();
    if m.contains("no space left") || m.contains("disk full") || m.contains("quota") {
        "the disk is full: free space and sync again (what was stored is kept)".to_owned()
    } else {
        "storing what arrived failed (see the error above); the database keeps what was stored".to_owned()
    }
}

/// Something a server did.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per session: boxing buys nothing
pub(crate) enum ServeEvent {
    /// A peer connected; its live session started.
    Connected {
        /// The peer's address.
        peer: SocketAddr,
    },
    /// A peer's session ended well.
    Done {
        /// The peer's address.
        peer: SocketAddr,
        /// What moved.
        report: SyncReport,
    },
    /// A connection was closed at once: a cap was reached.
    Refused {
        /// The peer's address.
        peer: SocketAddr,
        /// Which cap.
        refusal: kappa_core::Refusal,
    },
    /// A peer's session failed.
    Failed {
        /// The peer's address.
        peer: SocketAddr,
        /// Why.
        error: String,
    },
    /// Accepting a connection failed (the server goes on).
    AcceptFailed(String),
    /// The server stops.
    Stopping(&'static str),
}

#[allow(clippy::large_enum_variant)] // one per session
enum Msg {
    Started { peer: SocketAddr },
    Refused { peer: SocketAddr, refusal: kappa_core::Refusal },
    Ended { peer: SocketAddr, result: std::result::Result<SyncReport, KappaError> },
    AcceptError(String),
    Stop,
}

/// When a server stops, and how many sessions it holds at once.
#[derive(Debug, Default)]
pub(crate) struct ServeLimits {
    /// After this many sessions have ended.
    pub(crate) max_peers: Option<usize>,
    /// Once no peer has been connected for this long.
    pub(crate) idle: Option<Duration>,
    /// Caps on the sessions at once (in all, per address).
    pub(crate) caps: kappa_core::ServeOptions,
}

type Handles = Arc<Mutex<HashMap<u64, SessionHandle>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Accepts connections on `listener`, replicating live with each peer in its own
/// task, until a limit is reached or `stop` yields. Reports through `on_event`.
pub(crate) async fn serve_loop(
    kappa: Kappa,
    listener: TcpListener,
    limits: ServeLimits,
    stop: Option<mpsc::UnboundedReceiver<()>>,
    mut on_event: impl FnMut(ServeEvent) -> Result<()>,
) -> Result<()> {
    let (tx, mut rx) = mpsc::unbounded::<Msg>();
    let handles: Handles = Arc::new(Mutex::new(HashMap::new()));
    let gate = kappa_core::ConnectionGate::new(limits.caps.clone());
    let memory = kappa_core::GenerationMemory::for_options(&limits.caps);
    let (wire, timeout) = (limits.caps.wire, limits.caps.timeout);
    let accept = {
        let tx = tx.clone();
        let handles = handles.clone();
        let kappa = kappa.clone();
        async_std::task::spawn(async move {
            let mut next_id = 0u64;
            loop {
                match listener.accept().await {
                    Ok((stream, peer)) => {
                        // Over a cap: closed before the handshake.
                        let permit = match gate.admit(Some(peer.ip())) {
                            Ok(p) => p,
                            Err(refusal) => {
                                drop(stream);
                                let _ = tx.unbounded_send(Msg::Refused { peer, refusal });
                                continue;
                            }
                        };
                        next_id += 1;
                        let id = next_id;
                        let _ = stream.set_nodelay(true);
                        let _ = tx.unbounded_send(Msg::Started { peer });
                        let ropts = ReplicateOptions::new(false)
                            .live(true)
                            .wire(wire)
                            .timeout(timeout)
                            .responder_generation(memory.answer_for(Some(peer.ip())))
                            .peer(peer.to_string());
                        match kappa.replicate_session(stream, ropts) {
                            Ok((fut, handle)) => {
                                lock(&handles).insert(id, handle);
                                let tx = tx.clone();
                                let handles = handles.clone();
                                let memory = memory.clone();
                                async_std::task::spawn(async move {
                                    let result = fut.await;
                                    drop(permit);
                                    memory.record(Some(peer.ip()), &result);
                                    lock(&handles).remove(&id);
                                    let _ = tx.unbounded_send(Msg::Ended { peer, result });
                                });
                            }
                            Err(result) => {
                                let _ = tx.unbounded_send(Msg::Ended { peer, result: Err(result) });
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.unbounded_send(Msg::AcceptError(e.to_string()));
                        async_std::task::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        })
    };
    if let Some(mut stop) = stop {
        let tx = tx.clone();
        async_std::task::spawn(async move {
            if stop.next().await.is_some() {
                let _ = tx.unbounded_send(Msg::Stop);
            }
        });
    }
    drop(tx);

    let mut active = 0usize;
    let mut finished = 0usize;
    let mut last_activity = Instant::now();
    let reason = loop {
        if limits.max_peers.is_some_and(|max| finished >= max) {
            break "the peer limit was reached";
        }
        if limits.idle.is_some_and(|idle| active == 0 && last_activity.elapsed() >= idle) {
            break "no peer for the idle time";
        }
        match async_std::future::timeout(Duration::from_millis(50), rx.next()).await {
            Err(_) => {}
            Ok(None) => break "the listener stopped",
            Ok(Some(msg)) => {
                last_activity = Instant::now();
                if handle_msg(msg, &mut active, &mut finished, &mut on_event)? {
                    break "interrupted";
                }
            }
        }
    };
    on_event(ServeEvent::Stopping(reason))?;
    accept.cancel().await;
    for h in lock(&handles).values() {
        h.close();
    }
    // Let the sessions still open end (and report) for a moment.
    let deadline = Instant::now() + Duration::from_secs(3);
    while active > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        match async_std::future::timeout(left, rx.next()).await {
            Ok(Some(msg)) => {
                handle_msg(msg, &mut active, &mut finished, &mut on_event)?;
            }
            _ => break,
        }
    }
    Ok(())
}

/// Counts and reports one message; `true` means stop.
fn handle_msg(
    msg: Msg,
    active: &mut usize,
    finished: &mut usize,
    on_event: &mut impl FnMut(ServeEvent) -> Result<()>,
) -> Result<bool> {
    match msg {
        Msg::Started { peer } => {
            *active += 1;
            on_event(ServeEvent::Connected { peer })?;
        }
        Msg::Ended { peer, result } => {
            *active = active.saturating_sub(1);
            *finished += 1;
            match result {
                // A live session with a peer that hung up on our handshake answer
                // ends without an error, but nothing was exchanged: say why.
                Ok(SyncReport { generation: None, handshake_abandoned: Some(answered_in), .. }) => {
                    let e = kappa_core::protocol::ProtocolError::HandshakeAbandoned {
                        answered_in,
                        source: Box::new(kappa_core::protocol::ProtocolError::UnexpectedEof),
                    };
                    on_event(ServeEvent::Failed { peer, error: e.to_string() })?
                }
                Ok(report) => on_event(ServeEvent::Done { peer, report })?,
                Err(e) => on_event(ServeEvent::Failed { peer, error: e.to_string() })?,
            }
        }
        Msg::Refused { peer, refusal } => on_event(ServeEvent::Refused { peer, refusal })?,
        Msg::AcceptError(e) => on_event(ServeEvent::AcceptFailed(e))?,
        Msg::Stop => return Ok(true),
    }
    Ok(false)
}

/// `kappa serve`: logs each session in text or JSON.
pub(crate) async fn serve(
    kappa: Kappa,
    out: &crate::output::Out,
    listen: &str,
    limits: ServeLimits,
    stop: Option<mpsc::UnboundedReceiver<()>>,
    discover: &Finding,
    status_file: &std::path::Path,
) -> Result<()> {
    let listener = bind(listen).await?;
    let local = listener
        .local_addr()
        .map_err(|e| CliError::Runtime(format!("cannot read the listening address: {e}")))?;
    // The status `kappa status` reads: written before the address is printed,
    // then every second, removed when serving stops.
    crate::status::publish(&kappa, status_file, &local.to_string())?;
    let publisher = {
        let (kappa, path, local) = (kappa.clone(), status_file.to_path_buf(), local.to_string());
        async_std::task::spawn(async move {
            let mut warned = false;
            loop {
                async_std::task::sleep(crate::status::EVERY).await;
                if let Err(e) = crate::status::publish(&kappa, &path, &local) {
                    if !std::mem::replace(&mut warned, true) {
                        eprintln!("kappa: warning: {}", crate::output::escape(&e.to_string()));
                    }
                }
            }
        })
    };
    let served = serve_on(kappa, out, listener, local, limits, stop, discover).await;
    publisher.cancel().await;
    crate::status::unpublish(status_file);
    served
}

async fn serve_on(
    kappa: Kappa,
    out: &crate::output::Out,
    listener: TcpListener,
    local: SocketAddr,
    limits: ServeLimits,
    stop: Option<mpsc::UnboundedReceiver<()>>,
    discover: &Finding,
) -> Result<()> {
    out.emit(format!("listening on {local}"), || json!({"event": "listening", "addr": local.to_string()}))?;
    out.text("replicating live with every peer that connects (shared key: see `kappa key`); Ctrl-C stops")?;
    if kappa.is_seed() {
        out.emit(
            "seed mode: replicating everything, indexing nothing (views catch up when a command uses them)",
            || json!({"event": "seed_mode"}),
        )?;
    }
    let discovery = if discover.is_on() {
        Some(open_discovery(&kappa, out, Some(local.port()), discover)?)
    } else {
        None
    };
    let (wire, timeout) = (limits.caps.wire, limits.caps.timeout);
    let k = kappa.clone();
    let serving = serve_loop(kappa.clone(), listener, limits, stop, |ev| match ev {
        ServeEvent::Connected { peer } => out.emit(
            format!("peer {peer}: connected"),
            || json!({"event": "peer_connected", "peer": peer.to_string()}),
        ),
        ServeEvent::Done { peer, report } => {
            out.emit(format!("peer {peer}: done, {}", report_summary(&report)), || {
                let mut v = report_json(&k, &report);
                v["event"] = json!("peer_done");
                v["peer"] = json!(peer.to_string());
                v
            })?;
            for line in report_feed_lines(&k, &report) {
                out.text(line)?;
            }
            Ok(())
        }
        ServeEvent::Failed { peer, error } => out.emit(
            format!("peer {peer}: failed: {error}"),
            || json!({"event": "peer_failed", "peer": peer.to_string(), "error": error}),
        ),
        ServeEvent::Refused { peer, refusal } => out.emit(
            format!("peer {peer}: refused: {refusal}"),
            || json!({"event": "peer_refused", "peer": peer.to_string(), "reason": refusal.to_string()}),
        ),
        ServeEvent::AcceptFailed(e) => {
            out.emit(format!("accept failed: {e}"), || json!({"event": "accept_failed", "error": e}))
        }
        ServeEvent::Stopping(reason) => {
            out.emit(format!("stopping: {reason}"), || json!({"event": "stopping", "reason": reason}))
        }
    });
    let Some(discovery) = discovery else { return serving.await };
    // Dialled sessions get the same `--peer-timeout-ms` as accepted ones.
    let opts = kappa_core::JoinOptions::default().wire(wire).timeout(timeout);
    let joining = kappa.join(&discovery, Some(local.port()), dial, opts, |ev| join_event(&k, out, ev));
    futures::pin_mut!(serving, joining);
    match futures::future::select(serving, joining).await {
        futures::future::Either::Left((served, _)) => served,
        futures::future::Either::Right((joined, serving)) => {
            if let Err(e) = joined {
                out.emit(
                    format!("discovery stopped: {e}"),
                    || json!({"event": "discovery_stopped", "error": e.to_string()}),
                )?;
            }
            serving.await
        }
    }
}

/// How long dialling a peer found by discovery may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Dials a peer found by discovery.
async fn dial(peer: SocketAddr) -> std::io::Result<TcpStream> {
    match async_std::future::timeout(DIAL_TIMEOUT, TcpStream::connect(peer)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer within 10 s")),
    }
}

/// Where to find peers: the LAN, the DHT (its bootstrap nodes), both or
/// neither.
#[derive(Debug, Clone, Default)]
pub(crate) struct Finding {
    /// Multicast DNS on the LAN (`--discover`).
    pub(crate) lan: bool,
    /// The DHT's bootstrap nodes (`--dht`); none: no DHT.
    pub(crate) dht: Vec<std::net::SocketAddrV4>,
}

impl Finding {
    /// `--discover` and the `--dht` values, resolved (IPv4 only).
    pub(crate) fn new(lan: bool, dht: &[String]) -> Result<Self> {
        let mut nodes = Vec::new();
        for d in dht {
            let v4: Vec<std::net::SocketAddrV4> = resolve(d)?
                .into_iter()
                .filter_map(|a| match a {
                    SocketAddr::V4(a) => Some(a),
                    SocketAddr::V6(_) => None,
                })
                .collect();
            if v4.is_empty() {
                return Err(CliError::Usage(format!("--dht {d}: no IPv4 address (the DHT is IPv4 only)")));
            }
            nodes.extend(v4);
        }
        Ok(Finding { lan, dht: nodes })
    }

    /// Whether peers are looked for at all.
    pub(crate) fn is_on(&self) -> bool {
        self.lan || !self.dht.is_empty()
    }

    /// Where, in words.
    fn place(&self) -> &'static str {
        match (self.lan, self.dht.is_empty()) {
            (true, true) => "on the LAN",
            (false, false) => "on the DHT",
            _ => "on the LAN and the DHT",
        }
    }
}

/// Opens discovery (LAN, DHT or both) and says what it reveals.
fn open_discovery(
    kappa: &Kappa,
    out: &crate::output::Out,
    port: Option<u16>,
    finding: &Finding,
) -> Result<kappa_core::discovery::Joint> {
    let why = |what: &str, e: kappa_core::discovery::DiscoveryError| {
        let cause = std::error::Error::source(&e).map(|s| format!(": {s}")).unwrap_or_default();
        CliError::Runtime(format!("cannot start {what} discovery: {e}{cause}"))
    };
    let lan = match finding.lan {
        true => Some(kappa_core::discovery::LanDiscovery::open().map_err(|e| why("LAN", e))?),
        false => None,
    };
    let dht = match finding.dht.is_empty() {
        false => {
            let mut opts = kappa_core::discovery::dht::DhtOptions {
                bootstrap: finding.dht.clone(),
                ..Default::default()
            };
            if port.is_none() {
                // `sync` looks for one peer within its time limit: look again
                // every second, not every few minutes as a long-running node does.
                opts.refresh = Duration::from_secs(1);
            }
            let any = std::net::SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0);
            Some(kappa_core::discovery::DhtDiscovery::new(any, opts).map_err(|e| why("DHT", e))?)
        }
        true => None,
    };
    let topic = hex::encode(kappa.topic());
    let what = match port {
        Some(p) => format!("announcing port {p} and looking up"),
        None => "looking up".to_owned(),
    };
    let mut how = Vec::new();
    if finding.lan {
        how.push("on the LAN (multicast DNS, as hyperswarm 2)".to_owned());
    }
    if !finding.dht.is_empty() {
        let boot: Vec<String> = finding.dht.iter().map(|b| b.to_string()).collect();
        how.push(format!("on the DHT (hyperswarm 2, bootstrap {})", boot.join(", ")));
    }
    out.emit(
        format!(
            "discovery: {what} topic {topic} {}; the topic is public, the shared key is not",
            how.join(" and ")
        ),
        || {
            json!({"event": "discovery", "topic": topic, "port": port, "lan": finding.lan,
                   "dht": finding.dht.iter().map(|b| b.to_string()).collect::<Vec<_>>()})
        },
    )?;
    Ok(kappa_core::discovery::Joint::new(lan, dht))
}

/// Prints one step of joining the swarm.
fn join_event(kappa: &Kappa, out: &crate::output::Out, ev: kappa_core::JoinEvent) {
    use kappa_core::JoinEvent as J;
    let retry = |r: Option<Duration>| match r {
        Some(d) => format!("; dialling again in {:.1}s", d.as_secs_f64()),
        None => "; given up until it is found again".to_owned(),
    };
    let ms = |r: Option<Duration>| r.map(|d| d.as_millis() as u64);
    let _ = match ev {
        J::Found(peer) => out.emit(format!("peer {peer}: found, dialling"), || {
            json!({"event": "peer_found", "peer": peer.to_string()})
        }),
        J::OverCap(peer) => out.emit(format!("peer {peer}: found, not dialled (at the peer limit)"), || {
            json!({"event": "peer_over_cap", "peer": peer.to_string()})
        }),
        J::Connected(peer) => out.emit(format!("peer {peer}: connected (dialled)"), || {
            json!({"event": "peer_dialled", "peer": peer.to_string()})
        }),
        J::ConnectFailed { peer, error, retry_in } => {
            out.emit(format!("peer {peer}: cannot connect: {error}{}", retry(retry_in)), || {
                json!({"event": "peer_unreachable", "peer": peer.to_string(), "error": error.to_string(), "retry_in_ms": ms(retry_in)})
            })
        }
        J::Ended { peer, result: Ok(report), retry_in } => {
            let r = out.emit(format!("peer {peer}: done, {}{}", report_summary(&report), retry(retry_in)), || {
                let mut v = report_json(kappa, &report);
                v["event"] = json!("peer_done");
                v["peer"] = json!(peer.to_string());
                v["dialled"] = json!(true);
                v["retry_in_ms"] = json!(ms(retry_in));
                v
            });
            for line in report_feed_lines(kappa, &report) {
                let _ = out.text(line);
            }
            r
        }
        J::Ended { peer, result: Err(e), retry_in } => {
            out.emit(format!("peer {peer}: failed: {e}{}", retry(retry_in)), || {
                json!({"event": "peer_failed", "peer": peer.to_string(), "error": e.to_string(), "dialled": true, "retry_in_ms": ms(retry_in)})
            })
        }
        _ => Ok(()),
    };
}

/// `kappa sync --discover`: looks this database's topic up on the LAN and
/// connects to the first peer found that answers, within `limit`.
pub(crate) async fn discover_one(
    kappa: &Kappa,
    out: &crate::output::Out,
    finding: &Finding,
    limit: Duration,
    connect_timeout: Duration,
) -> Result<(TcpStream, String)> {
    use kappa_core::discovery::Discovery;
    let d = open_discovery(kappa, out, None, finding)?;
    let place = finding.place();
    let topic = kappa.topic();
    let mut lookup =
        d.lookup(topic).map_err(|e| CliError::Runtime(format!("cannot look up {place}: {e}")))?;
    let deadline = Instant::now() + limit;
    let mut tried = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let peer = match async_std::future::timeout(left, lookup.next()).await {
            Ok(Some(peer)) => peer,
            _ => break,
        };
        if tried.contains(&peer) {
            continue;
        }
        tried.push(peer);
        out.emit(
            format!("peer {peer}: found {place}"),
            || json!({"event": "peer_found", "peer": peer.to_string()}),
        )?;
        match connect(
            &peer.to_string(),
            connect_timeout
                .min(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(500))),
        )
        .await
        {
            Ok(s) => return Ok((s, peer.to_string())),
            Err(e) => out.emit(
                format!("peer {peer}: {e}"),
                || json!({"event": "peer_unreachable", "peer": peer.to_string(), "error": e.to_string()}),
            )?,
        }
    }
    d.stop(&topic);
    let topic = hex::encode(topic);
    Err(CliError::Runtime(if tried.is_empty() {
        format!(
            "no peer of this database was found {place} within {} ms (topic {topic}): is a peer with the same shared key running `kappa serve --discover` (or `--dht`) on this network?",
            limit.as_millis()
        )
    } else {
        format!(
            "no peer found {place} could be reached within {} ms (tried {})",
            limit.as_millis(),
            tried.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
        )
    }))
}

/// The session settings of `kappa sync`: the wire generation, and how long a
/// silent peer is waited for (`--peer-timeout-ms`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerLimits {
    pub(crate) wire: Wire,
    pub(crate) timeout: Duration,
}

impl Default for PeerLimits {
    /// Either generation, and the protocol's 20 s.
    fn default() -> Self {
        PeerLimits { wire: Wire::Auto, timeout: ReplicateOptions::new(true).timeout }
    }
}

/// Replicates once (non-live, as the initiator) over `stream`; returns when both
/// sides have everything. Against a live peer (such as `kappa serve`), which
/// never says it is done downloading, the session still ends: the peer's
/// handshake says it is live, so each feed ends once the peer holds everything
/// we have (kappa-protocol's `set_peer_live`). `selection` says which entries
/// of each feed to download (sparse unless [`Selection::All`]).
pub(crate) async fn sync_stream(
    kappa: &Kappa,
    stream: TcpStream,
    peer: &str,
    selection: Selection,
    limits: PeerLimits,
    bars: bool,
) -> Result<SyncReport> {
    let mut opts = ReplicateOptions::new(true).wire(limits.wire).peer(peer);
    opts.selection = selection;
    opts.timeout = limits.timeout;
    let (session, _handle) =
        kappa.replicate_session(stream, opts).map_err(|e| replication_error(peer, &e))?;
    crate::progress::sync(kappa, session, bars, peer).await.map_err(|e| replication_error(peer, &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_addresses_are_usage_errors() {
        assert!(matches!(resolve("no port here"), Err(CliError::Usage(_))));
        assert!(matches!(resolve("127.0.0.1:99999"), Err(CliError::Usage(_))));
        assert_eq!(resolve("127.0.0.1:7000").ok().map(|a| a.len()), Some(1));
    }

    #[test]
    fn only_a_key_mismatch_gets_the_shared_key_hint() {
        use kappa_core::log::{LogError, ProofError};
        use kappa_core::multifeed::MultifeedError;
        use kappa_core::protocol::{FrameError, FramingError, ProtocolError as P};
        use kappa_core::storage::StorageError;
        let hint_of =
            |pe: P| hint(&KappaError::Multifeed(MultifeedError::Replication(pe))).unwrap_or_default();
        let eof = || Box::new(P::UnexpectedEof);
        let disk_full = || {
            let source =
                std::io::Error::new(std::io::ErrorKind::StorageFull, "No space left on device (os error 28)");
            P::Storage(std::sync::Arc::new(LogError::Storage(StorageError::Io {
                op: "writing",
                path: "0/data".into(),
                source,
            })))
        };
        for keyish in [
            P::BadCapability("ab".into()),
            P::Rejected("Exchange key did not match remote (the peer uses another shared key)".into()),
            P::NotVerified(Duration::from_secs(10)),
            P::EndedUnverified { during_handshake: false, source: eof() },
        ] {
            let h = hint_of(keyish.clone());
            assert!(h.contains("same shared key"), "{keyish:?}: {h}");
        }
        for other in [
            P::Timeout(Duration::from_secs(20)),
            P::Stalled { len: 9, waited: Duration::from_secs(21) },
            P::NotReading { buffered: 1 << 20, waited: Duration::from_secs(20) },
            P::UnexpectedEof,
            P::Io(std::io::ErrorKind::ConnectionReset.into()),
            P::BadBlock { index: 3, source: ProofError::ChecksumMismatch { node: 6 } },
            disk_full(),
            P::Frame(FramingError::Receive { source: FrameError::LengthVarintTooLong, unverified: false }),
            P::Rejected("peer is not a multifeed client: \"x\"".into()),
            P::EndedUnverified { during_handshake: true, source: eof() },
        ] {
            let h = hint_of(other.clone());
            assert!(!h.contains("shared key"), "{other:?}: {h}");
        }
        assert!(hint_of(disk_full()).contains("disk is full"));
        for stopped in [
            P::Timeout(Duration::from_secs(20)),
            P::NotReading { buffered: 1 << 20, waited: Duration::from_secs(20) },
        ] {
            let h = hint_of(stopped.clone());
            assert!(h.contains("stopped answering"), "{stopped:?}: {h}");
        }
        assert!(hint_of(P::EndedUnverified { during_handshake: true, source: eof() })
            .contains("connection limit"));
        assert!(hint_of(P::BadBlock { index: 3, source: ProofError::BadSignature })
            .contains("failed verification"));
        let e = replication_error(
            "p",
            &KappaError::Multifeed(MultifeedError::Replication(P::Timeout(Duration::from_secs(20)))),
        );
        assert!(
            e.to_string().starts_with("replication with p failed: ") && !e.to_string().contains("shared key")
        );
    }

    #[test]
    fn handshake_failures_name_the_wire_generations() {
        use kappa_core::multifeed::MultifeedError;
        use kappa_core::protocol::{Generation, HandshakeError as H, ProtocolError as P};
        let hint_of =
            |pe: P| hint(&KappaError::Multifeed(MultifeedError::Replication(pe))).unwrap_or_default();
        // One generation only: the other one is the likely cause.
        let h = hint_of(P::Handshake(H::BadMac));
        assert!(h.contains("another wire generation") && h.contains("--wire auto"), "{h}");
        assert!(!h.contains("same shared key"), "{h}");
        // Both failed: both generations named, and why the shared key is not it.
        let both = P::Handshake(H::BothGenerations { kc6: Box::new(H::BadMac), kc7: Box::new(H::BadMac) });
        let message = both.to_string();
        assert!(message.contains("kappa-core 6") && message.contains("kappa-core 7"), "{message}");
        let h = hint_of(both);
        assert!(h.contains("both wire generations") && h.contains("another shared key gets through"), "{h}");
        // A peer that hung up on our answer is answered in the other one next time.
        let abandoned =
            P::HandshakeAbandoned { answered_in: Generation::KappaCore6, source: Box::new(P::UnexpectedEof) };
        let h = hint_of(abandoned.clone());
        assert!(h.contains("kappa-core 7") && h.contains("connects again"), "{h}");
        assert!(abandoned.to_string().contains("other wire generation"), "{abandoned}");
    }
}
