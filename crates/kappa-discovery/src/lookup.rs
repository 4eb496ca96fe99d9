//! The peers found for one topic, as the socket threads of both drivers hand
//! them over.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Most peers queued on one [`Lookup`] and not yet taken; more are dropped
/// (a peer that is still there is found again at the next query).
pub const LOOKUP_QUEUE: usize = 256;

/// What a [`Lookup`] tells its discovery when it is dropped.
pub(crate) trait EndLookup: Send + Sync {
    /// Lookup `key` of `topic` ended.
    fn end_lookup(&self, topic: &[u8; 32], key: u64);
}

impl fmt::Debug for dyn EndLookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EndLookup")
    }
}

/// The queue of one lookup, shared by the socket thread and the [`Lookup`].
#[derive(Debug, Default)]
pub(crate) struct Queue {
    inner: Mutex<QueueInner>,
    ready: Condvar,
}

#[derive(Debug, Default)]
struct QueueInner {
    found: VecDeque<SocketAddr>,
    closed: bool,
    waker: Option<Waker>,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn push(&self, addr: SocketAddr) {
        let mut q = self.lock();
        if q.found.len() < LOOKUP_QUEUE {
            q.found.push_back(addr);
        }
        if let Some(w) = q.waker.take() {
            w.wake();
        }
        self.ready.notify_all();
    }

    pub(crate) fn close(&self) {
        let mut q = self.lock();
        q.closed = true;
        if let Some(w) = q.waker.take() {
            w.wake();
        }
        self.ready.notify_all();
    }
}

/// The peers found for one topic: a [`futures::Stream`] of addresses, also
/// readable blocking with [`next_timeout`](Self::next_timeout). The same peer
/// comes again each time it answers (at each re-query); deduplicate by
/// address if that matters. Dropping it stops the lookup (when it is the
/// topic's last).
#[derive(Debug)]
pub struct Lookup {
    queue: Arc<Queue>,
    topic: [u8; 32],
    key: u64,
    owner: Arc<dyn EndLookup>,
}

impl Lookup {
    pub(crate) fn new(queue: Arc<Queue>, topic: [u8; 32], key: u64, owner: Arc<dyn EndLookup>) -> Self {
        Lookup { queue, topic, key, owner }
    }

    /// The topic looked up.
    pub fn topic(&self) -> &[u8; 32] {
        &self.topic
    }

    /// Waits up to `timeout` for the next peer, blocking the thread. `None`
    /// when the time is up or the lookup was stopped.
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<SocketAddr> {
        let deadline = Instant::now() + timeout;
        let mut q = self.queue.lock();
        loop {
            if let Some(a) = q.found.pop_front() {
                return Some(a);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if q.closed || left.is_zero() {
                return None;
            }
            q = self.queue.ready.wait_timeout(q, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

impl futures::Stream for Lookup {
    type Item = SocketAddr;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<SocketAddr>> {
        let mut q = self.queue.lock();
        if let Some(a) = q.found.pop_front() {
            return Poll::Ready(Some(a));
        }
        if q.closed {
            return Poll::Ready(None);
        }
        q.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Lookup {
    fn drop(&mut self) {
        self.owner.end_lookup(&self.topic, self.key);
    }
}
