//! A small blocking PostgreSQL client over the frontend/backend protocol 3.0:
//! login (trust, cleartext, MD5, SCRAM-SHA-256), simple queries, and pipelines
//! of prepared statements with binary parameters and results, including
//! binary `COPY ... FROM STDIN`. Message encoding
//! and parsing come from `postgres-protocol`; no async runtime is involved.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
#[cfg(unix)]
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{self, ChannelBinding, ScramSha256};
use postgres_protocol::message::backend::{ErrorResponseBody, Message};
use postgres_protocol::message::frontend;
use postgres_protocol::types::{self, ArrayDimension};
use postgres_protocol::IsNull;

use crate::config::{Config, Host, SessionAttrs, SslMode};
use crate::error::{Cause, PgError};
use crate::tls::{self, Negotiated, TlsStream};

const BYTEA: u32 = 17;
const TEXT: u32 = 25;
const INT8: u32 = 20;
const BYTEA_ARRAY: u32 = 1001;

/// The longest message accepted from a server (a row bigger than this is an
/// error rather than an allocation).
const MAX_MESSAGE: usize = 1 << 30;

/// A statement parameter.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Param<'a> {
    Bytea(&'a [u8]),
    Text(&'a str),
    Int8(i64),
    ByteaArray(&'a [&'a [u8]]),
}

impl Param<'_> {
    fn oid(&self) -> u32 {
        match self {
            Param::Bytea(_) => BYTEA,
            Param::Text(_) => TEXT,
            Param::Int8(_) => INT8,
            Param::ByteaArray(_) => BYTEA_ARRAY,
        }
    }

    fn write(&self, buf: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Param::Bytea(b) => types::bytea_to_sql(b, buf),
            Param::Text(s) => types::text_to_sql(s, buf),
            Param::Int8(i) => types::int8_to_sql(*i, buf),
            Param::ByteaArray(items) => {
                let len = i32::try_from(items.len()).map_err(|_| "array too long")?;
                types::array_to_sql(
                    [ArrayDimension { len, lower_bound: 1 }],
                    BYTEA,
                    items.iter(),
                    |item, buf| {
                        types::bytea_to_sql(item, buf);
                        Ok(IsNull::No)
                    },
                    buf,
                )?
            }
        }
        Ok(IsNull::No)
    }
}

/// One statement of a pipeline.
#[derive(Debug, Clone)]
pub(crate) struct Stmt<'a> {
    pub(crate) sql: &'a str,
    pub(crate) params: Vec<Param<'a>>,
    /// For a `COPY ... FROM STDIN (FORMAT binary)` of two `bytea` columns: the
    /// rows to send, as the two columns.
    copy_in: Option<Columns<'a>>,
}

/// Two `bytea` columns of rows to copy in.
type Columns<'a> = (&'a [&'a [u8]], &'a [&'a [u8]]);

impl<'a> Stmt<'a> {
    pub(crate) fn new(sql: &'a str, params: Vec<Param<'a>>) -> Self {
        Stmt { sql, params, copy_in: None }
    }

    /// `sql`, a `COPY <table> (a, b) FROM STDIN (FORMAT binary)` of two
    /// `bytea` columns, sending the rows `(firsts[i], seconds[i])`: PostgreSQL
    /// inserts copied rows in bulk (a page at a time rather than a row at a
    /// time), which makes it the fastest way to add rows.
    pub(crate) fn copy_pairs(sql: &'a str, firsts: &'a [&'a [u8]], seconds: &'a [&'a [u8]]) -> Self {
        Stmt { sql, params: Vec::new(), copy_in: Some((firsts, seconds)) }
    }
}

/// The size at which a `CopyData` message is cut and the next one begun.
const COPY_CHUNK: usize = 256 << 10;

/// Writes the binary `COPY` stream of the rows `(firsts[i], seconds[i])` as
/// `CopyData` messages, then `CopyDone`.
fn write_copy_pairs(firsts: &[&[u8]], seconds: &[&[u8]], buf: &mut BytesMut) -> Result<(), PgError> {
    use bytes::BufMut;
    if firsts.len() != seconds.len() {
        return Err(PgError::protocol("COPY: the two columns differ in length"));
    }
    // Begins a CopyData message, returning where its length goes.
    let begin = |buf: &mut BytesMut| {
        buf.put_u8(b'd');
        let at = buf.len();
        buf.put_i32(0);
        at
    };
    let end = |buf: &mut BytesMut, at: usize| -> Result<(), PgError> {
        let len = i32::try_from(buf.len() - at).map_err(|_| PgError::protocol("COPY: a row too large"))?;
        buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
        Ok(())
    };
    let mut at = begin(buf);
    // The header: signature, flags, no extension.
    buf.put_slice(b"PGCOPY\n\xff\r\n\0");
    buf.put_i32(0);
    buf.put_i32(0);
    for (a, b) in firsts.iter().zip(seconds) {
        if buf.len() - at >= COPY_CHUNK {
            end(buf, at)?;
            at = begin(buf);
        }
        buf.put_i16(2);
        for field in [a, b] {
            let len = i32::try_from(field.len()).map_err(|_| PgError::protocol("COPY: a value too large"))?;
            buf.put_i32(len);
            buf.put_slice(field);
        }
    }
    // The trailer.
    buf.put_i16(-1);
    end(buf, at)?;
    frontend::copy_done(buf);
    Ok(())
}

/// A result row: each column's binary value, `None` for NULL.
pub(crate) type PgRow = Vec<Option<Vec<u8>>>;

enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsStream>),
    #[cfg(unix)]
    Unix(UnixStream),
    /// A scripted server (fuzzing): reads come from the bytes, writes vanish.
    #[cfg(feature = "fuzzing")]
    Script(io::Cursor<Vec<u8>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
            #[cfg(unix)]
            Stream::Unix(s) => s.read(buf),
            #[cfg(feature = "fuzzing")]
            Stream::Script(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
            #[cfg(unix)]
            Stream::Unix(s) => s.write(buf),
            #[cfg(feature = "fuzzing")]
            Stream::Script(_) => Ok(buf.len()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
            #[cfg(unix)]
            Stream::Unix(s) => s.flush(),
            #[cfg(feature = "fuzzing")]
            Stream::Script(_) => Ok(()),
        }
    }
}

/// One connection to the server.
pub(crate) struct Conn {
    stream: Stream,
    at: String,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// Prepared statements of this session, by SQL text.
    prepared: HashMap<String, String>,
    next_statement: u64,
    /// The transaction status of the last ReadyForQuery (`I`, `T` or `E`).
    status: u8,
    /// A broken connection is never used again.
    broken: bool,
    /// Where and how to cancel this session's query (from `BackendKeyData`).
    cancel: Option<Cancel>,
}

/// What a `CancelRequest` for a session needs.
struct Cancel {
    cfg: Config,
    host: Host,
    process_id: i32,
    secret_key: i32,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("at", &self.at).field("broken", &self.broken).finish_non_exhaustive()
    }
}

impl Conn {
    /// Connects and logs in to the first of the hosts that answers and is
    /// what `target_session_attrs` asks for.
    ///
    /// With one host, its error is the error. With several, a login or TLS
    /// failure (the URL is wrong for that server) is returned as it is;
    /// otherwise a connection error that says what each host did, which
    /// callers retry like a server that is down (a standby not promoted yet).
    pub(crate) fn connect(cfg: &Config) -> Result<Conn, PgError> {
        let mut failures = Vec::new();
        let mut refused = None;
        for host in &cfg.hosts {
            match Conn::connect_to(cfg, host) {
                Ok(c) => return Ok(c),
                Err(e) if cfg.hosts.len() == 1 => return Err(e),
                Err(e) => {
                    if refused.is_none() && matches!(e, PgError::Auth { .. } | PgError::Tls { .. }) {
                        refused = Some(e.clone());
                    }
                    failures.push(e.to_string());
                }
            }
        }
        if let Some(e) = refused {
            return Err(e);
        }
        Err(PgError::connection(cfg.display(), format!("no host would do: {}", failures.join("; "))))
    }

    /// Connects to `host`, logs in and checks `target_session_attrs`.
    fn connect_to(cfg: &Config, host: &Host) -> Result<Conn, PgError> {
        let at = cfg.display_host(host);
        let conn_err = |e: io::Error| PgError::connection_io(at.clone(), e);
        let stream = match host {
            Host::Tcp(host, port) => {
                let addrs: Vec<_> = (host.as_str(), *port).to_socket_addrs().map_err(conn_err)?.collect();
                let mut last = io::Error::new(io::ErrorKind::NotFound, "no address for the host");
                let mut stream = None;
                for a in addrs {
                    match TcpStream::connect_timeout(&a, cfg.connect_timeout) {
                        Ok(s) => {
                            stream = Some(s);
                            break;
                        }
                        Err(e) => last = e,
                    }
                }
                let s = stream.ok_or_else(|| conn_err(last))?;
                s.set_nodelay(true).map_err(conn_err)?;
                // Asking for TLS must not hang either.
                s.set_read_timeout(Some(cfg.connect_timeout)).map_err(conn_err)?;
                match cfg.ssl_mode {
                    SslMode::Disable => Stream::Tcp(s),
                    mode => match tls::negotiate(s, host, mode, cfg.ssl_root_cert.as_deref(), &at)? {
                        Negotiated::Tls(t) => Stream::Tls(t),
                        Negotiated::Plain(s) => Stream::Tcp(s),
                    },
                }
            }
            #[cfg(unix)]
            Host::Unix(dir, port) => {
                Stream::Unix(UnixStream::connect(format!("{dir}/.s.PGSQL.{port}")).map_err(conn_err)?)
            }
            #[cfg(not(unix))]
            Host::Unix(..) => {
                return Err(PgError::Url("Unix-domain sockets need a Unix system".into()));
            }
        };
        let mut conn = Conn::over(stream, at);
        // Logging in must not hang on a server that accepts and says nothing.
        conn.set_read_timeout(Some(cfg.connect_timeout));
        conn.login(cfg)?;
        if let Some(c) = &mut conn.cancel {
            c.cfg = cfg.clone();
            c.host = host.clone();
        }
        conn.check_session_attrs(cfg.target_session_attrs)?;
        conn.set_read_timeout(Some(cfg.read_timeout));
        Ok(conn)
    }

    /// Whether this server is what `want` asks for (libpq's checks: the
    /// session's `transaction_read_only` for read-write and read-only,
    /// `pg_is_in_recovery()` for primary and standby).
    fn check_session_attrs(&mut self, want: SessionAttrs) -> Result<(), PgError> {
        let (sql, yes): (&str, &[u8]) = match want {
            SessionAttrs::Any => return Ok(()),
            SessionAttrs::ReadWrite => ("SELECT current_setting('transaction_read_only')", b"off"),
            SessionAttrs::ReadOnly => ("SELECT current_setting('transaction_read_only')", b"on"),
            // A binary bool: one byte.
            SessionAttrs::Primary => ("SELECT pg_is_in_recovery()", &[0]),
            SessionAttrs::Standby => ("SELECT pg_is_in_recovery()", &[1]),
        };
        let rows = self.query(sql, vec![])?;
        let value = rows.first().and_then(|r| r.first()).cloned().flatten();
        if value.as_deref() == Some(yes) {
            return Ok(());
        }
        self.broken = true;
        Err(PgError::connection(
            self.at.clone(),
            format!("the server is not {} (target_session_attrs)", want.as_str()),
        ))
    }

    fn over(stream: Stream, at: String) -> Conn {
        Conn {
            stream,
            at,
            rbuf: BytesMut::with_capacity(64 << 10),
            wbuf: BytesMut::with_capacity(64 << 10),
            prepared: HashMap::new(),
            next_statement: 0,
            status: b'I',
            broken: false,
            cancel: None,
        }
    }

    /// A connection whose server says `script` (for fuzzing), logged in with
    /// `cfg` as far as the script allows.
    #[cfg(feature = "fuzzing")]
    pub(crate) fn scripted(cfg: &Config, script: Vec<u8>) -> Result<Conn, PgError> {
        let mut conn = Conn::over(Stream::Script(io::Cursor::new(script)), "script".into());
        if cfg.ssl_mode != SslMode::Disable && tls::ask_for_tls(&mut conn.stream, cfg.ssl_mode, "script")? {
            // A script cannot do a TLS handshake (rustls is fuzzed on its own).
            return Err(PgError::tls("script", "the script starts TLS"));
        }
        conn.login(cfg)?;
        Ok(conn)
    }

    fn set_read_timeout(&self, t: Option<std::time::Duration>) {
        // Setting a timeout fails only for a zero duration, which the config
        // refuses.
        let _ = match &self.stream {
            Stream::Tcp(s) => s.set_read_timeout(t),
            Stream::Tls(s) => s.sock.set_read_timeout(t),
            #[cfg(unix)]
            Stream::Unix(s) => s.set_read_timeout(t),
            #[cfg(feature = "fuzzing")]
            Stream::Script(_) => Ok(()),
        };
    }

    pub(crate) fn is_broken(&self) -> bool {
        self.broken
    }

    fn login(&mut self, cfg: &Config) -> Result<(), PgError> {
        let params = [
            ("user", cfg.user.as_str()),
            ("database", cfg.dbname.as_str()),
            ("application_name", cfg.application_name.as_str()),
            ("client_encoding", "UTF8"),
        ];
        frontend::startup_message(params.iter().copied(), &mut self.wbuf).map_err(|e| self.io_err(e))?;
        self.flush()?;
        let at = self.at.clone();
        let password = || {
            cfg.password.as_deref().ok_or_else(|| {
                PgError::auth(at.clone(), "the server asks for a password and the URL has none")
            })
        };
        // A password sent in the clear, or as an MD5 hash (which is as good as
        // the password to whoever reads it), only where nobody can read it.
        let plain = match self.stream {
            Stream::Tcp(_) => true,
            #[cfg(feature = "fuzzing")]
            Stream::Script(_) => true,
            _ => false,
        };
        let exposed = plain && !cfg.insecure_password;
        let refuse = |how: &str| {
            PgError::auth(
                at.clone(),
                format!(
                    "the server asks for the password {how} over a connection without TLS; refused \
                     (use TLS: sslmode=require or verify-full; or accept the risk with insecure_password=allow)"
                ),
            )
        };
        let mut scram: Option<ScramSha256> = None;
        loop {
            match self.read_message()? {
                Message::AuthenticationOk => {}
                Message::AuthenticationCleartextPassword => {
                    if exposed {
                        self.broken = true;
                        return Err(refuse("in the clear"));
                    }
                    let pw = password()?;
                    frontend::password_message(pw.as_bytes(), &mut self.wbuf).map_err(|e| self.io_err(e))?;
                    self.flush()?;
                }
                Message::AuthenticationMd5Password(body) => {
                    if exposed {
                        self.broken = true;
                        return Err(refuse("as an MD5 hash"));
                    }
                    let pw = password()?;
                    let hash = postgres_protocol::authentication::md5_hash(
                        cfg.user.as_bytes(),
                        pw.as_bytes(),
                        body.salt(),
                    );
                    frontend::password_message(hash.as_bytes(), &mut self.wbuf)
                        .map_err(|e| self.io_err(e))?;
                    self.flush()?;
                }
                Message::AuthenticationSasl(body) => {
                    let mut mechanisms = body.mechanisms();
                    let (mut has_scram, mut has_plus) = (false, false);
                    while let Some(m) = mechanisms.next().map_err(|e| self.proto_err(e))? {
                        has_scram |= m == sasl::SCRAM_SHA_256;
                        has_plus |= m == sasl::SCRAM_SHA_256_PLUS;
                    }
                    if !has_scram && !has_plus {
                        return Err(PgError::auth(
                            self.at.clone(),
                            "the server offers no SASL mechanism this client knows (SCRAM-SHA-256)",
                        ));
                    }
                    // Over TLS, bind the login to the server's certificate
                    // (SCRAM-SHA-256-PLUS, tls-server-end-point): a man in the
                    // middle with another certificate cannot relay it.
                    let end_point = match &self.stream {
                        Stream::Tls(t) => Some(tls::server_end_point(t)),
                        _ => None,
                    };
                    let (mechanism, binding) = match end_point {
                        Some(Some(hash)) if has_plus => {
                            (sasl::SCRAM_SHA_256_PLUS, ChannelBinding::tls_server_end_point(hash))
                        }
                        // TLS, but no binding offered (or none defined for the
                        // certificate): say we could have.
                        Some(_) if has_scram => (sasl::SCRAM_SHA_256, ChannelBinding::unrequested()),
                        _ if has_scram => (sasl::SCRAM_SHA_256, ChannelBinding::unsupported()),
                        _ => {
                            return Err(PgError::auth(
                                self.at.clone(),
                                "the server offers only SCRAM-SHA-256-PLUS, which needs TLS",
                            ))
                        }
                    };
                    let s = ScramSha256::new(password()?.as_bytes(), binding);
                    frontend::sasl_initial_response(mechanism, s.message(), &mut self.wbuf)
                        .map_err(|e| self.io_err(e))?;
                    scram = Some(s);
                    self.flush()?;
                }
                Message::AuthenticationSaslContinue(body) => {
                    let s = scram.as_mut().ok_or_else(|| PgError::protocol("SASL continue before start"))?;
                    s.update(body.data()).map_err(|e| self.scram_err(e))?;
                    frontend::sasl_response(s.message(), &mut self.wbuf).map_err(|e| self.io_err(e))?;
                    self.flush()?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let s = scram.as_mut().ok_or_else(|| PgError::protocol("SASL final before start"))?;
                    s.finish(body.data()).map_err(|e| self.scram_err(e))?;
                }
                Message::BackendKeyData(body) => {
                    // The host and settings are filled in by `connect_to`.
                    self.cancel = Some(Cancel {
                        cfg: cfg.clone(),
                        host: Host::Tcp(String::new(), 0),
                        process_id: body.process_id(),
                        secret_key: body.secret_key(),
                    });
                }
                Message::ParameterStatus(_) | Message::NoticeResponse(_) => {}
                Message::ReadyForQuery(body) => {
                    self.status = body.status();
                    return Ok(());
                }
                Message::ErrorResponse(body) => {
                    self.broken = true;
                    let e = server_error(&body);
                    if let PgError::Server { code, message } = &e {
                        if code.starts_with("28") {
                            // The server's error, with its SQLSTATE, is the cause.
                            let reason = format!("{message} ({code})");
                            return Err(PgError::Auth {
                                at: self.at.clone(),
                                reason,
                                source: Some(Arc::new(e)),
                            });
                        }
                    }
                    return Err(e);
                }
                _ => {
                    self.broken = true;
                    return Err(PgError::protocol("unexpected message while logging in"));
                }
            }
        }
    }

    /// Runs `sql` (one or more statements, no parameters) with the simple query
    /// protocol; rows are ignored.
    pub(crate) fn simple(&mut self, sql: &str) -> Result<(), PgError> {
        self.usable()?;
        frontend::query(sql, &mut self.wbuf).map_err(|e| self.io_err(e))?;
        self.flush()?;
        let mut error = None;
        loop {
            match self.read_message()? {
                Message::ErrorResponse(body) => error = Some(server_error(&body)),
                Message::ReadyForQuery(body) => {
                    self.status = body.status();
                    return error.map_or(Ok(()), Err);
                }
                _ => {}
            }
        }
    }

    /// Runs `stmts` in order, as one pipeline ended by a single Sync: outside
    /// an explicit transaction they form one implicit transaction, committed
    /// when all succeed and rolled back if any fails. Returns each statement's
    /// rows.
    pub(crate) fn pipeline(&mut self, stmts: &[Stmt<'_>]) -> Result<Vec<Vec<PgRow>>, PgError> {
        self.usable()?;
        // Which statements are parsed (prepared) by this pipeline.
        let mut parsing: Vec<Option<String>> = Vec::with_capacity(stmts.len());
        for s in stmts {
            let name = match self.prepared.get(s.sql) {
                Some(name) => {
                    parsing.push(None);
                    name.clone()
                }
                None => {
                    let name = format!("kappa{}", self.next_statement);
                    self.next_statement += 1;
                    frontend::parse(&name, s.sql, s.params.iter().map(Param::oid), &mut self.wbuf)
                        .map_err(|e| self.io_err(e))?;
                    parsing.push(Some(name.clone()));
                    name
                }
            };
            let bound = frontend::bind(
                "",
                &name,
                Some(1),
                s.params.iter(),
                |p, buf| p.write(buf),
                Some(1),
                &mut self.wbuf,
            );
            if let Err(e) = bound {
                // Nothing was sent yet: drop what was written and stay usable.
                self.wbuf.clear();
                return Err(bind_error(e));
            }
            frontend::execute("", 0, &mut self.wbuf).map_err(|e| self.io_err(e))?;
            if let Some((firsts, seconds)) = s.copy_in {
                // Sent right behind the COPY: the server reads it once the
                // COPY starts, and skips it (as everything up to the Sync) if
                // a statement before failed.
                if let Err(e) = write_copy_pairs(firsts, seconds, &mut self.wbuf) {
                    self.wbuf.clear();
                    return Err(e);
                }
            }
        }
        frontend::sync(&mut self.wbuf);
        self.flush()?;

        let mut results: Vec<Vec<PgRow>> = Vec::with_capacity(stmts.len());
        let mut current: Vec<PgRow> = Vec::new();
        let mut error: Option<PgError> = None;
        let mut i = 0;
        loop {
            match self.read_message()? {
                Message::ParseComplete => {
                    if let Some(Some(name)) = parsing.get(i) {
                        if let Some(s) = stmts.get(i) {
                            self.prepared.insert(s.sql.to_owned(), name.clone());
                        }
                    }
                }
                Message::BindComplete => {}
                Message::DataRow(row) => {
                    let mut cols = Vec::new();
                    let buf = row.buffer();
                    let mut ranges = row.ranges();
                    while let Some(r) = ranges.next().map_err(|e| self.proto_err(e))? {
                        cols.push(r.and_then(|r| buf.get(r)).map(<[u8]>::to_vec));
                    }
                    current.push(cols);
                }
                Message::CommandComplete(_) | Message::EmptyQueryResponse => {
                    results.push(std::mem::take(&mut current));
                    i += 1;
                }
                Message::ErrorResponse(body) => {
                    // The server skips the rest until Sync.
                    error = Some(server_error(&body));
                }
                Message::ReadyForQuery(body) => {
                    self.status = body.status();
                    return match error {
                        Some(e) => Err(e),
                        None if results.len() == stmts.len() => Ok(results),
                        None => {
                            self.broken = true;
                            Err(PgError::protocol("the server answered fewer statements than sent"))
                        }
                    };
                }
                Message::NoticeResponse(_)
                | Message::ParameterStatus(_)
                | Message::NotificationResponse(_) => {}
                Message::NoData | Message::PortalSuspended => {}
                // The data went out with the pipeline.
                Message::CopyInResponse(_) if stmts.get(i).is_some_and(|s| s.copy_in.is_some()) => {}
                _ => {
                    self.broken = true;
                    return Err(PgError::protocol("unexpected message in a pipeline"));
                }
            }
        }
    }

    /// Runs one statement and returns its rows.
    pub(crate) fn query(&mut self, sql: &str, params: Vec<Param<'_>>) -> Result<Vec<PgRow>, PgError> {
        let mut r = self.pipeline(&[Stmt::new(sql, params)])?;
        Ok(r.pop().unwrap_or_default())
    }

    /// The transaction status after the last command: `I` idle, `T` in a
    /// transaction block, `E` in a failed one.
    pub(crate) fn status(&self) -> u8 {
        self.status
    }

    fn usable(&mut self) -> Result<(), PgError> {
        if self.broken {
            return Err(PgError::connection(self.at.clone(), "connection lost"));
        }
        self.wbuf.clear();
        Ok(())
    }

    fn flush(&mut self) -> Result<(), PgError> {
        let res = self.stream.write_all(&self.wbuf).and_then(|_| self.stream.flush());
        self.wbuf.clear();
        res.map_err(|e| self.io_err(e))
    }

    fn read_message(&mut self) -> Result<Message, PgError> {
        let mut chunk = [0u8; 16 << 10];
        loop {
            if self.rbuf.len() >= 5 {
                let len =
                    u32::from_be_bytes([self.rbuf[1], self.rbuf[2], self.rbuf[3], self.rbuf[4]]) as usize;
                if len > MAX_MESSAGE {
                    self.broken = true;
                    return Err(PgError::protocol(format!("a {len}-byte message from the server")));
                }
            }
            match Message::parse(&mut self.rbuf) {
                Ok(Some(m)) => return Ok(m),
                Ok(None) => {}
                Err(e) => return Err(self.proto_err(e)),
            }
            let n = match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(self.io_err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    )))
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    // The read timeout: the server is silent, perhaps stuck in
                    // the query (a lock, a slow plan). Ask it to cancel the
                    // query, so it does not go on holding what it holds, and
                    // drop the connection.
                    self.send_cancel();
                    return Err(self.io_err(io::Error::new(
                        e.kind(),
                        "no answer from the server within read_timeout (the query was cancelled)",
                    )));
                }
                Err(e) => return Err(self.io_err(e)),
            };
            self.rbuf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends PostgreSQL's `CancelRequest` for this session on a connection of
    /// its own (over TLS if the session's settings ask for it); best effort,
    /// bounded by the connect timeout.
    fn send_cancel(&mut self) {
        let Some(c) = &self.cancel else { return };
        let mut msg = BytesMut::new();
        frontend::cancel_request(c.process_id, c.secret_key, &mut msg);
        let timeout = c.cfg.connect_timeout;
        let sent = match &c.host {
            Host::Tcp(name, port) => (name.as_str(), *port).to_socket_addrs().ok().and_then(|mut addrs| {
                let addr = addrs.next()?;
                let tcp = TcpStream::connect_timeout(&addr, timeout).ok()?;
                tcp.set_read_timeout(Some(timeout)).ok()?;
                tcp.set_write_timeout(Some(timeout)).ok()?;
                let mut stream = match c.cfg.ssl_mode {
                    SslMode::Disable => Stream::Tcp(tcp),
                    mode => match tls::negotiate(tcp, name, mode, c.cfg.ssl_root_cert.as_deref(), &self.at)
                        .ok()?
                    {
                        Negotiated::Tls(t) => Stream::Tls(t),
                        Negotiated::Plain(t) => Stream::Tcp(t),
                    },
                };
                stream.write_all(&msg).ok()?;
                stream.flush().ok()?;
                // The server closes the connection once it has the request.
                let mut sink = [0u8; 1];
                let _ = stream.read(&mut sink);
                Some(())
            }),
            #[cfg(unix)]
            Host::Unix(dir, port) => {
                UnixStream::connect(format!("{dir}/.s.PGSQL.{port}")).ok().and_then(|mut s| {
                    s.write_all(&msg).ok()?;
                    let mut sink = [0u8; 1];
                    let _ = s.read(&mut sink);
                    Some(())
                })
            }
            #[cfg(not(unix))]
            Host::Unix(..) => None,
        };
        let _ = sent;
    }

    fn io_err(&mut self, e: io::Error) -> PgError {
        self.broken = true;
        PgError::connection_io(self.at.clone(), e)
    }

    /// A failed SCRAM exchange (a server proof that does not check out, a
    /// malformed message); the SCRAM error is the cause.
    fn scram_err(&self, e: io::Error) -> PgError {
        PgError::Auth { at: self.at.clone(), reason: e.to_string(), source: Some(Arc::new(e)) }
    }

    fn proto_err(&mut self, e: io::Error) -> PgError {
        self.broken = true;
        PgError::Protocol { reason: e.to_string(), source: Some(Arc::new(e)) }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if !self.broken {
            self.wbuf.clear();
            frontend::terminate(&mut self.wbuf);
            let _ = self.stream.write_all(&self.wbuf);
        }
    }
}

/// The protocol error for parameters that could not be encoded; the encoding
/// error is its source.
fn bind_error(e: frontend::BindError) -> PgError {
    let (reason, source): (String, Cause) = match e {
        frontend::BindError::Conversion(e) => (e.to_string(), Arc::from(e)),
        frontend::BindError::Serialization(e) => (e.to_string(), Arc::new(e)),
    };
    PgError::Protocol { reason: format!("encoding parameters: {reason}"), source: Some(source) }
}

fn server_error(body: &ErrorResponseBody) -> PgError {
    let mut code = String::new();
    let mut message = String::new();
    let mut detail = String::new();
    let mut fields = body.fields();
    while let Ok(Some(f)) = fields.next() {
        let value = || String::from_utf8_lossy(f.value_bytes()).into_owned();
        match f.type_() {
            b'C' => code = value(),
            b'M' => message = value(),
            b'D' => detail = value(),
            _ => {}
        }
    }
    if !detail.is_empty() {
        message = format!("{message} ({detail})");
    }
    PgError::Server { code, message }
}
