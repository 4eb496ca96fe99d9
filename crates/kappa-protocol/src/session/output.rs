//! Bytes to the peer: framing, encryption, answers to its requests as the
//! output drains, and the test hooks that play a misbehaving peer.

use std::time::Instant;

use crate::error::FramingError;
use crate::frame::{encode_frame, FrameError};
use crate::message::{Extension, Message, Options};

use super::{Event, Protocol, ProtocolError, Stage, ANSWER_SLICE, OUT_LOW_WATER};

impl Protocol {
    /// Test hook: rewrites every outgoing message (channel id, message) before it
    /// is framed, to play a misbehaving peer. Not for production use: only
    /// with the `test-hooks` feature.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn tamper_outgoing(&mut self, f: impl FnMut(u64, &mut Message) + Send + 'static) {
        self.tamper = Some(Box::new(f));
    }

    /// Test hook: sends raw plaintext bytes (encrypted like everything else), to
    /// play a misbehaving peer. Not for production use: only with the
    /// `test-hooks` feature.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn inject_plaintext(&mut self, now: Instant, bytes: &[u8]) {
        self.write_plain(now, bytes);
    }

    /// How many bytes wait in [`poll_transmit`](Self::poll_transmit).
    pub fn pending_transmit_len(&self) -> usize {
        self.out.len()
    }

    /// Bytes to write to the peer, if any. Answers to the peer's requests are
    /// made here as the output drains, about [`OUT_LOW_WATER`] bytes at a time,
    /// so call it again after writing what it returned. `now` is the time of
    /// the call (what the answers made here count as sent at).
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        self.answer_requests(now);
        if self.out.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut self.out))
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub(super) fn write_plain(&mut self, now: Instant, plain: &[u8]) {
        match &mut self.stage {
            Stage::Transport(t) => {
                // Encrypt in place at the tail of the output buffer (no copy).
                let start = self.out.len();
                self.out.extend_from_slice(plain);
                t.encrypt.apply(&mut self.out[start..]);
                self.last_send = now;
            }
            Stage::Handshake { queued, .. } => queued.extend_from_slice(plain),
        }
    }

    pub(super) fn send(&mut self, now: Instant, channel: u64, msg: &Message) {
        #[cfg(feature = "test-hooks")]
        if let Some(t) = &mut self.tamper {
            let mut m = msg.clone();
            t(channel, &mut m);
            match encode_frame(channel, m.type_id(), &m.encode()) {
                Ok(frame) => self.write_plain(now, &frame),
                Err(e) => self.fail(ProtocolError::Frame(FramingError::Send(e))),
            }
            return;
        }
        let body = msg.encode();
        if self.handshake_result().is_none() {
            match encode_frame(channel, msg.type_id(), &body) {
                Ok(frame) => self.write_plain(now, &frame),
                Err(e) => self.fail(ProtocolError::Frame(FramingError::Send(e))),
            }
            return;
        }
        // The common case: frame straight into the output buffer and encrypt the
        // tail in place (no intermediate frame buffer).
        let header = channel << 4 | u64::from(msg.type_id());
        let len = crate::varint::encoded_len(header) + body.len();
        if channel > crate::frame::MAX_CHANNEL {
            self.fail(ProtocolError::Frame(FramingError::Send(FrameError::InvalidChannel(channel))));
            return;
        }
        if len > crate::frame::MAX_FRAME_LEN {
            let e = FrameError::TooLarge { len: len as u64, max: crate::frame::MAX_FRAME_LEN };
            self.fail(ProtocolError::Frame(FramingError::Send(e)));
            return;
        }
        let start = self.out.len();
        self.out.reserve(len + 10);
        crate::varint::encode(len as u64, &mut self.out);
        crate::varint::encode(header, &mut self.out);
        self.out.extend_from_slice(&body);
        if let Stage::Transport(t) = &mut self.stage {
            t.encrypt.apply(&mut self.out[start..]);
        }
        self.last_send = now;
    }

    /// Sends a stream-level extension message (channel 0). The name must be one of
    /// [`ProtocolOptions::extensions`](super::ProtocolOptions::extensions).
    pub fn send_extension(&mut self, now: Instant, name: &str, payload: &[u8]) -> Result<(), ProtocolError> {
        let Some(id) = self.local_extensions.iter().position(|n| n == name) else {
            return Err(ProtocolError::Malformed("unknown extension name"));
        };
        self.send_options(now);
        self.send(now, 0, &Message::Extension(Extension { id: id as u64, payload: payload.to_vec() }));
        Ok(())
    }

    pub(super) fn send_options(&mut self, now: Instant) {
        if !self.options_sent {
            self.options_sent = true;
            let opts = Options { extensions: self.local_extensions.clone(), ack: Some(false) };
            self.send(now, 0, &Message::Options(opts));
        }
    }

    /// Answers queued requests of every channel, in turn, until about
    /// [`OUT_LOW_WATER`] bytes wait to be sent.
    pub(super) fn answer_requests(&mut self, now: Instant) {
        if self.handshake_result().is_none() || self.is_ended() {
            return;
        }
        loop {
            let mut answered = false;
            for slot in 0..self.channels.len() {
                if self.out.len() >= OUT_LOW_WATER {
                    return;
                }
                let Some(repl) = &mut self.channels[slot].repl else { continue };
                if !repl.has_queued() {
                    continue;
                }
                let mut msgs = Vec::new();
                let budget = (OUT_LOW_WATER - self.out.len()).min(ANSWER_SLICE);
                match repl.answer_queued(budget, &mut msgs) {
                    Ok(_) => answered = true,
                    Err(e) => {
                        self.fail(e);
                        return;
                    }
                }
                let drained = !repl.has_queued();
                self.flush_channel(now, slot, msgs);
                if drained {
                    // The last answer may be what a non-live upload waited for.
                    self.after_feed_step(now, slot);
                    self.check_finished();
                }
            }
            if !answered {
                return;
            }
        }
    }
}
