#![doc = include_str!("../README.md")]
#![warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod error;
mod store;
mod views;

pub use error::{Location, RedbError};
pub use store::{Durability, RedbStore};
pub use views::{RedbViews, DEFAULT_CACHE_BYTES};
