#![doc = include_str!("../README.md")]
#![warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod progress;
mod source;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{JoinHandle, ScopedJoinHandle};

use event_listener::{Event, Listener};
use futures::channel::mpsc;
use kappa_log::{PublicKey, SharedFeed};
use kappa_view::{Batch, Entry, StoreError, StoreErrorKind, Tx, Unsaved, View, ViewError, ViewStore};

pub use progress::Progress;
pub use source::FeedSource;

/// Why an indexer stopped.
///
/// Equality compares [`Spawn`](Self::Spawn)'s I/O errors by kind and message.
/// Causes that are not `Clone` are held in an [`Arc`], so the error is.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// The view's `map` failed.
    #[error("view {view}: {source}")]
    View {
        /// The view's name.
        view: String,
        /// The cause.
        #[source]
        source: ViewError,
    },
    /// The view's store failed.
    #[error("view {view}: {source}")]
    Store {
        /// The view's name.
        view: String,
        /// The cause.
        #[source]
        source: StoreError,
    },
    /// A feed could not be read.
    #[error("view {view}: reading feed {feed}: {source}")]
    Feed {
        /// The view's name.
        view: String,
        /// The feed (hex).
        feed: String,
        /// What the log said.
        #[source]
        source: Arc<kappa_log::LogError>,
    },
    /// The indexer's thread could not be started.
    #[error("view {view}: cannot start the indexer thread: {source}")]
    Spawn {
        /// The view's name.
        view: String,
        /// What the operating system said.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The indexer was closed.
    #[error("indexer closed")]
    Closed,
}

impl PartialEq for IndexError {
    fn eq(&self, other: &Self) -> bool {
        use IndexError::*;
        match (self, other) {
            (View { view: a, source: x }, View { view: b, source: y }) => a == b && x == y,
            (Store { view: a, source: x }, Store { view: b, source: y }) => a == b && x == y,
            (Feed { view: a, feed: f, source: x }, Feed { view: b, feed: g, source: y }) => {
                a == b && f == g && x == y
            }
            (Spawn { view: a, source: x }, Spawn { view: b, source: y }) => {
                a == b && x.kind() == y.kind() && x.to_string() == y.to_string()
            }
            (Closed, Closed) => true,
            _ => false,
        }
    }
}

impl Eq for IndexError {}

/// What an indexer is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Everything stored locally is indexed.
    Idle,
    /// Working through entries.
    Indexing,
    /// Paused: no `map` runs until `resume`.
    Paused,
    /// Stopped by an error; `resume` retries.
    Error,
}

/// An indexer's state, for progress bars.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexState {
    /// What it is doing.
    pub status: Status,
    /// Entries indexed.
    pub indexed: u64,
    /// Entries stored locally.
    pub total: u64,
    /// The error, in the error state.
    pub error: Option<IndexError>,
    /// A rebuild in progress beside the live view (a version bump, a feed
    /// blocked or hidden): `indexed` then counts the rebuild's entries, and
    /// readers still see the live view this describes.
    pub rebuild: Option<RebuildState>,
}

/// A rebuild in progress in the store's [shadow](ViewStore::shadow), while
/// readers keep the live view whole; it is swapped in once it has caught up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuildState {
    /// Why the view is rebuilt.
    pub reason: String,
    /// The version the live view's rows were made with (`None` if its
    /// progress could not be read).
    pub live_version: Option<u64>,
    /// Entries the live view has indexed.
    pub live_indexed: u64,
}

/// Something an indexer did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IndexEvent {
    /// A batch was committed.
    Indexed {
        /// The feed.
        feed: PublicKey,
        /// How many entries.
        count: usize,
    },
    /// The status changed.
    Status(Status),
    /// The indexer stopped with an error.
    Error(IndexError),
    /// The view's store is unreachable for now ([`StoreErrorKind::Unavailable`]):
    /// the indexer waits and tries again by itself, from the progress the store
    /// holds, so no entry is lost or indexed twice.
    Retrying(IndexError),
    /// The view is being rebuilt from the logs without the feeds the feed
    /// set's policy now leaves out (a feed blocked or hidden while the view
    /// held its entries): beside the live view, which readers keep seeing
    /// until [`Rebuilt`](Self::Rebuilt), if the store has a
    /// [shadow](ViewStore::shadow); in place (the view cleared) if not.
    Rebuilding {
        /// Why.
        reason: String,
    },
    /// A rebuild made beside the live view was swapped in: readers see the
    /// new rows from now on.
    Rebuilt {
        /// Why the view was rebuilt.
        reason: String,
    },
    /// The view removed the entries of feeds the policy now leaves out by
    /// itself ([`View::forget`]), without a rebuild: readers see the view
    /// without them from now on.
    Forgotten {
        /// The feeds.
        feeds: Vec<PublicKey>,
        /// Why (as for [`Rebuilding`](Self::Rebuilding)).
        reason: String,
    },
}

/// A rebuild in the store's shadow.
struct Rebuild {
    shadow: Arc<dyn ViewStore>,
    reason: String,
    /// The live view's progress, as the rebuild began.
    live: Option<Progress>,
    /// Entries the rebuild indexed that the live view had not: the view
    /// hears of them (`View::indexed`) once they are visible, after the swap.
    pending: Vec<Entry>,
}

impl Rebuild {
    fn state(&self) -> RebuildState {
        RebuildState {
            reason: self.reason.clone(),
            live_version: self.live.as_ref().map(|p| p.version),
            live_indexed: self.live.as_ref().map_or(0, Progress::count),
        }
    }
}

struct Shared {
    status: Status,
    pause_requested: bool,
    paused: bool,
    error: Option<IndexError>,
    progress: Progress,
    closed: bool,
    /// Reload the progress from the store before the next batch (set by
    /// `resume` after an error: a failed commit may have landed after all).
    reload: bool,
    /// The feed set's policy version the progress agrees with: the view
    /// holds no entry of a feed it leaves out.
    policy_seen: u64,
    turn: usize,
    subscribers: Vec<mpsc::UnboundedSender<IndexEvent>>,
    /// A rebuild in the shadow, which `progress` then describes.
    rebuild: Option<Rebuild>,
}

struct Inner {
    name: String,
    view: Arc<dyn View>,
    feeds: Arc<dyn FeedSource>,
    shared: Mutex<Shared>,
    /// Wakes the worker (feeds and the feed set notify it).
    wake: Arc<Event>,
    /// Notified on every state change (ready and pause wait on it).
    changed: Event,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(sh: &mut Shared, ev: IndexEvent) {
        sh.subscribers.retain(|s| s.unbounded_send(ev.clone()).is_ok());
    }

    fn set_status(&self, sh: &mut Shared, status: Status) {
        if sh.status != status {
            sh.status = status;
            Self::emit(sh, IndexEvent::Status(status));
        }
        self.changed.notify(usize::MAX);
    }

    fn fail(&self, e: IndexError) {
        tracing::warn!(error = %e, cause = ?e, "indexer stopped with an error");
        let mut sh = self.lock();
        sh.error = Some(e.clone());
        Self::emit(&mut sh, IndexEvent::Error(e));
        self.set_status(&mut sh, Status::Error);
    }
}

/// Runs one view over a feed set in the background (see the crate docs).
///
/// Dropping the indexer stops its thread once the work in flight is
/// committed: with a backlog, the group being committed and the one being
/// mapped behind it (each up to 4,096 entries).
pub struct Indexer {
    inner: Arc<Inner>,
    thread: Option<JoinHandle<()>>,
    rebuilt_because: Option<String>,
}

impl std::fmt::Debug for Indexer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Indexer").field("name", &self.inner.name).field("state", &self.state()).finish()
    }
}

impl Indexer {
    /// Starts indexing `view` (called `name` in errors) over the feeds of `mf`
    /// (a `Multifeed`, or any other [`FeedSource`]; the indexer keeps a clone).
    ///
    /// If the store holds progress of another version (or none), the store is
    /// cleared first and the view rebuilt from all entries.
    pub fn start<S: FeedSource + Clone + 'static>(
        name: &str,
        view: Arc<dyn View>,
        mf: &S,
    ) -> Result<Indexer, IndexError> {
        let mf: Arc<dyn FeedSource> = Arc::new(mf.clone());
        let store_err = |source| IndexError::Store { view: name.to_owned(), source };
        let policy_version = mf.policy_version();
        let (progress, rebuild, rebuilt_because) = starting_point(name, &*view, &*mf).map_err(store_err)?;
        let inner = Arc::new(Inner {
            name: name.to_owned(),
            view,
            feeds: mf.clone(),
            shared: Mutex::new(Shared {
                status: Status::Idle,
                pause_requested: false,
                paused: false,
                error: None,
                progress,
                closed: false,
                reload: false,
                policy_seen: policy_version,
                turn: 0,
                subscribers: Vec::new(),
                rebuild,
            }),
            wake: Arc::new(Event::new()),
            changed: Event::new(),
        });
        mf.watch(&inner.wake);
        let worker = inner.clone();
        // The thread's span: a child of the caller's (which opened the
        // database), so its events carry the view's name.
        let span = tracing::info_span!("indexer", view = name);
        let thread = std::thread::Builder::new()
            .name(format!("kappa-index-{name}"))
            .spawn(move || span.in_scope(|| run(worker)))
            .map_err(|e| IndexError::Spawn { view: name.to_owned(), source: Arc::new(e) })?;
        Ok(Indexer { inner, thread: Some(thread), rebuilt_because })
    }

    /// Why the view was cleared and is being rebuilt from all entries at
    /// start, though its version matched: it had indexed entries that the logs
    /// do not hold (see [`Indexer::start`]). `None` when it was not.
    pub fn rebuilt_because(&self) -> Option<&str> {
        self.rebuilt_because.as_deref()
    }

    /// The view's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The view.
    pub fn view(&self) -> &Arc<dyn View> {
        &self.inner.view
    }

    /// The current state.
    pub fn state(&self) -> IndexState {
        let (status, indexed, error, rebuild) = {
            let sh = self.inner.lock();
            (sh.status, sh.progress.count(), sh.error.clone(), sh.rebuild.as_ref().map(Rebuild::state))
        };
        let total = self.inner.feeds.visible_feeds().iter().map(|f| f.lock().downloaded(0..u64::MAX)).sum();
        IndexState { status, indexed, total, error, rebuild }
    }

    /// A stream of what the indexer does.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<IndexEvent> {
        let (tx, rx) = mpsc::unbounded();
        self.inner.lock().subscribers.push(tx);
        rx
    }

    /// Whether some entry stored locally is not indexed yet.
    fn has_work(&self) -> bool {
        let (progress, policy_seen, rebuilding) = {
            let sh = self.inner.lock();
            (sh.progress.clone(), sh.policy_seen, sh.rebuild.is_some())
        };
        if rebuilding {
            // Readers see the old view until the rebuild is swapped in.
            return true;
        }
        if policy_seen != self.inner.feeds.policy_version() {
            // A feed may have been blocked or hidden: not ready until the
            // view has dropped its entries.
            return true;
        }
        self.inner.feeds.visible_feeds().iter().any(|f| {
            let present = f.lock().downloaded(0..u64::MAX);
            present > progress.feeds.get(f.public_key()).map_or(0, |r| r.count())
        })
    }

    /// Resolves once every entry stored locally (including ones that arrive
    /// meanwhile) is indexed; at once while paused; with the error in the error
    /// state.
    pub async fn ready(&self) -> Result<(), IndexError> {
        loop {
            let listener = self.inner.changed.listen();
            {
                let sh = self.inner.lock();
                if sh.closed {
                    return Err(IndexError::Closed);
                }
                if let Some(e) = &sh.error {
                    return Err(e.clone());
                }
                if sh.paused {
                    return Ok(());
                }
            }
            if !self.has_work() {
                return Ok(());
            }
            self.inner.wake.notify(usize::MAX);
            listener.await;
        }
    }

    /// Resolves once the indexer is paused: no `map` call runs from then on until
    /// [`resume`](Self::resume), whatever is appended meanwhile.
    pub async fn pause(&self) {
        {
            let mut sh = self.inner.lock();
            if sh.paused || sh.closed {
                return;
            }
            sh.pause_requested = true;
        }
        self.inner.wake.notify(usize::MAX);
        loop {
            let listener = self.inner.changed.listen();
            {
                let sh = self.inner.lock();
                if sh.paused || sh.closed || sh.error.is_some() {
                    return;
                }
            }
            listener.await;
        }
    }

    /// Resumes after [`pause`](Self::pause), or retries after an error.
    pub fn resume(&self) {
        let mut sh = self.inner.lock();
        sh.paused = false;
        sh.pause_requested = false;
        if sh.error.take().is_some() {
            sh.reload = true;
        }
        self.inner.set_status(&mut sh, Status::Idle);
        drop(sh);
        self.inner.wake.notify(usize::MAX);
    }

    /// Stops the indexer once the work in flight is committed (with a
    /// backlog, the group being committed and the one mapped behind it).
    pub fn close(&mut self) {
        self.inner.lock().closed = true;
        self.inner.wake.notify(usize::MAX);
        self.inner.changed.notify(usize::MAX);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Indexer {
    fn drop(&mut self) {
        self.close();
    }
}

/// Why `p` must be rebuilt for the feed set's policy, if it must: it holds
/// entries of a feed the policy blocks or hides.
fn excluded_in(p: &Progress, mf: &dyn FeedSource) -> Option<String> {
    p.feeds.iter().filter(|(_, r)| r.count() > 0).find_map(|(key, _)| {
        mf.excluded_because(key).map(|why| format!("feed {} is {why} in this database", key.to_hex()))
    })
}

/// What [`forget_excluded`] removed.
struct Forgot {
    feeds: Vec<PublicKey>,
    reason: String,
}

/// Removes the entries of the feeds the policy leaves out from the view in
/// `store` (whose progress is `progress`) without a rebuild, if the view can
/// ([`View::forget`]): the rows and the progress without those feeds commit
/// together. `None` if there was nothing to forget, the view cannot, or the
/// view must be rebuilt anyway (it holds entries the logs do not).
fn forget_excluded(
    name: &str,
    view: &dyn View,
    store: &dyn ViewStore,
    progress: &Progress,
    mf: &dyn FeedSource,
) -> Result<Option<(Progress, Forgot)>, StoreError> {
    let mut feeds: Vec<PublicKey> =
        progress.feeds.keys().filter(|key| mf.excluded_because(key).is_some()).copied().collect();
    if feeds.is_empty() || progress.version != view.version() {
        return Ok(None);
    }
    feeds.sort();
    let Some(reason) = excluded_in(progress, mf) else { return Ok(None) };
    let mut kept = progress.clone();
    for key in &feeds {
        kept.feeds.remove(key);
    }
    if ahead_of_the_logs(&kept, mf).is_some() {
        return Ok(None);
    }
    let started = std::time::Instant::now();
    let mut tx = Tx::new(store);
    let mut read = |key: &PublicKey, seq: u64| -> Result<Option<Vec<u8>>, ViewError> {
        if !kept.contains(key, seq) {
            return Ok(None);
        }
        let feed = mf.feed(key).ok_or_else(|| ViewError::Map(format!("feed {} is gone", key.to_hex())))?;
        let value = feed.lock().try_get(seq);
        value.map(Some).map_err(|e| ViewError::Map(format!("reading {}@{seq}: {e}", key.to_hex())))
    };
    match view.forget(&feeds, &mut read, &mut tx) {
        Ok(true) => {}
        Ok(false) => return Ok(None),
        Err(ViewError::Store(e)) => return Err(e),
        Err(e) => {
            // A rebuild does not need the view's records.
            tracing::warn!(view = name, error = %e, "the view could not forget the feeds: rebuilding it instead");
            return Ok(None);
        }
    }
    let writes = tx.into_batch(Some(kept.encode()));
    let rows = writes.ops.len();
    store.commit(writes)?;
    tracing::info!(
        view = name,
        reason = %reason,
        feeds = feeds.len(),
        entries = progress.count() - kept.count(),
        rows,
        elapsed = ?started.elapsed(),
        "the view forgot the entries of feeds the policy leaves out, without a rebuild"
    );
    Ok(Some((kept, Forgot { feeds, reason })))
}

/// Rebuilds the view if it holds entries of a feed the policy now leaves
/// out (beside the live view, if the store has a shadow), and records the
/// policy version it agrees with.
fn apply_policy(inner: &Inner, version: u64) -> Result<(), IndexError> {
    let store_err = |source| IndexError::Store { view: inner.name.clone(), source };
    let (mut progress, rebuilding) = {
        let sh = inner.lock();
        (sh.progress.clone(), sh.rebuild.as_ref().map(|r| r.shadow.clone()))
    };
    // The view may remove the feeds' entries itself (in the shadow, if a
    // rebuild runs there).
    let target: &dyn ViewStore = match &rebuilding {
        Some(shadow) => &**shadow,
        None => inner.view.store(),
    };
    if let Some((kept, forgot)) =
        forget_excluded(&inner.name, &*inner.view, target, &progress, &*inner.feeds).map_err(store_err)?
    {
        let mut sh = inner.lock();
        sh.progress = kept.clone();
        let reason = forgot.reason.clone();
        Inner::emit(&mut sh, IndexEvent::Forgotten { feeds: forgot.feeds, reason });
        progress = kept;
    }
    // A feed left out, or entries cleared from a feed (`Multifeed::clear`
    // tells the indexers as a policy change does).
    let unfit = excluded_in(&progress, &*inner.feeds).or_else(|| ahead_of_the_logs(&progress, &*inner.feeds));
    if let Some(reason) = unfit {
        let shadow = match rebuilding {
            Some(shadow) => Some(shadow),
            None => inner.view.store().shadow().map_err(store_err)?,
        };
        match shadow {
            Some(shadow) => {
                // Readers keep the live view whole until the rebuild has
                // caught up and is swapped in.
                shadow.clear().map_err(store_err)?;
                tracing::info!(reason = %reason, "rebuilding the view beside the live one after a policy change");
                let mut sh = inner.lock();
                match &mut sh.rebuild {
                    Some(r) => r.reason = reason.clone(),
                    None => {
                        sh.rebuild = Some(Rebuild {
                            shadow,
                            reason: reason.clone(),
                            live: Some(progress),
                            pending: Vec::new(),
                        })
                    }
                }
                sh.progress = Progress::new(inner.view.version());
                Inner::emit(&mut sh, IndexEvent::Rebuilding { reason });
            }
            None => {
                // A store without a shadow: the view is blank until it has
                // caught up again.
                inner.view.store().clear().map_err(store_err)?;
                tracing::info!(reason = %reason, "view cleared after a policy change: rebuilding it");
                let mut sh = inner.lock();
                sh.progress = Progress::new(inner.view.version());
                Inner::emit(&mut sh, IndexEvent::Rebuilding { reason });
            }
        }
    }
    inner.lock().policy_seen = version;
    inner.changed.notify(usize::MAX);
    Ok(())
}

/// Why the view whose stored progress is `p` cannot be read as it is, if it
/// cannot: another version, entries of a feed the policy leaves out, or
/// entries the logs do not hold.
fn unfit(p: &Progress, version: u64, mf: &dyn FeedSource) -> Option<String> {
    if p.version != version {
        return Some(format!(
            "its rows were made by version {} and the view is now version {version}",
            p.version
        ));
    }
    excluded_in(p, mf).or_else(|| ahead_of_the_logs(p, mf))
}

/// Where an indexer starts: the progress it resumes from, the rebuild in the
/// shadow it resumes or begins (if the live view is unfit and the store has
/// a shadow), and why a view of the current version is rebuilt.
///
/// The live view is kept for readers while it is rebuilt beside it; a store
/// without a shadow, or a live view without progress (nothing to show), is
/// cleared and rebuilt in place. A rebuild that a crash interrupted resumes
/// from what its shadow holds, if that still fits.
fn starting_point(
    name: &str,
    view: &dyn View,
    mf: &dyn FeedSource,
) -> Result<(Progress, Option<Rebuild>, Option<String>), StoreError> {
    let version = view.version();
    let store = view.store();
    let mut live = store.state()?.map(|b| Progress::decode(&b));
    // Feeds left out while the view was closed: the view may remove their
    // entries itself.
    if let Some(Some(p)) = &live {
        if let Some((kept, _)) = forget_excluded(name, view, store, p, mf)? {
            live = Some(Some(kept));
        }
    }
    let why = match &live {
        Some(Some(p)) => unfit(p, version, mf),
        Some(None) => Some("its stored progress is unreadable".to_owned()),
        None => None,
    };
    // A view of this version rebuilt all the same (a crash of the machine, a
    // policy change while it was closed): worth telling the user.
    let rebuilt_because = match &live {
        Some(Some(p)) if p.version == version => why.clone(),
        _ => None,
    };
    let Some(why) = why else {
        // The live view fits (or is empty): a rebuild left in the shadow is stale.
        if let Some(shadow) = store.shadow()? {
            if shadow.state()?.is_some() {
                shadow.clear()?;
                tracing::debug!(view = name, "dropped a rebuild the live view no longer needs");
            }
        }
        if live.is_none() {
            store.clear()?;
            tracing::debug!(view = name, version, "view built from all entries");
        }
        let progress = live.flatten().unwrap_or_else(|| Progress::new(version));
        return Ok((progress, None, None));
    };
    let Some(shadow) = store.shadow()? else {
        store.clear()?;
        tracing::info!(view = name, reason = %why, "view cleared: rebuilding it");
        return Ok((Progress::new(version), None, rebuilt_because));
    };
    let resumed = match shadow.state()?.map(|b| Progress::decode(&b)) {
        Some(Some(p)) if unfit(&p, version, mf).is_none() => Some(p),
        _ => None,
    };
    let progress = match resumed {
        Some(p) => {
            tracing::info!(view = name, reason = %why, indexed = p.count(), "resuming the rebuild beside the live view");
            p
        }
        None => {
            shadow.clear()?;
            tracing::info!(view = name, reason = %why, "rebuilding the view beside the live one");
            Progress::new(version)
        }
    };
    let rebuild = Rebuild { shadow, reason: why, live: live.flatten(), pending: Vec::new() };
    Ok((progress, Some(rebuild), rebuilt_because))
}

/// Swaps a rebuild that has caught up in: the store promotes its shadow,
/// and the view hears of the entries that are new to its readers.
fn swap_in(inner: &Inner) -> Result<(), IndexError> {
    inner
        .view
        .store()
        .promote_shadow()
        .map_err(|source| IndexError::Store { view: inner.name.clone(), source })?;
    finish_rebuild(inner);
    Ok(())
}

/// After the swap (or on finding it landed): the rebuild is over.
fn finish_rebuild(inner: &Inner) {
    let Some(rebuild) = inner.lock().rebuild.take() else { return };
    tracing::info!(reason = %rebuild.reason, "the rebuilt view is swapped in");
    if !rebuild.pending.is_empty() {
        inner.view.indexed(&rebuild.pending);
    }
    let mut sh = inner.lock();
    Inner::emit(&mut sh, IndexEvent::Rebuilt { reason: rebuild.reason });
    drop(sh);
    inner.changed.notify(usize::MAX);
}

/// Why `p` is ahead of the logs, if it is: it counts as indexed an entry
/// that no feed of `mf` holds. A view can only get there by a crash of the
/// machine (the view's commit reached the disk, the log's write did not) or
/// by a feed's files lost or replaced; its rows would then show entries that
/// are not there, so it is rebuilt.
fn ahead_of_the_logs(p: &Progress, mf: &dyn FeedSource) -> Option<String> {
    for (key, ranges) in &p.feeds {
        let Some(feed) = mf.feed(key) else {
            if !mf.has_damaged_feeds() {
                return Some(format!(
                    "it indexed entries of feed {}, which this database no longer holds",
                    key.to_hex()
                ));
            }
            // A damaged folder may be that feed: it keeps its rows until repaired.
            continue;
        };
        let f = feed.lock();
        for r in ranges.iter() {
            let held = f.downloaded(r.clone());
            if held < r.end - r.start {
                return Some(format!(
                    "it indexed {} entries of feed {} in {}..{} that the log does not hold",
                    r.end - r.start - held,
                    key.to_hex(),
                    r.start,
                    r.end
                ));
            }
        }
    }
    None
}

/// The next batch: up to `max_batch` present, unindexed entries of one feed,
/// ascending; feeds take turns.
fn next_batch(inner: &Inner) -> Option<(SharedFeed, Vec<u64>)> {
    let progress = inner.lock().progress.clone();
    next_batch_after(inner, &progress)
}

/// Like [`next_batch`], for a given progress (which may be ahead of the
/// committed one while a group is being built).
fn next_batch_after(inner: &Inner, progress: &Progress) -> Option<(SharedFeed, Vec<u64>)> {
    let feeds = inner.feeds.visible_feeds();
    if feeds.is_empty() {
        return None;
    }
    let max = inner.view.max_batch().max(1);
    let newest_first = inner.view.newest_first();
    let turn = inner.lock().turn;
    let progress_of: Vec<Option<&kappa_log::RangeSet>> =
        feeds.iter().map(|f| progress.feeds.get(f.public_key())).collect();
    for k in 0..feeds.len() {
        let i = (turn + k) % feeds.len();
        let feed = &feeds[i];
        let empty = kappa_log::RangeSet::new();
        let done = progress_of[i].unwrap_or(&empty);
        let f = feed.lock();
        let bits = f.bitfield();
        let len = f.len().max(bits.data_bits());
        let mut seqs = Vec::new();
        if newest_first {
            let mut before = len;
            while seqs.len() < max {
                let Some(s) = bits.prev_block(0, before) else { break };
                if !done.contains(s) {
                    seqs.push(s);
                }
                before = s;
            }
            seqs.reverse();
        } else {
            let mut from = 0;
            while seqs.len() < max {
                // Skip what is indexed, then find the next present block.
                if done.contains(from) {
                    from = done.iter().find(|r| r.contains(&from)).map_or(from + 1, |r| r.end);
                    continue;
                }
                let Some(s) = bits.next_block(from, len) else { break };
                if done.contains(s) {
                    from = s;
                    continue;
                }
                seqs.push(s);
                from = s + 1;
            }
        }
        drop(f);
        if !seqs.is_empty() {
            inner.lock().turn = i + 1;
            return Some((feed.clone(), seqs));
        }
    }
    None
}

fn run(inner: Arc<Inner>) {
    let mut watched: HashSet<PublicKey> = HashSet::new();
    loop {
        let listener = inner.wake.listen();
        for f in inner.feeds.visible_feeds() {
            if watched.insert(*f.public_key()) {
                f.watch(&inner.wake);
            }
        }
        {
            let mut sh = inner.lock();
            if sh.closed {
                return;
            }
            if sh.pause_requested {
                sh.pause_requested = false;
                sh.paused = true;
                inner.set_status(&mut sh, Status::Paused);
            }
            if sh.paused || sh.error.is_some() {
                drop(sh);
                listener.wait();
                continue;
            }
            if std::mem::take(&mut sh.reload) {
                drop(sh);
                match reload_progress(&inner) {
                    Ok(()) => {}
                    Err(e) if is_transient(&e) => wait_for_store(&inner, e),
                    Err(e) => inner.fail(e),
                }
                continue;
            }
            let version = inner.feeds.policy_version();
            if version != sh.policy_seen {
                drop(sh);
                match apply_policy(&inner, version) {
                    Ok(()) => {}
                    Err(e) if is_transient(&e) => wait_for_store(&inner, e),
                    Err(e) => inner.fail(e),
                }
                continue;
            }
        }
        let Some((feed, seqs)) = next_batch(&inner) else {
            if inner.lock().rebuild.is_some() {
                // The rebuild has caught up: swap it in.
                match swap_in(&inner) {
                    Ok(()) => {}
                    Err(e) if is_transient(&e) => wait_for_store(&inner, e),
                    Err(e) => inner.fail(e),
                }
                continue;
            }
            let mut sh = inner.lock();
            inner.set_status(&mut sh, Status::Idle);
            drop(sh);
            listener.wait();
            continue;
        };
        {
            let mut sh = inner.lock();
            inner.set_status(&mut sh, Status::Indexing);
        }
        match index_groups(&inner, feed, seqs) {
            Ok(()) => {}
            Err(e) if is_transient(&e) => wait_for_store(&inner, e),
            Err(e) => inner.fail(e),
        }
    }
}

/// Whether `e` is a store that is unreachable for now.
fn is_transient(e: &IndexError) -> bool {
    match e {
        IndexError::Store { source, .. } => source.is_transient(),
        IndexError::View { source: ViewError::Store(source), .. } => source.is_transient(),
        _ => false,
    }
}

/// Replaces the indexer's progress with the one the store holds: after a
/// failed commit, that is the truth (the commit may have landed after all).
fn reload_progress(inner: &Inner) -> Result<(), IndexError> {
    let store_err = |source| IndexError::Store { view: inner.name.clone(), source };
    let version = inner.view.version();
    let shadow = inner.lock().rebuild.as_ref().map(|r| r.shadow.clone());
    let store: &dyn ViewStore = match &shadow {
        Some(shadow) => {
            // A swap that failed may have landed after all: then the live
            // view holds the rebuild.
            let live = inner.view.store().state().map_err(store_err)?.and_then(|b| Progress::decode(&b));
            if let Some(p) = live {
                if shadow.state().map_err(store_err)?.is_none() && unfit(&p, version, &*inner.feeds).is_none()
                {
                    inner.lock().progress = p;
                    finish_rebuild(inner);
                    return Ok(());
                }
            }
            &**shadow
        }
        None => inner.view.store(),
    };
    let progress = match store.state().map_err(store_err)? {
        None => Progress::new(version),
        Some(bytes) => match Progress::decode(&bytes) {
            Some(p) if p.version == version => p,
            _ => {
                return Err(store_err(StoreError::from_message(
                    StoreErrorKind::Corrupt,
                    "the stored indexing progress changed under the indexer (another version or \
                     unreadable)",
                )))
            }
        },
    };
    inner.lock().progress = progress;
    Ok(())
}

/// After a transient store error: backs off (up to 5 s between tries) until the
/// store answers again, then reloads the progress it holds, so the next batch
/// starts exactly after what the store holds.
fn wait_for_store(inner: &Inner, first: IndexError) {
    let mut delay = std::time::Duration::from_millis(50);
    let mut error = first;
    let mut tries: u32 = 0;
    loop {
        tries += 1;
        // The first failure is worth a warning; the tries after it, while
        // the store stays away, are detail.
        if tries == 1 {
            tracing::warn!(error = %error, cause = ?error, retry_in = ?delay, "view store unreachable: retrying");
        } else {
            tracing::debug!(error = %error, tries, retry_in = ?delay, "view store still unreachable: retrying");
        }
        {
            let mut sh = inner.lock();
            Inner::emit(&mut sh, IndexEvent::Retrying(error.clone()));
        }
        let until = std::time::Instant::now() + delay;
        while std::time::Instant::now() < until {
            if inner.lock().closed {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        delay = (delay * 2).min(std::time::Duration::from_secs(5));
        match reload_progress(inner) {
            Ok(()) => {
                tracing::info!(tries, "view store reachable again: indexing resumes");
                return;
            }
            Err(e) if is_transient(&e) => error = e,
            Err(e) => {
                inner.fail(e);
                return;
            }
        }
    }
}

/// Most entries mapped into one commit. While there is a backlog (a rebuild, a
/// large download), several `map` batches share one store transaction, which
/// makes durable stores much faster; rows and progress still commit together.
const GROUP_ENTRIES: usize = 4096;

/// A commit group: the batches mapped into one transaction, and the progress
/// that goes with them.
struct Group {
    /// The progress once the group is committed.
    next: Progress,
    /// The entries, by feed, in the order they were mapped.
    done: Vec<(PublicKey, Vec<Entry>)>,
    mapped: usize,
    /// `index_group`, around its mapping, commit and outcome.
    span: tracing::Span,
}

/// A group's commit on a thread of its own.
type Commit<'scope> = ScopedJoinHandle<'scope, Result<(), StoreError>>;

/// Whether the worker has something to do besides indexing: close, pause,
/// reload the progress, or apply a new feed policy.
fn interrupted(inner: &Inner) -> bool {
    let version = inner.feeds.policy_version();
    let sh = inner.lock();
    sh.closed
        || sh.pause_requested
        || sh.paused
        || sh.error.is_some()
        || sh.reload
        || version != sh.policy_seen
}

/// Indexes the batch `seqs` of `feed` and, while more work is ready and
/// nothing interrupts, the groups that follow it.
///
/// Each group is the batch and, while more work is ready and no pause is
/// requested, further batches, mapped into one transaction
/// ([`View::map_batches`]) and committed with the new progress. With a
/// backlog, the commits are pipelined: a group is committed on a thread of its
/// own while the next one is read and mapped, its transaction begun
/// [`after`](Tx::after) the one in flight (so it reads its writes). A group is
/// only handed to the store once the one before it has committed; if that
/// commit fails, the group mapped behind it is dropped, and the caller
/// reloads the progress the store holds.
fn index_groups(inner: &Inner, feed: SharedFeed, seqs: Vec<u64>) -> Result<(), IndexError> {
    // The shadow while a rebuild runs (only this thread starts or ends one).
    let shadow = inner.lock().rebuild.as_ref().map(|r| r.shadow.clone());
    let store: &dyn ViewStore = match &shadow {
        Some(shadow) => &**shadow,
        None => inner.view.store(),
    };
    let store_err = |source| IndexError::Store { view: inner.name.clone(), source };
    std::thread::scope(|scope| {
        // The group being committed, its writes, and its commit.
        let mut in_flight: Option<(Group, Arc<Unsaved>, Commit<'_>)> = None;
        let mut work = Some((feed, seqs));
        loop {
            let built = match work.take() {
                Some((feed, seqs)) => {
                    let from = match &in_flight {
                        Some((g, _, _)) => g.next.clone(),
                        None => inner.lock().progress.clone(),
                    };
                    let unsaved = in_flight.as_ref().map(|(_, u, _)| u.clone());
                    build_group(inner, store, feed, seqs, from, unsaved.as_deref())
                }
                None => Ok(None),
            };
            // The group in flight lands (or fails) before anything else.
            if let Some((group, _, commit)) = in_flight.take() {
                let landed = commit.join().unwrap_or_else(|_| {
                    Err(StoreError::from_message(StoreErrorKind::Backend, "the view store's commit panicked"))
                });
                landed.map_err(store_err)?;
                finish_group(inner, group);
            }
            let Some((group, batch)) = built? else { return Ok(()) };
            // More work ready, and nothing else to do: commit this group while
            // the next one is mapped. Otherwise commit it here.
            let next = if interrupted(inner) { None } else { next_batch_after(inner, &group.next) };
            if next.is_none() {
                group.span.in_scope(|| store.commit(batch)).map_err(store_err)?;
                finish_group(inner, group);
                return Ok(());
            }
            let unsaved = Arc::new(Unsaved::of(&batch));
            let span = group.span.clone();
            let spawned = std::thread::Builder::new()
                .name("kappa-index-commit".into())
                .spawn_scoped(scope, move || span.in_scope(|| store.commit(batch)));
            match spawned {
                Ok(commit) => in_flight = Some((group, unsaved, commit)),
                Err(e) => {
                    // No thread to spare: the group was not committed; the
                    // caller retries from the progress the store holds.
                    return Err(store_err(StoreError::from_message(
                        StoreErrorKind::Unavailable,
                        format!("cannot start a commit thread: {e}"),
                    )));
                }
            }
            work = next;
        }
    })
}

/// Reads the batch `seqs` of `feed` and, while more work is ready and no
/// pause is requested, further batches (after the progress `from`), and maps
/// them all into one transaction, begun after `unsaved` (the writes of the
/// group in flight, if any). `None` if the feed was blocked while it was read.
fn build_group(
    inner: &Inner,
    store: &dyn ViewStore,
    feed: SharedFeed,
    seqs: Vec<u64>,
    from: Progress,
    unsaved: Option<&Unsaved>,
) -> Result<Option<(Group, Batch)>, IndexError> {
    let span =
        tracing::debug_span!("index_group", entries = tracing::field::Empty, batches = tracing::field::Empty);
    let _entered = span.enter();
    let mut next = from;
    let mut done: Vec<(PublicKey, Vec<Entry>)> = Vec::new();
    let mut mapped = 0;
    let (mut feed, mut seqs) = (feed, seqs);
    loop {
        let entries = match read_entries(inner, &feed, &seqs) {
            Ok(entries) => entries,
            // Blocked while we read it (its files are cut off): nothing of
            // this group is committed, and the rebuild that follows the
            // policy change leaves the feed out.
            Err(_) if inner.feeds.is_blocked(feed.public_key()) => return Ok(None),
            Err(e) => return Err(e),
        };
        let key = *feed.public_key();
        let set = next.feeds.entry(key).or_default();
        for &s in &seqs {
            set.insert(s..s + 1);
        }
        mapped += entries.len();
        done.push((key, entries));
        if mapped >= GROUP_ENTRIES || inner.lock().pause_requested {
            break;
        }
        match next_batch_after(inner, &next) {
            Some((f, s)) => (feed, seqs) = (f, s),
            None => break,
        }
    }
    let mut tx = match unsaved {
        Some(u) => Tx::after(store, u),
        None => Tx::new(store),
    };
    let batches: Vec<&[Entry]> = done.iter().map(|(_, entries)| entries.as_slice()).collect();
    inner
        .view
        .map_batches(&batches, &mut tx)
        .map_err(|source| IndexError::View { view: inner.name.clone(), source })?;
    span.record("entries", mapped).record("batches", done.len());
    // The new progress goes into the same atomic batch as the rows.
    let batch = tx.into_batch(Some(next.encode()));
    drop(_entered);
    Ok(Some((Group { next, done, mapped, span }, batch)))
}

/// After a group's commit: the shared progress (what `ready` looks at) moves,
/// and the view and subscribers hear of the entries.
fn finish_group(inner: &Inner, group: Group) {
    let _entered = group.span.enter();
    tracing::debug!(entries = group.mapped, batches = group.done.len(), "committed");
    inner.lock().progress = group.next;
    for (key, entries) in group.done {
        let mut sh = inner.lock();
        match &mut sh.rebuild {
            // Not visible before the swap; what readers had seen already is
            // not news.
            Some(r) => {
                let live = r.live.as_ref();
                r.pending.extend(
                    entries.iter().filter(|e| !live.is_some_and(|p| p.contains(&e.feed, e.seq))).cloned(),
                );
            }
            None => {
                drop(sh);
                inner.view.indexed(&entries);
                sh = inner.lock();
            }
        }
        Inner::emit(&mut sh, IndexEvent::Indexed { feed: key, count: entries.len() });
    }
    inner.changed.notify(usize::MAX);
}

fn read_entries(inner: &Inner, feed: &SharedFeed, seqs: &[u64]) -> Result<Vec<Entry>, IndexError> {
    let key = *feed.public_key();
    let entries: Vec<Entry> = {
        let mut f = feed.lock();
        let mut out = Vec::with_capacity(seqs.len());
        for &s in seqs {
            let value = f.try_get(s).map_err(|e| IndexError::Feed {
                view: inner.name.clone(),
                feed: key.to_hex(),
                source: Arc::new(e),
            })?;
            out.push(Entry::new(key, s, value));
        }
        out
    };
    Ok(entries)
}
