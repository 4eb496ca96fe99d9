//! [`Kappa::status`](crate::Kappa::status): what a database is doing, for a
//! person or a monitor: per peer what is being synced and how far, per view
//! how far it is, and the open files and memory of the process.
//!
//! The struct serializes to JSON (and back), which is how `kappa serve`
//! publishes it for `kappa status` (see the CLI's docs).

use serde::{Deserialize, Serialize};

/// What a database is doing; see [`Kappa::status`](crate::Kappa::status).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct KappaStatus {
    /// Whether the database is open in seed mode (views off).
    pub seed: bool,
    /// The feeds held.
    pub feeds: FeedsStatus,
    /// The sessions running now, in the order they started.
    pub peers: Vec<PeerStatus>,
    /// The views: those in use, then those the view storage holds that are
    /// not in use (status `"stopped"`), by name.
    pub views: Vec<ViewStatus>,
    /// Open files of the process (the shared pool of feed files).
    pub files: FilesStatus,
    /// Memory of the process.
    pub memory: MemoryStatus,
}

/// The feeds a database holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FeedsStatus {
    /// Feeds (blocked ones not counted).
    pub count: usize,
    /// Of them, local writers.
    pub writable: usize,
    /// Entries stored here, over all feeds.
    pub entries: u64,
}

/// One running session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PeerStatus {
    /// Who the peer is (its address, for sessions a server accepted).
    pub peer: Option<String>,
    /// Whether we dialled.
    pub initiator: bool,
    /// Whether the session is live.
    pub live: bool,
    /// Milliseconds since the session started.
    pub connected_ms: u64,
    /// The wire generation (6 or 7), once the handshake finished.
    pub wire: Option<u8>,
    /// Whether the peer proved it knows the shared key.
    pub verified: bool,
    /// Feeds the session replicates (open channels).
    pub feeds: usize,
    /// Blocks received, verified and stored in this session.
    pub blocks_received: u64,
    /// Blocks sent in this session.
    pub blocks_sent: u64,
    /// Bytes read from the peer.
    pub bytes_received: u64,
    /// Bytes written to the peer.
    pub bytes_sent: u64,
    /// Bytes made for the peer and not yet written (bounded; a stalled peer
    /// holds at most that much).
    pub buffered_bytes: u64,
    /// The feeds where one side has entries the other lacks: what is being
    /// synced, and how far.
    pub syncing: Vec<FeedSyncStatus>,
}

/// One feed being synced with a peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FeedSyncStatus {
    /// The feed's public key (hex), once known.
    pub key: Option<String>,
    /// Its length here.
    pub ours: u64,
    /// The length the peer announced.
    pub theirs: u64,
    /// Blocks of it received in this session.
    pub received: u64,
    /// Blocks of it sent in this session.
    pub sent: u64,
    /// Our requests for it waiting for an answer.
    pub requests_in_flight: usize,
}

/// How far one view is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ViewStatus {
    /// The view's name.
    pub name: String,
    /// `"idle"`, `"indexing"`, `"paused"`, `"error"`, or `"stopped"` for a
    /// view the storage holds that is not in use.
    pub status: String,
    /// Entries indexed.
    pub indexed: u64,
    /// Entries available to it (stored here, in feeds it may see).
    pub available: u64,
    /// The error, in the error state.
    pub error: Option<String>,
    /// A rebuild in progress beside the live rows (`indexed` then counts the
    /// rebuild's entries): readers see the live view until it is swapped in.
    #[serde(default)]
    pub rebuild: Option<ViewRebuild>,
}

/// A view's rebuild in progress in its store's shadow, beside the live rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ViewRebuild {
    /// Why it is rebuilt (for a view not in use: that a rebuild was left
    /// half way, to resume when the view is used).
    pub reason: String,
    /// The version of the live rows (`None` if unknown).
    pub live_version: Option<u64>,
    /// Entries the live rows hold.
    pub live_indexed: u64,
}

/// Open files of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FilesStatus {
    /// Feed files open now (in the process's shared pool).
    pub open: usize,
    /// The most the pool keeps open.
    pub capacity: usize,
    /// The most that were open at once.
    pub peak_open: usize,
    /// Files closed to make room for others so far.
    pub evicted: u64,
    /// Every descriptor the process holds (sockets, locks, the view file…;
    /// Linux, from `/proc/self/fd`).
    pub descriptors: Option<usize>,
}

/// Memory of the process (Linux, from `/proc/self/status`; `None` elsewhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MemoryStatus {
    /// Resident set size now, bytes (`VmRSS`).
    pub rss_bytes: Option<u64>,
    /// Peak resident set size, bytes (`VmHWM`).
    pub peak_rss_bytes: Option<u64>,
}

impl MemoryStatus {
    /// The process's memory now.
    pub fn now() -> Self {
        let text = std::fs::read_to_string("/proc/self/status").ok();
        let field = |name: &str| {
            text.as_deref()?
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kib| kib * 1024)
        };
        MemoryStatus { rss_bytes: field("VmRSS:"), peak_rss_bytes: field("VmHWM:") }
    }
}

impl FilesStatus {
    /// The process's files now.
    pub fn now() -> Self {
        let pool = kappa_storage::FilePool::global();
        let stats = pool.stats();
        FilesStatus {
            open: stats.open,
            capacity: pool.capacity(),
            peak_open: stats.peak_open,
            evicted: stats.evicted,
            descriptors: std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count()),
        }
    }
}

impl PeerStatus {
    pub(crate) fn from_session(s: kappa_multifeed::SessionInfo) -> Self {
        let p = s.progress;
        let feeds = p.as_ref().map_or(&[][..], |p| &p.feeds[..]);
        let syncing = feeds
            .iter()
            .filter(|f| f.open && (f.local_length != f.remote_length || f.requests_in_flight > 0))
            .map(|f| FeedSyncStatus {
                key: f.key.map(|k| k.to_hex()),
                ours: f.local_length,
                theirs: f.remote_length,
                received: f.stats.blocks_down,
                sent: f.stats.blocks_up,
                requests_in_flight: f.requests_in_flight,
            })
            .collect();
        PeerStatus {
            peer: s.peer,
            initiator: s.initiator,
            live: s.live,
            connected_ms: p.as_ref().map_or(0, |p| p.elapsed.as_millis() as u64),
            wire: p.as_ref().and_then(|p| p.generation).map(|g| g.number()),
            verified: p.as_ref().is_some_and(|p| p.verified),
            feeds: feeds.iter().filter(|f| f.open).count(),
            blocks_received: p.as_ref().map_or(0, |p| p.blocks_received()),
            blocks_sent: p.as_ref().map_or(0, |p| p.blocks_sent()),
            bytes_received: p.as_ref().map_or(0, |p| p.bytes_received),
            bytes_sent: p.as_ref().map_or(0, |p| p.bytes_sent),
            buffered_bytes: p.as_ref().map_or(0, |p| p.buffered_out as u64),
            syncing,
        }
    }
}

/// The name of an indexer status.
pub(crate) fn status_name(s: kappa_index::Status) -> &'static str {
    match s {
        kappa_index::Status::Idle => "idle",
        kappa_index::Status::Indexing => "indexing",
        kappa_index::Status::Paused => "paused",
        kappa_index::Status::Error => "error",
    }
}
