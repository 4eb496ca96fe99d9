//! [`PgViews`] as a kappa-view [`ViewBackend`].

use std::sync::Arc;

use kappa_view::{StoreError, ViewBackend, ViewStore};

use crate::store::PgViews;

/// Every view in tables of the schema ([`PgViews::store`]).
///
/// It lists no stored views (the default) though [`PgViews::views`] could:
/// a database's status has never read stopped views from PostgreSQL, and
/// this trait changed no behaviour. It does not track opening for writing
/// either (the default: `false`).
impl ViewBackend for PgViews {
    fn open_store(&self, view_name: &str) -> Result<Arc<dyn ViewStore>, StoreError> {
        Ok(Arc::new(PgViews::store(self, view_name)?))
    }
}
