use kappa_view::StoreError;

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

impl From<PgError> for StoreError {
    fn from(e: PgError) -> StoreError {
        let msg = e.to_string();
        match e {
            _ if e.is_transient() => StoreError::Unavailable(msg),
            PgError::Incompatible { .. } => StoreError::Corrupt(msg),
            _ => StoreError::Backend(msg),
        }
    }
}
