//! Replicating a whole feed set with a peer, as multifeed 5 does (spec §4).
//!
//! One protocol session carries everything. The **root channel** is opened by
//! the shared key (multifeed's `encryptionKey`): both peers open it first, and its
//! capability proves that both know the key, which is never sent. Four JSON stream
//! extensions then exchange feed lists:
//!
//! 1. `MULTIFEED_HANDSHAKE` `{"client":"MULTIFEED","version":"4.0.0", …}`: checked
//!    for the client name and the major version;
//! 2. `MULTIFEED_MANIFEST` `{"keys":[…]}`: the feeds we offer;
//! 3. `MULTIFEED_REQUEST_FEEDS` `[…]`: the offered feeds we want;
//! 4. `MULTIFEED_REPLICATE_FEEDS` `[…]`: the requested feeds we will replicate.
//!
//! Agreed feeds open at once (JS peers give us 4 s). Feeds added to the set later,
//! locally or from a third peer, are offered on every open connection with a
//! one-key manifest, so they travel along chains of peers. A non-live session
//! ends when every agreed feed is synced and both peers closed every channel,
//! never while a request of ours is unanswered. The exchange's rules (and why:
//! multifeed 5 may close its root channel early) are on [`Exchange`]; the
//! [`SyncReport`] says which offered feeds did not arrive.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::io::{AsyncRead, AsyncWrite};
use futures::StreamExt;
use kappa_log::{PublicKey, SharedFeed};
use kappa_protocol::{
    EndReason, Event, FeedOptions, FeedStats, Generation, Protocol, ProtocolOptions, Selection, Session,
    SessionHandle, SessionReport, Wire,
};
use serde_json::{json, Value};
use tracing::Instrument;

use crate::{FeedAdded, Multifeed, MultifeedError};

mod codec;
mod driver;
mod exchange;
#[cfg(any(test, feature = "fuzzing"))]
mod fuzz;
mod options;
mod report;

use codec::{keys_json, parse_keys, root_key};
pub(crate) use driver::SessionMeta;
pub use exchange::Exchange;
#[cfg(feature = "fuzzing")]
pub(crate) use fuzz::fuzz_extensions;
pub use options::{KeyFilter, ReplicateOptions};
pub use report::{SessionInfo, SyncReport};

/// multifeed 5's default shared key. Anyone can use it: set your own with
/// [`ReplicateOptions::shared_key`] so only your peers can replicate with you.
pub const DEFAULT_SHARED_KEY: [u8; 32] = [
    0xbe, 0xe8, 0x0f, 0xf3, 0xa4, 0xee, 0x5e, 0x72, 0x7d, 0xc4, 0x41, 0x97, 0xcb, 0x9d, 0x25, 0xbf, 0x8f,
    0x19, 0xd5, 0x0b, 0x0f, 0x3a, 0xd2, 0x98, 0x4c, 0xfe, 0x5b, 0x7d, 0x14, 0xe7, 0x5d, 0xe7,
];

const HANDSHAKE: &str = "MULTIFEED_HANDSHAKE";
const MANIFEST: &str = "MULTIFEED_MANIFEST";
const REPLICATE_FEEDS: &str = "MULTIFEED_REPLICATE_FEEDS";
const REQUEST_FEEDS: &str = "MULTIFEED_REQUEST_FEEDS";
/// The multifeed protocol version we speak (multifeed 5's `PROTOCOL_VERSION`).
pub const PROTOCOL_VERSION: &str = "4.0.0";
