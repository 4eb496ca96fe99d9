//! Discovery over the hyperswarm 2 DHT (`@hyperswarm/dht` 4 on dht-rpc 4):
//! announce a topic to the nodes closest to it, look it up there.
//!
//! [`wire`] holds the messages. The DHT client that uses them is not built
//! yet (issue 15).

pub mod wire;
