//! The session's phase: the handshake, then the transport, and how the
//! session ends (finished, failed, held open by the layer above).

use std::time::Instant;

use crate::noise::{Generation, HandshakeResult};

use super::{trace_failure, Channel, End, Event, Protocol, ProtocolError, Stage};

impl Protocol {
    /// The error that ended the session, if any.
    pub fn error(&self) -> Option<&ProtocolError> {
        self.end.error()
    }

    /// Whether the session has ended (finished or failed).
    pub fn is_ended(&self) -> bool {
        !matches!(self.end, End::Running)
    }

    /// Whether the non-live session finished cleanly.
    pub fn is_finished(&self) -> bool {
        matches!(self.end, End::Finished | End::FinishedThenFailed(_))
    }

    /// The handshake result, once the handshake is done.
    pub fn handshake_result(&self) -> Option<&HandshakeResult> {
        match &self.stage {
            Stage::Transport(t) => Some(&t.result),
            Stage::Handshake { .. } => None,
        }
    }

    /// The generation this session speaks: known once the handshake is done,
    /// and for a responder from the start; `None` for an initiator with
    /// [`Wire::Auto`](crate::noise::Wire::Auto) before message 2.
    pub fn generation(&self) -> Option<Generation> {
        match &self.stage {
            Stage::Transport(t) => Some(t.result.generation),
            Stage::Handshake { hs, .. } => hs.generation(),
        }
    }

    /// Whether we are a responder that answered the peer's message 1 and the
    /// handshake did not finish: a peer that hangs up then most likely speaks
    /// the other generation (JS cannot tell, and hangs up on a message 2 it
    /// cannot decrypt).
    pub fn answered_unfinished_handshake(&self) -> bool {
        matches!(&self.stage, Stage::Handshake { hs, .. } if hs.answered())
    }

    /// The generation we answered the peer's handshake in, if
    /// [`answered_unfinished_handshake`](Self::answered_unfinished_handshake).
    pub fn abandoned_handshake(&self) -> Option<Generation> {
        self.generation().filter(|_| self.answered_unfinished_handshake())
    }

    /// Ends the session because the layer above rejects the peer (wrong shared
    /// key, incompatible version, ...). No effect if it already ended.
    pub fn reject(&mut self, reason: impl Into<String>) {
        self.fail(ProtocolError::Rejected(reason.into()));
    }

    /// Ends the session with a transport-level error (used by drivers: the socket
    /// failed or closed early). No effect if it already ended.
    pub fn fail_transport(&mut self, e: ProtocolError) {
        let answered_in = self.generation().filter(|_| self.answered_unfinished_handshake());
        let e = match (e, answered_in) {
            (e @ (ProtocolError::UnexpectedEof | ProtocolError::Io(_)), Some(answered_in)) => {
                ProtocolError::HandshakeAbandoned { answered_in, source: Box::new(e) }
            }
            (e, _) => e,
        };
        let e = match e {
            ProtocolError::UnexpectedEof | ProtocolError::Io(_) if !self.verified => {
                ProtocolError::EndedUnverified {
                    during_handshake: self.handshake_result().is_none(),
                    source: Box::new(e),
                }
            }
            e => e,
        };
        self.fail(e);
    }

    pub(super) fn fail(&mut self, e: ProtocolError) {
        if matches!(self.end, End::Running) {
            trace_failure(&e);
            self.end = End::Failed(e);
        }
    }

    /// Keeps a non-live session from finishing until [`release`](Self::release)
    /// (multifeed holds it while its feed exchange runs).
    pub fn hold(&mut self) {
        self.holds += 1;
    }

    /// Releases one [`hold`](Self::hold).
    pub fn release(&mut self) {
        self.holds = self.holds.saturating_sub(1);
        self.check_finished();
    }

    /// Ends the session from our side: sends Close for every channel and
    /// finishes without waiting for the peer's answers (a live JS peer never
    /// answers a Close on multifeed's root channel). This is how a live session
    /// ends; a driver flushes the Close frames and then lets the stream go.
    pub fn close(&mut self, now: Instant) {
        for slot in 0..self.channels.len() {
            if self.channels[slot].local_id.is_some() || self.channels[slot].remote_id.is_some() {
                self.close_slot(now, slot);
            }
        }
        if matches!(self.end, End::Running) {
            self.end = End::Finished;
            self.events.push_back(Event::Finished);
        }
    }

    pub(super) fn check_finished(&mut self) {
        // Nothing finishes during the handshake (channels opened meanwhile
        // have not sent their Open yet).
        if self.is_ended() || self.handshake_result().is_none() || self.holds > 0 {
            return;
        }
        // A live session runs until closed locally (which ends it), or until
        // the peer has closed every channel there was.
        if self.opts.live && self.channels.is_empty() {
            return;
        }
        if self.channels.iter().all(Channel::is_done) {
            self.end = End::Finished;
            self.events.push_back(Event::Finished);
        }
    }
}
