//! Bytes from the peer: the handshake, decryption, frames and each message.

use std::time::Instant;

use crate::error::FramingError;
use crate::frame::Decoded;
use crate::message::{Message, Open};

use super::{
    Event, Protocol, ProtocolError, ShortHex, Stage, Transport, COMPACT_PROOFS, MAX_EARLY, MAX_EARLY_BYTES,
};

impl Protocol {
    /// Handles bytes received from the peer. On error the session is over: the
    /// error is returned (and kept in [`error`](Self::error)).
    pub fn handle_input(&mut self, now: Instant, data: &[u8]) -> Result<(), ProtocolError> {
        if let Some(e) = self.error() {
            return Err(e.clone());
        }
        self.last_recv = now;
        let r = self.input(now, data);
        if let Err(e) = &r {
            self.fail(e.clone());
        }
        self.answer_requests(now);
        r
    }

    pub(super) fn input(&mut self, now: Instant, data: &[u8]) -> Result<(), ProtocolError> {
        let r = self.input_frames(now, data);
        // One bitfield write per burst of downloaded blocks, also after an error
        // (what was verified and stored stays stored); every channel's, even
        // after one failed, so each tells its listeners of what it stored.
        let mut flushed = Ok(());
        for ch in &mut self.channels {
            if let Some(repl) = &mut ch.repl {
                if let Err(e) = repl.flush() {
                    if flushed.is_ok() {
                        flushed = Err(e);
                    }
                }
            }
        }
        flushed?;
        r
    }

    pub(super) fn input_frames(&mut self, now: Instant, data: &[u8]) -> Result<(), ProtocolError> {
        let mut transport = Vec::new();
        if let Stage::Handshake { hs, .. } = &mut self.stage {
            hs.receive(data)?;
            let reply = hs.take_outgoing();
            if !reply.is_empty() || hs.is_finished() {
                // A whole handshake message arrived.
                self.last_progress = now;
            }
            self.out.extend(reply);
            if !hs.is_finished() {
                return Ok(());
            }
            let leftover = hs.take_leftover();
            let result = hs.result().cloned().ok_or(ProtocolError::Malformed("handshake without result"))?;
            tracing::debug!(
                generation = %result.generation,
                remote_key = %ShortHex(&result.remote_static_key),
                "handshake done"
            );
            self.events.push_back(Event::Handshake { remote_static_key: result.remote_static_key });
            let (encrypt, decrypt) = (result.encryptor(), result.decryptor());
            let transport_stage = Stage::Transport(Box::new(Transport { result, encrypt, decrypt }));
            let (queued, pending_opens) = match std::mem::replace(&mut self.stage, transport_stage) {
                Stage::Handshake { queued, pending_opens, .. } => (queued, pending_opens),
                Stage::Transport(_) => (Vec::new(), Vec::new()),
            };
            self.last_send = now;
            // Frames made while handshaking go out first, then queued opens.
            if !queued.is_empty() {
                self.write_plain(now, &queued);
            }
            // Announce our extensions (and so compact proofs) right away.
            self.send_options(now);
            for slot in pending_opens {
                self.send_open(now, slot)?;
            }
            transport = leftover;
        } else {
            transport.extend_from_slice(data);
        }
        if transport.is_empty() {
            return Ok(());
        }
        if let Stage::Transport(t) = &mut self.stage {
            t.decrypt.apply(&mut transport);
        }
        self.decoder.push(&transport);
        loop {
            match self.decoder.next_frame() {
                Ok(None) => break,
                Ok(Some(Decoded::KeepAlive)) => self.last_progress = now,
                Ok(Some(Decoded::Frame(frame))) => {
                    self.last_progress = now;
                    let msg = frame.message().map_err(|e| ProtocolError::Frame(FramingError::Message(e)))?;
                    self.on_message(now, frame.channel, msg, frame.body.len())?;
                }
                Err(source) => {
                    return Err(ProtocolError::Frame(FramingError::Receive {
                        source,
                        unverified: !self.verified,
                    }))
                }
            }
            if self.is_ended() {
                break;
            }
        }
        self.check_finished();
        Ok(())
    }

    /// Counts `size` bytes held for a peer that is not verified yet.
    pub(super) fn hold_unverified(&mut self, size: usize) -> Result<(), ProtocolError> {
        if self.verified {
            return Ok(());
        }
        self.held_bytes += size;
        let limit = self.opts.limits.unverified_max_held;
        if self.held_bytes > limit {
            return Err(ProtocolError::UnverifiedLimit { what: "bytes of held messages", limit });
        }
        Ok(())
    }

    /// The peer proved a key: lift the limits. What was held is handed on by
    /// `both_open`, after the channel's `ChannelOpened`.
    pub(super) fn on_verified(&mut self) {
        if self.verified {
            return;
        }
        self.verified = true;
        self.held_bytes = 0;
        self.decoder.set_max_frame_len(crate::frame::MAX_FRAME_LEN);
    }

    pub(super) fn on_message(
        &mut self,
        now: Instant,
        channel: u64,
        msg: Message,
        size: usize,
    ) -> Result<(), ProtocolError> {
        if channel == 0 {
            match msg {
                Message::Options(o) => {
                    self.compact_proofs = o.extensions.iter().any(|e| e == COMPACT_PROOFS);
                    let compact = self.compact_proofs;
                    for ch in &mut self.channels {
                        if let Some(r) = &mut ch.repl {
                            r.compact_proofs = compact;
                        }
                    }
                    self.remote_extensions = o.extensions;
                }
                Message::Extension(e) => {
                    if let Some(name) = self.remote_extensions.get(e.id as usize) {
                        let ev = Event::Extension { name: name.clone(), payload: e.payload };
                        if self.verified {
                            self.events.push_back(ev);
                        } else {
                            // Never let the layer above answer a stranger.
                            self.hold_unverified(size)?;
                            self.held_events.push(ev);
                        }
                    }
                }
                // JS ignores feed messages on channel 0.
                _ => {}
            }
            return Ok(());
        }
        match msg {
            Message::Open(open) => self.on_open(now, channel, open),
            Message::Close(close) => {
                let slot = match self.by_remote.get(&channel) {
                    Some(&s) => Some(s),
                    None => close
                        .discovery_key
                        .as_deref()
                        .and_then(|d| <[u8; 32]>::try_from(d).ok())
                        .and_then(|d| self.by_dkey.get(&d).copied()),
                };
                if let Some(slot) = slot {
                    self.channels[slot].remote_closed = true;
                    if self.channels[slot].remote_id.is_none() {
                        // Refused before it was opened: count it as opened and closed.
                        self.channels[slot].remote_id = Some(u64::MAX);
                    }
                    if self.channels[slot].local_id.is_some() {
                        self.close_slot(now, slot);
                    }
                    self.after_close(slot);
                }
                Ok(())
            }
            other => {
                let Some(&slot) = self.by_remote.get(&channel) else {
                    return Err(ProtocolError::UnknownChannel(channel));
                };
                if self.channels[slot].remote_closed {
                    return Ok(());
                }
                // Our side is closed: blocks and requests on it are no
                // longer ours to store or answer (the feed may be gone, as
                // after a block in kappa-multifeed, whose storage then fails).
                if self.channels[slot].local_closed && matches!(other, Message::Data(_) | Message::Request(_))
                {
                    return Ok(());
                }
                if self.channels[slot].repl.is_none() {
                    if self.channels[slot].local_id.is_none() {
                        self.hold_unverified(size)?;
                        if self.early_total + size > MAX_EARLY_BYTES {
                            return Err(ProtocolError::OutOfRange("bytes of messages before open"));
                        }
                        self.early_total += size;
                        self.channels[slot].early_bytes += size;
                        let early = &mut self.channels[slot].early;
                        if early.len() >= MAX_EARLY {
                            return Err(ProtocolError::OutOfRange("messages before open"));
                        }
                        early.push(other);
                    }
                    return Ok(());
                }
                self.on_feed_message(now, slot, other)?;
                self.after_feed_step(now, slot);
                Ok(())
            }
        }
    }

    pub(super) fn on_open(&mut self, now: Instant, channel: u64, open: Open) -> Result<(), ProtocolError> {
        let dkey: [u8; 32] = open
            .discovery_key
            .as_slice()
            .try_into()
            .map_err(|_| ProtocolError::Malformed("discovery key length"))?;
        if self.by_remote.contains_key(&channel) {
            return Err(ProtocolError::Malformed("channel opened twice"));
        }
        if !self.verified && !self.by_dkey.contains_key(&dkey) {
            let limit = self.opts.limits.unverified_max_channels;
            let theirs = self.channels.iter().filter(|c| c.local_id.is_none()).count();
            if theirs >= limit {
                return Err(ProtocolError::UnverifiedLimit { what: "channels we did not open", limit });
            }
        }
        let slot = self.slot_for(dkey);
        if self.channels[slot].remote_id.is_some() {
            return Err(ProtocolError::Malformed("discovery key opened twice"));
        }
        self.channels[slot].remote_id = Some(channel);
        self.channels[slot].remote_capability = open.capability;
        self.by_remote.insert(channel, slot);
        if self.channels[slot].local_id.is_some() {
            if matches!(&self.stage, Stage::Handshake { pending_opens, .. } if pending_opens.contains(&slot))
            {
                return Ok(());
            }
            self.verify_capability(slot)?;
            self.both_open(now, slot)?;
        } else {
            tracing::trace!(discovery_key = %ShortHex(&dkey), "the peer opened a channel we have not");
            self.events.push_back(Event::RemoteOpen { discovery_key: dkey });
        }
        Ok(())
    }

    pub(super) fn on_feed_message(
        &mut self,
        now: Instant,
        slot: usize,
        msg: Message,
    ) -> Result<(), ProtocolError> {
        let Some(repl) = &mut self.channels[slot].repl else { return Ok(()) };
        let mut out = Vec::new();
        match msg {
            Message::Status(s) => repl.on_status(s),
            Message::Have(h) => repl.on_have(now, h, &mut out)?,
            Message::Unhave(u) => repl.on_unhave(u.start, u.length_or_default()),
            Message::Want(w) => repl.on_want(w, &mut out)?,
            Message::Request(r) => repl.on_request(r)?,
            Message::Cancel(c) => repl.on_cancel(c.index),
            Message::Data(d) => repl.on_data(now, d, &mut out)?,
            // Options on a feed channel: only the ack flag matters (no per-feed
            // extensions here).
            Message::Options(o) => repl.remote_ack = o.ack == Some(true),
            // Unwant: JS ignores it too.
            _ => {}
        }
        self.flush_channel(now, slot, out);
        Ok(())
    }
}
