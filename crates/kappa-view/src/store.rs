use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub use crate::error::{StoreError, StoreErrorKind};

/// A stored row: key and value.
pub type Row = (Vec<u8>, Vec<u8>);

/// A key range for [`ViewStore::scan`].
pub type KeyRange = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// Writes to apply atomically, with the indexing progress to store alongside.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// `(key, Some(value))` to put, `(key, None)` to delete, applied in order.
    pub ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// The view's indexing state after this batch (`None` leaves it unchanged).
    pub state: Option<Vec<u8>>,
}

/// An ordered key/value store for one view's rows and its indexing state.
///
/// Implementations must make [`commit`](Self::commit) atomic (all of the batch's
/// rows and its state, or none): that is what gives views exactly-once indexing
/// across crashes. Readers in other threads (or processes) must never see half a
/// batch. All methods take `&self`: stores are shared between the indexer and the
/// view's readers.
pub trait ViewStore: Send + Sync + 'static {
    /// The value of `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Up to `limit` rows in `range`, in key order (descending with `reverse`).
    fn scan(&self, range: KeyRange, reverse: bool, limit: Option<usize>) -> Result<Vec<Row>, StoreError>;

    /// Applies `batch` atomically.
    fn commit(&self, batch: Batch) -> Result<(), StoreError>;

    /// The indexing state stored by the last commit that carried one.
    fn state(&self) -> Result<Option<Vec<u8>>, StoreError>;

    /// Removes every row and the state, atomically (a version bump).
    fn clear(&self) -> Result<(), StoreError>;

    /// The values of `keys`, in the same order. Stores behind a network
    /// override it to fetch them all in one round trip; the default asks
    /// [`get`](Self::get) for each.
    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        keys.iter().map(|k| self.get(k)).collect()
    }

    /// Whether reading many keys with one [`get_many`](Self::get_many) is much
    /// cheaper than one [`get`](Self::get) each (a store behind a network, or
    /// one whose every get begins a transaction).
    /// [`Tx::prefetch`](crate::Tx::prefetch) does nothing for stores that say
    /// no (the default): their gets are cheap already.
    fn batch_reads(&self) -> bool {
        false
    }

    /// Up to `limit` rows whose keys start with `prefix`, in order.
    fn scan_prefix(
        &self,
        prefix: &[u8],
        reverse: bool,
        limit: Option<usize>,
    ) -> Result<Vec<Row>, StoreError> {
        self.scan(prefix_range(prefix), reverse, limit)
    }

    /// The store's shadow: a second keyspace for the same view, with rows and
    /// a state of its own, that readers of this store never see. A rebuild
    /// (a version bump, a feed blocked or hidden) writes the new rows there
    /// through the returned store while readers keep the old, complete view;
    /// [`promote_shadow`](Self::promote_shadow) then swaps them in at once.
    ///
    /// The shadow persists like the store (a rebuild killed half way resumes
    /// from the shadow's state); its [`clear`](Self::clear) empties the shadow
    /// only. `None` (the default) for a store without one: the indexer then
    /// rebuilds in place (the view is blank meanwhile). A shadow has no shadow
    /// of its own.
    ///
    /// ```
    /// use kappa_view::{Batch, MemoryStore, ViewStore};
    /// let live = MemoryStore::new();
    /// live.commit(Batch { ops: vec![(b"old".to_vec(), Some(b"1".to_vec()))], state: Some(b"v1".to_vec()) })?;
    /// let shadow = live.shadow()?.expect("memory stores have a shadow");
    /// shadow.commit(Batch { ops: vec![(b"new".to_vec(), Some(b"2".to_vec()))], state: Some(b"v2".to_vec()) })?;
    /// // Readers of the live store still see the old view whole...
    /// assert_eq!(live.get(b"new")?, None);
    /// assert_eq!(live.state()?, Some(b"v1".to_vec()));
    /// // ...until the swap, which replaces rows and state in one step.
    /// live.promote_shadow()?;
    /// assert_eq!(live.get(b"old")?, None);
    /// assert_eq!(live.get(b"new")?, Some(b"2".to_vec()));
    /// assert_eq!(live.state()?, Some(b"v2".to_vec()));
    /// assert_eq!(shadow.state()?, None, "the shadow is empty again");
    /// # Ok::<(), kappa_view::StoreError>(())
    /// ```
    fn shadow(&self) -> Result<Option<Arc<dyn ViewStore>>, StoreError> {
        Ok(None)
    }

    /// Replaces this store's rows and state with its shadow's, atomically
    /// (readers, also those of other processes and those that crash in
    /// between, see the old view or the new one, never a mix), and empties
    /// the shadow. An error for a store without a shadow (the default).
    fn promote_shadow(&self) -> Result<(), StoreError> {
        Err(StoreError::from_message(StoreErrorKind::Backend, "this view store has no shadow"))
    }
}

impl<S: ViewStore + ?Sized> ViewStore for Arc<S> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).get(key)
    }
    fn scan(&self, range: KeyRange, reverse: bool, limit: Option<usize>) -> Result<Vec<Row>, StoreError> {
        (**self).scan(range, reverse, limit)
    }
    fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        (**self).commit(batch)
    }
    fn state(&self) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).state()
    }
    fn clear(&self) -> Result<(), StoreError> {
        (**self).clear()
    }
    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        (**self).get_many(keys)
    }
    fn batch_reads(&self) -> bool {
        (**self).batch_reads()
    }
    fn scan_prefix(
        &self,
        prefix: &[u8],
        reverse: bool,
        limit: Option<usize>,
    ) -> Result<Vec<Row>, StoreError> {
        (**self).scan_prefix(prefix, reverse, limit)
    }
    fn shadow(&self) -> Result<Option<Arc<dyn ViewStore>>, StoreError> {
        (**self).shadow()
    }
    fn promote_shadow(&self) -> Result<(), StoreError> {
        (**self).promote_shadow()
    }
}

/// The range of all keys starting with `prefix`.
pub fn prefix_range(prefix: &[u8]) -> KeyRange {
    let start = Bound::Included(prefix.to_vec());
    // The first key after every key with this prefix: increment the last byte
    // that is not 0xff, dropping the 0xff bytes after it.
    let mut end = prefix.to_vec();
    while let Some(&last) = end.last() {
        if last == 0xff {
            end.pop();
        } else {
            if let Some(l) = end.last_mut() {
                *l += 1;
            }
            return (start, Bound::Excluded(end));
        }
    }
    (start, Bound::Unbounded)
}

#[derive(Debug, Default)]
struct Side {
    rows: BTreeMap<Vec<u8>, Vec<u8>>,
    state: Option<Vec<u8>>,
}

#[derive(Debug, Default)]
struct Inner {
    live: Side,
    shadow: Side,
}

/// A [`ViewStore`] in memory. Clones share their data: a view re-created on a
/// clone (a simulated restart) sees everything committed. Its
/// [`shadow`](ViewStore::shadow) is a `MemoryStore` too, over the same data.
///
/// ```
/// use kappa_view::{Batch, MemoryStore, ViewStore};
/// let s = MemoryStore::new();
/// s.commit(Batch { ops: vec![(b"a".to_vec(), Some(b"1".to_vec()))], state: Some(b"st".to_vec()) })?;
/// assert_eq!(s.get(b"a")?, Some(b"1".to_vec()));
/// assert_eq!(s.clone().state()?, Some(b"st".to_vec()));
/// # Ok::<(), kappa_view::StoreError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<RwLock<Inner>>,
    /// Whether this handle is the shadow's.
    is_shadow: bool,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.side(&self.read()).rows.len()
    }

    /// Whether the store has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn side<'a>(&self, inner: &'a Inner) -> &'a Side {
        if self.is_shadow {
            &inner.shadow
        } else {
            &inner.live
        }
    }

    fn side_mut<'a>(&self, inner: &'a mut Inner) -> &'a mut Side {
        if self.is_shadow {
            &mut inner.shadow
        } else {
            &mut inner.live
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl ViewStore for MemoryStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.side(&self.read()).rows.get(key).cloned())
    }

    fn scan(&self, range: KeyRange, reverse: bool, limit: Option<usize>) -> Result<Vec<Row>, StoreError> {
        let inner = self.read();
        let limit = limit.unwrap_or(usize::MAX);
        // An empty or inverted range yields nothing (BTreeMap would panic).
        if range_is_empty(&range) {
            return Ok(Vec::new());
        }
        let iter = self.side(&inner).rows.range(range);
        let rows: Vec<Row> = if reverse {
            iter.rev().take(limit).map(|(k, v)| (k.clone(), v.clone())).collect()
        } else {
            iter.take(limit).map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        Ok(rows)
    }

    fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        let mut inner = self.write();
        let side = self.side_mut(&mut inner);
        for (k, v) in batch.ops {
            match v {
                Some(v) => {
                    side.rows.insert(k, v);
                }
                None => {
                    side.rows.remove(&k);
                }
            }
        }
        if let Some(s) = batch.state {
            side.state = Some(s);
        }
        Ok(())
    }

    fn state(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.side(&self.read()).state.clone())
    }

    fn clear(&self) -> Result<(), StoreError> {
        let mut inner = self.write();
        *self.side_mut(&mut inner) = Side::default();
        Ok(())
    }

    fn shadow(&self) -> Result<Option<Arc<dyn ViewStore>>, StoreError> {
        if self.is_shadow {
            return Ok(None);
        }
        Ok(Some(Arc::new(MemoryStore { inner: self.inner.clone(), is_shadow: true })))
    }

    fn promote_shadow(&self) -> Result<(), StoreError> {
        if self.is_shadow {
            return Err(StoreError::from_message(
                StoreErrorKind::Backend,
                "a shadow has no shadow to promote",
            ));
        }
        let mut inner = self.write();
        inner.live = std::mem::take(&mut inner.shadow);
        Ok(())
    }
}

/// Whether a range contains no key at all (start after end, or equal with an
/// exclusive bound). Stores answer such a scan with nothing without asking
/// their backend (`BTreeMap::range` would panic on it).
///
/// ```
/// use std::ops::Bound::*;
/// assert!(kappa_view::range_is_empty(&(Excluded(b"a".to_vec()), Excluded(b"a".to_vec()))));
/// assert!(!kappa_view::range_is_empty(&(Included(b"a".to_vec()), Included(b"a".to_vec()))));
/// ```
pub fn range_is_empty(range: &KeyRange) -> bool {
    use Bound::*;
    match (&range.0, &range.1) {
        (Included(s), Included(e)) => s > e,
        (Included(s), Excluded(e)) | (Excluded(s), Included(e)) | (Excluded(s), Excluded(e)) => s >= e,
        _ => false,
    }
}
