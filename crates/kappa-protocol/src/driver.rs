//! [`Session`]: a thin async driver that runs a [`Protocol`] over any
//! `futures::io::{AsyncRead, AsyncWrite}` byte stream, on any runtime.
//!
//! Reading and writing run concurrently (a peer sending large blocks while we do
//! the same cannot deadlock us), local feed changes wake the session through one
//! watcher event, timers use `futures-timer` (no runtime), and a cloneable
//! [`SessionHandle`] adds feeds to a running session or closes it.
//!
//! The session ends when the protocol has ended and its last bytes are written; it
//! does not wait for the peer's end-of-stream (see the comment in `run`).
//!
//! # Fairness and limits
//!
//! Many sessions may share one task or one executor thread (a server runs all
//! of its sessions inside one future). So a session takes short turns: it
//! writes at most [`WRITE_TURN`] bytes and then lets the executor run others
//! (as it does after each read of at most 64 KiB), however large its backlog
//! and however fast its peer reads. What it made for the peer and has not
//! written yet, [`SessionProgress::buffered_out`] (the protocol's output plus
//! the bytes taken from it for the socket), is bounded: above
//! [`MAX_BUFFERED_OUT`] the session stops reading from the peer (whose requests
//! are what make it), and answers to requests are made only while less than
//! [`OUT_LOW_WATER`](crate::OUT_LOW_WATER) waits. A peer that stops reading
//! therefore holds at most about 8 MiB plus one read's answer, and once a
//! socket write has made no progress for the stream timeout
//! ([`ProtocolOptions::timeout`]) the session fails with
//! [`ProtocolError::NotReading`], which frees the peer's place.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use event_listener::Event as Notify;
use futures::channel::mpsc;
use futures::future;
use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures::{FutureExt, StreamExt};
use kappa_log::{PublicKey, SharedFeed};

use crate::session::{Event, FeedOptions, FeedProgress, FeedStats, Protocol, ProtocolError, ProtocolOptions};

/// Commands the session handles in a row before letting the reader and the
/// writer of its task run.
const COMMANDS_PER_TURN: u32 = 64;

/// A future that is pending once (waking itself), so other futures joined in the
/// same task get polled.
struct YieldNow(bool);

impl std::future::Future for YieldNow {
    type Output = ();
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.0 {
            std::task::Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    }
}

/// Longest wait, after our side of a session has ended, for a non-live JS peer
/// to hang up (see the end of `Session::run`).
const LINGER: Duration = Duration::from_secs(1);

/// How late the timer may wake before the session counts the delay as a stall
/// of its own (see [`Protocol::excuse_stall`]): it never sleeps more than a
/// second, so waking this much later means the task or its thread was busy.
const STALL: Duration = Duration::from_millis(500);

/// Bytes made for the peer and not yet written (see
/// [`SessionProgress::buffered_out`]) above which a session stops reading
/// from the peer until the writer catches up: 8 MiB.
pub const MAX_BUFFERED_OUT: usize = 8 << 20;

/// Most bytes a session writes in one turn before it lets the executor run
/// other sessions (and its own reader): 64 KiB.
pub const WRITE_TURN: usize = 64 << 10;

enum Command {
    OpenFeed(SharedFeed, FeedOptions),
    OpenChannel(PublicKey),
    CloseChannel(PublicKey),
    Extension(String, Vec<u8>),
    WantBlock([u8; 32], u64),
    Close,
}

/// Adds feeds to a running [`Session`] or closes it. Cheap to clone; commands
/// sent after the session ended are ignored.
#[derive(Clone)]
pub struct SessionHandle {
    tx: mpsc::UnboundedSender<Command>,
    probe: Probe,
}

impl std::fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionHandle").finish_non_exhaustive()
    }
}

/// Where a running session's state can be looked at from outside (set while
/// [`Session::run`] runs; a dead `Weak` after).
type Probe = Arc<Mutex<std::sync::Weak<Mutex<Shared>>>>;

/// A running session as it is now ([`SessionHandle::progress`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionProgress {
    /// How long the session has run.
    pub elapsed: Duration,
    /// Bytes written to the stream so far.
    pub bytes_sent: u64,
    /// Bytes read from the stream so far.
    pub bytes_received: u64,
    /// Bytes made for the peer and not yet written to the stream (those
    /// waiting in the protocol and those taken from it for the socket): what
    /// a slow or stalled peer makes us hold. Bounded: reading from the peer
    /// stops above [`MAX_BUFFERED_OUT`], and answers to its requests are made
    /// only while less than [`OUT_LOW_WATER`](crate::OUT_LOW_WATER) waits in
    /// the protocol.
    pub buffered_out: usize,
    /// The wire generation, once the handshake finished.
    pub generation: Option<crate::noise::Generation>,
    /// Whether the peer proved it knows the key of a channel we opened.
    pub verified: bool,
    /// Each feed of the session.
    pub feeds: Vec<FeedProgress>,
}

impl SessionProgress {
    /// Blocks received over all feeds.
    pub fn blocks_received(&self) -> u64 {
        self.feeds.iter().map(|f| f.stats.blocks_down).sum()
    }

    /// Blocks sent over all feeds.
    pub fn blocks_sent(&self) -> u64 {
        self.feeds.iter().map(|f| f.stats.blocks_up).sum()
    }
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::OpenFeed(..) => "OpenFeed",
            Command::OpenChannel(_) => "OpenChannel",
            Command::CloseChannel(_) => "CloseChannel",
            Command::Extension(..) => "Extension",
            Command::WantBlock(..) => "WantBlock",
            Command::Close => "Close",
        })
    }
}

impl SessionHandle {
    /// Replicates `feed` in the session.
    pub fn open_feed(&self, feed: SharedFeed, opts: FeedOptions) {
        let _ = self.tx.unbounded_send(Command::OpenFeed(feed, opts));
    }

    /// Opens a channel without data (multifeed's root channel).
    pub fn open_channel(&self, key: PublicKey) {
        let _ = self.tx.unbounded_send(Command::OpenChannel(key));
    }

    /// Closes (or refuses) the channel of `key`.
    pub fn close_channel(&self, key: PublicKey) {
        let _ = self.tx.unbounded_send(Command::CloseChannel(key));
    }

    /// Sends a stream-level extension message.
    pub fn send_extension(&self, name: &str, payload: Vec<u8>) {
        let _ = self.tx.unbounded_send(Command::Extension(name.to_owned(), payload));
    }

    /// Asks the peer for block `index` of the feed with `discovery_key` now (an
    /// on-demand get); see [`Protocol::want_block`].
    pub fn want_block(&self, discovery_key: [u8; 32], index: u64) {
        let _ = self.tx.unbounded_send(Command::WantBlock(discovery_key, index));
    }

    /// The session as it is now, while it runs (`None` before
    /// [`Session::run`] starts and after it returns). Takes the session's
    /// lock for a moment, and each of its feeds' locks in turn.
    pub fn progress(&self) -> Option<SessionProgress> {
        let shared = self.probe.lock().unwrap_or_else(|e| e.into_inner()).upgrade()?;
        let s = shared.lock().unwrap_or_else(|e| e.into_inner());
        Some(SessionProgress {
            elapsed: s.started.elapsed(),
            bytes_sent: s.bytes_sent,
            bytes_received: s.bytes_received,
            buffered_out: s.buffered_out(),
            generation: s.protocol.generation(),
            verified: s.protocol.is_verified(),
            feeds: s.protocol.feed_progress(),
        })
    }

    /// Ends the session: closes every channel; the session future completes once
    /// the peer has closed its side too (a live peer that vanished is noticed by
    /// the timeout).
    pub fn close(&self) {
        let _ = self.tx.unbounded_send(Command::Close);
    }
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndReason {
    /// Non-live: both sides had everything and closed every channel.
    Finished,
    /// Live: the peer disconnected, or the session was closed locally.
    Disconnected,
    /// The session failed.
    Failed(ProtocolError),
}

/// What a session did: per-feed transfer counts and why it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionReport {
    /// Per discovery key: what moved.
    pub feeds: Vec<([u8; 32], FeedStats)>,
    /// Bytes written to and read from the stream.
    pub bytes_sent: u64,
    /// Bytes read from the stream.
    pub bytes_received: u64,
    /// How long the session ran.
    pub duration: Duration,
    /// Why it ended.
    pub end: EndReason,
    /// The wire generation the session spoke (`None` if the handshake never
    /// finished).
    pub generation: Option<crate::noise::Generation>,
    /// We answered the peer's handshake in this generation and it hung up
    /// before finishing it: most likely a peer of the other generation (see
    /// [`ProtocolError::HandshakeAbandoned`]; a live session ends without an
    /// error then, as any live peer may hang up).
    pub handshake_abandoned: Option<crate::noise::Generation>,
}

impl SessionReport {
    /// `Ok` unless the session failed.
    pub fn result(&self) -> Result<(), ProtocolError> {
        match &self.end {
            EndReason::Failed(e) => Err(e.clone()),
            _ => Ok(()),
        }
    }

    /// Blocks received over all feeds.
    pub fn blocks_received(&self) -> u64 {
        self.feeds.iter().map(|(_, s)| s.blocks_down).sum()
    }

    /// Blocks sent over all feeds.
    pub fn blocks_sent(&self) -> u64 {
        self.feeds.iter().map(|(_, s)| s.blocks_up).sum()
    }
}

/// Records how a session ended: at info level, so that `-v` shows every
/// session's outcome with its cause.
fn trace_end(r: &SessionReport) {
    let generation = r.generation.map(tracing::field::display);
    match &r.end {
        EndReason::Failed(e) => tracing::info!(
            error = %e,
            cause = ?e,
            generation,
            bytes_sent = r.bytes_sent,
            bytes_received = r.bytes_received,
            duration = ?r.duration,
            "session ended: failed"
        ),
        end => tracing::info!(
            end = ?end,
            generation,
            handshake_abandoned = r.handshake_abandoned.map(tracing::field::display),
            blocks_received = r.blocks_received(),
            blocks_sent = r.blocks_sent(),
            bytes_sent = r.bytes_sent,
            bytes_received = r.bytes_received,
            duration = ?r.duration,
            "session ended"
        ),
    }
}

/// Reacts to session events inside the session's loop, with the protocol at hand
/// (so it can open feeds at once, as a JS peer expects within 4 s).
pub type EventHandler = Box<dyn FnMut(&mut Protocol, Instant, &Event) + Send>;

struct Shared {
    protocol: Protocol,
    handler: Option<EventHandler>,
    events: Option<mpsc::UnboundedSender<Event>>,
    watched: HashSet<[u8; 32]>,
    /// `Protocol::feeds_opened` when `watched` was last brought up to date.
    watched_opened: usize,
    bytes_sent: u64,
    bytes_received: u64,
    /// Bytes the writer took from the protocol and has not written yet.
    in_flight: usize,
    peer_eof: bool,
    /// A live peer hung up on our handshake answer in this generation.
    abandoned: Option<crate::noise::Generation>,
    started: Instant,
    /// When the timer loop is set to wake (`None` while it is not waiting):
    /// a step that brings the protocol's next timeout before it wakes the
    /// timer loop early.
    armed: Option<Instant>,
}

impl Shared {
    /// Bytes made for the peer and not yet written.
    fn buffered_out(&self) -> usize {
        self.protocol.pending_transmit_len() + self.in_flight
    }
}

/// Writes all of `buf`, failing with [`ProtocolError::NotReading`] if one write
/// makes no progress for `stall` (`buffered` is for that error).
async fn write_turn<W: AsyncWrite + Unpin>(
    writer: &mut W,
    mut buf: &[u8],
    stall: Duration,
    buffered: usize,
) -> Result<(), ProtocolError> {
    while !buf.is_empty() {
        let mut write = writer.write(buf);
        // The common case, a socket with room, needs no timer.
        let r = match future::poll_immediate(&mut write).await {
            Some(r) => r,
            None => match future::select(write, futures_timer::Delay::new(stall)).await {
                future::Either::Left((r, _)) => r,
                future::Either::Right(_) => {
                    return Err(ProtocolError::NotReading { buffered, waited: stall })
                }
            },
        };
        match r {
            Ok(0) => {
                return Err(ProtocolError::Io(std::io::Error::from(std::io::ErrorKind::WriteZero).into()))
            }
            Ok(n) => buf = &buf[n..],
            Err(e) => return Err(ProtocolError::Io(e.into())),
        }
    }
    Ok(())
}

/// A replication session over a byte stream; see the module docs.
///
/// ```no_run
/// # async fn example(stream: async_std::net::TcpStream, feed: kappa_log::SharedFeed) {
/// use kappa_protocol::{FeedOptions, ProtocolOptions, Session};
/// let (session, handle) = Session::new(stream, ProtocolOptions::new(true));
/// handle.open_feed(feed, FeedOptions::default());
/// let report = session.run().await;
/// println!("received {} blocks: {:?}", report.blocks_received(), report.end);
/// # }
/// ```
#[must_use = "a session does nothing until `run` is awaited"]
pub struct Session<S> {
    stream: S,
    opts: ProtocolOptions,
    rx: mpsc::UnboundedReceiver<Command>,
    handler: Option<EventHandler>,
    events: Option<mpsc::UnboundedSender<Event>>,
    probe: Probe,
}

impl<S> std::fmt::Debug for Session<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("opts", &self.opts).finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    /// A session over `stream`, and a handle to steer it.
    pub fn new(stream: S, opts: ProtocolOptions) -> (Session<S>, SessionHandle) {
        let (tx, rx) = mpsc::unbounded();
        let probe = Probe::default();
        (
            Session { stream, opts, rx, handler: None, events: None, probe: probe.clone() },
            SessionHandle { tx, probe },
        )
    }

    /// Calls `handler` for every event, inside the session loop.
    pub fn on_event(mut self, handler: impl FnMut(&mut Protocol, Instant, &Event) + Send + 'static) -> Self {
        self.handler = Some(Box::new(handler));
        self
    }

    /// A stream of the session's events (for observers in other tasks).
    pub fn events(&mut self) -> mpsc::UnboundedReceiver<Event> {
        let (tx, rx) = mpsc::unbounded();
        self.events = Some(tx);
        rx
    }

    /// Runs the session to its end.
    ///
    /// Runs inside a `session` tracing span (with `initiator` and `live`;
    /// a caller's span, e.g. one naming the peer's address, is its parent) and
    /// ends with a `session ended` event: how it ended, the bytes moved and,
    /// for a failed session, the error with its typed cause.
    pub async fn run(self) -> SessionReport {
        use tracing::Instrument;
        let span = tracing::info_span!("session", initiator = self.opts.initiator, live = self.opts.live);
        let report = self.run_inner().instrument(span.clone()).await;
        let _entered = span.enter();
        trace_end(&report);
        report
    }

    async fn run_inner(self) -> SessionReport {
        let started = Instant::now();
        let Session { stream, opts, mut rx, handler, events, probe } = self;
        let live = opts.live;
        let stall = opts.timeout;
        let shared = Arc::new(Mutex::new(Shared {
            protocol: Protocol::new(started, opts),
            handler,
            events,
            watched: HashSet::new(),
            watched_opened: 0,
            bytes_sent: 0,
            bytes_received: 0,
            in_flight: 0,
            peer_eof: false,
            abandoned: None,
            started,
            armed: None,
        }));
        *probe.lock().unwrap_or_else(|e| e.into_inner()) = Arc::downgrade(&shared);
        let wake_writer = Notify::new();
        let rearm = Notify::new();
        let drained = Notify::new();
        let watch = Arc::new(Notify::new());
        let lock = || shared.lock().unwrap_or_else(|e| e.into_inner());
        let (mut reader, mut writer) = stream.split();

        // Hands the protocol's events to the handler and the event stream.
        let dispatch = |s: &mut MutexGuard<'_, Shared>| {
            let now = Instant::now();
            while let Some(ev) = s.protocol.poll_event() {
                let Shared { protocol, handler, events, .. } = &mut **s;
                if let Some(h) = handler {
                    h(protocol, now, &ev);
                }
                if let Some(tx) = events {
                    let _ = tx.unbounded_send(ev);
                }
            }
        };
        let after_step = |s: &mut MutexGuard<'_, Shared>| {
            dispatch(s);
            // Watch feeds the session started replicating (only when it opened
            // some since the last look: collecting thousands of feeds after
            // every step took a sixth of the session's time with 1,000 feeds).
            let opened = s.protocol.feeds_opened();
            if opened != s.watched_opened {
                s.watched_opened = opened;
                let mut new = false;
                for feed in s.protocol.feeds() {
                    if s.watched.insert(*feed.discovery_key()) {
                        feed.watch(&watch);
                        new = true;
                    }
                }
                // A feed appended to between its opening (when its channel
                // noted the feed's version) and the watch above notified
                // nobody: one look at every feed catches it up.
                if new {
                    watch.notify(usize::MAX);
                }
            }
            wake_writer.notify(usize::MAX);
            // A timeout now due before the timer loop wakes (a wake-up the
            // layer above asked for, a shorter keep-alive) re-arms it.
            if let (Some(armed), Some(next)) = (s.armed, s.protocol.poll_timeout()) {
                if next < armed {
                    s.armed = None;
                    rearm.notify(usize::MAX);
                }
            }
        };

        let read_loop = async {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                // Back-pressure: let the writer drain a large backlog first.
                loop {
                    let l = drained.listen();
                    if lock().buffered_out() < MAX_BUFFERED_OUT {
                        break;
                    }
                    l.await;
                }
                let n = match reader.read(&mut buf).await {
                    Ok(n) => n,
                    Err(e) => {
                        let mut s = lock();
                        s.protocol.fail_transport(ProtocolError::Io(e.into()));
                        after_step(&mut s);
                        return;
                    }
                };
                {
                    let mut s = lock();
                    if n == 0 {
                        s.peer_eof = true;
                        if !s.protocol.is_ended() {
                            if live {
                                // A live peer may hang up at any time; one that hangs up
                                // on our handshake answer is noted in the report.
                                s.abandoned = s.abandoned.or(s.protocol.abandoned_handshake());
                                s.protocol.close(Instant::now());
                            } else {
                                s.protocol.fail_transport(ProtocolError::UnexpectedEof);
                            }
                        }
                        after_step(&mut s);
                        return;
                    }
                    s.bytes_received += n as u64;
                    let t0 = Instant::now();
                    let _ = s.protocol.handle_input(t0, &buf[..n]);
                    after_step(&mut s);
                    slow_step("input", t0);
                }
                // Let the writer send what this input produced (our requests, our
                // answers) before reading on: while the socket has data, reading
                // never waits, and the peer would starve of requests.
                YieldNow(false).await;
            }
        };

        let write_loop = async {
            // What was taken from the protocol, and how much of it is written.
            let mut out: Vec<u8> = Vec::new();
            let mut at = 0;
            loop {
                if at == out.len() {
                    let l = wake_writer.listen();
                    let (bytes, ended, eof) = {
                        let mut s = lock();
                        let t0 = Instant::now();
                        let bytes = s.protocol.poll_transmit(t0);
                        // Answering the peer's last requests (made in poll_transmit)
                        // can finish a feed or the session: pass those events on.
                        dispatch(&mut s);
                        if let Some(b) = &bytes {
                            s.in_flight = b.len();
                        }
                        slow_step("transmit", t0);
                        (bytes, s.protocol.is_ended(), s.peer_eof)
                    };
                    match bytes {
                        Some(b) => {
                            out = b;
                            at = 0;
                        }
                        None if ended || eof => {
                            let _ = writer.close().await;
                            return;
                        }
                        None => {
                            l.await;
                            continue;
                        }
                    }
                }
                // One turn: at most WRITE_TURN bytes. A failed write or flush
                // ends the session with that error (the writer's end is the
                // session's end).
                let end = out.len().min(at + WRITE_TURN);
                let buffered = lock().buffered_out();
                let mut r = write_turn(&mut writer, &out[at..end], stall, buffered).await;
                if r.is_ok() && end == out.len() {
                    r = writer.flush().await.map_err(|e| ProtocolError::Io(e.into()));
                }
                {
                    let mut s = lock();
                    if let Err(e) = r {
                        s.protocol.fail_transport(e);
                        after_step(&mut s);
                        return;
                    }
                    s.bytes_sent += (end - at) as u64;
                    s.in_flight = out.len() - end;
                }
                at = end;
                drained.notify(usize::MAX);
                // Let other sessions (and our reader) run, however much is left.
                YieldNow(false).await;
            }
        };

        let timer_loop = async {
            let mut excused_last = false;
            loop {
                let rearmed = rearm.listen();
                let wait = {
                    let mut s = lock();
                    let Some(deadline) = s.protocol.poll_timeout() else { return };
                    let now = Instant::now();
                    let wait = deadline.saturating_duration_since(now).min(Duration::from_secs(1));
                    s.armed = Some(now + wait);
                    wait
                };
                let delay = futures_timer::Delay::new(wait);
                futures::pin_mut!(delay);
                let _ = future::select(delay, rearmed).await;
                let excused = {
                    let mut s = lock();
                    let armed = s.armed.take();
                    let t0 = Instant::now();
                    // Woken late: this task (or its thread) was busy, and what
                    // the peer sent meanwhile is unread. That time is not the
                    // peer's silence; the reader runs before the next look.
                    // Never twice in a row: a driver late at every wake (a
                    // thread overloaded for good) still sends keep-alives and
                    // times silent peers out, a wake late.
                    let late = armed.map_or(Duration::ZERO, |a| t0.saturating_duration_since(a));
                    let excuse = late >= STALL && !excused_last;
                    if excuse {
                        tracing::debug!(?late, "session: the timer woke late, the stall is excused");
                        s.protocol.excuse_stall(t0, late);
                    }
                    excuse
                };
                excused_last = excused;
                if excused {
                    YieldNow(false).await;
                    continue;
                }
                {
                    let mut s = lock();
                    let t0 = Instant::now();
                    s.protocol.handle_timeout(t0);
                    after_step(&mut s);
                    slow_step("timeout", t0);
                    if s.protocol.is_ended() {
                        return;
                    }
                }
                // A wake-up asked for now (work cut into slices) must not
                // run every slice in one go: let the reader and writer run.
                YieldNow(false).await;
            }
        };

        let watch_loop = async {
            let mut l = watch.listen();
            loop {
                l.await;
                // Listen again before looking at the feeds: a change made
                // while we look (or before our next listen) then wakes us,
                // where listening after the look lost it and left a live
                // peer without the feed's last entries.
                l = watch.listen();
                let mut s = lock();
                let t0 = Instant::now();
                s.protocol.feeds_changed(t0);
                after_step(&mut s);
                slow_step("feeds changed", t0);
            }
        };

        let command_loop = async {
            let mut handled: u32 = 0;
            while let Some(cmd) = rx.next().await {
                {
                    let mut s = lock();
                    let now = Instant::now();
                    let p = &mut s.protocol;
                    let _ = match cmd {
                        Command::OpenFeed(feed, fopts) => p.open_feed(now, feed, fopts),
                        Command::OpenChannel(key) => p.open_channel(now, key),
                        Command::CloseChannel(key) => {
                            p.close_channel(now, &key);
                            Ok(())
                        }
                        Command::Extension(name, payload) => p.send_extension(now, &name, &payload),
                        Command::WantBlock(dkey, index) => {
                            p.want_block(now, &dkey, index);
                            Ok(())
                        }
                        Command::Close => {
                            p.close(now);
                            Ok(())
                        }
                    };
                    after_step(&mut s);
                    slow_step("command", now);
                }
                // A burst of queued commands (thousands of feeds opened at
                // once) would otherwise run to its end in one poll, the
                // writer and reader of this task waiting behind it.
                handled = handled.wrapping_add(1);
                if handled.is_multiple_of(COMMANDS_PER_TURN) {
                    YieldNow(false).await;
                }
            }
            future::pending::<()>().await;
        };

        // The writer decides the end: once the protocol has ended and its last
        // bytes are flushed, the session is over. We do not wait for the peer's
        // end-of-stream: the end is agreed by Close messages, and not every stream
        // can signal EOF (closing an async-std TcpStream's write half does not shut
        // the socket down). By then everything the peer sent has been read, so
        // dropping the stream closes it cleanly. The reader, after an EOF or an
        // error, waits for the writer to flush what the protocol still has to say.
        let writer_ended = {
            let read_then_wait = async {
                read_loop.await;
                future::pending::<()>().await;
            };
            let helpers = future::join3(timer_loop, watch_loop, command_loop);
            futures::pin_mut!(read_then_wait, write_loop, helpers);
            let others = future::select(read_then_wait, helpers).map(|_| ());
            matches!(future::select(write_loop, others).await, future::Either::Left(_))
        };
        // A JS peer (hypercore-protocol 7) that is not live ends its side of the
        // stream right after the last Close; if we dropped the socket before
        // reading what it sent until then, the kernel would reset the
        // connection and the peer would see its last writes fail (EPIPE) after
        // a good replication. So we read on until it hangs up, for a moment. A
        // live peer never hangs up, and a kappa-rs peer (it announces compact
        // proofs) ends like us, without waiting: no lingering for those, nor in
        // our own live sessions. The session's duration does not include it.
        let duration = started.elapsed();
        let linger = !live && writer_ended && {
            let s = lock();
            !s.peer_eof
                && s.protocol.error().is_none()
                && !s.protocol.peer_live()
                && !s.protocol.peer_has_extension(crate::session::COMPACT_PROOFS)
        };
        if linger {
            let drain = async {
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n) = reader.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            };
            futures::pin_mut!(drain);
            let _ = future::select(drain, futures_timer::Delay::new(LINGER)).await;
        }

        let mut s = lock();
        let end = match (s.protocol.error(), s.protocol.is_finished()) {
            (Some(e), _) => EndReason::Failed(e.clone()),
            (None, true) if !live => EndReason::Finished,
            (None, _) if live => EndReason::Disconnected,
            (None, _) => EndReason::Failed(ProtocolError::UnexpectedEof),
        };
        let abandoned = s.abandoned.or(match s.protocol.error() {
            Some(ProtocolError::HandshakeAbandoned { answered_in, .. }) => Some(*answered_in),
            _ => None,
        });
        s.protocol.fail_transport(ProtocolError::Closed);
        SessionReport {
            handshake_abandoned: abandoned,
            generation: s.protocol.handshake_result().map(|r| r.generation),
            feeds: s.protocol.stats(),
            bytes_sent: s.bytes_sent,
            bytes_received: s.bytes_received,
            duration,
            end,
        }
    }
}

/// Reports a step of the session that held it for long (a second or more):
/// while it runs, nothing is read, written or timed.
fn slow_step(what: &'static str, since: Instant) {
    let took = since.elapsed();
    if took >= Duration::from_secs(1) {
        tracing::debug!(step = what, ?took, "session: a long step");
    }
}
