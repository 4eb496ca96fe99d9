#![doc = include_str!("../README.md")]

use std::net::SocketAddr;

pub mod codec;
pub mod dht;
mod joint;
mod lan;
mod lookup;
mod machine;

pub use dht::DhtDiscovery;
pub use joint::{Joint, JointLookup};
pub use lan::{LanDiscovery, LanOptions, MDNS_GROUP, MDNS_PORT};
pub use lookup::{Lookup, LOOKUP_QUEUE};
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

    /// Decodes one DHT datagram, and feeds it to a client that announces a
    /// topic and looks another up, as the answer to each request it has out.
    pub fn dht_datagram(data: &[u8]) {
        use crate::dht::wire::{Kind, Message};
        use crate::dht::{DhtClient, DhtOptions};
        let _ = Message::decode(data);
        let _ = crate::dht::wire::PeersOutput::decode(data).map(|p| p.addresses());
        let _ = crate::dht::wire::decode_nodes(data);
        let now = Instant::now();
        let boot = std::net::SocketAddrV4::new([10, 0, 0, 1].into(), 49737);
        let opts = DhtOptions { bootstrap: vec![boot], ..DhtOptions::default() };
        let mut c = DhtClient::new([7; 32], 0, opts);
        c.announce(now, [1; 32], 7000);
        c.lookup(now, [2; 32]);
        let mut rids = Vec::new();
        while let Some((_, bytes)) = c.poll_transmit() {
            if let Ok(m) = Message::decode(&bytes) {
                rids.push(m.rid);
            }
        }
        for rid in rids {
            // The datagram as it is, and with its rid and kind made those of
            // an answer to this request.
            c.handle_datagram(now, SocketAddr::from(boot), data);
            if let Ok(mut m) = Message::decode(data) {
                m.rid = rid;
                m.kind = Kind::Response;
                c.handle_datagram(now, SocketAddr::from(boot), &m.encode());
            }
        }
        c.handle_timeout(now + Duration::from_secs(10));
        while c.poll_transmit().is_some() {}
        while c.poll_event().is_some() {}
    }
}
