use std::fmt;
use std::sync::Arc;

use kappa_view::{StoreError, StoreErrorKind};

/// What caused a [`PgError`]: an `io::Error`, a `rustls::Error`, the server's
/// error response (a [`PgError::Server`] with its SQLSTATE), …, shared so that
/// the error stays `Clone`. It is the [`PgError`]'s
/// [`source`](std::error::Error::source), so a caller can downcast to the
/// concrete type.
pub(crate) type Cause = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// What can go wrong talking to PostgreSQL.
///
/// The message (`Display`) includes the cause's message; the cause itself, if
/// there is one, is the [`source`](std::error::Error::source). Two errors are
/// equal when their variants and messages are (causes are not comparable in
/// general).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum PgError {
    /// The URL could not be read.
    Url(String),
    /// The server could not be reached, or the connection broke.
    Connection {
        /// The server.
        at: String,
        /// What happened.
        reason: String,
        /// The I/O error, if one caused it.
        source: Option<Cause>,
    },
    /// TLS could not be set up as the URL's `sslmode` asks (no TLS on the
    /// server, a certificate that does not check out, a bad root file).
    Tls {
        /// The server (without password).
        at: String,
        /// What failed.
        reason: String,
        /// The `rustls::Error`, I/O error or certificate file error, if one
        /// caused it.
        source: Option<Cause>,
    },
    /// The server refused the login (or it would have sent the password
    /// unprotected).
    Auth {
        /// The server.
        at: String,
        /// What the server said.
        reason: String,
        /// The server's error response (a [`PgError::Server`] with its
        /// SQLSTATE) or the SCRAM exchange's error, if one caused it.
        source: Option<Cause>,
    },
    /// The server answered with an error.
    Server {
        /// The SQLSTATE code (`42P01`, …).
        code: String,
        /// The server's message, with its detail if any.
        message: String,
    },
    /// The server sent something this client does not understand.
    Protocol {
        /// What was wrong.
        reason: String,
        /// The parse or encoding error, if one caused it.
        source: Option<Cause>,
    },
    /// The schema holds tables that are not a kappa view database, or one of
    /// another format version.
    Incompatible {
        /// The schema.
        schema: String,
        /// What was found.
        reason: String,
    },
    /// Another process indexes into these views (holds the writer lock).
    Locked {
        /// The schema.
        schema: String,
    },
    /// A write through a handle opened for reading.
    ReadOnly,
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PgError::Url(reason) => write!(f, "bad PostgreSQL URL: {reason}"),
            PgError::Connection { at, reason, .. } => write!(f, "PostgreSQL at {at}: {reason}"),
            PgError::Tls { at, reason, .. } => write!(f, "PostgreSQL at {at}: TLS: {reason}"),
            PgError::Auth { at, reason, .. } => write!(f, "PostgreSQL at {at}: authentication failed: {reason}"),
            PgError::Server { code, message } => write!(f, "PostgreSQL error {code}: {message}"),
            PgError::Protocol { reason, .. } => write!(f, "PostgreSQL protocol: {reason}"),
            PgError::Incompatible { schema, reason } => {
                write!(f, "schema {schema:?} belongs to something else: {reason}")
            }
            PgError::Locked { schema } => write!(
                f,
                "another process indexes into schema {schema:?} (it holds the writer lock); run one indexer per kappa database and open readers with `PgViews::open_reader`"
            ),
            PgError::ReadOnly => f.write_str("this view database was opened read-only (`PgViews::open_reader`)"),
        }
    }
}

impl std::error::Error for PgError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PgError::Connection { source, .. }
            | PgError::Tls { source, .. }
            | PgError::Auth { source, .. }
            | PgError::Protocol { source, .. } => {
                source.as_deref().map(|s| s as &(dyn std::error::Error + 'static))
            }
            _ => None,
        }
    }
}

impl PartialEq for PgError {
    fn eq(&self, other: &Self) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other) && self.to_string() == other.to_string()
    }
}

impl Eq for PgError {}

impl PgError {
    /// A connection error that `e` caused (its message is the reason).
    pub(crate) fn connection_io(at: impl Into<String>, e: std::io::Error) -> Self {
        PgError::Connection { at: at.into(), reason: e.to_string(), source: Some(Arc::new(e)) }
    }

    /// A connection error without an underlying error.
    pub(crate) fn connection(at: impl Into<String>, reason: impl Into<String>) -> Self {
        PgError::Connection { at: at.into(), reason: reason.into(), source: None }
    }

    /// A TLS error without an underlying error.
    pub(crate) fn tls(at: impl Into<String>, reason: impl Into<String>) -> Self {
        PgError::Tls { at: at.into(), reason: reason.into(), source: None }
    }

    /// A login error without an underlying error.
    pub(crate) fn auth(at: impl Into<String>, reason: impl Into<String>) -> Self {
        PgError::Auth { at: at.into(), reason: reason.into(), source: None }
    }

    /// A protocol error without an underlying error.
    pub(crate) fn protocol(reason: impl Into<String>) -> Self {
        PgError::Protocol { reason: reason.into(), source: None }
    }

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
        let e = StoreError::from(PgError::connection("h:5432", "refused"));
        assert_eq!(e.kind(), StoreErrorKind::Unavailable);
        assert_eq!(e.to_string(), "view store unavailable: PostgreSQL at h:5432: refused");
        assert!(matches!(e.downcast_ref::<PgError>(), Some(PgError::Connection { .. })));
        let e = StoreError::from(PgError::Incompatible { schema: "s".into(), reason: "r".into() });
        assert_eq!(e.kind(), StoreErrorKind::Corrupt);
        assert_eq!(StoreError::from(PgError::ReadOnly).kind(), StoreErrorKind::Backend);
        assert_eq!(sqlstate(&StoreError::from(PgError::ReadOnly)), None);
    }
}
