use std::error::Error;
use std::fmt;
use std::sync::Arc;

/// What kind of failure a [`StoreError`] is: what a caller may do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The backend failed (I/O, a database error).
    Backend,
    /// The store holds data it cannot read (wrong format, foreign schema).
    Corrupt,
    /// The backend cannot be reached right now (a database server that is down
    /// or restarting, a lost connection). Nothing of a failed `commit` is lost
    /// twice: retrying the same batch later is safe, and indexers do so by
    /// themselves.
    Unavailable,
}

/// What a store can fail with: a [kind](StoreErrorKind), and the backend's own
/// error as its [`source`](Error::source) (a `redb::Error`, a
/// `kappa_view_postgres::PgError`, an `io::Error`, …), which callers can
/// [downcast](Self::downcast_ref) to read the SQLSTATE or I/O kind. Errors a
/// store makes up itself carry a message instead of a source.
///
/// The message (`Display`) is the kind's prefix, then the context message if
/// any, then the source's own message:
///
/// ```
/// use kappa_view::{StoreError, StoreErrorKind};
/// let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "no write access");
/// let e = StoreError::backend(io).context("commit");
/// assert_eq!(e.kind(), StoreErrorKind::Backend);
/// assert_eq!(e.to_string(), "view store: commit: no write access");
/// let io = e.downcast_ref::<std::io::Error>().unwrap();
/// assert_eq!(io.kind(), std::io::ErrorKind::PermissionDenied);
/// ```
///
/// Two errors are equal when their kinds and messages are (sources are not
/// comparable in general). Cloning shares the source.
#[derive(Clone)]
pub struct StoreError {
    kind: StoreErrorKind,
    message: Option<String>,
    source: Option<Arc<dyn Error + Send + Sync + 'static>>,
}

impl StoreError {
    /// An error of `kind` caused by `source`.
    pub fn new(kind: StoreErrorKind, source: impl Error + Send + Sync + 'static) -> Self {
        StoreError { kind, message: None, source: Some(Arc::new(source)) }
    }

    /// An error of `kind` caused by an already boxed `source`.
    pub fn from_boxed(kind: StoreErrorKind, source: Box<dyn Error + Send + Sync + 'static>) -> Self {
        StoreError { kind, message: None, source: Some(Arc::from(source)) }
    }

    /// An error of `kind` with only a message (no underlying error).
    pub fn from_message(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        StoreError { kind, message: Some(message.into()), source: None }
    }

    /// A backend failure caused by `source`.
    pub fn backend(source: impl Error + Send + Sync + 'static) -> Self {
        Self::new(StoreErrorKind::Backend, source)
    }

    /// Unreadable data, as `source` found.
    pub fn corrupt(source: impl Error + Send + Sync + 'static) -> Self {
        Self::new(StoreErrorKind::Corrupt, source)
    }

    /// An unreachable backend, as `source` says.
    pub fn unavailable(source: impl Error + Send + Sync + 'static) -> Self {
        Self::new(StoreErrorKind::Unavailable, source)
    }

    /// The same error with `message` in front of its message (what was being
    /// done). The source stays the same.
    pub fn context(mut self, message: impl Into<String>) -> Self {
        let message = message.into();
        self.message = Some(match self.message.take() {
            Some(inner) => format!("{message}: {inner}"),
            None => message,
        });
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// Whether the operation may succeed if retried later
    /// ([`StoreErrorKind::Unavailable`]).
    pub fn is_transient(&self) -> bool {
        self.kind == StoreErrorKind::Unavailable
    }

    /// The context message, if any (without the source's message).
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }

    /// The first error of type `E` in the source chain (the direct source,
    /// its source, …).
    pub fn downcast_ref<E: Error + 'static>(&self) -> Option<&E> {
        let mut next = self.source();
        while let Some(e) = next {
            if let Some(found) = e.downcast_ref::<E>() {
                return Some(found);
            }
            next = e.source();
        }
        None
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            StoreErrorKind::Backend => "view store: ",
            StoreErrorKind::Corrupt => "view store is corrupt or belongs to something else: ",
            StoreErrorKind::Unavailable => "view store unavailable: ",
        })?;
        match (&self.message, &self.source) {
            (Some(m), Some(s)) => write!(f, "{m}: {s}"),
            (Some(m), None) => f.write_str(m),
            (None, Some(s)) => write!(f, "{s}"),
            (None, None) => f.write_str("(no detail)"),
        }
    }
}

impl fmt::Debug for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("StoreError");
        d.field("kind", &self.kind);
        if let Some(m) = &self.message {
            d.field("message", m);
        }
        if let Some(s) = &self.source {
            d.field("source", s);
        }
        d.finish()
    }
}

impl Error for StoreError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|s| s as &(dyn Error + 'static))
    }
}

impl PartialEq for StoreError {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.to_string() == other.to_string()
    }
}

impl Eq for StoreError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn messages_keep_their_prefixes() {
        let e = StoreError::from_message(StoreErrorKind::Backend, "a view needs a non-empty name");
        assert_eq!(e.to_string(), "view store: a view needs a non-empty name");
        assert!(e.source().is_none());
        let e = StoreError::from_message(StoreErrorKind::Corrupt, "x");
        assert_eq!(e.to_string(), "view store is corrupt or belongs to something else: x");
        let e = StoreError::from_message(StoreErrorKind::Unavailable, "down");
        assert_eq!(e.to_string(), "view store unavailable: down");
        assert!(e.is_transient());
        assert!(!StoreError::from_message(StoreErrorKind::Backend, "x").is_transient());
    }

    #[test]
    fn the_source_chain_is_kept() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let e = StoreError::unavailable(Outer(io)).context("commit");
        assert_eq!(e.to_string(), "view store unavailable: commit: outer");
        assert!(e.is_transient());
        let direct = e.source().and_then(|s| s.downcast_ref::<Outer>());
        assert!(direct.is_some());
        let io = e.downcast_ref::<std::io::Error>().map(|io| io.kind());
        assert_eq!(io, Some(std::io::ErrorKind::ConnectionReset));
        // Clones share the source and compare equal.
        let c = e.clone();
        assert_eq!(c, e);
        assert!(c.downcast_ref::<Outer>().is_some());
        assert_ne!(c, StoreError::from_message(StoreErrorKind::Backend, "commit: outer"));
    }

    #[test]
    fn context_nests() {
        let e = StoreError::from_message(StoreErrorKind::Backend, "inner").context("outer");
        assert_eq!(e.message(), Some("outer: inner"));
        assert_eq!(e.to_string(), "view store: outer: inner");
    }
}
