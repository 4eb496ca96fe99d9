//! [`SharedFeed`]: a feed many tasks use at once, with change notification.

use std::sync::{Arc, Mutex, MutexGuard};

use event_listener::{Event, EventListener};

use crate::{Feed, LogError, Proof, PublicKey, PutOutcome};

struct Inner {
    feed: Mutex<Feed>,
    key: PublicKey,
    discovery_key: [u8; 32],
    changed: Event,
}

/// A [`Feed`] shared between tasks (writers, replication sessions, indexers), that
/// tells listeners when it changes.
///
/// Every method takes the feed's lock for the duration of one synchronous
/// operation (local disk I/O is not wrapped in async). [`changed`](Self::changed)
/// returns a listener that completes after the next append or stored download;
/// create it *before* checking the state you wait on, so no change slips between
/// the check and the wait. Listeners are runtime-independent futures.
///
/// ```
/// use kappa_log::{Feed, SharedFeed};
/// let feed = SharedFeed::new(Feed::in_memory()?);
/// let reader = feed.clone();
/// let listener = reader.changed();
/// feed.append(b"hi")?;
/// futures::executor::block_on(listener); // completes: the feed changed
/// assert_eq!(reader.get(0)?.as_deref(), Some(&b"hi"[..]));
/// # Ok::<(), kappa_log::LogError>(())
/// ```
#[derive(Clone)]
pub struct SharedFeed {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SharedFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedFeed").field("key", &self.inner.key).finish_non_exhaustive()
    }
}

impl SharedFeed {
    /// Shares `feed`.
    pub fn new(feed: Feed) -> Self {
        let key = *feed.public_key();
        SharedFeed {
            inner: Arc::new(Inner {
                discovery_key: feed.discovery_key(),
                key,
                feed: Mutex::new(feed),
                changed: Event::new(),
            }),
        }
    }

    /// Locks the feed for any operation not wrapped here. Call
    /// [`notify`](Self::notify) after changing it through the guard.
    pub fn lock(&self) -> MutexGuard<'_, Feed> {
        // A panic while holding the lock cannot leave the feed half-updated in
        // memory (writes commit state last), so a poisoned lock is still usable.
        self.inner.feed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes every listener.
    pub fn notify(&self) {
        self.inner.changed.notify(usize::MAX);
    }

    /// A future that completes after the next change.
    pub fn changed(&self) -> EventListener {
        self.inner.changed.listen()
    }

    /// The public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.inner.key
    }

    /// The discovery key.
    pub fn discovery_key(&self) -> &[u8; 32] {
        &self.inner.discovery_key
    }

    /// Whether the two handles share one feed.
    pub fn same_as(&self, other: &SharedFeed) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// See [`Feed::len`].
    pub fn len(&self) -> u64 {
        self.lock().len()
    }

    /// See [`Feed::is_empty`].
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// See [`Feed::is_writable`].
    pub fn is_writable(&self) -> bool {
        self.lock().is_writable()
    }

    /// See [`Feed::has`].
    pub fn has(&self, index: u64) -> bool {
        self.lock().has(index)
    }

    /// See [`Feed::get`].
    pub fn get(&self, index: u64) -> Result<Option<Vec<u8>>, LogError> {
        self.lock().get(index)
    }

    /// Appends one block and notifies listeners. See [`Feed::append`].
    pub fn append(&self, value: impl AsRef<[u8]>) -> Result<u64, LogError> {
        let r = self.lock().append(value);
        if r.is_ok() {
            self.notify();
        }
        r
    }

    /// Appends a batch and notifies listeners. See [`Feed::append_batch`].
    pub fn append_batch<I, V>(&self, values: I) -> Result<std::ops::Range<u64>, LogError>
    where
        I: IntoIterator<Item = V>,
        V: AsRef<[u8]>,
    {
        let r = self.lock().append_batch(values);
        if matches!(&r, Ok(range) if !range.is_empty()) {
            self.notify();
        }
        r
    }

    /// Verifies and stores a downloaded block, notifying listeners if it was new.
    /// See [`Feed::put`].
    pub fn put(&self, index: u64, data: &[u8], proof: &Proof) -> Result<PutOutcome, LogError> {
        let r = self.lock().put(index, data, proof);
        if r == Ok(PutOutcome::Stored) {
            self.notify();
        }
        r
    }
}
