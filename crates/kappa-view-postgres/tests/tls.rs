//! TLS against a real server: a cluster with `ssl = on` and only `hostssl`
//! logins, its certificate (for `localhost`) signed by a CA the test makes
//! with `openssl`. `sslmode` keeps libpq's meanings; a password never goes to
//! a server in the clear unless the URL says so.

use std::path::Path;

use kappa_testkit::postgres::TempCluster;
use kappa_view::{Batch, ViewStore};
use kappa_view_postgres::{PgError, PgViews};

const PASSWORD: &str = "tls-s3cret";

/// The TLS cluster, or `None` after a loud message outside CI.
fn tls_cluster() -> Option<(TempCluster, std::path::PathBuf, std::path::PathBuf)> {
    match TempCluster::start_with_tls(PASSWORD) {
        Ok(c) => Some(c),
        Err(e) if std::env::var_os("CI").is_some() => panic!("cannot start a TLS PostgreSQL: {e}"),
        Err(e) => {
            eprintln!("\n*** SKIPPING TLS tests: cannot start a TLS PostgreSQL server: {e} ***\n");
            None
        }
    }
}

fn url(pg: &TempCluster, host: &str, params: &str) -> String {
    format!(
        "postgres://postgres:{PASSWORD}@{host}:{}/postgres?schema=tls&connect_timeout=5&{params}",
        pg.port()
    )
}

fn root(ca: &Path) -> String {
    format!("sslrootcert={}", ca.display())
}

#[test]
fn verify_full_connects_over_tls_and_refuses_a_wrong_ca_or_name() {
    let Some((pg, ca, other_ca)) = tls_cluster() else { return };
    // The right CA and the certificate's name: connected, over TLS.
    let views = PgViews::open(&url(
        &pg,
        "localhost",
        &format!("sslmode=verify-full&{}&application_name=tls-test", root(&ca)),
    ))
    .unwrap();
    let store = views.store("kv").unwrap();
    store.commit(Batch { ops: vec![(b"k".to_vec(), Some(b"v".to_vec()))], state: None }).unwrap();
    assert_eq!(store.get(b"k").unwrap(), Some(b"v".to_vec()));
    let tls = pg
        .psql("SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'tls-test' AND s.ssl")
        .unwrap();
    assert_ne!(tls.trim(), "0", "the store's connections use TLS");

    // Another CA signed the certificate: refused, before any login.
    let err = PgViews::open(&url(&pg, "localhost", &format!("sslmode=verify-full&{}", root(&other_ca))))
        .unwrap_err();
    assert!(matches!(err, PgError::Tls { .. }), "{err:?}");
    assert!(err.to_string().contains("certificate"), "{err}");
    // verify-ca checks the chain too.
    let err =
        PgViews::open(&url(&pg, "localhost", &format!("sslmode=verify-ca&{}", root(&other_ca)))).unwrap_err();
    assert!(matches!(err, PgError::Tls { .. }), "{err:?}");

    // The right CA, but the address is not the certificate's name: verify-full
    // refuses, verify-ca (the chain only) connects.
    let err =
        PgViews::open(&url(&pg, "127.0.0.1", &format!("sslmode=verify-full&{}", root(&ca)))).unwrap_err();
    assert!(matches!(err, PgError::Tls { .. }), "{err:?}");
    assert!(err.to_string().contains("not valid for"), "{err}");
    PgViews::open_reader(&url(&pg, "127.0.0.1", &format!("sslmode=verify-ca&{}", root(&ca))))
        .unwrap()
        .store("kv")
        .unwrap()
        .get(b"k")
        .unwrap();

    // require and the default (prefer) encrypt without checking; disable
    // meets `hostssl` and is refused by the server.
    for mode in ["sslmode=require", "sslmode=prefer", ""] {
        let r = PgViews::open_reader(&url(&pg, "127.0.0.1", mode)).unwrap();
        assert_eq!(r.store("kv").unwrap().get(b"k").unwrap(), Some(b"v".to_vec()), "{mode}");
    }
    let err = PgViews::open_reader(&url(&pg, "127.0.0.1", "sslmode=disable")).unwrap_err();
    assert!(matches!(err, PgError::Auth { .. }), "{err:?}");

    // A root file that is not there, or holds no certificate.
    let err = PgViews::open(&url(&pg, "localhost", "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"))
        .unwrap_err();
    assert!(matches!(err, PgError::Tls { .. }) && err.to_string().contains("/nonexistent/ca.pem"), "{err:?}");
    let empty = pg.dir().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let err =
        PgViews::open(&url(&pg, "localhost", &format!("sslmode=verify-full&{}", root(&empty)))).unwrap_err();
    assert!(matches!(err, PgError::Tls { .. }), "{err:?}");
}

#[test]
fn tls_and_login_errors_keep_their_typed_cause() {
    use std::error::Error as _;
    let Some((pg, ca, other_ca)) = tls_cluster() else { return };
    // Another CA signed the certificate: rustls's own error is the cause.
    let err = PgViews::open(&url(&pg, "localhost", &format!("sslmode=verify-full&{}", root(&other_ca))))
        .unwrap_err();
    assert!(matches!(err, PgError::Tls { .. }), "{err:?}");
    let tls = err.source().and_then(|s| s.downcast_ref::<rustls::Error>()).expect("the rustls::Error");
    assert!(matches!(tls, rustls::Error::InvalidCertificate(_)), "{tls:?}");
    assert!(err.to_string().ends_with(&tls.to_string()), "{err}");
    // The wrong name for the certificate: rustls says so, typed.
    let err =
        PgViews::open(&url(&pg, "127.0.0.1", &format!("sslmode=verify-full&{}", root(&ca)))).unwrap_err();
    let tls = err.source().and_then(|s| s.downcast_ref::<rustls::Error>());
    assert!(matches!(tls, Some(rustls::Error::InvalidCertificate(_))), "{err:?}");
    // A root file that is not there: the file's error is the cause.
    let err = PgViews::open(&url(&pg, "localhost", "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"))
        .unwrap_err();
    assert!(matches!(err, PgError::Tls { .. }) && err.source().is_some(), "{err:?}");
    // Without TLS the server's pg_hba.conf has no entry: the server's error,
    // SQLSTATE 28000, is the cause.
    let err = PgViews::open_reader(&url(&pg, "127.0.0.1", "sslmode=disable")).unwrap_err();
    assert!(matches!(err, PgError::Auth { .. }), "{err:?}");
    let server = err.source().and_then(|s| s.downcast_ref::<PgError>());
    assert!(matches!(server, Some(PgError::Server { code, .. }) if code == "28000"), "{server:?}");
}

#[test]
fn require_refuses_a_server_without_tls_before_sending_anything() {
    // A plain server that asks for the password in the clear.
    let pg = match TempCluster::start_with_auth("password", Some(PASSWORD)) {
        Ok(pg) => pg,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("\n*** SKIPPING: cannot start PostgreSQL: {e} ***\n");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    for mode in ["require", "verify-ca", "verify-full"] {
        let err = PgViews::open(&url(&pg, "localhost", &format!("sslmode={mode}"))).unwrap_err();
        assert!(matches!(err, PgError::Tls { .. }), "{mode}: {err:?}");
        assert!(err.to_string().contains("does not offer TLS"), "{mode}: {err}");
        assert!(!err.to_string().contains(PASSWORD), "{err}");
    }
    // prefer goes on without TLS, and then will not send the password in the
    // clear unless told to.
    let err = PgViews::open(&url(&pg, "127.0.0.1", "sslmode=prefer")).unwrap_err();
    assert!(matches!(err, PgError::Auth { .. }) && err.to_string().contains("in the clear"), "{err:?}");
    PgViews::open(&url(&pg, "127.0.0.1", "sslmode=prefer&insecure_password=allow")).unwrap();
}
