//! What a replication did: [`SyncReport`], and the exchange's part of it.

use super::*;

/// A session of the set that is running now ([`Multifeed::sessions`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SessionInfo {
    /// Who the peer is, as [`ReplicateOptions::peer`] said.
    pub peer: Option<String>,
    /// Whether we dialled.
    pub initiator: bool,
    /// Whether the session is live.
    pub live: bool,
    /// How far it got (`None` if it has not started running yet).
    pub progress: Option<kappa_protocol::SessionProgress>,
}

/// What a feed-set replication did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SyncReport {
    /// Per replicated feed: what moved.
    pub feeds: Vec<(PublicKey, FeedStats)>,
    /// Feeds this set learned from the peer in this session.
    pub new_feeds: Vec<PublicKey>,
    /// The feeds the peer offered (its manifests), in the order they came.
    pub offered: Vec<PublicKey>,
    /// The offered feeds we asked for (all, unless
    /// [`ReplicateOptions::accept`] says otherwise).
    pub requested: Vec<PublicKey>,
    /// Requested feeds that did not arrive: the peer never agreed to send
    /// them, or (non-live, downloading) their download did not complete. A
    /// sync that leaves this non-empty did not do its job. Feeds this
    /// database blocks are never missing: they are [`refused`](Self::refused).
    pub missing: Vec<PublicKey>,
    /// Offered feeds we did not ask for (or took back) because this
    /// database blocks them (see [`Multifeed::block`]), in the order they
    /// came.
    pub refused: Vec<PublicKey>,
    /// Bytes sent and received on the stream.
    pub bytes_sent: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// How long it took.
    pub duration: Duration,
    /// Things the caller should know (e.g. the default shared key was used).
    pub warnings: Vec<String>,
    /// The peer's handshake object (its `userData` and options).
    pub remote_handshake: Option<Value>,
    /// The wire generation the peer spoke (`None` if the handshake never
    /// finished).
    pub generation: Option<Generation>,
    /// We answered the peer's handshake in this generation and it hung up
    /// before finishing it (a live session ends without an error then): most
    /// likely a peer of the other generation.
    pub handshake_abandoned: Option<Generation>,
    /// Our feeds not offered to this peer, or offered and not served whole,
    /// and why: a kappa-core 6 peer (hypercore 8) cannot verify a signature
    /// in the 40-byte hypercore 9 form, so a feed whose head is in that form
    /// is not offered to it, and an offered feed is served to it only up to
    /// its newest state signed in the 32-byte form (the reason then names
    /// the first block kept back; see [`FeedStats::withheld_from`]).
    pub withheld: Vec<(PublicKey, String)>,
}

impl SyncReport {
    /// Blocks received over all feeds.
    pub fn blocks_received(&self) -> u64 {
        self.feeds.iter().map(|(_, s)| s.blocks_down).sum()
    }

    /// Blocks sent over all feeds.
    pub fn blocks_sent(&self) -> u64 {
        self.feeds.iter().map(|(_, s)| s.blocks_up).sum()
    }

    /// Whether everything we asked the peer for arrived ([`missing`](Self::missing) is empty).
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
    }
}

impl Exchange {
    /// The report of a session that ran this exchange.
    pub(super) fn report(&self, session: &SessionReport, warnings: Vec<String>) -> SyncReport {
        // By discovery key: thousands of feeds, no scan per feed.
        let mut by_dkey: std::collections::HashMap<&[u8; 32], &FeedStats> = Default::default();
        for (dk, s) in &session.feeds {
            by_dkey.entry(dk).or_insert(s);
        }
        let feeds: Vec<(PublicKey, FeedStats)> = self
            .replicating
            .iter()
            .map(|k| {
                let d = k.discovery_key();
                let stats = by_dkey.get(&d).map(|s| **s).unwrap_or_default();
                (*k, stats)
            })
            .collect();
        let mut withheld = self.withheld.clone();
        for (k, stats) in &feeds {
            if let Some(from) = stats.withheld_from {
                if !withheld.iter().any(|(w, _)| w == k) {
                    withheld.push((
                        *k,
                        format!(
                            "its blocks from {from} on are signed only in the {}, which a {} peer cannot verify",
                            kappa_log::SignatureForm::TreeHashAndLength,
                            Generation::KappaCore6
                        ),
                    ));
                }
            }
        }
        SyncReport {
            feeds,
            new_feeds: self.new_feeds.clone(),
            offered: self.remote_offer.clone(),
            requested: self.requested.clone(),
            missing: self.missing(),
            refused: self.refused(),
            bytes_sent: session.bytes_sent,
            bytes_received: session.bytes_received,
            duration: session.duration,
            warnings,
            remote_handshake: self.remote_handshake.clone(),
            generation: session.generation,
            handshake_abandoned: session.handshake_abandoned,
            withheld,
        }
    }
}
