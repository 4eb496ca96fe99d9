#![doc = include_str!("../README.md")]
#![warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod backend;
mod create;
mod error;
mod handle;
mod store;
mod views;

pub use error::{Location, RedbError};
pub use store::{Durability, RedbStore};
pub use views::{MovedAside, Opened, RedbViews, DEFAULT_CACHE_BYTES};
