//! Where a database's views keep their rows: one backend serves every view.

use std::sync::Arc;

use crate::store::{MemoryStore, StoreError, ViewStore};

/// A view storage: it opens the [`ViewStore`] of each view of a database, by
/// the view's name.
///
/// kappa-core holds one (or none, in seed mode) and asks it for a view's store
/// when the view is used. This crate's [`MemoryViews`] keeps views in memory;
/// kappa-view-redb's `RedbViews` and kappa-view-postgres's `PgViews`
/// implement it too, and a backend of another crate plugs in the same way
/// (kappa-core's `ViewStorage::Custom`).
///
/// Only [`open_store`](Self::open_store) is required. What opening a backend
/// takes (a path, a URL, a repair policy) is the backend's own business:
/// the trait starts from an open one.
pub trait ViewBackend: Send + Sync + std::fmt::Debug + 'static {
    /// The store for the view called `view_name`: its rows and its indexing
    /// state. Stores opened for the same name should share their data (so that
    /// a view finds its rows again after a restart); [`MemoryViews`] is the
    /// exception, its stores are new and empty.
    fn open_store(&self, view_name: &str) -> Result<Arc<dyn ViewStore>, StoreError>;

    /// The names of the views this backend holds rows or an indexing state of,
    /// in order, used or not: a database's status lists those not in use from
    /// their stored progress. The default lists none (a backend that cannot
    /// tell, or does not say).
    fn stored_views(&self) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }

    /// Whether the backend has been opened for writing: a command that only
    /// reads views can check it wrote nothing. The default says no (a backend
    /// that does not track it).
    fn is_open_for_writing(&self) -> bool {
        false
    }
}

impl<B: ViewBackend + ?Sized> ViewBackend for Arc<B> {
    fn open_store(&self, view_name: &str) -> Result<Arc<dyn ViewStore>, StoreError> {
        (**self).open_store(view_name)
    }
    fn stored_views(&self) -> Result<Vec<String>, StoreError> {
        (**self).stored_views()
    }
    fn is_open_for_writing(&self) -> bool {
        (**self).is_open_for_writing()
    }
}

/// Views in memory: every [`open_store`](ViewBackend::open_store) returns a
/// new, empty [`MemoryStore`], so views are rebuilt at every start and nothing
/// is listed as stored.
///
/// ```
/// use kappa_view::{MemoryViews, ViewBackend};
/// let views = MemoryViews;
/// let store = views.open_store("sum")?;
/// assert_eq!(store.state()?, None);
/// assert!(views.stored_views()?.is_empty());
/// # Ok::<(), kappa_view::StoreError>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryViews;

impl ViewBackend for MemoryViews {
    fn open_store(&self, _view_name: &str) -> Result<Arc<dyn ViewStore>, StoreError> {
        Ok(Arc::new(MemoryStore::new()))
    }
}
