//! [`Protocol`]: one hypercore-protocol-7 connection as a sans-IO state machine.
//!
//! It takes bytes and time, and returns bytes and events; it reads no socket and
//! no clock. Feeds are [`SharedFeed`]s, read and written synchronously (local disk
//! I/O is not network I/O). How to drive it:
//!
//! 1. Create it with [`Protocol::new`]; an initiator has its first handshake
//!    message ready at once.
//! 2. Whenever bytes arrive, call [`handle_input`](Protocol::handle_input).
//! 3. After every call, send what [`poll_transmit`](Protocol::poll_transmit)
//!    returns, and handle every [`poll_event`](Protocol::poll_event).
//! 4. Call [`handle_timeout`](Protocol::handle_timeout) when the instant from
//!    [`poll_timeout`](Protocol::poll_timeout) has passed (keep-alives, the
//!    20-second silence limit, the deadlines of [`PeerLimits`]).
//! 5. When a feed the session replicates changes locally (see
//!    [`SharedFeed::watch`]), call [`feeds_changed`](Protocol::feeds_changed).
//!
//! `crate::driver` wraps this in a future over any `AsyncRead + AsyncWrite`.
//!
//! # A peer is a stranger until it proves a key
//!
//! The Noise handshake needs no shared secret: anyone can complete it. Until the
//! peer proves it knows the key of a channel we opened (the channel's
//! capability verifies; for multifeed, the shared key's root channel), the
//! session is *unverified* and [`PeerLimits`] bound what the peer can make us
//! hold: small frames, a few channels and buffered messages, and a deadline.
//! Stream-level extension messages that arrive before then are held back and
//! handed on, in order, once the peer is verified (so the layer above never
//! answers a stranger). After verification the peer may send frames up to the
//! 8 MiB of JS. At any time, a frame must arrive whole within the silence
//! limit plus one second per [`PeerLimits::min_frame_rate`] bytes of its
//! length: bytes that trickle in do not keep a connection alive, complete
//! frames (keep-alives included) do.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kappa_log::{LogError, ProofError, PublicKey, SharedFeed};

use crate::cipher::TransportCipher;
use crate::error::{FramingError, TransportError};
use crate::frame::{encode_frame, Decoded, FrameDecoder, FrameError};
use crate::message::{Close, Extension, Message, Open, Options};
use crate::noise::{Generation, Handshake, HandshakeError, HandshakeResult, KeyPair, Wire};
use crate::replicate::Replicator;

/// The stream extension kappa-rs peers announce (in their channel-0 Options) to
/// say "I keep every proof node I am sent, in order". Between two such peers an
/// uploader leaves out of each proof the nodes it already sent, which makes most
/// proofs a node or two with no signature. JS peers do not announce it and get
/// self-contained proofs, as JS uploaders send.
pub const COMPACT_PROOFS: &str = "kappa-rs/compact-proofs";

/// Why a session failed. Peer misbehaviour and local failures are different
/// variants; nothing a misbehaving peer sent is stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The Noise handshake failed.
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    /// A frame could not be read or sent (too large, bad length, a body
    /// that does not decode).
    #[error("framing: {0}")]
    Frame(#[source] FramingError),
    /// A message body could not be decoded.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    /// A field was out of the range any real feed has.
    #[error("out of range: {0}")]
    OutOfRange(&'static str),
    /// The peer proved no knowledge of the feed key (wrong capability).
    #[error("invalid remote channel capability for discovery key {0}")]
    BadCapability(String),
    /// The peer used a channel it never opened.
    #[error("message on unopened channel {0}")]
    UnknownChannel(u64),
    /// The peer sent a block that failed verification.
    #[error("bad block {index} from peer: {source}")]
    BadBlock {
        /// The block.
        index: u64,
        /// The check that failed.
        #[source]
        source: ProofError,
    },
    /// Local storage failed (reading what we serve, or storing what arrived).
    #[error("storage: {0}")]
    Storage(#[source] Arc<LogError>),
    /// Nothing was received for the stream timeout.
    #[error("timed out: nothing received for {0:?}")]
    Timeout(Duration),
    /// A frame (or handshake message) was started but did not arrive whole in
    /// time (see [`PeerLimits::min_frame_rate`]): a peer that trickles bytes.
    #[error("timed out: a frame of {len} bytes did not arrive within {waited:?}")]
    Stalled {
        /// The frame's declared length (0 if its length prefix did not arrive).
        len: usize,
        /// How long it had.
        waited: Duration,
    },
    /// The peer proved no key within [`PeerLimits::verify_timeout`]: it opened
    /// no channel of ours with a valid capability (a peer with another shared
    /// key, or not a peer of this protocol).
    #[error("the peer proved no shared key within {0:?} (it opened none of our channels)")]
    NotVerified(Duration),
    /// Before it proved a key, the peer exceeded one of [`PeerLimits`].
    #[error("before proving a shared key, the peer exceeded the limit of {limit} {what}")]
    UnverifiedLimit {
        /// What was counted.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// We are the responder, answered the peer's message 1 in `answered_in`,
    /// and the peer hung up before message 3: what a JS peer of the other
    /// generation does when it cannot decrypt our answer (it cannot tell
    /// why either). A server answers that address in the other generation
    /// next time.
    #[error("the peer hung up on our handshake answer in {answered_in}: it may speak the other wire generation ({source})")]
    HandshakeAbandoned {
        /// The generation we answered in.
        answered_in: Generation,
        /// What ended it ([`UnexpectedEof`](Self::UnexpectedEof) or
        /// [`Io`](Self::Io)).
        #[source]
        source: Box<ProtocolError>,
    },
    /// The stream ended or failed before the peer proved a key (see
    /// [`PeerLimits`]). After the Noise handshake this is how a peer with
    /// another shared key hangs up; during it, how a server at its connection
    /// limit (or something that is not a peer of this protocol) does.
    #[error("{source} ({})", if *during_handshake { "during the handshake" } else { "before the peer proved a shared key" })]
    EndedUnverified {
        /// Whether the Noise handshake was still running.
        during_handshake: bool,
        /// What ended it ([`UnexpectedEof`](Self::UnexpectedEof) or
        /// [`Io`](Self::Io)).
        #[source]
        source: Box<ProtocolError>,
    },
    /// The session was closed locally.
    #[error("session closed")]
    Closed,
    /// The peer ended the byte stream before the session finished.
    #[error("peer closed the connection before the session finished")]
    UnexpectedEof,
    /// A transport (socket) error, from a driver.
    #[error("transport: {0}")]
    Io(#[source] TransportError),
    /// The layer above (e.g. multifeed) rejected the peer.
    #[error("{0}")]
    Rejected(String),
    /// The peer stayed connected (keep-alives) but did not send what the layer
    /// above waited for by its deadline (see [`Protocol::set_deadline`]).
    #[error("timed out: the peer sent no {waiting_for} within {waited:?} (it stays connected but does not answer)")]
    Unresponsive {
        /// What was awaited (e.g. "answer to our feed request").
        waiting_for: &'static str,
        /// How long it had.
        waited: Duration,
    },
}

/// Options of a session.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProtocolOptions {
    /// Whether we dialled (the Noise initiator). The two peers must differ.
    pub initiator: bool,
    /// Our Noise static key pair (random if `None`).
    pub key_pair: Option<KeyPair>,
    /// Live sessions keep channels open and forward new blocks until closed;
    /// non-live ones finish when both sides have what they wanted.
    pub live: bool,
    /// Fail when nothing is received for this long (JS: 20 s).
    pub timeout: Duration,
    /// Send a keep-alive after this long without sending (JS: 10 s).
    pub keep_alive: Duration,
    /// Requests in flight per feed.
    pub max_in_flight: usize,
    /// Stream-level extension names we announce (sorted on sending).
    pub extensions: Vec<String>,
    /// What a peer may cost us, before and after it proves a key.
    pub limits: PeerLimits,
    /// Which wire generations this connection may speak (default
    /// [`Wire::Auto`]). An initiator with `Auto` detects the peer's; a
    /// responder with `Auto` answers in
    /// [`responder_generation`](Self::responder_generation).
    pub wire: Wire,
    /// The generation a responder with [`Wire::Auto`] answers message 1 in
    /// (default kappa-core 6). A server picks it per connection (e.g. the other
    /// one for an address whose last handshake the peer hung up on).
    pub responder_generation: Generation,
}

/// Bounds on what one peer can make a session hold; see the module docs.
///
/// The defaults let any JS or kappa-rs peer through (their first frames before
/// verification are a few hundred bytes) and bound an unverified connection to
/// well under 200 KiB of memory (about 64 KiB of frame and 64 KiB of held
/// messages, plus the driver's read buffer) for at most
/// [`verify_timeout`](Self::verify_timeout).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerLimits {
    /// The largest frame accepted before the peer is verified (default
    /// 64 KiB; after it, 8 MiB as JS).
    pub unverified_max_frame: usize,
    /// The peer must be verified this long after the session started, or the
    /// session fails with [`ProtocolError::NotVerified`] (default 10 s; `None`:
    /// no deadline). A session that finishes before is fine.
    pub verify_timeout: Option<Duration>,
    /// A frame must arrive whole within the silence timeout plus one second per
    /// this many bytes of its declared length, counted from the last complete
    /// frame (default 16 KiB/s: 20 s + 4 s for a 64 KiB frame, 20 s + 512 s for
    /// 8 MiB). Otherwise the session fails with [`ProtocolError::Stalled`].
    pub min_frame_rate: u64,
    /// Channels the peer may open that we have not opened, before it is
    /// verified (default 16).
    pub unverified_max_channels: usize,
    /// Bytes of messages held before the peer is verified: extension messages
    /// and messages on channels we have not opened (default 64 KiB).
    pub unverified_max_held: usize,
}

impl Default for PeerLimits {
    fn default() -> Self {
        PeerLimits {
            unverified_max_frame: 64 << 10,
            verify_timeout: Some(Duration::from_secs(10)),
            min_frame_rate: 16 << 10,
            unverified_max_channels: 16,
            unverified_max_held: 64 << 10,
        }
    }
}

impl PeerLimits {
    /// Sets [`verify_timeout`](Self::verify_timeout).
    pub fn verify_timeout(mut self, t: Option<Duration>) -> Self {
        self.verify_timeout = t;
        self
    }

    /// Sets [`unverified_max_frame`](Self::unverified_max_frame).
    pub fn unverified_max_frame(mut self, n: usize) -> Self {
        self.unverified_max_frame = n;
        self
    }

    /// Sets [`min_frame_rate`](Self::min_frame_rate) (at least 1).
    pub fn min_frame_rate(mut self, bytes_per_second: u64) -> Self {
        self.min_frame_rate = bytes_per_second.max(1);
        self
    }
}

impl ProtocolOptions {
    /// Defaults for the given role: non-live, JS's timeouts, 1024 requests in
    /// flight per feed (JS uses 16; answers are bounded by the driver's send
    /// back-pressure), no extensions.
    pub fn new(initiator: bool) -> Self {
        ProtocolOptions {
            initiator,
            key_pair: None,
            live: false,
            timeout: Duration::from_secs(20),
            keep_alive: Duration::from_secs(10),
            max_in_flight: 1024,
            extensions: Vec::new(),
            limits: PeerLimits::default(),
            wire: Wire::Auto,
            responder_generation: Generation::KappaCore6,
        }
    }

    /// Sets [`wire`](Self::wire).
    pub fn wire(mut self, wire: Wire) -> Self {
        self.wire = wire;
        self
    }

    /// Sets [`responder_generation`](Self::responder_generation).
    pub fn responder_generation(mut self, generation: Generation) -> Self {
        self.responder_generation = generation;
        self
    }

    /// The generation a responder with these options answers in.
    pub fn answers_in(&self) -> Generation {
        match self.wire {
            Wire::Only(g) => g,
            Wire::Auto => self.responder_generation,
        }
    }

    /// Sets the limits on what the peer may cost us.
    pub fn limits(mut self, limits: PeerLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets `live`.
    pub fn live(mut self, live: bool) -> Self {
        self.live = live;
        self
    }

    /// Sets the Noise static key pair.
    pub fn key_pair(mut self, key_pair: KeyPair) -> Self {
        self.key_pair = Some(key_pair);
        self
    }

    /// Sets the stream-level extensions.
    pub fn extensions(mut self, names: Vec<String>) -> Self {
        self.extensions = names;
        self
    }

    /// Sets the timeout and keep-alive interval.
    pub fn timeouts(mut self, timeout: Duration, keep_alive: Duration) -> Self {
        self.timeout = timeout;
        self.keep_alive = keep_alive;
        self
    }
}

/// Which blocks a downloader asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Selection {
    /// Everything the peer has.
    #[default]
    All,
    /// Only blocks in these ranges (sparse replication).
    Ranges(Vec<Range<u64>>),
    /// The newest `n` blocks of the peer's feed (as long as it grows, in a live
    /// session: always the newest `n` of what the peer has announced).
    Newest(u64),
    /// Every block from this sequence number on.
    From(u64),
}

/// How one feed is replicated.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FeedOptions {
    /// Serve blocks to the peer.
    pub upload: bool,
    /// Download blocks from the peer (for a writable feed, only the blocks it
    /// lost: see `Feed::wants_blocks`).
    pub download: bool,
    /// Which blocks to download.
    pub selection: Selection,
}

impl Default for FeedOptions {
    fn default() -> Self {
        FeedOptions { upload: true, download: true, selection: Selection::All }
    }
}

impl FeedOptions {
    /// Sets which blocks to download.
    pub fn with_selection(mut self, selection: Selection) -> Self {
        self.selection = selection;
        self
    }

    /// Download only the newest `n` blocks of each feed.
    pub fn newest(n: u64) -> Self {
        FeedOptions { selection: Selection::Newest(n), ..FeedOptions::default() }
    }

    /// Download only the blocks in `range`.
    pub fn sparse_range(range: Range<u64>) -> Self {
        Self::sparse(std::iter::once(range))
    }

    /// Download only the blocks in `ranges`.
    pub fn sparse(ranges: impl IntoIterator<Item = Range<u64>>) -> Self {
        FeedOptions { selection: Selection::Ranges(ranges.into_iter().collect()), ..FeedOptions::default() }
    }
}

/// What moved for one feed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedStats {
    /// Blocks sent.
    pub blocks_up: u64,
    /// Value bytes sent.
    pub bytes_up: u64,
    /// Blocks received, verified and stored.
    pub blocks_down: u64,
    /// Value bytes received and stored.
    pub bytes_down: u64,
    /// The first block kept from the peer: it speaks kappa-core 6 (hypercore
    /// 8), and the blocks from here on are signed only in the 40-byte
    /// hypercore 9 form, which it cannot verify (or, on a sparse replica, this
    /// block could not be proven against a state signed in the 32-byte form).
    /// See `docs/semantics.md`, the one-way signature rule.
    pub withheld_from: Option<u64>,
}

/// How far one feed of a session got, for status displays
/// ([`Protocol::feed_progress`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FeedProgress {
    /// The feed's discovery key.
    pub discovery_key: [u8; 32],
    /// The feed's public key, once we opened it.
    pub key: Option<PublicKey>,
    /// What moved so far.
    pub stats: FeedStats,
    /// The feed's length here.
    pub local_length: u64,
    /// The length the peer announced (0 until it said).
    pub remote_length: u64,
    /// Our requests waiting for an answer.
    pub requests_in_flight: usize,
    /// Whether the channel is still open (on either side).
    pub open: bool,
}

/// Something the application should know.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The handshake finished; the peer's Noise static key.
    Handshake {
        /// The remote static public key.
        remote_static_key: [u8; 32],
    },
    /// The peer opened a channel we have not opened. Open it with
    /// [`Protocol::open_feed`] (or refuse with [`Protocol::close_channel`]).
    RemoteOpen {
        /// The channel's discovery key.
        discovery_key: [u8; 32],
    },
    /// Both sides opened a channel.
    ChannelOpened {
        /// The channel's discovery key.
        discovery_key: [u8; 32],
    },
    /// A non-live download of a feed is complete.
    FeedSynced {
        /// The feed's discovery key.
        discovery_key: [u8; 32],
    },
    /// Both sides closed a channel.
    ChannelClosed {
        /// The channel's discovery key.
        discovery_key: [u8; 32],
        /// What moved on it.
        stats: FeedStats,
    },
    /// A stream-level extension message.
    Extension {
        /// Its name (from the peer's Options).
        name: String,
        /// Its payload.
        payload: Vec<u8>,
    },
    /// Non-live: every channel is closed on both sides; the session is done.
    Finished,
}

struct Channel {
    discovery_key: [u8; 32],
    key: Option<PublicKey>,
    local_id: Option<u64>,
    remote_id: Option<u64>,
    remote_capability: Option<Vec<u8>>,
    local_closed: bool,
    remote_closed: bool,
    feed: Option<(SharedFeed, FeedOptions)>,
    repl: Option<Replicator>,
    /// Messages the peer sent before we opened (replayed when we do).
    early: Vec<Message>,
    /// Frame bytes of `early`.
    early_bytes: usize,
    stats: FeedStats,
    announced_closed: bool,
}

impl Channel {
    fn new(discovery_key: [u8; 32]) -> Self {
        Channel {
            discovery_key,
            key: None,
            local_id: None,
            remote_id: None,
            remote_capability: None,
            local_closed: false,
            remote_closed: false,
            feed: None,
            repl: None,
            early: Vec::new(),
            early_bytes: 0,
            stats: FeedStats::default(),
            announced_closed: false,
        }
    }

    fn is_done(&self) -> bool {
        let local_done = self.local_id.is_none() || self.local_closed;
        let remote_done = self.remote_id.is_none() || self.remote_closed;
        local_done && remote_done
    }
}

/// Most messages buffered for a channel the peer opened before we did.
const MAX_EARLY: usize = 4096;

/// Most bytes of such messages over all channels, also from a verified peer.
const MAX_EARLY_BYTES: usize = 16 << 20;

/// One hypercore-protocol-7 connection (see the module docs for how to drive it).
pub struct Protocol {
    opts: ProtocolOptions,
    /// The handshake, then the transport (kept as it was once the session ended).
    stage: Stage,
    /// Whether the session runs, and how it ended.
    end: End,
    decoder: FrameDecoder,
    out: Vec<u8>,
    channels: Vec<Channel>,
    by_dkey: HashMap<[u8; 32], usize>,
    by_local: HashMap<u64, usize>,
    by_remote: HashMap<u64, usize>,
    /// Feeds opened so far (see [`Protocol::feeds_opened`]).
    feeds_opened: usize,
    next_local_id: u64,
    events: VecDeque<Event>,
    remote_extensions: Vec<String>,
    local_extensions: Vec<String>,
    options_sent: bool,
    last_recv: Instant,
    last_send: Instant,
    /// When the last whole frame (or handshake message) arrived.
    last_progress: Instant,
    started: Instant,
    /// Whether the peer proved it knows the key of a channel we opened.
    verified: bool,
    /// Stream extension events held until the peer is verified.
    held_events: Vec<Event>,
    /// Bytes of messages held before verification (events and early messages).
    held_bytes: usize,
    /// Bytes of messages held for channels the peer opened before we did.
    early_total: usize,
    holds: usize,
    /// The layer above's deadline: when, what it waits for, and since when.
    deadline: Option<(Instant, &'static str, Instant)>,
    /// The test hook of [`Protocol::tamper_outgoing`].
    #[cfg(feature = "test-hooks")]
    tamper: Option<Tamper>,
    compact_proofs: bool,
    peer_live: bool,
}

/// Where a connection is: the Noise handshake, then the encrypted transport.
/// A session that ends stays in the stage it reached.
enum Stage {
    /// The Noise handshake runs.
    Handshake {
        hs: Box<Handshake>,
        /// Plaintext frames made before the handshake finished.
        queued: Vec<u8>,
        /// Channels opened before the handshake finished: their Open is sent
        /// when it does.
        pending_opens: Vec<usize>,
    },
    /// The handshake finished: frames travel encrypted.
    Transport(Box<Transport>),
}

/// What the handshake established.
struct Transport {
    result: HandshakeResult,
    encrypt: TransportCipher,
    decrypt: TransportCipher,
}

/// Whether a session runs, and how it ended.
enum End {
    /// Neither finished nor failed.
    Running,
    /// Finished cleanly ([`Protocol::close`], or a non-live session done).
    Finished,
    /// Failed with this error.
    Failed(ProtocolError),
    /// Finished, and then storing what arrived failed as a channel closed
    /// (the session counts as finished and reports the error).
    FinishedThenFailed(ProtocolError),
}

impl End {
    fn error(&self) -> Option<&ProtocolError> {
        match self {
            End::Failed(e) | End::FinishedThenFailed(e) => Some(e),
            End::Running | End::Finished => None,
        }
    }

    /// Records a storage failure met as a channel closed: it fails a running
    /// session, and is kept (once) by a finished one.
    fn storage_failed(&mut self, e: ProtocolError) {
        match self {
            End::Running => {
                trace_failure(&e);
                *self = End::Failed(e);
            }
            End::Finished => {
                trace_failure(&e);
                *self = End::FinishedThenFailed(e);
            }
            End::Failed(_) | End::FinishedThenFailed(_) => {}
        }
    }
}

/// Answers to the peer's requests are made while fewer than this many bytes
/// wait in [`Protocol::poll_transmit`]: enough to keep a socket busy, little
/// enough that reading blocks and sending them overlap (and that a peer asking
/// for many large blocks cannot make us buffer them all).
pub const OUT_LOW_WATER: usize = 1 << 20;

/// Most block bytes one channel answers before the next channel's turn.
const ANSWER_SLICE: usize = 256 << 10;

/// A test hook that rewrites outgoing messages (see [`Protocol::tamper_outgoing`]).
#[cfg(feature = "test-hooks")]
type Tamper = Box<dyn FnMut(u64, &mut Message) + Send>;

impl std::fmt::Debug for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Protocol")
            .field("initiator", &self.opts.initiator)
            .field("channels", &self.channels.len())
            .field("finished", &self.is_finished())
            .field("error", &self.error())
            .finish_non_exhaustive()
    }
}

impl Protocol {
    /// A new session at time `now`.
    pub fn new(now: Instant, opts: ProtocolOptions) -> Protocol {
        let static_kp = opts.key_pair.clone().unwrap_or_else(KeyPair::generate);
        let hs = if opts.initiator {
            Handshake::initiator_for(opts.wire, static_kp)
        } else {
            Handshake::responder_for(opts.answers_in(), static_kp)
        };
        Self::with_handshake(now, opts, hs)
    }

    /// A new session with a prepared handshake (fixed ephemeral keys and nonces,
    /// for reproducible tests).
    pub fn with_handshake(now: Instant, opts: ProtocolOptions, mut hs: Handshake) -> Protocol {
        let mut local_extensions = opts.extensions.clone();
        local_extensions.push(COMPACT_PROOFS.to_owned());
        local_extensions.sort();
        local_extensions.dedup();
        let out = hs.take_outgoing();
        let first_max_frame = opts.limits.unverified_max_frame.min(crate::frame::MAX_FRAME_LEN);
        Protocol {
            opts,
            stage: Stage::Handshake { hs: Box::new(hs), queued: Vec::new(), pending_opens: Vec::new() },
            end: End::Running,
            decoder: FrameDecoder::with_max_frame_len(first_max_frame),
            out,
            channels: Vec::new(),
            by_dkey: HashMap::new(),
            by_local: HashMap::new(),
            by_remote: HashMap::new(),
            next_local_id: 1,
            feeds_opened: 0,
            events: VecDeque::new(),
            remote_extensions: Vec::new(),
            local_extensions,
            options_sent: false,
            last_recv: now,
            last_send: now,
            last_progress: now,
            started: now,
            verified: false,
            held_events: Vec::new(),
            held_bytes: 0,
            early_total: 0,
            holds: 0,
            deadline: None,
            #[cfg(feature = "test-hooks")]
            tamper: None,
            compact_proofs: false,
            peer_live: false,
        }
    }

    /// Tells the session that the peer runs a live session (as multifeed's
    /// handshake says). A non-live session then ends a feed once the peer has
    /// acked storing everything we have, instead of waiting for a "done" Status
    /// a live peer never sends.
    ///
    /// Call it before opening feeds (multifeed does, right after its handshake):
    /// feeds opened earlier do not ask the peer for acks.
    pub fn set_peer_live(&mut self, live: bool) {
        self.peer_live = live;
        for ch in &mut self.channels {
            if let Some(r) = &mut ch.repl {
                r.peer_live = live;
            }
        }
    }

    /// Whether the peer runs a live session (see [`set_peer_live`](Self::set_peer_live)).
    pub fn peer_live(&self) -> bool {
        self.peer_live
    }

    /// Whether the peer announced the stream extension `name` (in its Options).
    pub fn peer_has_extension(&self, name: &str) -> bool {
        self.remote_extensions.iter().any(|n| n == name)
    }

    /// Test hook: rewrites every outgoing message (channel id, message) before it
    /// is framed, to play a misbehaving peer. Not for production use: only
    /// with the `test-hooks` feature.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn tamper_outgoing(&mut self, f: impl FnMut(u64, &mut Message) + Send + 'static) {
        self.tamper = Some(Box::new(f));
    }

    /// Test hook: sends raw plaintext bytes (encrypted like everything else), to
    /// play a misbehaving peer. Not for production use: only with the
    /// `test-hooks` feature.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn inject_plaintext(&mut self, now: Instant, bytes: &[u8]) {
        self.write_plain(now, bytes);
    }

    /// Whether we are the initiator.
    pub fn is_initiator(&self) -> bool {
        self.opts.initiator
    }

    /// Whether the session is live.
    pub fn is_live(&self) -> bool {
        self.opts.live
    }

    /// The error that ended the session, if any.
    pub fn error(&self) -> Option<&ProtocolError> {
        self.end.error()
    }

    /// Whether the session has ended (finished or failed).
    pub fn is_ended(&self) -> bool {
        !matches!(self.end, End::Running)
    }

    /// Whether the non-live session finished cleanly.
    pub fn is_finished(&self) -> bool {
        matches!(self.end, End::Finished | End::FinishedThenFailed(_))
    }

    /// The handshake result, once the handshake is done.
    pub fn handshake_result(&self) -> Option<&HandshakeResult> {
        match &self.stage {
            Stage::Transport(t) => Some(&t.result),
            Stage::Handshake { .. } => None,
        }
    }

    /// The generation this session speaks: known once the handshake is done,
    /// and for a responder from the start; `None` for an initiator with
    /// [`Wire::Auto`] before message 2.
    pub fn generation(&self) -> Option<Generation> {
        match &self.stage {
            Stage::Transport(t) => Some(t.result.generation),
            Stage::Handshake { hs, .. } => hs.generation(),
        }
    }

    /// Whether we are a responder that answered the peer's message 1 and the
    /// handshake did not finish: a peer that hangs up then most likely speaks
    /// the other generation (JS cannot tell, and hangs up on a message 2 it
    /// cannot decrypt).
    pub fn answered_unfinished_handshake(&self) -> bool {
        matches!(&self.stage, Stage::Handshake { hs, .. } if hs.answered())
    }

    /// The generation we answered the peer's handshake in, if
    /// [`answered_unfinished_handshake`](Self::answered_unfinished_handshake).
    pub fn abandoned_handshake(&self) -> Option<Generation> {
        self.generation().filter(|_| self.answered_unfinished_handshake())
    }

    /// How many bytes wait in [`poll_transmit`](Self::poll_transmit).
    pub fn pending_transmit_len(&self) -> usize {
        self.out.len()
    }

    /// Ends the session because the layer above rejects the peer (wrong shared
    /// key, incompatible version, ...). No effect if it already ended.
    pub fn reject(&mut self, reason: impl Into<String>) {
        self.fail(ProtocolError::Rejected(reason.into()));
    }

    /// Whether we opened the channel of `discovery_key` (and have not closed it).
    pub fn is_open_locally(&self, discovery_key: &[u8; 32]) -> bool {
        self.by_dkey
            .get(discovery_key)
            .is_some_and(|&s| self.channels[s].local_id.is_some() && !self.channels[s].local_closed)
    }

    /// Ends the session with a transport-level error (used by drivers: the socket
    /// failed or closed early). No effect if it already ended.
    pub fn fail_transport(&mut self, e: ProtocolError) {
        let answered_in = self.generation().filter(|_| self.answered_unfinished_handshake());
        let e = match (e, answered_in) {
            (e @ (ProtocolError::UnexpectedEof | ProtocolError::Io(_)), Some(answered_in)) => {
                ProtocolError::HandshakeAbandoned { answered_in, source: Box::new(e) }
            }
            (e, _) => e,
        };
        let e = match e {
            ProtocolError::UnexpectedEof | ProtocolError::Io(_) if !self.verified => {
                ProtocolError::EndedUnverified {
                    during_handshake: self.handshake_result().is_none(),
                    source: Box::new(e),
                }
            }
            e => e,
        };
        self.fail(e);
    }

    /// Whether the peer proved it knows the key of a channel we opened (see
    /// the module docs): until then [`PeerLimits`] bound the session.
    pub fn is_verified(&self) -> bool {
        self.verified
    }

    /// Bytes the session holds for the peer's input: the frame decoder's buffer
    /// and messages held before verification (for tests and accounting).
    pub fn input_memory(&self) -> usize {
        self.decoder.allocated() + self.held_bytes
    }

    /// Bytes to write to the peer, if any. Answers to the peer's requests are
    /// made here as the output drains, about [`OUT_LOW_WATER`] bytes at a time,
    /// so call it again after writing what it returned. `now` is the time of
    /// the call (what the answers made here count as sent at).
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        self.answer_requests(now);
        if self.out.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut self.out))
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_ended() {
            return None;
        }
        let mut t = self.silence_deadline();
        if let Some(v) = self.verify_deadline() {
            t = t.min(v);
        }
        if self.handshake_result().is_some() {
            t = t.min(self.last_send + self.opts.keep_alive);
        }
        if let Some((d, _, _)) = self.deadline {
            t = t.min(d);
        }
        Some(t)
    }

    /// How long the frame being received may take beyond the silence timeout.
    fn frame_allowance(&self) -> Duration {
        let len = self.decoder.pending_frame_len().unwrap_or(0) as u64;
        Duration::from_secs(len / self.opts.limits.min_frame_rate.max(1))
    }

    /// When the session fails if no further frame arrives whole: bytes that
    /// do not complete a frame do not move it (see the module docs).
    fn silence_deadline(&self) -> Instant {
        self.last_progress + self.opts.timeout + self.frame_allowance()
    }

    fn verify_deadline(&self) -> Option<Instant> {
        if self.verified {
            return None;
        }
        self.opts.limits.verify_timeout.map(|t| self.started + t)
    }

    /// Handles the passing of time: keep-alives, the silence limit, and the
    /// deadlines of [`PeerLimits`].
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_ended() {
            return;
        }
        if now >= self.silence_deadline() {
            let partial = self.decoder.buffered() > 0
                || (self.handshake_result().is_none() && self.last_recv > self.last_progress);
            let waited = now.saturating_duration_since(self.last_progress);
            if partial {
                let len = self.decoder.pending_frame_len().unwrap_or(0);
                self.fail(ProtocolError::Stalled { len, waited });
            } else {
                self.fail(ProtocolError::Timeout(self.opts.timeout));
            }
            return;
        }
        if self.verify_deadline().is_some_and(|d| now >= d) {
            self.fail(ProtocolError::NotVerified(now.saturating_duration_since(self.started)));
            return;
        }
        if let Some((d, waiting_for, since)) = self.deadline {
            if now >= d {
                self.fail(ProtocolError::Unresponsive {
                    waiting_for,
                    waited: now.saturating_duration_since(since),
                });
                return;
            }
        }
        if self.handshake_result().is_some() && now >= self.last_send + self.opts.keep_alive {
            self.write_plain(now, &[0]);
        }
        self.answer_requests(now);
    }

    /// Handles bytes received from the peer. On error the session is over: the
    /// error is returned (and kept in [`error`](Self::error)).
    pub fn handle_input(&mut self, now: Instant, data: &[u8]) -> Result<(), ProtocolError> {
        if let Some(e) = self.error() {
            return Err(e.clone());
        }
        self.last_recv = now;
        let r = self.input(now, data);
        if let Err(e) = &r {
            self.fail(e.clone());
        }
        self.answer_requests(now);
        r
    }

    fn input(&mut self, now: Instant, data: &[u8]) -> Result<(), ProtocolError> {
        let r = self.input_frames(now, data);
        // One bitfield write per burst of downloaded blocks, also after an error
        // (what was verified and stored stays stored).
        for ch in &mut self.channels {
            if let Some(repl) = &mut ch.repl {
                repl.flush()?;
            }
        }
        r
    }

    fn input_frames(&mut self, now: Instant, data: &[u8]) -> Result<(), ProtocolError> {
        let mut transport = Vec::new();
        if let Stage::Handshake { hs, .. } = &mut self.stage {
            hs.receive(data)?;
            let reply = hs.take_outgoing();
            if !reply.is_empty() || hs.is_finished() {
                // A whole handshake message arrived.
                self.last_progress = now;
            }
            self.out.extend(reply);
            if !hs.is_finished() {
                return Ok(());
            }
            let leftover = hs.take_leftover();
            let result = hs.result().cloned().ok_or(ProtocolError::Malformed("handshake without result"))?;
            tracing::debug!(
                generation = %result.generation,
                remote_key = %ShortHex(&result.remote_static_key),
                "handshake done"
            );
            self.events.push_back(Event::Handshake { remote_static_key: result.remote_static_key });
            let (encrypt, decrypt) = (result.encryptor(), result.decryptor());
            let transport_stage = Stage::Transport(Box::new(Transport { result, encrypt, decrypt }));
            let (queued, pending_opens) = match std::mem::replace(&mut self.stage, transport_stage) {
                Stage::Handshake { queued, pending_opens, .. } => (queued, pending_opens),
                Stage::Transport(_) => (Vec::new(), Vec::new()),
            };
            self.last_send = now;
            // Frames made while handshaking go out first, then queued opens.
            if !queued.is_empty() {
                self.write_plain(now, &queued);
            }
            // Announce our extensions (and so compact proofs) right away.
            self.send_options(now);
            for slot in pending_opens {
                self.send_open(now, slot)?;
            }
            transport = leftover;
        } else {
            transport.extend_from_slice(data);
        }
        if transport.is_empty() {
            return Ok(());
        }
        if let Stage::Transport(t) = &mut self.stage {
            t.decrypt.apply(&mut transport);
        }
        self.decoder.push(&transport);
        loop {
            match self.decoder.next_frame() {
                Ok(None) => break,
                Ok(Some(Decoded::KeepAlive)) => self.last_progress = now,
                Ok(Some(Decoded::Frame(frame))) => {
                    self.last_progress = now;
                    let msg = frame.message().map_err(|e| ProtocolError::Frame(FramingError::Message(e)))?;
                    self.on_message(now, frame.channel, msg, frame.body.len())?;
                }
                Err(source) => {
                    return Err(ProtocolError::Frame(FramingError::Receive {
                        source,
                        unverified: !self.verified,
                    }))
                }
            }
            if self.is_ended() {
                break;
            }
        }
        self.check_finished();
        Ok(())
    }

    fn fail(&mut self, e: ProtocolError) {
        if matches!(self.end, End::Running) {
            trace_failure(&e);
            self.end = End::Failed(e);
        }
    }

    fn write_plain(&mut self, now: Instant, plain: &[u8]) {
        match &mut self.stage {
            Stage::Transport(t) => {
                // Encrypt in place at the tail of the output buffer (no copy).
                let start = self.out.len();
                self.out.extend_from_slice(plain);
                t.encrypt.apply(&mut self.out[start..]);
                self.last_send = now;
            }
            Stage::Handshake { queued, .. } => queued.extend_from_slice(plain),
        }
    }

    fn send(&mut self, now: Instant, channel: u64, msg: &Message) {
        #[cfg(feature = "test-hooks")]
        if let Some(t) = &mut self.tamper {
            let mut m = msg.clone();
            t(channel, &mut m);
            match encode_frame(channel, m.type_id(), &m.encode()) {
                Ok(frame) => self.write_plain(now, &frame),
                Err(e) => self.fail(ProtocolError::Frame(FramingError::Send(e))),
            }
            return;
        }
        let body = msg.encode();
        if self.handshake_result().is_none() {
            match encode_frame(channel, msg.type_id(), &body) {
                Ok(frame) => self.write_plain(now, &frame),
                Err(e) => self.fail(ProtocolError::Frame(FramingError::Send(e))),
            }
            return;
        }
        // The common case: frame straight into the output buffer and encrypt the
        // tail in place (no intermediate frame buffer).
        let header = channel << 4 | u64::from(msg.type_id());
        let len = crate::varint::encoded_len(header) + body.len();
        if channel > crate::frame::MAX_CHANNEL {
            self.fail(ProtocolError::Frame(FramingError::Send(FrameError::InvalidChannel(channel))));
            return;
        }
        if len > crate::frame::MAX_FRAME_LEN {
            let e = FrameError::TooLarge { len: len as u64, max: crate::frame::MAX_FRAME_LEN };
            self.fail(ProtocolError::Frame(FramingError::Send(e)));
            return;
        }
        let start = self.out.len();
        self.out.reserve(len + 10);
        crate::varint::encode(len as u64, &mut self.out);
        crate::varint::encode(header, &mut self.out);
        self.out.extend_from_slice(&body);
        if let Stage::Transport(t) = &mut self.stage {
            t.encrypt.apply(&mut self.out[start..]);
        }
        self.last_send = now;
    }

    // ----- channels ------------------------------------------------------

    fn slot_for(&mut self, dkey: [u8; 32]) -> usize {
        if let Some(&s) = self.by_dkey.get(&dkey) {
            return s;
        }
        self.channels.push(Channel::new(dkey));
        let s = self.channels.len() - 1;
        self.by_dkey.insert(dkey, s);
        s
    }

    /// Opens a channel for `feed` and replicates it once the peer opens it too.
    /// Opening a feed twice is a no-op.
    pub fn open_feed(
        &mut self,
        now: Instant,
        feed: SharedFeed,
        opts: FeedOptions,
    ) -> Result<(), ProtocolError> {
        let key = *feed.public_key();
        self.open(now, key, Some((feed, opts)))
    }

    /// Opens a channel for `key` that carries no feed data (multifeed's root
    /// channel): only Open and Close travel on it.
    pub fn open_channel(&mut self, now: Instant, key: PublicKey) -> Result<(), ProtocolError> {
        self.open(now, key, None)
    }

    fn open(
        &mut self,
        now: Instant,
        key: PublicKey,
        feed: Option<(SharedFeed, FeedOptions)>,
    ) -> Result<(), ProtocolError> {
        if let Some(e) = self.error() {
            return Err(e.clone());
        }
        let slot = self.slot_for(key.discovery_key());
        let ch = &mut self.channels[slot];
        if ch.local_id.is_some() {
            return Ok(());
        }
        let id = self.next_local_id;
        self.next_local_id += 1;
        ch.local_id = Some(id);
        ch.key = Some(key);
        if feed.is_some() {
            self.feeds_opened += 1;
        }
        ch.feed = feed;
        self.by_local.insert(id, slot);
        match &mut self.stage {
            Stage::Transport(_) => self.send_open(now, slot)?,
            Stage::Handshake { pending_opens, .. } => pending_opens.push(slot),
        }
        Ok(())
    }

    fn send_open(&mut self, now: Instant, slot: usize) -> Result<(), ProtocolError> {
        let (Some(result), Some(key), Some(id)) =
            (self.handshake_result(), self.channels[slot].key, self.channels[slot].local_id)
        else {
            return Ok(());
        };
        let capability = result.capability(key.as_bytes());
        let dkey = self.channels[slot].discovery_key;
        self.send(
            now,
            id,
            &Message::Open(Open { discovery_key: dkey.to_vec(), capability: Some(capability.to_vec()) }),
        );
        if self.channels[slot].remote_id.is_some() {
            self.verify_capability(slot)?;
            self.both_open(now, slot)?;
        }
        Ok(())
    }

    fn verify_capability(&mut self, slot: usize) -> Result<(), ProtocolError> {
        let ch = &self.channels[slot];
        let (Some(result), Some(key)) = (self.handshake_result(), ch.key) else { return Ok(()) };
        match &ch.remote_capability {
            Some(cap)
                if crate::cipher::verify_remote_capability(
                    &result.tx_key,
                    &result.rx_key,
                    key.as_bytes(),
                    cap,
                ) =>
            {
                self.on_verified();
                Ok(())
            }
            _ => Err(ProtocolError::BadCapability(hex_of(&ch.discovery_key))),
        }
    }

    fn both_open(&mut self, now: Instant, slot: usize) -> Result<(), ProtocolError> {
        let live = self.opts.live;
        let max = self.opts.max_in_flight;
        let dkey = self.channels[slot].discovery_key;
        tracing::debug!(
            discovery_key = %ShortHex(&dkey),
            data = self.channels[slot].feed.is_some(),
            "channel opened"
        );
        self.events.push_back(Event::ChannelOpened { discovery_key: dkey });
        // Extension messages held until the peer was verified come after the
        // open that verified it, as they would from a peer that waited.
        self.events.extend(std::mem::take(&mut self.held_events));
        let Some((feed, fopts)) = self.channels[slot].feed.clone() else { return Ok(()) };
        let mut repl = Replicator::new(feed, fopts, live, max);
        repl.compact_proofs = self.compact_proofs;
        repl.peer_live = self.peer_live;
        if self.handshake_result().is_some_and(|r| !r.generation.verifies_long_signatures()) {
            repl.serves_short_only();
        }
        let mut out = Vec::new();
        repl.on_open(&mut out);
        self.channels[slot].repl = Some(repl);
        self.flush_channel(now, slot, out);
        self.early_total =
            self.early_total.saturating_sub(std::mem::take(&mut self.channels[slot].early_bytes));
        for msg in std::mem::take(&mut self.channels[slot].early) {
            self.on_feed_message(now, slot, msg)?;
        }
        self.after_feed_step(now, slot);
        Ok(())
    }

    fn flush_channel(&mut self, now: Instant, slot: usize, msgs: Vec<Message>) {
        if let Some(id) = self.channels[slot].local_id {
            if self.channels[slot].local_closed {
                return;
            }
            for m in msgs {
                self.send(now, id, &m);
            }
        }
    }

    /// Closes our side of the channel for `key` (refusing it, if the peer opened
    /// it and we never did).
    pub fn close_channel(&mut self, now: Instant, key: &PublicKey) {
        let Some(&slot) = self.by_dkey.get(&key.discovery_key()) else { return };
        self.close_slot(now, slot);
        self.check_finished();
    }

    fn close_slot(&mut self, now: Instant, slot: usize) {
        let ch = &mut self.channels[slot];
        if ch.local_closed {
            return;
        }
        ch.local_closed = true;
        if let Some(r) = &mut ch.repl {
            // Answers could not be sent any more.
            r.clear_queued();
        }
        match ch.local_id {
            Some(id) => self.send(now, id, &Message::Close(Close { discovery_key: None })),
            None => {
                // Refuse a channel we never opened: Close by discovery key on a
                // fresh id, as JS does.
                let id = self.next_local_id;
                self.next_local_id += 1;
                let dkey = ch.discovery_key.to_vec();
                self.send(now, id, &Message::Close(Close { discovery_key: Some(dkey) }));
            }
        }
        self.after_close(slot);
    }

    fn after_close(&mut self, slot: usize) {
        let ch = &mut self.channels[slot];
        if ch.is_done() && !ch.announced_closed {
            ch.announced_closed = true;
            if let Some(mut r) = ch.repl.take() {
                if let Err(e) = r.flush() {
                    self.end.storage_failed(e);
                }
                ch.stats = r.stats;
            }
            tracing::debug!(
                discovery_key = %ShortHex(&ch.discovery_key),
                blocks_down = ch.stats.blocks_down,
                blocks_up = ch.stats.blocks_up,
                bytes_down = ch.stats.bytes_down,
                bytes_up = ch.stats.bytes_up,
                "channel closed"
            );
            let ev = Event::ChannelClosed { discovery_key: ch.discovery_key, stats: ch.stats };
            self.events.push_back(ev);
        }
    }

    /// Keeps a non-live session from finishing until [`release`](Self::release)
    /// (multifeed holds it while its feed exchange runs).
    pub fn hold(&mut self) {
        self.holds += 1;
    }

    /// Sets (or, with `None`, clears) the layer above's deadline: unless it is
    /// cleared or moved before `deadline`, the session fails then with
    /// [`ProtocolError::Unresponsive`] naming `waiting_for`. Keep-alives and
    /// other traffic do not move it: it bounds a peer that stays connected but
    /// never answers (multifeed sets it while a request of ours is unanswered).
    /// `since` is when the wait began (for the error's message).
    pub fn set_deadline(&mut self, deadline: Option<(Instant, &'static str)>, since: Instant) {
        self.deadline = deadline.map(|(d, what)| (d, what, since));
    }

    /// The layer above's deadline and what it waits for, if set.
    pub fn deadline(&self) -> Option<(Instant, &'static str)> {
        self.deadline.map(|(d, what, _)| (d, what))
    }

    /// Releases one [`hold`](Self::hold).
    pub fn release(&mut self) {
        self.holds = self.holds.saturating_sub(1);
        self.check_finished();
    }

    /// Ends the session from our side: sends Close for every channel and
    /// finishes without waiting for the peer's answers (a live JS peer never
    /// answers a Close on multifeed's root channel). This is how a live session
    /// ends; a driver flushes the Close frames and then lets the stream go.
    pub fn close(&mut self, now: Instant) {
        for slot in 0..self.channels.len() {
            if self.channels[slot].local_id.is_some() || self.channels[slot].remote_id.is_some() {
                self.close_slot(now, slot);
            }
        }
        if matches!(self.end, End::Running) {
            self.end = End::Finished;
            self.events.push_back(Event::Finished);
        }
    }

    fn check_finished(&mut self) {
        // Nothing finishes during the handshake (channels opened meanwhile
        // have not sent their Open yet).
        if self.is_ended() || self.handshake_result().is_none() || self.holds > 0 {
            return;
        }
        // A live session runs until closed locally (which ends it), or until
        // the peer has closed every channel there was.
        if self.opts.live && self.channels.is_empty() {
            return;
        }
        if self.channels.iter().all(Channel::is_done) {
            self.end = End::Finished;
            self.events.push_back(Event::Finished);
        }
    }

    /// Sends a stream-level extension message (channel 0). The name must be one of
    /// [`ProtocolOptions::extensions`].
    pub fn send_extension(&mut self, now: Instant, name: &str, payload: &[u8]) -> Result<(), ProtocolError> {
        let Some(id) = self.local_extensions.iter().position(|n| n == name) else {
            return Err(ProtocolError::Malformed("unknown extension name"));
        };
        self.send_options(now);
        self.send(now, 0, &Message::Extension(Extension { id: id as u64, payload: payload.to_vec() }));
        Ok(())
    }

    fn send_options(&mut self, now: Instant) {
        if !self.options_sent {
            self.options_sent = true;
            let opts = Options { extensions: self.local_extensions.clone(), ack: Some(false) };
            self.send(now, 0, &Message::Options(opts));
        }
    }

    /// Tells the session that some of its feeds changed locally: announces new
    /// blocks to the peer and requests more.
    pub fn feeds_changed(&mut self, now: Instant) {
        if self.is_ended() {
            return;
        }
        for slot in 0..self.channels.len() {
            if self.channels[slot].repl.is_none() {
                continue;
            }
            let mut out = Vec::new();
            if let Some(r) = &mut self.channels[slot].repl {
                r.on_local_change(&mut out);
                r.fill_requests(now, &mut out);
            }
            self.flush_channel(now, slot, out);
            self.after_feed_step(now, slot);
        }
        self.check_finished();
    }

    /// Asks the peer for block `index` of the feed with `discovery_key` now,
    /// whatever the feed's selection (an on-demand get). No effect if the feed's
    /// channel is not open on both sides.
    pub fn want_block(&mut self, now: Instant, discovery_key: &[u8; 32], index: u64) {
        let Some(&slot) = self.by_dkey.get(discovery_key) else { return };
        let mut out = Vec::new();
        if let Some(r) = &mut self.channels[slot].repl {
            r.want(now, index, &mut out);
        }
        self.flush_channel(now, slot, out);
    }

    /// What moved per feed so far (open and closed channels).
    pub fn stats(&self) -> Vec<([u8; 32], FeedStats)> {
        self.channels
            .iter()
            .map(|c| (c.discovery_key, c.repl.as_ref().map_or(c.stats, |r| r.stats)))
            .collect()
    }

    /// How many feeds this session has opened so far. It only grows, by one
    /// for each feed [`feeds`](Self::feeds) gains, so a driver can skip
    /// collecting the feeds while it has not changed (with thousands of
    /// feeds, doing that after every step took a sixth of a session's time).
    pub fn feeds_opened(&self) -> usize {
        self.feeds_opened
    }

    /// How far each feed of the session got (open and closed channels, in
    /// the order they opened). Locks each open feed briefly for its length.
    pub fn feed_progress(&self) -> Vec<FeedProgress> {
        self.channels
            .iter()
            .map(|c| FeedProgress {
                discovery_key: c.discovery_key,
                key: c.key.or_else(|| c.feed.as_ref().map(|(f, _)| *f.public_key())),
                stats: c.repl.as_ref().map_or(c.stats, |r| r.stats),
                local_length: c.feed.as_ref().map_or(0, |(f, _)| f.len()),
                remote_length: c.repl.as_ref().map_or(0, |r| r.remote_length()),
                requests_in_flight: c.repl.as_ref().map_or(0, |r| r.requests_in_flight()),
                open: !c.is_done(),
            })
            .collect()
    }

    /// The feeds being replicated.
    pub fn feeds(&self) -> Vec<SharedFeed> {
        self.channels.iter().filter_map(|c| c.feed.as_ref().map(|(f, _)| f.clone())).collect()
    }

    // ----- incoming ------------------------------------------------------

    /// Counts `size` bytes held for a peer that is not verified yet.
    fn hold_unverified(&mut self, size: usize) -> Result<(), ProtocolError> {
        if self.verified {
            return Ok(());
        }
        self.held_bytes += size;
        let limit = self.opts.limits.unverified_max_held;
        if self.held_bytes > limit {
            return Err(ProtocolError::UnverifiedLimit { what: "bytes of held messages", limit });
        }
        Ok(())
    }

    /// The peer proved a key: lift the limits. What was held is handed on by
    /// `both_open`, after the channel's `ChannelOpened`.
    fn on_verified(&mut self) {
        if self.verified {
            return;
        }
        self.verified = true;
        self.held_bytes = 0;
        self.decoder.set_max_frame_len(crate::frame::MAX_FRAME_LEN);
    }

    fn on_message(
        &mut self,
        now: Instant,
        channel: u64,
        msg: Message,
        size: usize,
    ) -> Result<(), ProtocolError> {
        if channel == 0 {
            match msg {
                Message::Options(o) => {
                    self.compact_proofs = o.extensions.iter().any(|e| e == COMPACT_PROOFS);
                    let compact = self.compact_proofs;
                    for ch in &mut self.channels {
                        if let Some(r) = &mut ch.repl {
                            r.compact_proofs = compact;
                        }
                    }
                    self.remote_extensions = o.extensions;
                }
                Message::Extension(e) => {
                    if let Some(name) = self.remote_extensions.get(e.id as usize) {
                        let ev = Event::Extension { name: name.clone(), payload: e.payload };
                        if self.verified {
                            self.events.push_back(ev);
                        } else {
                            // Never let the layer above answer a stranger.
                            self.hold_unverified(size)?;
                            self.held_events.push(ev);
                        }
                    }
                }
                // JS ignores feed messages on channel 0.
                _ => {}
            }
            return Ok(());
        }
        match msg {
            Message::Open(open) => self.on_open(now, channel, open),
            Message::Close(close) => {
                let slot = match self.by_remote.get(&channel) {
                    Some(&s) => Some(s),
                    None => close
                        .discovery_key
                        .as_deref()
                        .and_then(|d| <[u8; 32]>::try_from(d).ok())
                        .and_then(|d| self.by_dkey.get(&d).copied()),
                };
                if let Some(slot) = slot {
                    self.channels[slot].remote_closed = true;
                    if self.channels[slot].remote_id.is_none() {
                        // Refused before it was opened: count it as opened and closed.
                        self.channels[slot].remote_id = Some(u64::MAX);
                    }
                    if self.channels[slot].local_id.is_some() {
                        self.close_slot(now, slot);
                    }
                    self.after_close(slot);
                }
                Ok(())
            }
            other => {
                let Some(&slot) = self.by_remote.get(&channel) else {
                    return Err(ProtocolError::UnknownChannel(channel));
                };
                if self.channels[slot].remote_closed {
                    return Ok(());
                }
                // Our side is closed: blocks and requests on it are no
                // longer ours to store or answer (the feed may be gone, as
                // after a block in kappa-multifeed, whose storage then fails).
                if self.channels[slot].local_closed && matches!(other, Message::Data(_) | Message::Request(_))
                {
                    return Ok(());
                }
                if self.channels[slot].repl.is_none() {
                    if self.channels[slot].local_id.is_none() {
                        self.hold_unverified(size)?;
                        if self.early_total + size > MAX_EARLY_BYTES {
                            return Err(ProtocolError::OutOfRange("bytes of messages before open"));
                        }
                        self.early_total += size;
                        self.channels[slot].early_bytes += size;
                        let early = &mut self.channels[slot].early;
                        if early.len() >= MAX_EARLY {
                            return Err(ProtocolError::OutOfRange("messages before open"));
                        }
                        early.push(other);
                    }
                    return Ok(());
                }
                self.on_feed_message(now, slot, other)?;
                self.after_feed_step(now, slot);
                Ok(())
            }
        }
    }

    fn on_open(&mut self, now: Instant, channel: u64, open: Open) -> Result<(), ProtocolError> {
        let dkey: [u8; 32] = open
            .discovery_key
            .as_slice()
            .try_into()
            .map_err(|_| ProtocolError::Malformed("discovery key length"))?;
        if self.by_remote.contains_key(&channel) {
            return Err(ProtocolError::Malformed("channel opened twice"));
        }
        if !self.verified && !self.by_dkey.contains_key(&dkey) {
            let limit = self.opts.limits.unverified_max_channels;
            let theirs = self.channels.iter().filter(|c| c.local_id.is_none()).count();
            if theirs >= limit {
                return Err(ProtocolError::UnverifiedLimit { what: "channels we did not open", limit });
            }
        }
        let slot = self.slot_for(dkey);
        if self.channels[slot].remote_id.is_some() {
            return Err(ProtocolError::Malformed("discovery key opened twice"));
        }
        self.channels[slot].remote_id = Some(channel);
        self.channels[slot].remote_capability = open.capability;
        self.by_remote.insert(channel, slot);
        if self.channels[slot].local_id.is_some() {
            if matches!(&self.stage, Stage::Handshake { pending_opens, .. } if pending_opens.contains(&slot))
            {
                return Ok(());
            }
            self.verify_capability(slot)?;
            self.both_open(now, slot)?;
        } else {
            tracing::trace!(discovery_key = %ShortHex(&dkey), "the peer opened a channel we have not");
            self.events.push_back(Event::RemoteOpen { discovery_key: dkey });
        }
        Ok(())
    }

    /// Answers queued requests of every channel, in turn, until about
    /// [`OUT_LOW_WATER`] bytes wait to be sent.
    fn answer_requests(&mut self, now: Instant) {
        if self.handshake_result().is_none() || self.is_ended() {
            return;
        }
        loop {
            let mut answered = false;
            for slot in 0..self.channels.len() {
                if self.out.len() >= OUT_LOW_WATER {
                    return;
                }
                let Some(repl) = &mut self.channels[slot].repl else { continue };
                if !repl.has_queued() {
                    continue;
                }
                let mut msgs = Vec::new();
                let budget = (OUT_LOW_WATER - self.out.len()).min(ANSWER_SLICE);
                match repl.answer_queued(budget, &mut msgs) {
                    Ok(_) => answered = true,
                    Err(e) => {
                        self.fail(e);
                        return;
                    }
                }
                let drained = !repl.has_queued();
                self.flush_channel(now, slot, msgs);
                if drained {
                    // The last answer may be what a non-live upload waited for.
                    self.after_feed_step(now, slot);
                    self.check_finished();
                }
            }
            if !answered {
                return;
            }
        }
    }

    fn on_feed_message(&mut self, now: Instant, slot: usize, msg: Message) -> Result<(), ProtocolError> {
        let Some(repl) = &mut self.channels[slot].repl else { return Ok(()) };
        let mut out = Vec::new();
        match msg {
            Message::Status(s) => repl.on_status(s),
            Message::Have(h) => repl.on_have(now, h, &mut out)?,
            Message::Unhave(u) => repl.on_unhave(u.start, u.length_or_default()),
            Message::Want(w) => repl.on_want(w, &mut out)?,
            Message::Request(r) => repl.on_request(r)?,
            Message::Cancel(c) => repl.on_cancel(c.index),
            Message::Data(d) => repl.on_data(now, d, &mut out)?,
            // Options on a feed channel: only the ack flag matters (no per-feed
            // extensions here).
            Message::Options(o) => repl.remote_ack = o.ack == Some(true),
            // Unwant: JS ignores it too.
            _ => {}
        }
        self.flush_channel(now, slot, out);
        Ok(())
    }

    /// After a step on a feed channel: non-live completion and closing.
    fn after_feed_step(&mut self, now: Instant, slot: usize) {
        let mut out = Vec::new();
        let (close, synced_now) = match &mut self.channels[slot].repl {
            Some(r) => {
                let was = r.synced;
                let close = r.check_end(&mut out);
                (close, !was && r.synced)
            }
            None => return,
        };
        self.flush_channel(now, slot, out);
        if synced_now {
            let dkey = self.channels[slot].discovery_key;
            tracing::debug!(discovery_key = %ShortHex(&dkey), "feed synced");
            self.events.push_back(Event::FeedSynced { discovery_key: dkey });
        }
        if close {
            self.close_slot(now, slot);
        }
    }
}

/// Records why a session failed, once, as it fails: the error's message and,
/// as `cause`, the typed error with its sources (which check failed, the
/// storage's or socket's own error). What a peer did wrong is not our error,
/// so it is a debug event; a local storage failure is a warning.
fn trace_failure(e: &ProtocolError) {
    match e {
        // Our own end of a session, not a failure.
        ProtocolError::Closed => {}
        ProtocolError::Storage(_) => tracing::warn!(error = %e, cause = ?e, "session failed: local storage"),
        ProtocolError::Rejected(_) => tracing::debug!(error = %e, "session rejected by the layer above"),
        _ => tracing::debug!(error = %e, cause = ?e, "session failed"),
    }
}

/// The first 8 bytes of a key in hex, for trace fields (formatted only when
/// the event is recorded).
pub(crate) struct ShortHex<'a>(pub(crate) &'a [u8]);

impl std::fmt::Display for ShortHex<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().take(8).try_for_each(|b| write!(f, "{b:02x}"))
    }
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
