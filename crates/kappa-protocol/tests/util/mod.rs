//! The deterministic two-peer harness, now shared as `kappa_testkit::pair` (so
//! kappa-multifeed's exchange can be tested on it too): two [`Protocol`]s joined
//! by an in-memory wire with a simulated clock, seeded chunking of the byte
//! stream into random pieces, and random delivery delays (order is kept per
//! direction, as TCP does).
//!
//! [`Protocol`]: kappa_protocol::Protocol

#![allow(unused_imports, unreachable_pub)]

pub use kappa_testkit::pair::{Driver, Pair, Rng};
