//! Discovery over the hyperswarm 2 DHT (`@hyperswarm/dht` 4 on dht-rpc 4):
//! announce a topic to the nodes closest to it, look it up there.
//!
//! [`wire`] holds the messages, [`DhtClient`] the sans-IO client and
//! [`DhtDiscovery`] its driver on a UDP socket. The client is an ephemeral
//! node: it asks and announces, and answers nobody (see [`DhtClient`]).

mod client;
mod driver;
pub mod wire;

pub use client::{DhtClient, DhtFound, DhtOptions, K};
pub use driver::DhtDiscovery;
