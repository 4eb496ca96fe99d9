#![doc = include_str!("../README.md")]
#![warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod cipher;
#[cfg(feature = "driver")]
mod driver;
pub mod error;
pub mod frame;
pub mod message;
pub mod noise;
mod replicate;
pub mod rle;
pub mod session;
pub mod varint;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

pub use cipher::{capability, remote_capability, verify_remote_capability, TransportCipher};
#[cfg(feature = "driver")]
pub use driver::{
    EndReason, EventHandler, Session, SessionHandle, SessionProgress, SessionReport, MAX_BUFFERED_OUT,
    WRITE_TURN,
};
pub use error::{FramingError, TransportError};
pub use frame::{encode_frame, encode_message, Decoded, Frame, FrameDecoder, FrameError, KEEP_ALIVE};
pub use kappa_log::RangeSet;
pub use message::{
    Cancel, Close, Data, DataNode, DecodeError, Extension, Have, Message, NoisePayload, Open, Options,
    Request, Status, Unhave, Unwant, Want,
};
pub use noise::{Generation, Handshake, HandshakeError, HandshakeResult, KeyPair, Wire};
pub use rle::RleError;
pub use session::{
    Event, FeedOptions, FeedProgress, FeedStats, PeerLimits, Protocol, ProtocolError, ProtocolOptions,
    Selection, COMPACT_PROOFS, OUT_LOW_WATER,
};
