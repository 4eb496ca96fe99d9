//! What an indexer reads: the feeds to index and news of changes to them.

use std::sync::Arc;

use event_listener::Event;
use kappa_log::{PublicKey, SharedFeed};

/// The feed set an [`Indexer`](crate::Indexer) runs a view over.
///
/// The indexer needs only this of a feed set, so it does not depend on where
/// the feeds come from: [`kappa_multifeed::Multifeed`] implements it (with the
/// default feature `multifeed`), and so can any other holder of
/// [`SharedFeed`]s. Only the first three methods are required; the others
/// describe a feed policy (feeds left out of views) and damaged storage, and
/// their defaults say there is neither.
///
/// The indexer calls these methods from its own thread, often (on every wake-up
/// and batch): they should be cheap and must not block for long.
pub trait FeedSource: Send + Sync {
    /// The feeds to index, in a stable order (new feeds at the end). The
    /// indexer indexes every entry present in them, watches each one it sees
    /// for appends and downloads ([`SharedFeed::watch`]), and counts their
    /// entries as the total of [`IndexState`](crate::IndexState).
    fn visible_feeds(&self) -> Vec<SharedFeed>;

    /// The feed with public key `key`, also one that
    /// [`visible_feeds`](Self::visible_feeds) leaves out; `None` if the source
    /// holds no such feed. At start the indexer checks with it that every entry
    /// the stored progress counts as indexed is still held (the view is rebuilt
    /// otherwise).
    fn feed(&self, key: &PublicKey) -> Option<SharedFeed>;

    /// Registers `wake` to be notified (`notify(usize::MAX)`) whenever a feed
    /// joins the set or [`policy_version`](Self::policy_version) changes, for
    /// as long as the indexer holds it (the source may keep a weak reference).
    /// Appends to a feed already in the set are watched on the feed itself.
    fn watch(&self, wake: &Arc<Event>);

    /// A number that changes whenever the set of feeds left out of views does
    /// (see [`excluded_because`](Self::excluded_because)); the indexer then
    /// rebuilds a view that holds entries of a feed now left out. The default
    /// never changes: nothing is ever left out.
    fn policy_version(&self) -> u64 {
        0
    }

    /// Why feed `key` is left out of views, if it is: a word completing
    /// "feed … is _ in this database" (multifeed says `blocked` or `hidden`).
    /// A view that holds entries of such a feed is cleared and rebuilt.
    fn excluded_because(&self, _key: &PublicKey) -> Option<String> {
        None
    }

    /// Whether feed `key` is blocked: its files are being cut off, so a read of
    /// it that fails is no error of the indexer (the batch is dropped, and the
    /// rebuild that follows the policy change leaves the feed out).
    fn is_blocked(&self, _key: &PublicKey) -> bool {
        false
    }

    /// Whether some stored feeds could not be opened (a damaged folder). Any of
    /// them may be a feed the view indexed, so a view is not rebuilt at start for
    /// holding entries of a feed that [`feed`](Self::feed) does not know.
    fn has_damaged_feeds(&self) -> bool {
        false
    }
}

impl<S: FeedSource + ?Sized> FeedSource for Arc<S> {
    fn visible_feeds(&self) -> Vec<SharedFeed> {
        (**self).visible_feeds()
    }
    fn feed(&self, key: &PublicKey) -> Option<SharedFeed> {
        (**self).feed(key)
    }
    fn watch(&self, wake: &Arc<Event>) {
        (**self).watch(wake)
    }
    fn policy_version(&self) -> u64 {
        (**self).policy_version()
    }
    fn excluded_because(&self, key: &PublicKey) -> Option<String> {
        (**self).excluded_because(key)
    }
    fn is_blocked(&self, key: &PublicKey) -> bool {
        (**self).is_blocked(key)
    }
    fn has_damaged_feeds(&self) -> bool {
        (**self).has_damaged_feeds()
    }
}

#[cfg(feature = "multifeed")]
impl FeedSource for kappa_multifeed::Multifeed {
    /// Every feed of the set but the hidden ones (blocked feeds are not in it).
    fn visible_feeds(&self) -> Vec<SharedFeed> {
        kappa_multifeed::Multifeed::visible_feeds(self)
    }
    fn feed(&self, key: &PublicKey) -> Option<SharedFeed> {
        kappa_multifeed::Multifeed::feed(self, key)
    }
    fn watch(&self, wake: &Arc<Event>) {
        kappa_multifeed::Multifeed::watch(self, wake)
    }
    fn policy_version(&self) -> u64 {
        kappa_multifeed::Multifeed::policy_version(self)
    }
    fn excluded_because(&self, key: &PublicKey) -> Option<String> {
        self.policy_of(key).map(|why| why.to_string())
    }
    fn is_blocked(&self, key: &PublicKey) -> bool {
        kappa_multifeed::Multifeed::is_blocked(self, key)
    }
    fn has_damaged_feeds(&self) -> bool {
        !self.damaged_feeds().is_empty()
    }
}
