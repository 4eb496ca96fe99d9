//! What the database can fail with.

use std::path::PathBuf;

use kappa_index::IndexError;
use kappa_multifeed::MultifeedError;
use kappa_view::{StoreError, ViewError};

use crate::Refusal;

/// Everything the database can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KappaError {
    /// The feed set failed (storage, replication).
    #[error(transparent)]
    Multifeed(#[from] MultifeedError),
    /// A view's indexer failed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// A view failed.
    #[error(transparent)]
    View(#[from] ViewError),
    /// The view store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A log operation failed.
    #[error(transparent)]
    Log(#[from] kappa_log::LogError),
    /// No view of that name is in use.
    #[error("no view named {0:?}")]
    UnknownView(String),
    /// A view of that name is already in use.
    #[error("a view named {0:?} is already in use")]
    ViewExists(String),
    /// The directory holds files, but not a kappa database.
    #[error("{0} is not a kappa database (it holds other files)")]
    NotADatabase(PathBuf),
    /// A value does not fit the database's value encoding.
    #[error("value encoding: {0}")]
    Encoding(String),
    /// The database was closed.
    #[error("the database is closed")]
    Closed,
    /// The view storage could not be opened (a database server that cannot be
    /// reached, a schema that belongs to something else, another indexer).
    #[error("opening the view storage: {0}")]
    Views(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Accepting a connection failed ([`Kappa::serve`](crate::Kappa::serve) goes on).
    #[error("accepting a connection failed: {0}")]
    Accept(#[source] std::io::Error),
    /// Discovery could not start, announce or look up ([`Kappa::join`](crate::Kappa::join)).
    #[error("discovery: {0}")]
    Discovery(#[source] kappa_discovery::DiscoveryError),
    /// [`Kappa::serve_with`](crate::Kappa::serve_with) closed a connection at once: a cap of
    /// [`ServeOptions`](crate::ServeOptions) was reached (it goes on).
    #[error("refused a connection: {0}")]
    Refused(#[source] Refusal),
    /// The database was opened in seed mode
    /// ([`KappaBuilder::seed_mode`](crate::KappaBuilder::seed_mode)): it
    /// replicates and indexes nothing, so it has no views.
    #[error("the database is open in seed mode (views off): open it without seed mode to use views")]
    SeedMode,
}
