//! The passing of time: keep-alives, the silence limit, the deadlines of
//! [`PeerLimits`](super::PeerLimits) and of the layer above.

use std::time::{Duration, Instant};

use super::{Protocol, ProtocolError};

impl Protocol {
    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_ended() {
            return None;
        }
        let mut t = self.silence_deadline();
        if let Some(v) = self.verify_deadline() {
            t = t.min(v);
        }
        if self.handshake_result().is_some() {
            t = t.min(self.last_send + self.opts.keep_alive);
        }
        if let Some((d, _, _)) = self.deadline {
            t = t.min(d);
        }
        if let Some(w) = self.wake_at {
            t = t.min(w);
        }
        Some(t)
    }

    /// How long the frame being received may take beyond the silence timeout.
    pub(super) fn frame_allowance(&self) -> Duration {
        let len = self.decoder.pending_frame_len().unwrap_or(0) as u64;
        Duration::from_secs(len / self.opts.limits.min_frame_rate.max(1))
    }

    /// When the session fails if no further frame arrives whole: bytes that
    /// do not complete a frame do not move it (see the module docs).
    pub(super) fn silence_deadline(&self) -> Instant {
        self.last_progress + self.opts.timeout + self.frame_allowance()
    }

    pub(super) fn verify_deadline(&self) -> Option<Instant> {
        if self.verified {
            return None;
        }
        self.opts.limits.verify_timeout.map(|t| self.started + t)
    }

    /// Handles the passing of time: keep-alives, the silence limit, and the
    /// deadlines of [`PeerLimits`](super::PeerLimits).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_ended() {
            return;
        }
        if now >= self.silence_deadline() {
            let partial = self.decoder.buffered() > 0
                || (self.handshake_result().is_none() && self.last_recv > self.last_progress);
            let waited = now.saturating_duration_since(self.last_progress);
            if partial {
                let len = self.decoder.pending_frame_len().unwrap_or(0);
                self.fail(ProtocolError::Stalled { len, waited });
            } else {
                self.fail(ProtocolError::Timeout(self.opts.timeout));
            }
            return;
        }
        if self.verify_deadline().is_some_and(|d| now >= d) {
            self.fail(ProtocolError::NotVerified(now.saturating_duration_since(self.started)));
            return;
        }
        if let Some((d, waiting_for, since)) = self.deadline {
            if now >= d {
                self.fail(ProtocolError::Unresponsive {
                    waiting_for,
                    waited: now.saturating_duration_since(since),
                });
                return;
            }
        }
        if self.handshake_result().is_some() && now >= self.last_send + self.opts.keep_alive {
            self.write_plain(now, &[0]);
        }
        if self.wake_at.is_some_and(|w| now >= w) {
            self.wake_at = None;
            self.events.push_back(super::Event::Wake);
        }
        self.answer_requests(now);
    }

    /// Asks for an [`Event::Wake`](super::Event::Wake) from the first
    /// [`handle_timeout`](Self::handle_timeout) at or after `at`
    /// ([`poll_timeout`](Self::poll_timeout) includes it; an earlier request
    /// still pending wins). The layer above uses it to cut long work (opening
    /// thousands of feeds) into slices: a driver reads, writes and sends
    /// keep-alives between two wake-ups, so the peer never sees a silence
    /// that is only our own work.
    ///
    /// ```
    /// use std::time::Instant;
    /// use kappa_protocol::{Event, Protocol, ProtocolOptions};
    ///
    /// let now = Instant::now();
    /// let mut p = Protocol::new(now, ProtocolOptions::new(true));
    /// p.wake_me(now);
    /// assert!(p.poll_timeout().is_some_and(|t| t <= now));
    /// p.handle_timeout(now);
    /// let mut woken = false;
    /// while let Some(ev) = p.poll_event() {
    ///     woken |= ev == Event::Wake;
    /// }
    /// assert!(woken);
    /// ```
    pub fn wake_me(&mut self, at: Instant) {
        if self.is_ended() {
            return;
        }
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }

    /// Tells the session that its driver could neither read nor keep time for
    /// `stalled`, up to `now` (its thread was busy elsewhere, or a step of the
    /// layer above ran long): that time does not count toward the silence
    /// limit, the verification deadline or the layer above's deadline, since
    /// whatever the peer sent meanwhile is still waiting to be read. A driver
    /// calls it when it wakes later than [`poll_timeout`](Self::poll_timeout)
    /// asked, then reads what is waiting before it calls
    /// [`handle_timeout`](Self::handle_timeout).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use kappa_protocol::{Protocol, ProtocolOptions};
    ///
    /// let t0 = Instant::now();
    /// let mut opts = ProtocolOptions::new(true);
    /// opts.timeout = Duration::from_secs(1);
    /// let mut p = Protocol::new(t0, opts);
    /// // Half a second in, a step ran for 4.5 s: the silence seen is 0.5 s.
    /// let now = t0 + Duration::from_secs(5);
    /// p.excuse_stall(now, Duration::from_millis(4500));
    /// p.handle_timeout(now);
    /// assert!(p.error().is_none());
    /// // Silence the driver did see still counts: half a second more ends it.
    /// p.handle_timeout(now + Duration::from_millis(600));
    /// assert!(p.error().is_some());
    /// ```
    pub fn excuse_stall(&mut self, now: Instant, stalled: Duration) {
        if self.is_ended() || stalled.is_zero() {
            return;
        }
        let shift = |t: Instant| (t + stalled).min(now);
        self.last_progress = shift(self.last_progress);
        self.started = shift(self.started);
        if let Some((d, what, since)) = self.deadline {
            self.deadline = Some((d + stalled, what, since));
        }
    }

    /// Sets (or, with `None`, clears) the layer above's deadline: unless it is
    /// cleared or moved before `deadline`, the session fails then with
    /// [`ProtocolError::Unresponsive`] naming `waiting_for`. Keep-alives and
    /// other traffic do not move it: it bounds a peer that stays connected but
    /// never answers (multifeed sets it while a request of ours is unanswered).
    /// `since` is when the wait began (for the error's message).
    pub fn set_deadline(&mut self, deadline: Option<(Instant, &'static str)>, since: Instant) {
        self.deadline = deadline.map(|(d, what)| (d, what, since));
    }

    /// The layer above's deadline and what it waits for, if set.
    pub fn deadline(&self) -> Option<(Instant, &'static str)> {
        self.deadline.map(|(d, what, _)| (d, what))
    }
}
