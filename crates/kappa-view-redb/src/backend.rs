//! [`RedbViews`] as a kappa-view [`ViewBackend`].

use std::sync::Arc;

use kappa_view::{StoreError, ViewBackend, ViewStore};

use crate::views::RedbViews;

/// Every view in a table of the one redb file ([`RedbViews::store`]); the
/// stored views are those with rows or an indexing state
/// ([`RedbViews::views`]).
impl ViewBackend for RedbViews {
    fn open_store(&self, view_name: &str) -> Result<Arc<dyn ViewStore>, StoreError> {
        Ok(Arc::new(RedbViews::store(self, view_name)?))
    }

    fn stored_views(&self) -> Result<Vec<String>, StoreError> {
        RedbViews::views(self)
    }

    /// [`RedbViews::is_open_for_writing`]: a sealed file opens read-only.
    fn is_open_for_writing(&self) -> bool {
        RedbViews::is_open_for_writing(self)
    }
}
