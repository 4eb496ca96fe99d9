#![doc = include_str!("../README.md")]
#![warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bitfield;
mod cache;
mod check;
mod crypto;
pub mod encoding;
mod error;
mod feed;
mod files;
pub mod flat;
mod head;
mod node;
mod offsets;
mod packed;
mod proof;
mod ranges;
mod recover;
mod shared;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

pub use bitfield::{Bitfield, PAGE_SIZE as BITFIELD_PAGE_SIZE};
pub use check::CheckReport;
pub use crypto::{
    discovery_key, leaf_hash, parent_hash, signable, tree_hash, Hash, KeyPair, PublicKey, Signature,
    SignatureForm,
};
pub use error::{CorruptError, KeyError, LogError, ProofError};
pub use feed::{Cleared, Feed, FeedBuilder, SyncPolicy, DEFAULT_BLOCK_CACHE, MAX_BLOCK_SIZE};
pub use node::Node;
pub use packed::PackedBlocks;
pub use proof::{Proof, PutOutcome, RemoteTree};
pub use ranges::RangeSet;
pub use recover::Recovery;
pub use shared::{Changes, SharedFeed};

/// Re-export of the storage crate, so one dependency gives both.
pub use kappa_storage as storage;
