//! What a session tells the layer above: [`Event`]s and per-feed [`FeedStats`]
//! and [`FeedProgress`].

use kappa_log::PublicKey;

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
/// ([`Protocol::feed_progress`](super::Protocol::feed_progress)).
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
    /// [`Protocol::open_feed`](super::Protocol::open_feed) (or refuse with [`Protocol::close_channel`](super::Protocol::close_channel)).
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
    /// The wake-up the layer above asked for with
    /// [`Protocol::wake_me`](super::Protocol::wake_me): delivered by
    /// [`handle_timeout`](super::Protocol::handle_timeout), so a long piece
    /// of work can be done a slice at a time, with reading, writing and
    /// keep-alives in between.
    Wake,
}
