use std::collections::{BTreeMap, HashMap, HashSet};

use kappa_log::PublicKey;
use serde::de::DeserializeOwned;

use crate::store::{Batch, StoreError, StoreErrorKind, ViewStore};

/// Why a view failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ViewError {
    /// The view's store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An entry's value could not be decoded as the view expects.
    #[error("entry {id}: {reason}")]
    Decode {
        /// The entry's id (`<feed hex>@<seq>`).
        id: String,
        /// What was wrong.
        reason: String,
    },
    /// The view's own logic failed.
    #[error("{0}")]
    Map(String),
}

/// One log entry given to a view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The feed it belongs to.
    pub feed: PublicKey,
    /// Its sequence number in that feed.
    pub seq: u64,
    /// Its stored bytes (for JSON feeds: compact JSON plus `\n`).
    pub value: Vec<u8>,
}

impl Entry {
    /// An entry.
    pub fn new(feed: PublicKey, seq: u64, value: Vec<u8>) -> Self {
        Entry { feed, seq, value }
    }

    /// `<feed hex>@<seq>`, the kappa-view-kv id convention.
    pub fn id(&self) -> String {
        format!("{}@{}", self.feed.to_hex(), self.seq)
    }

    /// The value decoded as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ViewError> {
        serde_json::from_slice(&self.value)
            .map_err(|e| ViewError::Decode { id: self.id(), reason: e.to_string() })
    }
}

/// A view's writes during one batch, read-your-writes over its store.
#[derive(Debug)]
pub struct Tx<'a> {
    store: &'a dyn ViewStore,
    /// The writes of a batch handed to the store before this transaction
    /// began, which may not have landed yet.
    unsaved: Option<&'a Unsaved>,
    pending: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    order: Vec<Vec<u8>>,
    /// Values read ahead by [`Tx::prefetch`], as the store had them.
    fetched: HashMap<Vec<u8>, Option<Vec<u8>>>,
}

impl std::fmt::Debug for dyn ViewStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ViewStore")
    }
}

impl<'a> Tx<'a> {
    /// A transaction over `store`.
    pub fn new(store: &'a dyn ViewStore) -> Self {
        Tx { store, unsaved: None, pending: BTreeMap::new(), order: Vec::new(), fetched: HashMap::new() }
    }

    /// A transaction over `store` that begins after `unsaved`, a batch handed
    /// to the store whose commit may still be under way: reads see its writes
    /// whether or not the store holds them yet. The indexer maps the next
    /// group this way while the previous one commits; the batch of this
    /// transaction must only be committed once `unsaved` is.
    ///
    /// ```
    /// use kappa_view::{Batch, MemoryStore, Tx, Unsaved};
    /// let store = MemoryStore::new();
    /// let first = Batch { ops: vec![(b"a".to_vec(), Some(b"1".to_vec()))], state: None };
    /// let unsaved = Unsaved::of(&first);
    /// // `first` is not committed yet, but the next transaction reads it.
    /// let tx = Tx::after(&store, &unsaved);
    /// assert_eq!(tx.get(b"a")?, Some(b"1".to_vec()));
    /// # Ok::<(), kappa_view::StoreError>(())
    /// ```
    pub fn after(store: &'a dyn ViewStore, unsaved: &'a Unsaved) -> Self {
        Tx { unsaved: Some(unsaved), ..Tx::new(store) }
    }

    /// The value of `key` as the writes before the store's own rows have it,
    /// if they wrote it: this transaction's, then the unsaved batch's.
    fn written(&self, key: &[u8]) -> Option<Option<Vec<u8>>> {
        if let Some(v) = self.pending.get(key) {
            return Some(v.clone());
        }
        self.unsaved.and_then(|u| u.writes.get(key)).cloned()
    }

    /// The value of `key`, seeing this transaction's own writes.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(v) = self.written(key) {
            return Ok(v);
        }
        match self.fetched.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.store.get(key),
        }
    }

    /// Reads `keys` from the store in one call ([`ViewStore::get_many`]), so that
    /// later [`get`](Self::get)s of them need no store access: a view calls it
    /// with the keys a batch will read, which saves a round trip per key on a
    /// store behind a network. Keys this transaction wrote, or already fetched,
    /// are skipped; so is everything for a store whose gets are cheap
    /// ([`ViewStore::batch_reads`] false).
    ///
    /// ```
    /// use kappa_view::{Batch, MemoryStore, Tx, ViewStore};
    /// let store = MemoryStore::new();
    /// store.commit(Batch { ops: vec![(b"a".to_vec(), Some(b"1".to_vec()))], state: None })?;
    /// let mut tx = Tx::new(&store);
    /// tx.prefetch([&b"a"[..], b"b"])?;
    /// assert_eq!(tx.get(b"a")?, Some(b"1".to_vec()));
    /// assert_eq!(tx.get(b"b")?, None);
    /// # Ok::<(), kappa_view::StoreError>(())
    /// ```
    pub fn prefetch<'k>(&mut self, keys: impl IntoIterator<Item = &'k [u8]>) -> Result<(), StoreError> {
        if !self.store.batch_reads() {
            return Ok(());
        }
        let keys = keys.into_iter();
        let mut wanted: Vec<&[u8]> = Vec::with_capacity(keys.size_hint().0);
        let mut seen = HashSet::with_capacity(keys.size_hint().0);
        for k in keys {
            let written =
                self.pending.contains_key(k) || self.unsaved.is_some_and(|u| u.writes.contains_key(k));
            if !written && !self.fetched.contains_key(k) && seen.insert(k) {
                wanted.push(k);
            }
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let values = self.store.get_many(&wanted)?;
        self.fetched.reserve(wanted.len());
        if values.len() != wanted.len() {
            return Err(StoreError::from_message(
                StoreErrorKind::Backend,
                format!("get_many returned {} values for {} keys", values.len(), wanted.len()),
            ));
        }
        for (k, v) in wanted.into_iter().zip(values) {
            self.fetched.insert(k.to_vec(), v);
        }
        Ok(())
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        let key = key.into();
        if self.pending.insert(key.clone(), Some(value.into())).is_none() {
            self.order.push(key);
        }
    }

    /// Deletes `key`.
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) {
        let key = key.into();
        if self.pending.insert(key.clone(), None).is_none() {
            self.order.push(key);
        }
    }

    /// The store the transaction reads (the live store, or the shadow a
    /// rebuild writes to): for the reads a `Tx` does not offer, such as
    /// scans, which see the store's rows without this transaction's writes.
    pub fn store(&self) -> &'a dyn ViewStore {
        self.store
    }

    /// Whether the transaction wrote nothing.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The writes as a batch carrying `state`.
    pub fn into_batch(mut self, state: Option<Vec<u8>>) -> Batch {
        let ops = self.order.into_iter().filter_map(|k| self.pending.remove(&k).map(|v| (k, v))).collect();
        Batch { ops, state }
    }
}

/// The writes of a [`Batch`] handed to a store whose commit may not have
/// finished: a transaction begun with [`Tx::after`] reads them first.
#[derive(Debug, Default, Clone)]
pub struct Unsaved {
    writes: HashMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Unsaved {
    /// The writes of `batch` (the last op of a key decides).
    pub fn of(batch: &Batch) -> Self {
        let mut writes = HashMap::with_capacity(batch.ops.len());
        for (k, v) in &batch.ops {
            writes.insert(k.clone(), v.clone());
        }
        Unsaved { writes }
    }

    /// Whether the batch wrote nothing.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
}

/// How [`View::forget`] reads an entry of a feed it keeps: the entry's stored
/// bytes if the view has indexed it, `None` if it has not; an error if the log
/// cannot give an indexed entry.
pub type ReadEntry<'a> = dyn FnMut(&PublicKey, u64) -> Result<Option<Vec<u8>>, ViewError> + 'a;

/// A materialized view: a versioned `map` over batches of entries.
///
/// Implement [`store`](Self::store) and [`map`](Self::map); the rest has
/// defaults. The indexer calls `map` with up to [`max_batch`](Self::max_batch)
/// entries of one feed in ascending order, commits the transaction together with
/// the indexing progress, then calls [`indexed`](Self::indexed). When the stored
/// version differs from [`version`](Self::version), the store is cleared and the
/// view rebuilt from all entries.
pub trait View: Send + Sync + 'static {
    /// Where the view's rows live.
    fn store(&self) -> &dyn ViewStore;

    /// Writes the rows for `entries`. Every read goes through `tx`: it holds
    /// the writes of the batches mapped before in the same group, and those of
    /// the group before, which the indexer may still be committing while it
    /// maps this one; the store itself may not have them yet.
    fn map(&self, entries: &[Entry], tx: &mut Tx<'_>) -> Result<(), ViewError>;

    /// Writes the rows for several batches, in order, into one transaction:
    /// the indexer calls this with every batch of a commit group (up to 4,096
    /// entries, possibly of several feeds), each batch as [`map`](Self::map)
    /// would get it. The default maps them one by one; a view whose `map` reads
    /// the store overrides it to fetch the reads of all batches in one
    /// [`Tx::prefetch`], which on a store behind a network
    /// ([`ViewStore::batch_reads`]) is one round trip per commit instead of one
    /// per batch. The result must equal mapping the batches one by one.
    ///
    /// ```
    /// use kappa_view::kv::KvView;
    /// use kappa_view::{Entry, MemoryStore, Tx, View, ViewStore};
    /// use std::sync::Arc;
    /// let view = KvView::new(Arc::new(MemoryStore::new()));
    /// let feed = kappa_log::PublicKey::from([1; 32]);
    /// let a = [Entry::new(feed, 0, br#"{"key":"k","value":1}"#.to_vec())];
    /// let b = [Entry::new(feed, 1, br#"{"key":"k","value":2,"links":["0101010101010101010101010101010101010101010101010101010101010101@0"]}"#.to_vec())];
    /// let mut tx = Tx::new(view.store());
    /// view.map_batches(&[&a[..], &b[..]], &mut tx)?;
    /// view.store().commit(tx.into_batch(None))?;
    /// assert_eq!(view.get("k")?.len(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn map_batches(&self, batches: &[&[Entry]], tx: &mut Tx<'_>) -> Result<(), ViewError> {
        for entries in batches {
            self.map(entries, tx)?;
        }
        Ok(())
    }

    /// The view's version (default 1). Any change rebuilds the view; 0 works like
    /// any other number.
    fn version(&self) -> u64 {
        1
    }

    /// Most entries per `map` call (default 100).
    fn max_batch(&self) -> usize {
        100
    }

    /// Called after each batch is committed (for notifications).
    fn indexed(&self, entries: &[Entry]) {
        let _ = entries;
    }

    /// Whether the indexer should index the newest entries of every feed first
    /// (tip-first), walking back through history afterwards.
    fn newest_first(&self) -> bool {
        false
    }

    /// Removes from the view what the entries of `feeds` wrote, as if they had
    /// never been mapped, without a rebuild: the indexer calls it when the
    /// feed set's policy leaves feeds out (blocked or hidden) and commits the
    /// writes in `tx` together with progress that no longer counts their
    /// entries. `read` gives the stored bytes of entries of other feeds the
    /// view has indexed and needs again (a kv head that only a forgotten
    /// entry replaced).
    ///
    /// Returns `false` if the view cannot do it (the default): the indexer
    /// then rebuilds the view from the logs without those feeds (beside the
    /// live view where the store has a shadow) and drops whatever `tx` holds.
    /// The rows after `true` must be those a rebuild would make.
    ///
    /// ```
    /// use kappa_view::kv::KvView;
    /// use kappa_view::{Entry, MemoryStore, Tx, View};
    /// use std::sync::Arc;
    /// let view = KvView::new(Arc::new(MemoryStore::new()));
    /// let (a, b) = (kappa_log::PublicKey::from([1; 32]), kappa_log::PublicKey::from([2; 32]));
    /// let first = Entry::new(a, 0, br#"{"key":"k","value":1}"#.to_vec());
    /// let link = format!(r#"{{"key":"k","value":2,"links":["{}"]}}"#, first.id());
    /// view.apply(&[first.clone()])?;
    /// view.apply(&[Entry::new(b, 0, link.into_bytes())])?;
    /// assert_eq!(view.get("k")?[0].id, format!("{}@0", b.to_hex()));
    /// // Forget feed b: a's value is the head again.
    /// let mut tx = Tx::new(view.store());
    /// let mut read = |_: &kappa_log::PublicKey, _: u64| Ok(Some(first.value.clone()));
    /// assert!(view.forget(&[b], &mut read, &mut tx)?);
    /// view.store().commit(tx.into_batch(None))?;
    /// assert_eq!(view.get("k")?[0].id, first.id());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn forget(
        &self,
        feeds: &[PublicKey],
        read: &mut ReadEntry<'_>,
        tx: &mut Tx<'_>,
    ) -> Result<bool, ViewError> {
        let _ = (feeds, read, tx);
        Ok(false)
    }

    /// Maps and commits `entries` directly, with no indexing state: for tests and
    /// one-off use. Indexers use `map` and commit themselves.
    fn apply(&self, entries: &[Entry]) -> Result<(), ViewError> {
        let mut tx = Tx::new(self.store());
        self.map(entries, &mut tx)?;
        let batch = tx.into_batch(None);
        self.store().commit(batch)?;
        self.indexed(entries);
        Ok(())
    }
}
