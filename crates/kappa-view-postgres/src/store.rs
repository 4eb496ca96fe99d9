use std::collections::HashMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use blake2::digest::consts::U8;
use blake2::{Blake2b, Digest};
use kappa_view::{range_is_empty, Batch, KeyRange, Row, StoreError, StoreErrorKind, ViewStore};
use postgres_protocol::escape::escape_identifier;

use crate::config::Config;
use crate::error::PgError;
use crate::pool::{retrying, Pool};
use crate::wire::{Conn, Param, PgRow, Stmt};

/// The format marker in `<schema>.kappa_meta`.
const FORMAT: &str = "kappa-view-postgres/1";
/// SQLSTATE of "relation does not exist".
const UNDEFINED_TABLE: &str = "42P01";
/// SQLSTATE of "duplicate key value violates unique constraint".
const UNIQUE_VIOLATION: &str = "23505";
/// Most commits that upsert after a plain `COPY` met an existing key, before
/// plain copies are tried again.
const MAX_UPSERT_STREAK: u32 = 1024;

/// Whether a handle may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Writer,
    Reader,
}

struct Shared {
    pool: Pool,
    role: Role,
    /// The schema, quoted for SQL.
    schema: String,
    /// The writer's own connection, which holds the writer lock (a session
    /// advisory lock): every commit goes through it, so a commit can only land
    /// while this process holds the lock.
    writer: Mutex<Option<Conn>>,
    /// The writer lock's key.
    lock_key: i64,
    /// The key of the transaction lock that serializes creating tables.
    ddl_key: i64,
}

/// The views of one kappa database in a PostgreSQL schema: one table per view
/// (`key bytea PRIMARY KEY, value bytea`), and a registry table holding every
/// view's name, table and indexing state.
///
/// One process indexes (opens with [`open`](Self::open), which takes the
/// schema's writer lock); any number of processes read (with
/// [`open_reader`](Self::open_reader)) and see each batch whole or not at all.
/// Clones share the connection pool.
///
/// ```no_run
/// use kappa_view::kv::KvView;
/// use kappa_view_postgres::PgViews;
/// use std::sync::Arc;
///
/// // The indexing process:
/// let views = PgViews::open("postgres://kappa@db.internal/kappa?schema=pub1")?;
/// let kv = KvView::new(Arc::new(views.store("kv")?));
/// // A reader process, on any machine:
/// let readers = PgViews::open_reader("postgres://reader@db.internal/kappa?schema=pub1")?;
/// let kv = KvView::new(Arc::new(readers.store("kv")?));
/// let heads = kv.get("some-key")?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct PgViews {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PgViews {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgViews")
            .field("config", self.shared.pool.config())
            .field("role", &self.shared.role)
            .finish_non_exhaustive()
    }
}

impl PgViews {
    /// Opens the views at `url` (see [`Config::from_url`]) for indexing:
    /// creates the schema and its tables if they do not exist, and takes the
    /// schema's writer lock, held for as long as this value or a clone lives.
    ///
    /// Fails with [`PgError::Locked`] if another process holds the lock (after
    /// waiting `retry_for` for it to go),
    /// [`PgError::Incompatible`] if the schema holds other tables, and
    /// [`PgError::Connection`] if the server cannot be reached (after retrying
    /// for `retry_for`).
    pub fn open(url: &str) -> Result<PgViews, PgError> {
        Self::open_with(Config::from_url(url)?, false)
    }

    /// Opens the views at `url` for reading only: no writer lock, no tables
    /// created (views not indexed yet read as empty). Commits fail with
    /// [`PgError::ReadOnly`].
    pub fn open_reader(url: &str) -> Result<PgViews, PgError> {
        Self::open_with(Config::from_url(url)?, true)
    }

    /// Like [`open`](Self::open) or, with `read_only`,
    /// [`open_reader`](Self::open_reader), from a [`Config`].
    pub fn open_with(cfg: Config, read_only: bool) -> Result<PgViews, PgError> {
        let key = |what: &str| {
            let mut h = Blake2b::<U8>::new();
            h.update(format!("kappa-view-postgres {what}\0").as_bytes());
            h.update(cfg.schema.as_bytes());
            i64::from_be_bytes(h.finalize().into())
        };
        let (lock_key, ddl_key) = (key("writer lock"), key("ddl lock"));
        let schema = escape_identifier(&cfg.schema);
        let views = PgViews {
            shared: Arc::new(Shared {
                pool: Pool::new(cfg),
                role: if read_only { Role::Reader } else { Role::Writer },
                schema,
                writer: Mutex::new(None),
                lock_key,
                ddl_key,
            }),
        };
        views.retrying(|| views.shared.pool.with_conn(|c| views.init(c)))?;
        if !read_only {
            // The lock may still be held by the session of an indexer that just
            // died (the server notices a dead client on its next read): it is
            // waited for like an unreachable server.
            views.retrying(|| views.with_writer(|_| Ok(())))?;
        }
        Ok(views)
    }

    /// The settings in use.
    pub fn config(&self) -> &Config {
        self.shared.pool.config()
    }

    fn retrying<T>(&self, op: impl FnMut() -> Result<T, PgError>) -> Result<T, PgError> {
        retrying(self.config().retry_for, op)
    }

    fn schema_name(&self) -> String {
        self.config().schema.clone()
    }

    /// Checks the format marker, creating the schema's tables in an empty
    /// schema (a writer only).
    fn init(&self, c: &mut Conn) -> Result<(), PgError> {
        let s = &self.shared.schema;
        let name = self.schema_name();
        transaction(c, |c| {
            c.query("SELECT pg_advisory_xact_lock($1)", vec![Param::Int8(self.shared.ddl_key)])?;
            let tables: Vec<String> = c
                .query(
                    "SELECT tablename::text FROM pg_tables WHERE schemaname = $1 ORDER BY 1",
                    vec![Param::Text(&name)],
                )?
                .into_iter()
                .map(|r| text(&r, 0))
                .collect();
            if tables.iter().any(|t| t == "kappa_meta") {
                let format = c
                    .query(&format!("SELECT value FROM {s}.kappa_meta WHERE key = 'format'"), vec![])?
                    .first()
                    .map(|r| text(r, 0));
                return match format.as_deref() {
                    Some(FORMAT) => Ok(()),
                    Some(f) => Err(PgError::Incompatible {
                        schema: name.clone(),
                        reason: format!("format {f:?}, this version reads {FORMAT:?}"),
                    }),
                    None => {
                        Err(PgError::Incompatible { schema: name.clone(), reason: "no format marker".into() })
                    }
                };
            }
            if !tables.is_empty() {
                return Err(PgError::Incompatible {
                    schema: name.clone(),
                    reason: format!(
                        "it holds {} table(s) ({}) but no kappa_meta format marker",
                        tables.len(),
                        tables.join(", ")
                    ),
                });
            }
            if self.shared.role == Role::Reader {
                // Nothing indexed yet: reads find no tables and return nothing.
                return Ok(());
            }
            c.simple(&format!(
                "CREATE SCHEMA IF NOT EXISTS {s};
                 CREATE TABLE {s}.kappa_meta (key text PRIMARY KEY, value text NOT NULL);
                 INSERT INTO {s}.kappa_meta VALUES ('format', '{FORMAT}');
                 CREATE TABLE {s}.kappa_views (
                     name text PRIMARY KEY,
                     rows_table text NOT NULL UNIQUE,
                     state bytea
                 );"
            ))
        })
    }

    /// Runs `f` on the writer connection, connecting it and taking the writer
    /// lock first if needed.
    fn with_writer<T>(&self, f: impl FnOnce(&mut Conn) -> Result<T, PgError>) -> Result<T, PgError> {
        if self.shared.role == Role::Reader {
            return Err(PgError::ReadOnly);
        }
        let mut slot = lock(&self.shared.writer);
        if slot.as_ref().is_none_or(Conn::is_broken) {
            *slot = None;
            let mut c = Conn::connect(self.config())?;
            let got = c.query("SELECT pg_try_advisory_lock($1)", vec![Param::Int8(self.shared.lock_key)])?;
            if got.first().and_then(|r| r.first()).cloned().flatten().as_deref() != Some(&[1][..]) {
                return Err(PgError::Locked { schema: self.schema_name() });
            }
            *slot = Some(c);
        }
        match slot.as_mut() {
            Some(c) => f(c),
            None => Err(PgError::protocol("no writer connection")),
        }
    }

    /// The store for the view called `view_name`. A writer registers the view
    /// and creates its table; a reader finds it once the writer has.
    pub fn store(&self, view_name: &str) -> Result<PgStore, StoreError> {
        if view_name.is_empty() {
            return Err(StoreError::from_message(StoreErrorKind::Backend, "a view needs a non-empty name"));
        }
        let store = PgStore {
            views: self.clone(),
            name: view_name.to_owned(),
            sql: Arc::new(Mutex::new(None)),
            puts: Arc::new(Mutex::new(PutMode::default())),
            is_shadow: false,
        };
        if self.shared.role == Role::Writer {
            store.statements()?;
        }
        Ok(store)
    }

    /// The names of the views registered in the schema, in order.
    pub fn views(&self) -> Result<Vec<String>, StoreError> {
        let sql = format!("SELECT name FROM {}.kappa_views ORDER BY name", self.shared.schema);
        let rows =
            self.retrying(|| self.shared.pool.with_conn(|c| missing_is_empty(c.query(&sql, vec![]))))?;
        Ok(rows.iter().map(|r| text(r, 0)).collect())
    }
}

/// Runs `f` in a transaction block on `c`, rolling back if it fails.
fn transaction<T>(c: &mut Conn, f: impl FnOnce(&mut Conn) -> Result<T, PgError>) -> Result<T, PgError> {
    c.simple("BEGIN")?;
    match f(c) {
        Ok(v) => {
            c.simple("COMMIT")?;
            Ok(v)
        }
        Err(e) => {
            if !c.is_broken() {
                let _ = c.simple("ROLLBACK");
            }
            Err(e)
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn text(row: &PgRow, i: usize) -> String {
    row.get(i).cloned().flatten().map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

/// A query on a table that does not exist yet (a reader before the writer
/// created it) has no rows.
fn missing_is_empty(r: Result<Vec<PgRow>, PgError>) -> Result<Vec<PgRow>, PgError> {
    match r {
        Err(PgError::Server { code, .. }) if code == UNDEFINED_TABLE => Ok(Vec::new()),
        r => r,
    }
}

/// The table name for a view: readable, and unique through a hash.
fn table_name(view: &str) -> String {
    let readable: String = view
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .take(24)
        .collect();
    let mut h = Blake2b::<U8>::new();
    h.update(view.as_bytes());
    format!("rows_{readable}_{}", hex::encode(h.finalize()))
}

/// One view's SQL, for its table.
#[derive(Debug)]
struct Statements {
    /// The rows table's name (unquoted).
    table: String,
    get: String,
    get_many: String,
    /// Puts as an upsert (`ON CONFLICT ... DO UPDATE`).
    put: String,
    /// Puts as a binary `COPY` into the table, which fails on an existing key.
    copy: String,
    delete: String,
    set_state: String,
    get_state: String,
    clear_state: String,
    clear: String,
    /// `SELECT key, value FROM <table>`, for scans.
    select: String,
}

impl Statements {
    /// The statements of the rows `table`, whose state is in `registry`
    /// (`kappa_views`, or `kappa_shadows` for a shadow).
    fn new(schema: &str, table: &str, registry: &str) -> Self {
        let t = format!("{schema}.{}", escape_identifier(table));
        let registry = format!("{schema}.{registry}");
        Statements {
            table: table.to_owned(),
            get: format!("SELECT value FROM {t} WHERE key = $1"),
            get_many: format!("SELECT key, value FROM {t} WHERE key = ANY($1::bytea[])"),
            put: format!(
                "INSERT INTO {t} (key, value) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
            ),
            copy: format!("COPY {t} (key, value) FROM STDIN (FORMAT binary)"),
            delete: format!("DELETE FROM {t} WHERE key = ANY($1::bytea[])"),
            // An upsert: the state lands even if the registry row went away.
            set_state: format!(
                "INSERT INTO {registry} (name, rows_table, state) VALUES ($1, $3, $2) \
                 ON CONFLICT (name) DO UPDATE SET state = EXCLUDED.state"
            ),
            get_state: format!("SELECT state FROM {registry} WHERE name = $1"),
            clear_state: format!("UPDATE {registry} SET state = NULL WHERE name = $1"),
            clear: format!("TRUNCATE {t}"),
            select: format!("SELECT key, value FROM {t}"),
        }
    }
}

/// One view's rows and indexing state in PostgreSQL; see [`PgViews`].
///
/// Every read is one statement, so it sees one committed state of the view;
/// every commit is one transaction holding the rows and the indexing state.
/// Operations retry while the server is unreachable (a restart, a lost
/// connection) for the configured `retry_for`, then fail with
/// [`StoreErrorKind::Unavailable`]. A commit that is retried after its connection
/// broke may already have landed; applying the same batch again leaves the same
/// rows and state, so retrying is safe with the one writer the lock allows.
#[derive(Clone)]
pub struct PgStore {
    views: PgViews,
    name: String,
    sql: Arc<Mutex<Option<Arc<Statements>>>>,
    puts: Arc<Mutex<PutMode>>,
    /// Whether this is the view's shadow: rows in `<table>_shadow`, state
    /// in `kappa_shadows`.
    is_shadow: bool,
}

/// The registry of views' shadows (made when the first shadow is): a
/// shadow's rows table, its state, and a generation that each
/// [`promote_shadow`](ViewStore::promote_shadow) moves on, so a promote
/// retried after a lost connection knows whether it landed.
fn shadows_ddl(schema: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {schema}.kappa_shadows (
             name text PRIMARY KEY,
             rows_table text NOT NULL UNIQUE,
             state bytea,
             generation bigint NOT NULL DEFAULT 0
         )"
    )
}

/// The rows table of the shadow of a view whose rows are in `table`.
fn shadow_table(table: &str) -> String {
    format!("{table}_shadow")
}

/// How commits write their puts. An upsert (`INSERT ... ON CONFLICT DO
/// UPDATE`) costs PostgreSQL a speculative insertion per row, which made it
/// about 1.7 times as slow as a plain `INSERT` (measured with 4,096-row
/// commits), and a binary `COPY` into the table, which PostgreSQL writes a
/// page at a time, cut the commit's time by about a third again (2026-12-07);
/// most views mostly write new keys (the kv view never writes a key twice).
/// So a commit first tries a plain `COPY`; if that meets an existing
/// key, the whole transaction rolls back (nothing of it lands) and the commit
/// runs again with the upsert. After such a conflict the next commits upsert
/// directly, for a streak that doubles with every conflict in a row (up to
/// [`MAX_UPSERT_STREAK`]), so a view that keeps overwriting keys (a counter)
/// pays the failed attempt about once in a thousand commits.
#[derive(Debug, Default)]
struct PutMode {
    /// Commits left to upsert before trying a plain `COPY` again.
    upsert_for: u32,
    /// The streak after the next conflict.
    next_streak: u32,
}

impl PutMode {
    fn plain_first(&mut self) -> bool {
        if self.upsert_for > 0 {
            self.upsert_for -= 1;
            return false;
        }
        true
    }

    fn conflicted(&mut self) {
        self.next_streak = (self.next_streak * 2).clamp(1, MAX_UPSERT_STREAK);
        self.upsert_for = self.next_streak;
    }

    fn inserted(&mut self) {
        self.next_streak = 0;
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("view", &self.name).finish_non_exhaustive()
    }
}

impl PgStore {
    /// The view's name.
    pub fn view_name(&self) -> &str {
        &self.name
    }

    fn pool(&self) -> &Pool {
        &self.views.shared.pool
    }

    /// The view's statements: a writer registers the view and creates its
    /// table; a reader looks the table up (`None` while it does not exist).
    fn statements(&self) -> Result<Option<Arc<Statements>>, PgError> {
        if let Some(s) = lock(&self.sql).as_ref() {
            return Ok(Some(s.clone()));
        }
        let shared = &self.views.shared;
        let schema = &shared.schema;
        let name = self.name.as_str();
        if self.is_shadow {
            return self.shadow_statements();
        }
        let table = self.views.retrying(|| {
            self.pool().with_conn(|c| {
                let lookup = format!("SELECT rows_table FROM {schema}.kappa_views WHERE name = $1");
                if shared.role == Role::Reader {
                    let rows = missing_is_empty(c.query(&lookup, vec![Param::Text(name)]))?;
                    return Ok(rows.first().map(|r| text(r, 0)));
                }
                transaction(c, |c| {
                    c.query("SELECT pg_advisory_xact_lock($1)", vec![Param::Int8(shared.ddl_key)])?;
                    let wanted = table_name(name);
                    c.query(
                        &format!(
                            "INSERT INTO {schema}.kappa_views (name, rows_table) VALUES ($1, $2) \
                             ON CONFLICT (name) DO NOTHING"
                        ),
                        vec![Param::Text(name), Param::Text(&wanted)],
                    )?;
                    let rows = c.query(&lookup, vec![Param::Text(name)])?;
                    let table = rows.first().map(|r| text(r, 0)).unwrap_or(wanted);
                    c.simple(&format!(
                        "CREATE TABLE IF NOT EXISTS {schema}.{} (key bytea PRIMARY KEY, value bytea NOT NULL)",
                        escape_identifier(&table)
                    ))?;
                    Ok(Some(table))
                })
            })
        })?;
        let Some(table) = table else { return Ok(None) };
        let s = Arc::new(Statements::new(schema, &table, "kappa_views"));
        *lock(&self.sql) = Some(s.clone());
        Ok(Some(s))
    }

    /// The live store of this shadow's view.
    fn live(&self) -> PgStore {
        PgStore { is_shadow: false, sql: Arc::new(Mutex::new(None)), ..self.clone() }
    }

    /// A shadow's statements: a writer registers the shadow (after the view)
    /// and creates its table; a reader uses the name it will have.
    fn shadow_statements(&self) -> Result<Option<Arc<Statements>>, PgError> {
        let Some(live) = self.live().statements()? else { return Ok(None) };
        let shared = &self.views.shared;
        let schema = &shared.schema;
        let table = shadow_table(&live.table);
        if shared.role == Role::Writer {
            self.views.retrying(|| {
                self.pool().with_conn(|c| {
                    // Registered already (the usual case: one query, no DDL lock).
                    let known = missing_is_empty(c.query(
                        &format!("SELECT 1 FROM {schema}.kappa_shadows WHERE name = $1"),
                        vec![Param::Text(&self.name)],
                    ))?;
                    if !known.is_empty() {
                        return Ok(());
                    }
                    transaction(c, |c| {
                        c.query("SELECT pg_advisory_xact_lock($1)", vec![Param::Int8(shared.ddl_key)])?;
                        c.simple(&shadows_ddl(schema))?;
                        c.query(
                            &format!(
                                "INSERT INTO {schema}.kappa_shadows (name, rows_table) VALUES ($1, $2) \
                                 ON CONFLICT (name) DO NOTHING"
                            ),
                            vec![Param::Text(&self.name), Param::Text(&table)],
                        )?;
                        c.simple(&format!(
                            "CREATE TABLE IF NOT EXISTS {schema}.{} (key bytea PRIMARY KEY, value bytea NOT NULL)",
                            escape_identifier(&table)
                        ))
                    })
                })
            })?;
        }
        let s = Arc::new(Statements::new(schema, &table, "kappa_shadows"));
        *lock(&self.sql) = Some(s.clone());
        Ok(Some(s))
    }

    /// Swaps the shadow's rows and state in (see [`ViewStore::promote_shadow`]).
    fn promote(&self) -> Result<(), PgError> {
        let live = self.statements()?.ok_or(PgError::ReadOnly)?;
        let shadow = PgStore { is_shadow: true, sql: Arc::new(Mutex::new(None)), ..self.clone() };
        let sh = shadow.statements()?.ok_or(PgError::ReadOnly)?;
        let schema = &self.views.shared.schema;
        let name = self.name.as_str();
        let generation_sql =
            format!("SELECT generation FROM {schema}.kappa_shadows WHERE name = $1 FOR UPDATE");
        let generation = |c: &mut Conn| -> Result<Vec<u8>, PgError> {
            let rows = c.query(&generation_sql, vec![Param::Text(name)])?;
            rows.into_iter()
                .next()
                .and_then(|r| r.into_iter().next().flatten())
                .ok_or_else(|| PgError::protocol("the view's shadow is not registered"))
        };
        // The generation before the swap: a retry after a lost connection
        // that finds another one knows the swap landed.
        let before = self.views.retrying(|| self.views.with_writer(generation))?;
        let (live_t, shadow_t) = (escape_identifier(&live.table), escape_identifier(&sh.table));
        self.views.retrying(|| {
            self.views.with_writer(|c| {
                transaction(c, |c| {
                    if generation(c)? != before {
                        return Ok(());
                    }
                    c.simple(&format!(
                        "DROP TABLE IF EXISTS {schema}.{live_t};
                         ALTER TABLE {schema}.{shadow_t} RENAME TO {live_t};
                         CREATE TABLE {schema}.{shadow_t} (key bytea PRIMARY KEY, value bytea NOT NULL)"
                    ))?;
                    c.query(
                        &format!(
                            "UPDATE {schema}.kappa_views SET state = \
                             (SELECT state FROM {schema}.kappa_shadows WHERE name = $1) WHERE name = $1"
                        ),
                        vec![Param::Text(name)],
                    )?;
                    c.query(
                        &format!(
                            "UPDATE {schema}.kappa_shadows SET state = NULL, generation = generation + 1 \
                             WHERE name = $1"
                        ),
                        vec![Param::Text(name)],
                    )?;
                    Ok(())
                })
            })
        })
    }

    /// Runs a read on a pooled connection, retrying while the server is away;
    /// a view without a table yet reads as `empty`.
    fn read<T>(
        &self,
        empty: T,
        f: impl Fn(&mut Conn, &Statements) -> Result<T, PgError>,
    ) -> Result<T, StoreError>
    where
        T: Clone,
    {
        let Some(sql) = self.statements()? else { return Ok(empty) };
        let r = self.views.retrying(|| {
            self.pool().with_conn(|c| match f(c, &sql) {
                Err(PgError::Server { code, .. }) if code == UNDEFINED_TABLE => Ok(empty.clone()),
                r => r,
            })
        })?;
        Ok(r)
    }
}

fn bound_sql<'a>(
    b: &'a Bound<Vec<u8>>,
    op_incl: &str,
    op_excl: &str,
    n: usize,
) -> Option<(String, &'a [u8])> {
    match b {
        Bound::Included(k) => Some((format!("key {op_incl} ${n}"), k.as_slice())),
        Bound::Excluded(k) => Some((format!("key {op_excl} ${n}"), k.as_slice())),
        Bound::Unbounded => None,
    }
}

impl ViewStore for PgStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(None, |c, sql| {
            let rows = c.query(&sql.get, vec![Param::Bytea(key)])?;
            Ok(rows.into_iter().next().and_then(|r| r.into_iter().next().flatten()))
        })
    }

    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.read(vec![None; keys.len()], |c, sql| {
            // An index lookup per key (`= ANY` on the primary key); the rows come
            // back in any order, each key once.
            let mut found: HashMap<Vec<u8>, Vec<u8>> = HashMap::with_capacity(keys.len());
            for row in c.query(&sql.get_many, vec![Param::ByteaArray(keys)])? {
                let mut cols = row.into_iter();
                match (cols.next().flatten(), cols.next().flatten()) {
                    (Some(k), Some(v)) => found.insert(k, v),
                    _ => return Err(PgError::protocol("get_many: a row without key or value")),
                };
            }
            Ok(keys.iter().map(|k| found.get(*k).cloned()).collect())
        })
    }

    fn batch_reads(&self) -> bool {
        true
    }

    fn scan(&self, range: KeyRange, reverse: bool, limit: Option<usize>) -> Result<Vec<Row>, StoreError> {
        if limit == Some(0) || range_is_empty(&range) {
            return Ok(Vec::new());
        }
        self.read(Vec::new(), |c, sql| {
            let mut conds = Vec::new();
            let mut params = Vec::new();
            for (b, incl, excl) in [(&range.0, ">=", ">"), (&range.1, "<=", "<")] {
                if let Some((cond, key)) = bound_sql(b, incl, excl, params.len() + 1) {
                    conds.push(cond);
                    params.push(Param::Bytea(key));
                }
            }
            let mut q = sql.select.clone();
            if !conds.is_empty() {
                q.push_str(" WHERE ");
                q.push_str(&conds.join(" AND "));
            }
            q.push_str(if reverse { " ORDER BY key DESC" } else { " ORDER BY key" });
            if let Some(l) = limit {
                q.push_str(&format!(" LIMIT ${}", params.len() + 1));
                params.push(Param::Int8(i64::try_from(l).unwrap_or(i64::MAX)));
            }
            let rows = c.query(&q, params)?;
            rows.into_iter()
                .map(|r| {
                    let mut cols = r.into_iter();
                    match (cols.next().flatten(), cols.next().flatten()) {
                        (Some(k), Some(v)) => Ok((k, v)),
                        _ => Err(PgError::protocol("a row without key or value")),
                    }
                })
                .collect()
        })
    }

    fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.ops.is_empty() && batch.state.is_none() {
            return Ok(());
        }
        let sql = self.statements()?.ok_or(PgError::ReadOnly)?;
        // The last op of each key decides; puts and deletes then touch
        // different keys, so their order does not matter.
        let mut last: HashMap<&[u8], Option<&[u8]>> = HashMap::with_capacity(batch.ops.len());
        for (k, v) in &batch.ops {
            last.insert(k.as_slice(), v.as_deref());
        }
        let (mut puts, mut deletes) = (Vec::new(), Vec::new());
        for (k, v) in last {
            match v {
                Some(v) => puts.push((k, v)),
                None => deletes.push(k),
            }
        }
        // In key order: inserting into the primary key's B-tree in order
        // touches each leaf page once (about a fifth faster than hash order).
        puts.sort_unstable();
        deletes.sort_unstable();
        let (put_keys, put_values): (Vec<&[u8]>, Vec<&[u8]>) = puts.into_iter().unzip();
        let statements = |plain: bool| {
            let mut stmts = Vec::with_capacity(3);
            if !deletes.is_empty() {
                stmts.push(Stmt::new(&sql.delete, vec![Param::ByteaArray(&deletes)]));
            }
            if !put_keys.is_empty() {
                stmts.push(if plain {
                    Stmt::copy_pairs(&sql.copy, &put_keys, &put_values)
                } else {
                    Stmt::new(&sql.put, vec![Param::ByteaArray(&put_keys), Param::ByteaArray(&put_values)])
                });
            }
            if let Some(state) = &batch.state {
                stmts.push(Stmt::new(
                    &sql.set_state,
                    vec![Param::Text(&self.name), Param::Bytea(state), Param::Text(&sql.table)],
                ));
            }
            stmts
        };
        // One pipeline, one implicit transaction: all of it or none.
        let run = |stmts: &[Stmt<'_>]| {
            self.views.retrying(|| self.views.with_writer(|c| c.pipeline(stmts).map(|_| ())))
        };
        if !put_keys.is_empty() && lock(&self.puts).plain_first() {
            match run(&statements(true)) {
                Ok(()) => {
                    lock(&self.puts).inserted();
                    return Ok(());
                }
                // A key existed: the transaction rolled back whole.
                Err(PgError::Server { code, .. }) if code == UNIQUE_VIOLATION => {
                    lock(&self.puts).conflicted()
                }
                Err(e) => return Err(e.into()),
            }
        }
        run(&statements(false))?;
        Ok(())
    }

    fn state(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let get = |c: &mut Conn, sql: &Statements| {
            let rows = c.query(&sql.get_state, vec![Param::Text(&self.name)])?;
            Ok(rows.into_iter().next().and_then(|r| r.into_iter().next().flatten()))
        };
        if self.views.shared.role == Role::Writer {
            // Through the writer's session: once it holds the lock again after a
            // lost connection, the old session is gone and its last commit has
            // landed or not, so the state read is the truth an indexer resumes
            // from.
            let sql = self.statements()?.ok_or(PgError::ReadOnly)?;
            return Ok(self.views.retrying(|| self.views.with_writer(|c| get(c, &sql)))?);
        }
        self.read(None, get)
    }

    fn clear(&self) -> Result<(), StoreError> {
        let sql = self.statements()?.ok_or(PgError::ReadOnly)?;
        let stmts =
            [Stmt::new(&sql.clear, vec![]), Stmt::new(&sql.clear_state, vec![Param::Text(&self.name)])];
        self.views.retrying(|| {
            self.views.with_writer(|c| {
                c.pipeline(&stmts)?;
                Ok(())
            })
        })?;
        Ok(())
    }

    fn shadow(&self) -> Result<Option<Arc<dyn ViewStore>>, StoreError> {
        if self.is_shadow {
            return Ok(None);
        }
        let shadow = PgStore {
            is_shadow: true,
            sql: Arc::new(Mutex::new(None)),
            puts: Arc::new(Mutex::new(PutMode::default())),
            ..self.clone()
        };
        if self.views.shared.role == Role::Writer {
            shadow.statements()?;
        }
        Ok(Some(Arc::new(shadow)))
    }

    fn promote_shadow(&self) -> Result<(), StoreError> {
        if self.is_shadow {
            return Err(StoreError::from_message(
                StoreErrorKind::Backend,
                "a shadow has no shadow to promote",
            ));
        }
        self.promote()?;
        Ok(())
    }
}
