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

// The state is defined here; each job on it has its module: `options` and
// `events` (what the layer above passes and gets), `phase` (handshake,
// transport and the end), `input` (bytes from the peer), `output` (bytes to
// it), `timers` (the passing of time), `channels` (opening, replicating and
// closing feeds), `error` (why a session failed).
mod channels;
mod error;
mod events;
mod input;
mod options;
mod output;
mod phase;
mod timers;

pub use error::ProtocolError;
pub use events::{Event, FeedProgress, FeedStats};
pub use options::{FeedOptions, PeerLimits, ProtocolOptions, Selection};

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use kappa_log::{PublicKey, SharedFeed};

use crate::cipher::TransportCipher;
use crate::frame::FrameDecoder;
use crate::message::Message;
use crate::noise::{Handshake, HandshakeResult, KeyPair};
use crate::replicate::Replicator;

use error::trace_failure;

/// The stream extension kappa-rs peers announce (in their channel-0 Options) to
/// say "I keep every proof node I am sent, in order". Between two such peers an
/// uploader leaves out of each proof the nodes it already sent, which makes most
/// proofs a node or two with no signature. JS peers do not announce it and get
/// self-contained proofs, as JS uploaders send.
pub const COMPACT_PROOFS: &str = "kappa-rs/compact-proofs";

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
    /// When the layer above wants [`Event::Wake`] ([`Protocol::wake_me`]).
    wake_at: Option<Instant>,
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
            wake_at: None,
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

    /// Whether we are the initiator.
    pub fn is_initiator(&self) -> bool {
        self.opts.initiator
    }

    /// Whether the session is live.
    pub fn is_live(&self) -> bool {
        self.opts.live
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

    /// How many feeds this session has opened so far. It only grows, by one
    /// for each feed [`feeds`](Self::feeds) gains, so a driver can skip
    /// collecting the feeds while it has not changed (with thousands of
    /// feeds, doing that after every step took a sixth of a session's time).
    pub fn feeds_opened(&self) -> usize {
        self.feeds_opened
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
