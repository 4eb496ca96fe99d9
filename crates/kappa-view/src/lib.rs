#![doc = include_str!("../README.md")]
#![warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod backend;
pub mod conformance;
mod error;
pub mod kv;
pub mod list;
mod store;
pub mod sum;
mod view;

pub use backend::{MemoryViews, ViewBackend};
pub use store::{
    prefix_range, range_is_empty, Batch, KeyRange, MemoryStore, Row, StoreError, StoreErrorKind, ViewStore,
};
pub use view::{Entry, ReadEntry, Tx, Unsaved, View, ViewError};
