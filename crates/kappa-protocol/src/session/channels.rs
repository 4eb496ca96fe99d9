//! Channels: opening, verifying the peer's capability, replicating a feed on
//! each, closing, and what each moved.

use std::time::Instant;

use kappa_log::{PublicKey, SharedFeed};

use crate::message::{Close, Message, Open};
use crate::replicate::Replicator;

use super::{
    hex_of, Channel, Event, FeedOptions, FeedProgress, FeedStats, Protocol, ProtocolError, ShortHex, Stage,
};

impl Protocol {
    /// Whether we opened the channel of `discovery_key` (and have not closed it).
    pub fn is_open_locally(&self, discovery_key: &[u8; 32]) -> bool {
        self.by_dkey
            .get(discovery_key)
            .is_some_and(|&s| self.channels[s].local_id.is_some() && !self.channels[s].local_closed)
    }

    pub(super) fn slot_for(&mut self, dkey: [u8; 32]) -> usize {
        if let Some(&s) = self.by_dkey.get(&dkey) {
            return s;
        }
        self.channels.push(Channel::new(dkey));
        let s = self.channels.len() - 1;
        self.by_dkey.insert(dkey, s);
        s
    }

    /// Opens a channel for `feed` and replicates it once the peer opens it too.
    /// Opening a feed twice is a no-op.
    pub fn open_feed(
        &mut self,
        now: Instant,
        feed: SharedFeed,
        opts: FeedOptions,
    ) -> Result<(), ProtocolError> {
        let key = *feed.public_key();
        self.open(now, key, Some((feed, opts)))
    }

    /// Opens a channel for `key` that carries no feed data (multifeed's root
    /// channel): only Open and Close travel on it.
    pub fn open_channel(&mut self, now: Instant, key: PublicKey) -> Result<(), ProtocolError> {
        self.open(now, key, None)
    }

    pub(super) fn open(
        &mut self,
        now: Instant,
        key: PublicKey,
        feed: Option<(SharedFeed, FeedOptions)>,
    ) -> Result<(), ProtocolError> {
        if let Some(e) = self.error() {
            return Err(e.clone());
        }
        let slot = self.slot_for(key.discovery_key());
        let ch = &mut self.channels[slot];
        if ch.local_id.is_some() {
            return Ok(());
        }
        let id = self.next_local_id;
        self.next_local_id += 1;
        ch.local_id = Some(id);
        ch.key = Some(key);
        if feed.is_some() {
            self.feeds_opened += 1;
        }
        ch.feed = feed;
        self.by_local.insert(id, slot);
        match &mut self.stage {
            Stage::Transport(_) => self.send_open(now, slot)?,
            Stage::Handshake { pending_opens, .. } => pending_opens.push(slot),
        }
        Ok(())
    }

    pub(super) fn send_open(&mut self, now: Instant, slot: usize) -> Result<(), ProtocolError> {
        let (Some(result), Some(key), Some(id)) =
            (self.handshake_result(), self.channels[slot].key, self.channels[slot].local_id)
        else {
            return Ok(());
        };
        let capability = result.capability(key.as_bytes());
        let dkey = self.channels[slot].discovery_key;
        self.send(
            now,
            id,
            &Message::Open(Open { discovery_key: dkey.to_vec(), capability: Some(capability.to_vec()) }),
        );
        if self.channels[slot].remote_id.is_some() {
            self.verify_capability(slot)?;
            self.both_open(now, slot)?;
        }
        Ok(())
    }

    pub(super) fn verify_capability(&mut self, slot: usize) -> Result<(), ProtocolError> {
        let ch = &self.channels[slot];
        let (Some(result), Some(key)) = (self.handshake_result(), ch.key) else { return Ok(()) };
        match &ch.remote_capability {
            Some(cap)
                if crate::cipher::verify_remote_capability(
                    &result.tx_key,
                    &result.rx_key,
                    key.as_bytes(),
                    cap,
                ) =>
            {
                self.on_verified();
                Ok(())
            }
            _ => Err(ProtocolError::BadCapability(hex_of(&ch.discovery_key))),
        }
    }

    pub(super) fn both_open(&mut self, now: Instant, slot: usize) -> Result<(), ProtocolError> {
        let live = self.opts.live;
        let max = self.opts.max_in_flight;
        let dkey = self.channels[slot].discovery_key;
        tracing::debug!(
            discovery_key = %ShortHex(&dkey),
            data = self.channels[slot].feed.is_some(),
            "channel opened"
        );
        self.events.push_back(Event::ChannelOpened { discovery_key: dkey });
        // Extension messages held until the peer was verified come after the
        // open that verified it, as they would from a peer that waited.
        self.events.extend(std::mem::take(&mut self.held_events));
        let Some((feed, fopts)) = self.channels[slot].feed.clone() else { return Ok(()) };
        let mut repl = Replicator::new(feed, fopts, live, max);
        repl.compact_proofs = self.compact_proofs;
        repl.peer_live = self.peer_live;
        if self.handshake_result().is_some_and(|r| !r.generation.verifies_long_signatures()) {
            repl.serves_short_only();
        }
        let mut out = Vec::new();
        repl.on_open(&mut out);
        self.channels[slot].repl = Some(repl);
        self.flush_channel(now, slot, out);
        self.early_total =
            self.early_total.saturating_sub(std::mem::take(&mut self.channels[slot].early_bytes));
        for msg in std::mem::take(&mut self.channels[slot].early) {
            self.on_feed_message(now, slot, msg)?;
        }
        self.after_feed_step(now, slot);
        Ok(())
    }

    pub(super) fn flush_channel(&mut self, now: Instant, slot: usize, msgs: Vec<Message>) {
        if let Some(id) = self.channels[slot].local_id {
            if self.channels[slot].local_closed {
                return;
            }
            for m in msgs {
                self.send(now, id, &m);
            }
        }
    }

    /// Closes our side of the channel for `key` (refusing it, if the peer opened
    /// it and we never did).
    pub fn close_channel(&mut self, now: Instant, key: &PublicKey) {
        let Some(&slot) = self.by_dkey.get(&key.discovery_key()) else { return };
        self.close_slot(now, slot);
        self.check_finished();
    }

    pub(super) fn close_slot(&mut self, now: Instant, slot: usize) {
        let ch = &mut self.channels[slot];
        if ch.local_closed {
            return;
        }
        ch.local_closed = true;
        if let Some(r) = &mut ch.repl {
            // Answers could not be sent any more.
            r.clear_queued();
        }
        match ch.local_id {
            Some(id) => self.send(now, id, &Message::Close(Close { discovery_key: None })),
            None => {
                // Refuse a channel we never opened: Close by discovery key on a
                // fresh id, as JS does.
                let id = self.next_local_id;
                self.next_local_id += 1;
                let dkey = ch.discovery_key.to_vec();
                self.send(now, id, &Message::Close(Close { discovery_key: Some(dkey) }));
            }
        }
        self.after_close(slot);
    }

    pub(super) fn after_close(&mut self, slot: usize) {
        let ch = &mut self.channels[slot];
        if ch.is_done() && !ch.announced_closed {
            ch.announced_closed = true;
            if let Some(mut r) = ch.repl.take() {
                if let Err(e) = r.flush() {
                    self.end.storage_failed(e);
                }
                ch.stats = r.stats;
            }
            tracing::debug!(
                discovery_key = %ShortHex(&ch.discovery_key),
                blocks_down = ch.stats.blocks_down,
                blocks_up = ch.stats.blocks_up,
                bytes_down = ch.stats.bytes_down,
                bytes_up = ch.stats.bytes_up,
                "channel closed"
            );
            let ev = Event::ChannelClosed { discovery_key: ch.discovery_key, stats: ch.stats };
            self.events.push_back(ev);
        }
    }

    /// Tells the session that some of its feeds changed locally: announces new
    /// blocks to the peer and requests more.
    pub fn feeds_changed(&mut self, now: Instant) {
        if self.is_ended() {
            return;
        }
        // One watcher wakes the session for all its feeds: only the channels
        // whose feed changed have anything to do (looking at every channel of
        // a session with 1,000 feeds after each stored batch was most of its
        // bookkeeping).
        for slot in 0..self.channels.len() {
            if !self.channels[slot].repl.as_ref().is_some_and(|r| r.has_local_change()) {
                continue;
            }
            let mut out = Vec::new();
            if let Some(r) = &mut self.channels[slot].repl {
                r.on_local_change(&mut out);
                r.fill_requests(now, &mut out);
            }
            self.flush_channel(now, slot, out);
            self.after_feed_step(now, slot);
        }
        self.check_finished();
    }

    /// Asks the peer for block `index` of the feed with `discovery_key` now,
    /// whatever the feed's selection (an on-demand get). No effect if the feed's
    /// channel is not open on both sides.
    pub fn want_block(&mut self, now: Instant, discovery_key: &[u8; 32], index: u64) {
        let Some(&slot) = self.by_dkey.get(discovery_key) else { return };
        let mut out = Vec::new();
        if let Some(r) = &mut self.channels[slot].repl {
            r.want(now, index, &mut out);
        }
        self.flush_channel(now, slot, out);
    }

    /// What moved per feed so far (open and closed channels).
    pub fn stats(&self) -> Vec<([u8; 32], FeedStats)> {
        self.channels
            .iter()
            .map(|c| (c.discovery_key, c.repl.as_ref().map_or(c.stats, |r| r.stats)))
            .collect()
    }

    /// How far each feed of the session got (open and closed channels, in
    /// the order they opened). Locks each open feed briefly for its length.
    pub fn feed_progress(&self) -> Vec<FeedProgress> {
        self.channels
            .iter()
            .map(|c| FeedProgress {
                discovery_key: c.discovery_key,
                key: c.key.or_else(|| c.feed.as_ref().map(|(f, _)| *f.public_key())),
                stats: c.repl.as_ref().map_or(c.stats, |r| r.stats),
                local_length: c.feed.as_ref().map_or(0, |(f, _)| f.len()),
                remote_length: c.repl.as_ref().map_or(0, |r| r.remote_length()),
                requests_in_flight: c.repl.as_ref().map_or(0, |r| r.requests_in_flight()),
                open: !c.is_done(),
            })
            .collect()
    }

    /// The feeds being replicated.
    pub fn feeds(&self) -> Vec<SharedFeed> {
        self.channels.iter().filter_map(|c| c.feed.as_ref().map(|(f, _)| f.clone())).collect()
    }

    /// After a step on a feed channel: non-live completion and closing.
    pub(super) fn after_feed_step(&mut self, now: Instant, slot: usize) {
        let mut out = Vec::new();
        let (close, synced_now) = match &mut self.channels[slot].repl {
            Some(r) => {
                let was = r.synced;
                let close = r.check_end(&mut out);
                (close, !was && r.synced)
            }
            None => return,
        };
        self.flush_channel(now, slot, out);
        if synced_now {
            let dkey = self.channels[slot].discovery_key;
            tracing::debug!(discovery_key = %ShortHex(&dkey), "feed synced");
            self.events.push_back(Event::FeedSynced { discovery_key: dkey });
        }
        if close {
            self.close_slot(now, slot);
        }
    }
}
