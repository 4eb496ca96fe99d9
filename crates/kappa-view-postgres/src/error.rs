use kappa_view::{StoreError, StoreErrorKind};

/// What can go wrong talking to PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// The URL could not be read.
    #[error("bad PostgreSQL URL: {0}")]
    Url(String),
    /// The server could not be reached, or the connection broke.
    #[error("PostgreSQL at {at}: {reason}")]
    Connection {
        /// The server.
        at: String,
        /// What happened.
        reason: String,
    },
    /// TLS could not be set up as the URL's `sslmode` asks (no TLS on the
    /// server, a certificate that does not check out, a bad root file).
    #[error("PostgreSQL at {at}: TLS: {reason}")]
    Tls {
        /// The server (without password).
        at: String,
        /// What failed.
        reason: String,
    },
    /// The server refused the login (or it would have sent the password
    /// unprotected).
    #[error("PostgreSQL at {at}: authentication failed: {reason}")]
    Auth {
        /// The server.
        at: String,
        /// What the server said.
        reason: String,
    },
    /// The server answered with an error.
    #[error("PostgreSQL error {code}: {message}")]
    Server {
        /// The SQLSTATE code (`42P01`, …).
        code: String,
        /// The server's message, with its detail if any.
        message: String,
    },
    /// The server sent something this client does not understand.
    #[error("PostgreSQL protocol: {0}")]
    Protocol(String),
    /// The schema holds tables that are not a kappa view database, or one of
    /// another format version.
    #[error("schema {schema:?} belongs to something else: {reason}")]
    Incompatible {
        /// The schema.
        schema: String,
        /// What was found.
        reason: String,
    },
    /// Another process indexes into these views (holds the writer lock).
    #[error("another process indexes into schema {schema:?} (it holds the writer lock); run one indexer per kappa database and open readers with `PgViews::open_reader`")]
    Locked {
        /// The schema.
        schema: String,
    },
    /// A write through a handle opened for reading.
    #[error("this view database was opened read-only (`PgViews::open_reader`)")]
    ReadOnly,
}

impl PgError {
    /// Whether retrying later may succeed: the connection broke or could not be
    /// made, the server is starting up, shutting down or in recovery, the
    /// transaction lost a serialization race, or the writer lock is held (by
    /// another indexer, or by a session of ours the server has not yet noticed
    /// is gone).
    pub fn is_transient(&self) -> bool {
        match self {
            PgError::Connection { .. } | PgError::Locked { .. } => true,
            PgError::Server { code, .. } => {
                // 08: connection exception; 57P01-57P03: admin/crash shutdown,
                // cannot connect now; 53300: too many connections; 40001,
                // 40P01: serialization failure, deadlock.
                code.starts_with("08")
                    || matches!(code.as_str(), "57P01" | "57P02" | "57P03" | "53300" | "40001" | "40P01")
            }
            _ => false,
        }
    }
}

/// The [`PgError`] is kept as the [`StoreError`]'s source: a caller can
/// downcast to it (`StoreError::downcast_ref::<PgError>()`) and read the
/// SQLSTATE of a [`PgError::Server`].
impl From<PgError> for StoreError {
    fn from(e: PgError) -> StoreError {
        let kind = match e {
            _ if e.is_transient() => StoreErrorKind::Unavailable,
            PgError::Incompatible { .. } => StoreErrorKind::Corrupt,
            _ => StoreErrorKind::Backend,
        };
        StoreError::new(kind, e)
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    fn server(code: &str) -> PgError {
        PgError::Server { code: code.into(), message: "something".into() }
    }

    fn sqlstate(e: &StoreError) -> Option<&str> {
        match e.downcast_ref::<PgError>() {
            Some(PgError::Server { code, .. }) => Some(code),
            _ => None,
        }
    }

    #[test]
    fn the_sqlstate_survives_the_conversion() {
        let e = StoreError::from(server("42P01"));
        assert_eq!(e.kind(), StoreErrorKind::Backend);
        assert_eq!(e.to_string(), "view store: PostgreSQL error 42P01: something");
        assert_eq!(sqlstate(&e), Some("42P01"));
        // The direct source is the PgError itself.
        let direct = e.source().and_then(|s| s.downcast_ref::<PgError>());
        assert_eq!(direct, Some(&server("42P01")));

        let e = StoreError::from(server("57P03"));
        assert_eq!(e.kind(), StoreErrorKind::Unavailable);
        assert!(e.is_transient());
        assert_eq!(sqlstate(&e), Some("57P03"));
        assert_eq!(sqlstate(&e.clone()), Some("57P03"));
    }

    #[test]
    fn kinds_follow_the_pg_error() {
        let e = StoreError::from(PgError::Connection { at: "h:5432".into(), reason: "refused".into() });
        assert_eq!(e.kind(), StoreErrorKind::Unavailable);
        assert_eq!(e.to_string(), "view store unavailable: PostgreSQL at h:5432: refused");
        assert!(matches!(e.downcast_ref::<PgError>(), Some(PgError::Connection { .. })));
        let e = StoreError::from(PgError::Incompatible { schema: "s".into(), reason: "r".into() });
        assert_eq!(e.kind(), StoreErrorKind::Corrupt);
        assert_eq!(StoreError::from(PgError::ReadOnly).kind(), StoreErrorKind::Backend);
        assert_eq!(sqlstate(&StoreError::from(PgError::ReadOnly)), None);
    }
}
