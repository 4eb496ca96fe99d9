//! [`SharedFeed`]: a feed many tasks use at once, with change notification.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};

use event_listener::{Event, EventListener};

use crate::{Feed, LogError, PackedBlocks, Proof, PublicKey, PutOutcome, SyncPolicy};

/// How many recent changes a feed remembers for [`SharedFeed::changes_since`].
const CHANGE_LOG: usize = 4096;

#[derive(Default)]
struct ChangeLog {
    version: u64,
    recent: VecDeque<(u64, Range<u64>)>,
    watchers: Vec<Weak<Event>>,
}

struct Inner {
    feed: Mutex<Feed>,
    key: PublicKey,
    discovery_key: [u8; 32],
    changed: Event,
    log: Mutex<ChangeLog>,
    /// Whether appends are durable, so concurrent ones commit together.
    durable: bool,
    commits: Mutex<Commits>,
    committed: Condvar,
}

/// Durable appends waiting to be committed together (group commit): the
/// first appender that finds no commit running becomes the leader and
/// appends every waiting batch with one round of syncs.
#[derive(Default)]
struct Commits {
    next_ticket: u64,
    waiting: Vec<(u64, Batch)>,
    done: HashMap<u64, Result<Range<u64>, LogError>>,
    leading: bool,
}

/// One waiting append's blocks.
enum Batch {
    Owned(Vec<Vec<u8>>),
    Packed(PackedBlocks),
}

impl crate::feed::BatchSource for Batch {
    fn prepare_on(self, feed: &Feed, tip: &crate::feed::Tip) -> Result<crate::feed::Prepared, LogError> {
        match self {
            Batch::Owned(v) => v.prepare_on(feed, tip),
            Batch::Packed(p) => p.prepare_on(feed, tip),
        }
    }
}

/// The watchers still alive (dropping the dead ones).
fn live_watchers(log: &mut ChangeLog) -> Vec<Arc<Event>> {
    log.watchers.retain(|w| w.strong_count() > 0);
    log.watchers.iter().filter_map(Weak::upgrade).collect()
}

/// The blocks that changed since a version, from [`SharedFeed::changes_since`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    /// Exactly these ranges of blocks were added (appended or downloaded).
    Ranges(Vec<Range<u64>>),
    /// Too much changed to list; rescan the feed.
    Rescan,
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
        let durable = feed.sync_policy() == SyncPolicy::PerBatch;
        SharedFeed {
            inner: Arc::new(Inner {
                discovery_key: feed.discovery_key(),
                key,
                feed: Mutex::new(feed),
                changed: Event::new(),
                log: Mutex::new(ChangeLog::default()),
                durable,
                commits: Mutex::new(Commits::default()),
                committed: Condvar::new(),
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

    fn log(&self) -> MutexGuard<'_, ChangeLog> {
        self.inner.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes every listener and watcher, recording that `blocks` were added.
    pub fn notify_added(&self, blocks: Range<u64>) {
        let watchers = {
            let mut log = self.log();
            log.version += 1;
            let v = log.version;
            log.recent.push_back((v, blocks));
            if log.recent.len() > CHANGE_LOG {
                log.recent.pop_front();
            }
            live_watchers(&mut log)
        };
        self.wake(watchers);
    }

    /// Wakes every listener and watcher after a change made through
    /// [`lock`](Self::lock) whose blocks are not known (watchers rescan).
    pub fn notify(&self) {
        let watchers = {
            let mut log = self.log();
            log.version += 1;
            // An unknown change: forget the log, so readers behind it rescan.
            log.recent.clear();
            live_watchers(&mut log)
        };
        self.wake(watchers);
    }

    fn wake(&self, watchers: Vec<Arc<Event>>) {
        self.inner.changed.notify(usize::MAX);
        for w in watchers {
            w.notify(usize::MAX);
        }
    }

    /// The current change version (increases with every change).
    pub fn version(&self) -> u64 {
        self.log().version
    }

    /// What changed after version `since`, and the current version.
    pub fn changes_since(&self, since: u64) -> (Changes, u64) {
        let log = self.log();
        if since == log.version {
            return (Changes::Ranges(Vec::new()), log.version);
        }
        match log.recent.front() {
            Some(&(first, _)) if first <= since + 1 => {
                let ranges = log.recent.iter().filter(|(v, _)| *v > since).map(|(_, r)| r.clone()).collect();
                (Changes::Ranges(ranges), log.version)
            }
            _ => (Changes::Rescan, log.version),
        }
    }

    /// Also notifies `event` on every change, for as long as the caller keeps it
    /// alive. One event can watch many feeds (a replication session watches all
    /// of its feeds with one).
    pub fn watch(&self, event: &Arc<Event>) {
        let mut log = self.log();
        log.watchers.retain(|w| w.strong_count() > 0);
        log.watchers.push(Arc::downgrade(event));
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
        self.append_batch([value]).map(|r| r.start)
    }

    /// Appends a batch and notifies listeners. See [`Feed::append_batch`].
    ///
    /// Under [`SyncPolicy::PerBatch`], appenders on several threads share
    /// their syncs (group commit): the batches that wait while one commit
    /// syncs are appended together by the next, each still signed on its own
    /// ([`Feed::append_batches`]).
    pub fn append_batch<I, V>(&self, values: I) -> Result<std::ops::Range<u64>, LogError>
    where
        I: IntoIterator<Item = V>,
        V: AsRef<[u8]>,
    {
        if self.inner.durable {
            return self.append_packed(values.into_iter().collect());
        }
        let r = self.lock().append_batch(values);
        self.notify_appended(r)
    }

    /// [`append_batch`](Self::append_batch) for blocks the caller owns: under
    /// [`SyncPolicy::PerBatch`] they join the group commit as they are, without
    /// the copy `append_batch` makes of borrowed blocks.
    pub fn append_batch_owned(&self, values: Vec<Vec<u8>>) -> Result<std::ops::Range<u64>, LogError> {
        let r = if self.inner.durable {
            self.group_commit(Batch::Owned(values))
        } else {
            self.lock().append_batch(values)
        };
        self.notify_appended(r)
    }

    /// [`append_batch_owned`](Self::append_batch_owned) for blocks packed in one
    /// buffer: the way to append a large batch of small blocks (a million lines
    /// of JSON), with neither an allocation per block nor a copy of them.
    ///
    /// ```
    /// # let feed = kappa_log::SharedFeed::new(kappa_log::Feed::builder(kappa_log::storage::MemoryProvider::new()).open()?);
    /// let blocks: kappa_log::PackedBlocks = ["a", "b", "c"].into_iter().collect();
    /// assert_eq!(feed.append_packed(blocks)?, 0..3);
    /// assert_eq!(feed.get(2)?, Some(b"c".to_vec()));
    /// # Ok::<(), kappa_log::LogError>(())
    /// ```
    pub fn append_packed(&self, blocks: PackedBlocks) -> Result<std::ops::Range<u64>, LogError> {
        let r = if self.inner.durable {
            self.group_commit(Batch::Packed(blocks))
        } else {
            self.lock().append_source(blocks)
        };
        self.notify_appended(r)
    }

    /// Tells listeners of what an append added; passes its result on.
    fn notify_appended(
        &self,
        r: Result<std::ops::Range<u64>, LogError>,
    ) -> Result<std::ops::Range<u64>, LogError> {
        if let Ok(range) = &r {
            if !range.is_empty() {
                self.notify_added(range.clone());
            }
        }
        r
    }

    /// How many durable append calls are queued for the next group commit
    /// (waiting while another commit syncs); 0 under [`SyncPolicy::None`].
    pub fn appends_waiting(&self) -> usize {
        self.commits().waiting.len()
    }

    fn commits(&self) -> MutexGuard<'_, Commits> {
        self.inner.commits.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `values` and waits until a commit has appended them, leading
    /// one if none is running.
    fn group_commit(&self, values: Batch) -> Result<Range<u64>, LogError> {
        let mut c = self.commits();
        let ticket = c.next_ticket;
        c.next_ticket += 1;
        c.waiting.push((ticket, values));
        loop {
            if let Some(r) = c.done.remove(&ticket) {
                return r;
            }
            if c.leading {
                c = self.inner.committed.wait(c).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            c.leading = true;
            let batch = std::mem::take(&mut c.waiting);
            drop(c);
            let (tickets, values): (Vec<u64>, Vec<Batch>) = batch.into_iter().unzip();
            let mut lead = Lead { feed: self, tickets, results: Vec::new() };
            lead.results = self.lock().append_sources(values);
            drop(lead);
            c = self.commits();
        }
    }

    /// Like [`put`](Self::put) with [`Feed::put_deferred`]; call
    /// [`flush_deferred`](Self::flush_deferred) after a burst.
    pub fn put_deferred(&self, index: u64, data: &[u8], proof: &Proof) -> Result<PutOutcome, LogError> {
        let r = self.lock().put_deferred(index, data, proof);
        if r == Ok(PutOutcome::Stored) {
            self.notify_added(index..index + 1);
        }
        r
    }

    /// Like [`put_deferred`](Self::put_deferred), but listeners and watchers
    /// are not told: the caller announces what it stored with
    /// [`notify_added`](Self::notify_added) when its burst ends, one wake-up
    /// (and one change record) for a run of blocks instead of one per block.
    /// Until then readers find the blocks but are not woken for them.
    ///
    /// ```
    /// use kappa_log::{Feed, PutOutcome, SharedFeed};
    /// use kappa_storage::MemoryProvider;
    ///
    /// let mut writer = Feed::in_memory().unwrap();
    /// writer.append_batch(&[b"a".to_vec(), b"b".to_vec()]).unwrap();
    /// let replica = Feed::builder(MemoryProvider::new()).public_key(*writer.public_key()).open();
    /// let replica = SharedFeed::new(replica.unwrap());
    /// let before = replica.version();
    /// for i in 0..2 {
    ///     let proof = writer.proof(i, 0, false).unwrap();
    ///     let data = writer.get(i).unwrap().unwrap();
    ///     assert_eq!(replica.put_deferred_unannounced(i, &data, &proof), Ok(PutOutcome::Stored));
    /// }
    /// assert_eq!(replica.version(), before); // nobody was told yet
    /// replica.flush_deferred().unwrap();
    /// replica.notify_added(0..2);
    /// assert_eq!(replica.version(), before + 1);
    /// assert_eq!(replica.lock().get(1).unwrap(), Some(b"b".to_vec()));
    /// ```
    pub fn put_deferred_unannounced(
        &self,
        index: u64,
        data: &[u8],
        proof: &Proof,
    ) -> Result<PutOutcome, LogError> {
        self.lock().put_deferred(index, data, proof)
    }

    /// See [`Feed::flush_deferred`].
    pub fn flush_deferred(&self) -> Result<(), LogError> {
        self.lock().flush_deferred()
    }

    /// Verifies and stores a downloaded block, notifying listeners if it was new.
    /// See [`Feed::put`].
    pub fn put(&self, index: u64, data: &[u8], proof: &Proof) -> Result<PutOutcome, LogError> {
        let r = self.lock().put(index, data, proof);
        if r == Ok(PutOutcome::Stored) {
            self.notify_added(index..index + 1);
        }
        r
    }
}

/// A running commit; when it ends (also by a panic), it hands out the results
/// (`Poisoned` for batches it did not finish) and lets the next leader start.
struct Lead<'a> {
    feed: &'a SharedFeed,
    tickets: Vec<u64>,
    results: Vec<Result<Range<u64>, LogError>>,
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        let mut c = self.feed.commits();
        c.leading = false;
        let mut results = std::mem::take(&mut self.results).into_iter();
        for t in self.tickets.drain(..) {
            c.done.insert(t, results.next().unwrap_or(Err(LogError::Poisoned)));
        }
        self.feed.inner.committed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_log_lists_ranges_then_asks_for_rescan() {
        let f = SharedFeed::new(Feed::in_memory().unwrap());
        let v0 = f.version();
        f.append(b"a").unwrap();
        f.append_batch([b"b", b"c"]).unwrap();
        let (c, v2) = f.changes_since(v0);
        assert_eq!(c, Changes::Ranges(vec![0..1, 1..3]));
        assert_eq!(f.changes_since(v2).0, Changes::Ranges(vec![]));
        for _ in 0..CHANGE_LOG + 1 {
            f.append(b"x").unwrap();
        }
        assert_eq!(f.changes_since(v2).0, Changes::Rescan);
        f.notify();
        let v = f.version();
        assert_eq!(f.changes_since(v - 1).0, Changes::Rescan);
    }

    #[test]
    fn watchers_are_notified_while_alive() {
        let a = SharedFeed::new(Feed::in_memory().unwrap());
        let b = SharedFeed::new(Feed::in_memory().unwrap());
        let ev = Arc::new(Event::new());
        a.watch(&ev);
        b.watch(&ev);
        let l = ev.listen();
        b.append(b"x").unwrap();
        futures::executor::block_on(l);
        drop(ev);
        a.append(b"y").unwrap(); // no watcher left: nothing to notify, no panic
    }
}
