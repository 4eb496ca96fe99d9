#![doc = include_str!("../README.md")]
#![warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::stream::{BoxStream, StreamExt};

pub use kappa_index as index;
pub use kappa_log as log;
pub use kappa_multifeed as multifeed;
pub use kappa_protocol as protocol;
pub use kappa_storage as storage;
pub use kappa_view as view;
#[cfg(feature = "postgres")]
pub use kappa_view_postgres as view_postgres;
pub use kappa_view_redb as view_redb;

pub use join::{JoinEvent, JoinOptions};
pub use kappa_discovery as discovery;
pub use kappa_index::{IndexError, IndexEvent, IndexState, RebuildState, Status};
pub use kappa_log::encoding::ValueEncoding;
pub use kappa_log::{PublicKey, SharedFeed, SyncPolicy};
pub use kappa_multifeed::{
    Blocked, FeedPolicy, FeedUsage, Policy, PolicyError, ReplicateOptions, SyncReport, DEFAULT_SHARED_KEY,
};
pub use kappa_view::{Entry, View, ViewBackend, ViewStore};
pub use serve::{ConnectionGate, GenerationMemory, Permit, Refusal, ServeOptions, GENERATION_MEMORY_SIZE};
pub use status::{
    FeedSyncStatus, FeedsStatus, FilesStatus, KappaStatus, MemoryStatus, PeerStatus, ViewRebuild, ViewStatus,
};

pub use builder::{KappaBuilder, ViewStorage, VIEWS_FILE};
pub use error::KappaError;
pub use kappa_view_redb::MovedAside;
pub use views::ViewHandle;
pub use writer::Writer;

mod builder;
mod error;
mod join;
mod replicate;
mod serve;
mod status;
mod views;
mod writer;

use kappa_multifeed::{FeedAdded, Multifeed};
use views::UsedView;

struct Inner {
    mf: Multifeed,
    encoding: ValueEncoding,
    shared_key: Option<[u8; 32]>,
    /// Where the views keep their rows; `None` in seed mode (no views).
    views: Option<Arc<dyn ViewBackend>>,
    views_moved_aside: Option<MovedAside>,
    used: Mutex<HashMap<String, UsedView>>,
    closed: Mutex<bool>,
}

/// A kappa database: logs (one per writer, one per peer met), views over them,
/// and replication with Rust and JS kappa-core 6 peers. Cheap to clone.
///
/// See the crate docs for a walk-through.
#[derive(Clone)]
pub struct Kappa {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Kappa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kappa").field("feeds", &self.inner.mf.feeds().len()).finish_non_exhaustive()
    }
}

/// Something the database did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum KappaEvent {
    /// A feed joined the database (loaded, created, or learned from a peer).
    FeedAdded(FeedAdded),
    /// A view indexed a batch, changed state, or failed.
    View {
        /// The view's name.
        name: String,
        /// What happened.
        event: IndexEvent,
    },
}

impl Kappa {
    /// The feed set.
    pub fn multifeed(&self) -> &Multifeed {
        &self.inner.mf
    }

    /// The shared key this database replicates with (multifeed's public default
    /// if none was set).
    pub fn shared_key(&self) -> [u8; 32] {
        self.inner.shared_key.unwrap_or(DEFAULT_SHARED_KEY)
    }

    /// The feed with public key `key`.
    pub fn feed(&self, key: &PublicKey) -> Option<SharedFeed> {
        self.inner.mf.feed(key)
    }

    /// Entry `seq` of feed `key`: from local storage if it is there, else asked of
    /// every connected peer (an on-demand get of a sparse feed; the block is
    /// verified against a signed root and stored before it is returned). `None`
    /// if the feed is unknown or no peer delivered it within `timeout`.
    pub async fn get(
        &self,
        key: &PublicKey,
        seq: u64,
        timeout: std::time::Duration,
    ) -> Result<Option<Vec<u8>>, KappaError> {
        let Some(feed) = self.feed(key) else { return Ok(None) };
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let listener = feed.changed();
            if let Some(v) = feed.get(seq)? {
                return Ok(Some(v));
            }
            // Ask the sessions connected now; asked again on every wake-up, so
            // sessions that connect meanwhile are asked too.
            self.inner.mf.want_block(key, seq);
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let tick = futures_timer::Delay::new(left.min(std::time::Duration::from_millis(100)));
            futures::pin_mut!(listener, tick);
            futures::future::select(listener, tick).await;
        }
    }

    /// Every feed, in creation order (blocked feeds are not among them;
    /// hidden ones are).
    pub fn feeds(&self) -> Vec<SharedFeed> {
        self.inner.mf.feeds()
    }

    /// Blocks feed `key` in this database: it is never offered to a peer,
    /// never accepted from one, never indexed; its files are removed (its
    /// key is kept, so it stays blocked), and every view in use drops its
    /// rows (for now by a full rebuild: [`ready`](Self::ready) resolves once
    /// the views have caught up without it). Peers keep their copies; see
    /// docs/semantics.md ("Blocking and hiding feeds") for what this does and
    /// cannot do. Fails with [`PolicyError::LocalWriter`] for a feed this
    /// database writes.
    pub fn block(&self, key: &PublicKey) -> Result<Blocked, KappaError> {
        self.check_open()?;
        Ok(self.inner.mf.block(key)?)
    }

    /// Unblocks feed `key`: the next sync with a peer that holds it brings
    /// it back, and views index it again. Returns whether it was blocked.
    pub fn unblock(&self, key: &PublicKey) -> Result<bool, KappaError> {
        self.check_open()?;
        Ok(self.inner.mf.unblock(key)?)
    }

    /// Hides feed `key` from the views (they drop its rows, by a rebuild);
    /// it is still kept and replicated. Returns whether it was visible.
    pub fn hide(&self, key: &PublicKey) -> Result<bool, KappaError> {
        self.check_open()?;
        Ok(self.inner.mf.hide(key)?)
    }

    /// Shows a hidden feed to the views again (they index its entries).
    /// Returns whether it was hidden.
    pub fn unhide(&self, key: &PublicKey) -> Result<bool, KappaError> {
        self.check_open()?;
        Ok(self.inner.mf.unhide(key)?)
    }

    /// The feed policy: blocked and hidden feeds.
    pub fn policy(&self) -> Policy {
        self.inner.mf.policy()
    }

    fn check_open(&self) -> Result<(), KappaError> {
        if *lock(&self.inner.closed) {
            Err(KappaError::Closed)
        } else {
            Ok(())
        }
    }

    /// Events: feeds added (each feed already in the database first) and what the
    /// views in use at the time of the call do.
    pub fn events(&self) -> BoxStream<'static, KappaEvent> {
        let feeds = self.inner.mf.subscribe().map(KappaEvent::FeedAdded).boxed();
        let mut streams = vec![feeds];
        for (name, u) in lock(&self.inner.used).iter() {
            let name = name.clone();
            streams.push(
                u.indexer
                    .subscribe()
                    .map(move |event| KappaEvent::View { name: name.clone(), event })
                    .boxed(),
            );
        }
        futures::stream::select_all(streams).boxed()
    }

    /// Closes the database: stops the views' indexers, ends the feed set's
    /// replication announcements and syncs every feed. Closing twice is fine.
    pub fn close(&self) -> Result<(), KappaError> {
        {
            let mut closed = lock(&self.inner.closed);
            if *closed {
                return Ok(());
            }
            *closed = true;
        }
        lock(&self.inner.used).clear();
        self.inner.mf.close()?;
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
