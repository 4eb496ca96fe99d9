#![doc = include_str!("../README.md")]
#![warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod config;
mod error;
mod pool;
mod store;
mod wire;

pub use config::{Config, Host};
pub use error::PgError;
pub use store::{PgStore, PgViews};
