//! [`ProtocolError`]: why a session failed, and how a failure is traced.

use std::sync::Arc;
use std::time::Duration;

use kappa_log::{LogError, ProofError};

use crate::error::{FramingError, TransportError};
use crate::noise::{Generation, HandshakeError};

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
    /// time (see [`PeerLimits::min_frame_rate`](super::PeerLimits::min_frame_rate)): a peer that trickles bytes.
    #[error("timed out: a frame of {len} bytes did not arrive within {waited:?}")]
    Stalled {
        /// The frame's declared length (0 if its length prefix did not arrive).
        len: usize,
        /// How long it had.
        waited: Duration,
    },
    /// The peer read nothing of what we sent for the stream timeout (a
    /// socket write made no progress): a peer that stopped reading, which
    /// would otherwise hold its place and our buffered bytes for ever. Set by
    /// the session driver (`Session`, feature `driver`), which alone sees the
    /// socket.
    #[error("timed out: the peer read none of our {buffered} buffered bytes for {waited:?}")]
    NotReading {
        /// Bytes made for the peer and not yet written.
        buffered: usize,
        /// How long the write waited.
        waited: Duration,
    },
    /// The peer proved no key within [`PeerLimits::verify_timeout`](super::PeerLimits::verify_timeout): it opened
    /// no channel of ours with a valid capability (a peer with another shared
    /// key, or not a peer of this protocol).
    #[error("the peer proved no shared key within {0:?} (it opened none of our channels)")]
    NotVerified(Duration),
    /// Before it proved a key, the peer exceeded one of [`PeerLimits`](super::PeerLimits).
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
    /// [`PeerLimits`](super::PeerLimits)). After the Noise handshake this is how a peer with
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
    /// above waited for by its deadline (see [`Protocol::set_deadline`](super::Protocol::set_deadline)).
    #[error("timed out: the peer sent no {waiting_for} within {waited:?} (it stays connected but does not answer)")]
    Unresponsive {
        /// What was awaited (e.g. "answer to our feed request").
        waiting_for: &'static str,
        /// How long it had.
        waited: Duration,
    },
}

/// Records why a session failed, once, as it fails: the error's message and,
/// as `cause`, the typed error with its sources (which check failed, the
/// storage's or socket's own error). What a peer did wrong is not our error,
/// so it is a debug event; a local storage failure is a warning.
pub(super) fn trace_failure(e: &ProtocolError) {
    match e {
        // Our own end of a session, not a failure.
        ProtocolError::Closed => {}
        ProtocolError::Storage(_) => tracing::warn!(error = %e, cause = ?e, "session failed: local storage"),
        ProtocolError::Rejected(_) => tracing::debug!(error = %e, "session rejected by the layer above"),
        _ => tracing::debug!(error = %e, cause = ?e, "session failed"),
    }
}
