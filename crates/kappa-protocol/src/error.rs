//! The typed causes a [`ProtocolError`](crate::ProtocolError) carries: a
//! transport failure with its [`io::ErrorKind`], and the framing failures.

use std::error::Error;
use std::fmt;
use std::io;
use std::sync::Arc;

use crate::frame::FrameError;
use crate::message::DecodeError;

/// A transport (socket) failure a driver saw: the [`io::Error`] itself,
/// shared so that [`ProtocolError`](crate::ProtocolError) stays `Clone`.
///
/// Two are equal when their kinds and messages are.
#[derive(Debug, Clone)]
pub struct TransportError(Arc<io::Error>);

impl TransportError {
    /// Wraps `error`.
    pub fn new(error: io::Error) -> Self {
        TransportError(Arc::new(error))
    }

    /// The kind of the I/O error.
    pub fn kind(&self) -> io::ErrorKind {
        self.0.kind()
    }

    /// The I/O error.
    pub fn io_error(&self) -> &io::Error {
        &self.0
    }
}

impl From<io::Error> for TransportError {
    fn from(error: io::Error) -> Self {
        TransportError::new(error)
    }
}

impl From<io::ErrorKind> for TransportError {
    fn from(kind: io::ErrorKind) -> Self {
        TransportError::new(kind.into())
    }
}

impl PartialEq for TransportError {
    fn eq(&self, other: &Self) -> bool {
        self.kind() == other.kind() && self.0.to_string() == other.0.to_string()
    }
}

impl Eq for TransportError {}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Error for TransportError {
    // Transparent: the I/O error's own cause, if it has one (its message is
    // this error's).
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.source()
    }
}

/// Why the byte stream could not be read or written as frames.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FramingError {
    /// The peer's bytes do not frame: a length prefix longer than
    /// [`MAX_LENGTH_VARINT`](crate::frame::MAX_LENGTH_VARINT) bytes, a frame
    /// over the limit, or an invalid header.
    #[error("{source}{}", if *unverified { " (before the peer proved a shared key)" } else { "" })]
    Receive {
        /// What was wrong.
        #[source]
        source: FrameError,
        /// The peer had not proved a key yet, so the smaller frame limit of
        /// [`PeerLimits::unverified_max_frame`](crate::PeerLimits::unverified_max_frame)
        /// applied.
        unverified: bool,
    },
    /// A frame's body does not decode as the message its type names.
    #[error(transparent)]
    Message(DecodeError),
    /// A message of ours does not fit a frame (too large, or on a channel a
    /// header cannot hold).
    #[error("cannot send: {0}")]
    Send(#[source] FrameError),
}
