//! Behaviour against a real server: clear errors, the writer lock, readers,
//! atomic commits, and getting over a restarted server.

use std::ops::Bound::Unbounded;
use std::time::{Duration, Instant};

use kappa_testkit::postgres::{cluster_or_skip, TempCluster};
use kappa_view::{Batch, StoreError, StoreErrorKind, ViewStore};
use kappa_view_postgres::{PgError, PgViews};

fn put(k: &str, v: &str) -> (Vec<u8>, Option<Vec<u8>>) {
    (k.as_bytes().to_vec(), Some(v.as_bytes().to_vec()))
}

fn batch(ops: Vec<(Vec<u8>, Option<Vec<u8>>)>, state: Option<&str>) -> Batch {
    Batch { ops, state: state.map(|s| s.as_bytes().to_vec()) }
}

fn all(s: &impl ViewStore) -> Vec<(String, String)> {
    s.scan((Unbounded, Unbounded), false, None)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
        .collect()
}

#[test]
fn a_server_that_is_not_there_is_a_clear_connection_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let started = Instant::now();
    let err =
        PgViews::open(&format!("postgres://postgres@127.0.0.1:{port}/postgres?retry_for=0.3")).unwrap_err();
    assert!(matches!(err, PgError::Connection { .. }), "{err:?}");
    assert!(err.is_transient());
    let msg = err.to_string();
    assert!(msg.contains(&format!("127.0.0.1:{port}")) && msg.contains("refused"), "{msg}");
    assert!(started.elapsed() >= Duration::from_millis(300), "retried for retry_for");
    assert_eq!(StoreError::from(err).kind(), StoreErrorKind::Unavailable);
}

#[test]
fn a_refused_connection_keeps_its_io_error() {
    use std::error::Error as _;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err =
        PgViews::open(&format!("postgres://postgres@127.0.0.1:{port}/postgres?retry_for=0")).unwrap_err();
    assert!(matches!(err, PgError::Connection { .. }), "{err:?}");
    let io = err.source().and_then(|s| s.downcast_ref::<std::io::Error>()).expect("the io::Error");
    assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
    // The message is the same as it was: the I/O error's own in it.
    let msg = err.to_string();
    assert!(
        msg.starts_with("PostgreSQL at ") && msg.ends_with(&format!("{port}/postgres (schema kappa): {io}")),
        "{msg}"
    );
    // Through the StoreError too.
    let store = StoreError::from(err);
    let kind = store.downcast_ref::<std::io::Error>().map(|io| io.kind());
    assert_eq!(kind, Some(std::io::ErrorKind::ConnectionRefused));
}

#[test]
fn a_refused_login_keeps_the_servers_sqlstate() {
    use std::error::Error as _;
    let pg = match TempCluster::start_with_auth("scram-sha-256", Some("s3cret")) {
        Ok(pg) => pg,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("\n*** SKIPPING refused login: {e} ***\n");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let url = format!("postgres://postgres:wrong@127.0.0.1:{}/postgres?schema=auth", pg.port());
    let err = PgViews::open(&url).unwrap_err();
    assert!(matches!(err, PgError::Auth { .. }), "{err:?}");
    // 28P01: invalid_password.
    let server = err.source().and_then(|s| s.downcast_ref::<PgError>());
    assert!(matches!(server, Some(PgError::Server { code, .. }) if code == "28P01"), "{server:?}");
    assert!(err.to_string().ends_with("(28P01)"), "{err}");
    let store = StoreError::from(err);
    let code =
        store.downcast_ref::<PgError>().and_then(|e| e.source()).and_then(|s| s.downcast_ref::<PgError>());
    assert!(matches!(code, Some(PgError::Server { code, .. }) if code == "28P01"), "{code:?}");
}

#[test]
fn schemas_of_something_else_are_refused_and_left_alone() {
    let Some(pg) = cluster_or_skip("foreign schema") else { return };
    pg.psql("CREATE SCHEMA shop; CREATE TABLE shop.orders (id int); INSERT INTO shop.orders VALUES (1)")
        .unwrap();
    for open in [PgViews::open, PgViews::open_reader] {
        let err = open(&pg.url("shop")).unwrap_err();
        assert!(matches!(&err, PgError::Incompatible { schema, .. } if schema == "shop"), "{err:?}");
        assert!(err.to_string().contains("orders"), "{err}");
    }
    assert_eq!(pg.psql("SELECT count(*) FROM shop.orders").unwrap().trim(), "1");
    // A kappa schema of another format version.
    PgViews::open(&pg.url("old")).unwrap();
    pg.psql("UPDATE old.kappa_meta SET value = 'kappa-view-postgres/99'").unwrap();
    let err = PgViews::open(&pg.url("old")).unwrap_err();
    assert!(err.to_string().contains("kappa-view-postgres/99"), "{err}");
    assert_eq!(StoreError::from(err).kind(), StoreErrorKind::Corrupt);
}

#[test]
fn passwords_are_checked_by_scram_and_md5() {
    for auth in ["scram-sha-256", "md5", "password"] {
        let pg = match TempCluster::start_with_auth(auth, Some("s3cret")) {
            Ok(pg) => pg,
            Err(e) if std::env::var_os("CI").is_none() => {
                eprintln!("\n*** SKIPPING {auth} logins: {e} ***\n");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        if auth == "md5" {
            pg.psql("SET password_encryption = 'md5'; ALTER ROLE postgres PASSWORD 's3cret'").unwrap();
        }
        // This server has no TLS: a cleartext or MD5 password is sent only
        // when the URL accepts that (SCRAM never sends it).
        if auth != "scram-sha-256" {
            let plain = format!("postgres://postgres:s3cret@127.0.0.1:{}/postgres?schema=auth", pg.port());
            let err = PgViews::open(&plain).unwrap_err();
            assert!(matches!(err, PgError::Auth { .. }), "{auth}: {err:?}");
            assert!(err.to_string().contains("insecure_password=allow"), "{auth}: {err}");
        }
        let url = |pw: &str| {
            format!(
                "postgres://postgres{pw}@127.0.0.1:{}/postgres?schema=auth&insecure_password=allow",
                pg.port()
            )
        };
        let store = PgViews::open(&url(":s3cret")).unwrap().store("v").unwrap();
        store.commit(batch(vec![put("a", "1")], None)).unwrap();
        let err = PgViews::open(&url(":wrong")).unwrap_err();
        assert!(matches!(err, PgError::Auth { .. }), "{auth}: {err:?}");
        assert!(!err.to_string().contains("wrong"), "{auth}: the password stays out of messages: {err}");
        let err = PgViews::open(&url("")).unwrap_err();
        assert!(err.to_string().contains("has none"), "{auth}: {err}");
    }
}

#[test]
fn one_writer_per_schema_and_readers_cannot_write() {
    let Some(pg) = cluster_or_skip("writer lock") else { return };
    let reader = PgViews::open_reader(&pg.url("w")).unwrap();
    let early = reader.store("kv").unwrap();
    assert_eq!(early.get(b"a").unwrap(), None, "a view nobody indexed yet reads as empty");
    assert_eq!(early.state().unwrap(), None);
    assert!(reader.views().unwrap().is_empty());

    let writer = PgViews::open(&pg.url("w")).unwrap();
    let started = Instant::now();
    let err = PgViews::open(&format!("{}&retry_for=0.3", pg.url("w"))).unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(300), "waited retry_for for the lock");
    assert!(matches!(err, PgError::Locked { .. }), "{err:?}");
    assert!(err.to_string().contains("open_reader"), "{err}");
    PgViews::open(&pg.url("other")).unwrap(); // other schemas have their own lock

    let store = writer.store("kv").unwrap();
    store.commit(batch(vec![put("a", "1")], Some("p1"))).unwrap();
    assert_eq!(early.get(b"a").unwrap(), Some(b"1".to_vec()), "a reader finds the table once it exists");
    assert_eq!(early.state().unwrap(), Some(b"p1".to_vec()));
    let err = early.commit(batch(vec![put("b", "2")], None)).unwrap_err();
    assert!(err.to_string().contains("read-only"), "{err}");
    assert!(early.clear().is_err());
    assert_eq!(reader.views().unwrap(), vec!["kv".to_owned()]);

    // The lock goes with the writer.
    drop((store, writer));
    let again = PgViews::open(&pg.url("w")).unwrap();
    assert_eq!(again.store("kv").unwrap().get(b"a").unwrap(), Some(b"1".to_vec()));
}

#[test]
fn a_commit_that_fails_half_way_leaves_nothing() {
    let Some(pg) = cluster_or_skip("atomic commit") else { return };
    let views = PgViews::open(&pg.url("atomic")).unwrap();
    let store = views.store("v").unwrap();
    store.commit(batch(vec![put("a", "1"), put("b", "1")], Some("s1"))).unwrap();
    // States longer than 5 bytes now fail: the last statement of the pipeline.
    pg.psql("ALTER TABLE atomic.kappa_views ADD CONSTRAINT short CHECK (length(state) <= 5)").unwrap();
    let err = store
        .commit(batch(vec![put("a", "2"), (b"b".to_vec(), None), put("c", "2")], Some("too long")))
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Backend, "{err:?}");
    assert!(err.to_string().contains("23514"), "the server's check violation: {err}");
    assert_eq!(all(&store), vec![("a".into(), "1".into()), ("b".into(), "1".into())], "no row changed");
    assert_eq!(store.state().unwrap(), Some(b"s1".to_vec()));
    // The connection is fine afterwards.
    store.commit(batch(vec![put("a", "3")], Some("s2"))).unwrap();
    assert_eq!(store.get(b"a").unwrap(), Some(b"3".to_vec()));
}

fn restart(pg: &TempCluster, down_for: Duration) {
    pg.kill().unwrap();
    std::thread::sleep(down_for);
    pg.start_again().unwrap();
}

#[test]
fn operations_get_over_a_restarted_server() {
    let Some(pg) = cluster_or_skip("server restart") else { return };
    let url = format!("{}&retry_for=30", pg.url("restart"));
    let views = PgViews::open(&url).unwrap();
    let store = views.store("v").unwrap();
    store.commit(batch(vec![put("a", "1")], Some("s1"))).unwrap();
    let reader = PgViews::open_reader(&url).unwrap().store("v").unwrap();
    assert_eq!(reader.get(b"a").unwrap(), Some(b"1".to_vec()));

    // Crash and come back while nobody is talking: the pooled connections are
    // dead, the next operations reconnect (and the writer takes its lock again).
    restart(&pg, Duration::ZERO);
    store.commit(batch(vec![put("b", "2")], Some("s2"))).unwrap();
    assert_eq!(reader.get(b"b").unwrap(), Some(b"2".to_vec()));

    // Down for a while, with a commit waiting on it.
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || store.commit(batch(vec![put("c", "3")], Some("s3"))))
    };
    pg.kill().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    pg.start_again().unwrap();
    writer.join().unwrap().unwrap();
    assert_eq!(
        all(&reader),
        vec![("a".into(), "1".into()), ("b".into(), "2".into()), ("c".into(), "3".into())]
    );
    assert_eq!(reader.state().unwrap(), Some(b"s3".to_vec()));

    // Down for longer than retry_for: a clear "unavailable", then fine again.
    let short =
        PgViews::open_reader(&format!("{}&retry_for=0.2", pg.url("restart"))).unwrap().store("v").unwrap();
    pg.kill().unwrap();
    let err = short.get(b"a").unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    pg.start_again().unwrap();
    assert_eq!(short.get(b"a").unwrap(), Some(b"1".to_vec()));
}

#[test]
fn several_hosts_are_tried_in_order_for_the_one_that_may_write() {
    let Some(a) = cluster_or_skip("several hosts (a)") else { return };
    let Some(b) = cluster_or_skip("several hosts (b)") else { return };
    // `a` takes only read-only sessions, as a hot standby does.
    a.psql("ALTER SYSTEM SET default_transaction_read_only = on").unwrap();
    a.psql("SELECT pg_reload_conf()").unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = |attrs: &str| {
        format!(
            "postgres://postgres@127.0.0.1:{dead},127.0.0.1:{},127.0.0.1:{}/postgres?schema=multi&retry_for=0.5&connect_timeout=2{attrs}",
            a.port(),
            b.port()
        )
    };
    // read-write: past the dead host and the read-only one, to `b`.
    let views = PgViews::open(&url("&target_session_attrs=read-write")).unwrap();
    let store = views.store("kv").unwrap();
    store.commit(batch(vec![put("k", "v")], Some("s1"))).unwrap();
    assert!(b.psql("SELECT count(*) FROM multi.kappa_views").unwrap().trim() == "1");
    assert!(a.psql("SELECT count(*) FROM pg_namespace WHERE nspname = 'multi'").unwrap().trim() == "0");
    // read-only readers land on `a`, which has no such schema yet: empty.
    let reader = PgViews::open_reader(&url("&target_session_attrs=read-only")).unwrap();
    assert_eq!(reader.store("kv").unwrap().get(b"k").unwrap(), None);
    // any: the first that answers, `a`, where the writer cannot set up.
    let err = PgViews::open(&url("")).unwrap_err();
    assert!(err.to_string().contains("read-only"), "{err}");
    // No host fits: an error naming each, retried as unavailable.
    let only_a = format!(
        "postgres://postgres@127.0.0.1:{dead},127.0.0.1:{}/postgres?schema=multi&retry_for=0.3&target_session_attrs=read-write",
        a.port()
    );
    let err = PgViews::open(&only_a).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("no host would do") && text.contains("not read-write"), "{text}");
    assert_eq!(StoreError::from(err).kind(), StoreErrorKind::Unavailable, "{text}");
}

#[test]
fn a_query_that_hangs_is_cancelled_at_the_read_timeout() {
    let Some(pg) = cluster_or_skip("cancel at the read timeout") else { return };
    let views = PgViews::open(&pg.url("stuck")).unwrap();
    views.store("kv").unwrap().commit(batch(vec![put("k", "v")], None)).unwrap();
    let table = pg.psql("SELECT rows_table FROM stuck.kappa_views WHERE name = 'kv'").unwrap();
    let table = table.trim().to_owned();
    assert!(!table.is_empty());
    // Another session holds the view's table for 20 s.
    let holder = pg
        .psql_in_background(&format!(
            "BEGIN; LOCK TABLE stuck.{table} IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(20); COMMIT;"
        ))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while pg.psql("SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND relation IS NOT NULL AND granted").unwrap().trim() == "0" {
        assert!(Instant::now() < deadline, "the lock was never taken");
        std::thread::yield_now();
    }
    let reader = PgViews::open_reader(&format!(
        "{}&read_timeout=1&retry_for=0&application_name=stuck-reader",
        pg.url("stuck")
    ))
    .unwrap();
    let started = Instant::now();
    let err = reader.store("kv").unwrap().get(b"k").unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10), "gave up after {:?}", started.elapsed());
    assert!(err.to_string().contains("read_timeout"), "{err}");
    // The server no longer runs the query: cancelled, not left waiting on
    // the lock until it is released.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let waiting = pg
            .psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'stuck-reader' AND state = 'active'")
            .unwrap();
        if waiting.trim() == "0" {
            break;
        }
        assert!(Instant::now() < deadline, "the stuck query still runs on the server");
        std::thread::yield_now();
    }
    drop(holder);
}

/// Commits first try a plain binary COPY of their puts and, when a key exists
/// already, roll back and upsert; after a conflict the next commits upsert
/// directly, for a streak that doubles with each conflict in a row. Whatever
/// the path, the rows and state are those of the batches applied in order.
#[test]
fn puts_over_existing_keys_land_whichever_way_the_commit_writes_them() {
    let Some(pg) = cluster_or_skip("put modes") else { return };
    let views = PgViews::open(&pg.url("puts")).unwrap();
    let s = views.store("v").unwrap();
    let conflicts = || pg.log().matches("duplicate key value violates unique constraint").count();
    let mut model = std::collections::BTreeMap::new();
    let mut check = |s: &kappa_view_postgres::PgStore, ops: Vec<(Vec<u8>, Option<Vec<u8>>)>, state: &str| {
        for (k, v) in &ops {
            match v {
                Some(v) => {
                    model.insert(String::from_utf8(k.clone()).unwrap(), String::from_utf8(v.clone()).unwrap())
                }
                None => model.remove(std::str::from_utf8(k).unwrap()),
            };
        }
        s.commit(batch(ops, Some(state))).unwrap();
        let want: Vec<(String, String)> = model.clone().into_iter().collect();
        assert_eq!(all(s), want, "after {state}");
        assert_eq!(s.state().unwrap().as_deref(), Some(state.as_bytes()));
    };
    // Only new keys: plain inserts, no conflict.
    for c in 0..5 {
        check(&s, (0..100).map(|i| put(&format!("new{c}-{i:03}"), "v")).collect(), &format!("new{c}"));
    }
    assert_eq!(conflicts(), 0, "{}", pg.log());
    // Every commit overwrites keys (a counter): 20 commits conflict on the
    // 1st, 3rd, 6th, 11th and 20th (streaks of 1, 2, 4, 8 upserts between).
    for c in 0..20 {
        let mut ops: Vec<_> = (0..50).map(|i| put(&format!("new0-{i:03}"), &format!("c{c}"))).collect();
        ops.extend((0..10).map(|i| put(&format!("fresh{c}-{i}"), "f")));
        ops.push((format!("new1-{c:03}").into_bytes(), None));
        // A key put and then deleted in the same batch ends deleted.
        ops.push(put("gone", "x"));
        ops.push((b"gone".to_vec(), None));
        check(&s, ops, &format!("over{c}"));
    }
    assert_eq!(conflicts(), 5, "{}", pg.log());
    // New keys again: after the streak, plain inserts are tried (and land).
    for c in 0..40 {
        check(&s, vec![put(&format!("later{c}"), "v")], &format!("later{c}"));
    }
    assert_eq!(conflicts(), 5, "no new conflict from new keys: {}", pg.log());
    // A reopened store starts with plain inserts.
    drop(s);
    drop(views);
    let views = PgViews::open(&pg.url("puts")).unwrap();
    let s = views.store("v").unwrap();
    check(&s, vec![put("new0-000", "reopened")], "reopened");
    assert_eq!(conflicts(), 6, "{}", pg.log());
}

/// Puts go to the server as a binary COPY, cut into messages of 256 KiB:
/// rows bigger than a message, empty keys and values, and every byte value
/// land as they were, and a COPY that fails half way (a key that exists, in
/// the last message) leaves nothing of its transaction.
#[test]
fn copied_rows_of_any_size_and_bytes_land_whole() {
    let Some(pg) = cluster_or_skip("copy") else { return };
    let views = PgViews::open(&pg.url("copy")).unwrap();
    let s = views.store("v").unwrap();
    let every_byte: Vec<u8> = (0..=255u8).collect();
    let mut ops: Vec<(Vec<u8>, Option<Vec<u8>>)> = vec![
        (Vec::new(), Some(b"the empty key".to_vec())),
        (b"empty value".to_vec(), Some(Vec::new())),
        (every_byte.clone(), Some(every_byte.repeat(4))),
        (b"big".to_vec(), Some(vec![0xa5; 700 << 10])),
        (b"~last".to_vec(), Some(b"first".to_vec())),
    ];
    ops.extend((0..3000u32).map(|i| (i.to_be_bytes().to_vec(), Some(vec![(i % 251) as u8; 100]))));
    s.commit(Batch { ops: ops.clone(), state: Some(b"one".to_vec()) }).unwrap();
    let mut want: Vec<(Vec<u8>, Vec<u8>)> = ops.into_iter().map(|(k, v)| (k, v.unwrap())).collect();
    want.sort();
    let rows = s.scan((std::ops::Bound::Unbounded, std::ops::Bound::Unbounded), false, None).unwrap();
    assert_eq!(rows.len(), want.len());
    assert!(rows == want, "the rows read back differ from those committed");
    // A fresh store handle tries a plain COPY first; the existing key sorts
    // last (puts go in key order), after several messages of new rows:
    // nothing of them lands, and the commit lands whole as an upsert.
    drop(s);
    drop(views);
    let s = PgViews::open(&pg.url("copy")).unwrap().store("v").unwrap();
    let mut ops: Vec<(Vec<u8>, Option<Vec<u8>>)> =
        (0..2000u32).map(|i| (format!("new{i:05}").into_bytes(), Some(vec![7; 1000]))).collect();
    ops.push((b"~last".to_vec(), Some(b"second".to_vec())));
    s.commit(Batch { ops, state: Some(b"two".to_vec()) }).unwrap();
    assert_eq!(pg.log().matches("duplicate key value violates unique constraint").count(), 1, "{}", pg.log());
    assert_eq!(s.get(b"~last").unwrap().as_deref(), Some(&b"second"[..]));
    assert_eq!(s.get(b"big").unwrap(), Some(vec![0xa5; 700 << 10]));
    assert_eq!(s.get(b"new01999").unwrap().as_deref(), Some(&[7; 1000][..]));
    assert_eq!(s.get(&every_byte).unwrap(), Some(every_byte.repeat(4)));
    assert_eq!(s.state().unwrap().as_deref(), Some(&b"two"[..]));
    let rows = s.scan((std::ops::Bound::Unbounded, std::ops::Bound::Unbounded), false, None).unwrap();
    assert_eq!(rows.len(), want.len() + 2000);
}
