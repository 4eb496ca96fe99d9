#![doc = include_str!("../README.md")]

use std::net::SocketAddr;

pub mod codec;
pub mod dht;
mod lan;
mod machine;

pub use lan::{LanDiscovery, LanOptions, Lookup, LOOKUP_QUEUE, MDNS_GROUP, MDNS_PORT};
pub use machine::{Found, Mdns, Requery};

/// Why discovery could not start or announce.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The multicast socket could not be opened, bound or joined to the group.
    #[error("cannot open the multicast DNS socket on UDP port {port}")]
    Socket {
        /// The port.
        port: u16,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The socket thread could not be started.
    #[error("cannot start the discovery thread")]
    Thread {
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// Announced with port 0 (hyperswarm does not answer for it either).
    #[error("cannot announce port 0")]
    NoPort,
}

/// A way to meet peers by topic: a 32-byte name that peers of one data set
/// share (for kappa, the discovery key of the shared key).
pub trait Discovery: Send + Sync {
    /// The peers found for one topic, as they are found. Dropping it stops
    /// that lookup.
    type Lookup: futures::Stream<Item = SocketAddr> + Send + Unpin + 'static;

    /// Tells peers looking `topic` up that we accept connections on `port`.
    fn announce(&self, topic: [u8; 32], port: u16) -> Result<(), DiscoveryError>;

    /// Looks `topic` up: peers that announce it, each time they answer.
    fn lookup(&self, topic: [u8; 32]) -> Result<Self::Lookup, DiscoveryError>;

    /// Stops announcing and looking up `topic`; its lookups end.
    fn stop(&self, topic: &[u8; 32]);
}

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    //! Entry points of the cargo-fuzz targets, here so `cargo test` replays the corpora.

    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    /// Decodes one packet, and feeds it to a machine that announces and looks
    /// up the topic whose record name it most likely names.
    pub fn packet(data: &[u8]) {
        let _ = crate::codec::decode(data);
        let now = Instant::now();
        let mut m = crate::Mdns::new([0; 32], crate::Requery::default());
        let topic = [0u8; 32];
        m.announce(topic, 7000);
        m.lookup(now, topic);
        let from: SocketAddr = ([10, 0, 0, 1], 5353).into();
        let _ = m.handle_packet(now, from, data);
        m.handle_timeout(now + Duration::from_secs(61));
        while m.poll_transmit().is_some() {}
        while m.poll_event().is_some() {}
    }
}
