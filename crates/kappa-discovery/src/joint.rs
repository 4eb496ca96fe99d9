//! LAN and DHT discovery together, as hyperswarm 2 runs them.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;

use crate::{DhtDiscovery, Discovery, DiscoveryError, LanDiscovery, Lookup};

/// Either discovery or both: announces and looks up on each that is set.
///
/// ```
/// use kappa_discovery::{Discovery, Joint};
///
/// // Neither set: announcing does nothing, and lookups end at once.
/// let none = Joint::new(None, None);
/// none.announce([1; 32], 7000).unwrap();
/// let mut lookup = none.lookup([1; 32]).unwrap();
/// assert_eq!(futures::executor::block_on(futures::StreamExt::next(&mut lookup)), None);
/// ```
#[derive(Debug, Clone)]
pub struct Joint {
    lan: Option<LanDiscovery>,
    dht: Option<DhtDiscovery>,
}

impl Joint {
    /// Discovery on the LAN, the DHT, both or neither.
    pub fn new(lan: Option<LanDiscovery>, dht: Option<DhtDiscovery>) -> Self {
        Joint { lan, dht }
    }

    /// The LAN part.
    pub fn lan(&self) -> Option<&LanDiscovery> {
        self.lan.as_ref()
    }

    /// The DHT part.
    pub fn dht(&self) -> Option<&DhtDiscovery> {
        self.dht.as_ref()
    }
}

/// The peers a [`Joint`] finds for a topic: those of each of its lookups,
/// as they come.
#[derive(Debug)]
pub struct JointLookup {
    parts: Vec<Lookup>,
    /// The part polled first next time (so neither starves the other).
    next: usize,
}

impl Stream for JointLookup {
    type Item = SocketAddr;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<SocketAddr>> {
        let n = self.parts.len();
        let mut open = false;
        for k in 0..n {
            let i = (self.next + k) % n;
            match Pin::new(&mut self.parts[i]).poll_next(cx) {
                Poll::Ready(Some(a)) => {
                    self.next = (i + 1) % n;
                    return Poll::Ready(Some(a));
                }
                Poll::Ready(None) => {}
                Poll::Pending => open = true,
            }
        }
        if open {
            Poll::Pending
        } else {
            Poll::Ready(None)
        }
    }
}

impl Discovery for Joint {
    type Lookup = JointLookup;

    fn announce(&self, topic: [u8; 32], port: u16) -> Result<(), DiscoveryError> {
        if let Some(l) = &self.lan {
            l.announce(topic, port)?;
        }
        if let Some(d) = &self.dht {
            d.announce(topic, port)?;
        }
        Ok(())
    }

    fn lookup(&self, topic: [u8; 32]) -> Result<JointLookup, DiscoveryError> {
        let mut parts = Vec::new();
        if let Some(l) = &self.lan {
            parts.push(l.lookup(topic)?);
        }
        if let Some(d) = &self.dht {
            parts.push(d.lookup(topic)?);
        }
        Ok(JointLookup { parts, next: 0 })
    }

    fn stop(&self, topic: &[u8; 32]) {
        if let Some(l) = &self.lan {
            l.stop(topic);
        }
        if let Some(d) = &self.dht {
            d.stop(topic);
        }
    }
}
