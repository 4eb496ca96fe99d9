//! A view store with hooks, for tests that inject faults or hold commits:
//! every call goes to the store it wraps, except that commits go through a
//! hook (which may fail them, before or after applying them) and reads can
//! be watched.

use std::sync::atomic::{AtomicUsize, Ordering};

use kappa_view::{Batch, KeyRange, MemoryStore, Row, StoreError, ViewStore};

/// What a [`HookedStore`] does with its `n`th commit (counting from 0): given
/// the store it wraps and the batch.
pub type CommitHook<S> = Box<dyn Fn(usize, &S, Batch) -> Result<(), StoreError> + Send + Sync>;

/// `inner`, with its commits going through a hook and its reads watched.
///
/// ```
/// use kappa_testkit::store::HookedStore;
/// use kappa_view::{Batch, MemoryStore, StoreError, StoreErrorKind, ViewStore};
/// // Fails the first commit, before applying it.
/// let store = HookedStore::new(MemoryStore::new(), |n, inner, batch| {
///     if n == 0 {
///         return Err(StoreError::from_message(StoreErrorKind::Unavailable, "injected"));
///     }
///     inner.commit(batch)
/// });
/// assert!(store.commit(Batch { ops: vec![], state: Some(b"1".to_vec()) }).is_err());
/// store.commit(Batch { ops: vec![], state: Some(b"2".to_vec()) }).unwrap();
/// assert_eq!((store.commits(), store.state().unwrap()), (2, Some(b"2".to_vec())));
/// ```
pub struct HookedStore<S: ViewStore = MemoryStore> {
    /// The store every call goes to.
    pub inner: S,
    commits: AtomicUsize,
    on_commit: CommitHook<S>,
    on_read: Option<Box<dyn Fn() + Send + Sync>>,
    on_promote: Option<Box<dyn Fn() + Send + Sync>>,
}

impl<S: ViewStore> HookedStore<S> {
    /// `inner`, each commit going through `on_commit` with its number.
    pub fn new(
        inner: S,
        on_commit: impl Fn(usize, &S, Batch) -> Result<(), StoreError> + Send + Sync + 'static,
    ) -> Self {
        HookedStore {
            inner,
            commits: AtomicUsize::new(0),
            on_commit: Box::new(on_commit),
            on_read: None,
            on_promote: None,
        }
    }

    /// Gives the store `inner`'s [shadow](ViewStore::shadow) (without hooks:
    /// a hooked store has none otherwise, so an indexer rebuilds in place),
    /// and calls `f` before every [`promote_shadow`](ViewStore::promote_shadow).
    pub fn shadowed(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_promote = Some(Box::new(f));
        self
    }

    /// Calls `f` before every `get` and `get_many`.
    pub fn on_read(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_read = Some(Box::new(f));
        self
    }

    /// The commits tried so far.
    pub fn commits(&self) -> usize {
        self.commits.load(Ordering::SeqCst)
    }

    fn read(&self) {
        if let Some(f) = &self.on_read {
            f();
        }
    }
}

impl<S: ViewStore> ViewStore for HookedStore<S> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.read();
        self.inner.get(key)
    }
    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        self.read();
        self.inner.get_many(keys)
    }
    fn batch_reads(&self) -> bool {
        self.inner.batch_reads()
    }
    fn scan(&self, range: KeyRange, reverse: bool, limit: Option<usize>) -> Result<Vec<Row>, StoreError> {
        self.inner.scan(range, reverse, limit)
    }
    fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        let n = self.commits.fetch_add(1, Ordering::SeqCst);
        (self.on_commit)(n, &self.inner, batch)
    }
    fn state(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.state()
    }
    fn clear(&self) -> Result<(), StoreError> {
        self.inner.clear()
    }
    fn shadow(&self) -> Result<Option<std::sync::Arc<dyn ViewStore>>, StoreError> {
        match &self.on_promote {
            Some(_) => self.inner.shadow(),
            None => Ok(None),
        }
    }
    fn promote_shadow(&self) -> Result<(), StoreError> {
        match &self.on_promote {
            Some(f) => {
                f();
                self.inner.promote_shadow()
            }
            None => Err(StoreError::from_message(
                kappa_view::StoreErrorKind::Backend,
                "this hooked store has no shadow (see HookedStore::shadowed)",
            )),
        }
    }
}
