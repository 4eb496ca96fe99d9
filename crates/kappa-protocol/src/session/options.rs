//! The options of a session ([`ProtocolOptions`], [`PeerLimits`]) and of each
//! feed it replicates ([`FeedOptions`], [`Selection`]).

use std::ops::Range;
use std::time::Duration;

use crate::noise::{Generation, KeyPair, Wire};

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
    /// session fails with [`ProtocolError::NotVerified`](super::ProtocolError::NotVerified) (default 10 s; `None`:
    /// no deadline). A session that finishes before is fine.
    pub verify_timeout: Option<Duration>,
    /// A frame must arrive whole within the silence timeout plus one second per
    /// this many bytes of its declared length, counted from the last complete
    /// frame (default 16 KiB/s: 20 s + 4 s for a 64 KiB frame, 20 s + 512 s for
    /// 8 MiB). Otherwise the session fails with [`ProtocolError::Stalled`](super::ProtocolError::Stalled).
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
