#![doc = include_str!("../README.md")]
#![warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod backend;
mod config;
mod error;
mod pool;
mod store;
mod tls;
mod wire;

pub use config::{Config, Host, SessionAttrs, SslMode};
pub use error::PgError;
pub use store::{PgStore, PgViews};

/// Entry points for the cargo-fuzz targets in `fuzz/` (not a stable API).
/// Built with the `fuzzing` feature only.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    use crate::wire::{Conn, Param, Stmt};
    use crate::Config;

    /// Everything a server says to a client, as `data`: the client logs in
    /// (with a password, so every login path is open), runs a pipeline of
    /// two statements and a binary COPY, a query and a simple query. Then the same script once more
    /// after asking for TLS (its first byte answers the request; a server
    /// without TLS goes on with the rest), and once refusing to send the
    /// password unprotected. Nothing may panic or hang.
    pub fn client(data: &[u8]) {
        for url in [
            "postgres://u:pw@h/d?sslmode=disable&insecure_password=allow",
            "postgres://u:pw@h/d?sslmode=prefer&insecure_password=allow",
            "postgres://u:pw@h/d?sslmode=require",
            "postgres://u:pw@h/d?sslmode=disable",
        ] {
            run_script(url, data);
        }
    }

    fn run_script(url: &str, data: &[u8]) {
        let Ok(cfg) = Config::from_url(url) else { return };
        let Ok(mut conn) = Conn::scripted(&cfg, data.to_vec()) else { return };
        let keys: [&[u8]; 2] = [b"a", b""];
        let stmts = [
            Stmt::new("SELECT 1", vec![Param::ByteaArray(&keys)]),
            Stmt::new("SELECT 2", vec![Param::Bytea(b"x"), Param::Int8(-1), Param::Text("t")]),
            Stmt::copy_pairs("COPY t (key, value) FROM STDIN (FORMAT binary)", &keys, &keys),
        ];
        let _ = conn.pipeline(&stmts);
        let _ = conn.query("SELECT 1", vec![]);
        let _ = conn.simple("BEGIN");
        let _ = conn.pipeline(&stmts);
    }
}
