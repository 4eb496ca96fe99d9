//! Connection settings, read from a `postgres://` URL.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::PgError;

/// Whether and how to use TLS (`sslmode`, with libpq's meanings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Never.
    Disable,
    /// TLS if the server offers it, checking no certificate; plain otherwise
    /// (the default, as in libpq; `allow` is read as this too).
    #[default]
    Prefer,
    /// TLS or no connection; any certificate.
    Require,
    /// TLS, with a certificate that chains to a trusted root (`sslrootcert`).
    VerifyCa,
    /// Like `VerifyCa`, and the certificate must be for the host connected to.
    VerifyFull,
}

impl SslMode {
    /// The `sslmode` value.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A TCP host name or address, and port.
    Tcp(String, u16),
    /// The directory of a Unix-domain socket, and the port that names it
    /// (`<dir>/.s.PGSQL.<port>`).
    Unix(String, u16),
}

/// Which server of several a connection must reach (`target_session_attrs`,
/// with libpq's meanings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SessionAttrs {
    /// The first that answers (the default).
    #[default]
    Any,
    /// One whose sessions may write (`transaction_read_only` off): the
    /// primary, where views are indexed.
    ReadWrite,
    /// One whose sessions are read-only.
    ReadOnly,
    /// One that is not in recovery.
    Primary,
    /// One that is in recovery (a hot standby).
    Standby,
}

impl SessionAttrs {
    /// The `target_session_attrs` value.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionAttrs::Any => "any",
            SessionAttrs::ReadWrite => "read-write",
            SessionAttrs::ReadOnly => "read-only",
            SessionAttrs::Primary => "primary",
            SessionAttrs::Standby => "standby",
        }
    }
}

/// How to reach the database and where the views live in it.
///
/// ```
/// use kappa_view_postgres::{Config, Host};
/// let c = Config::from_url("postgres://app:s3cret@db.internal:6543/kappa?schema=pub1&pool_size=4")?;
/// assert_eq!(c.hosts, [Host::Tcp("db.internal".into(), 6543)]);
/// assert_eq!((c.user.as_str(), c.dbname.as_str(), c.schema.as_str()), ("app", "kappa", "pub1"));
/// assert_eq!(c.pool_size, 4);
/// # Ok::<(), kappa_view_postgres::PgError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// The servers, tried in order (at least one): a primary and its standbys,
    /// say, with [`target_session_attrs`](Self::target_session_attrs) picking
    /// the one to use.
    pub hosts: Vec<Host>,
    /// Which of the hosts a connection must reach (default any).
    pub target_session_attrs: SessionAttrs,
    /// The role to log in as.
    pub user: String,
    /// Its password, if the server asks for one (cleartext, MD5 or SCRAM-SHA-256).
    pub password: Option<String>,
    /// The database.
    pub dbname: String,
    /// The schema holding this kappa database's views (default `kappa`): one
    /// schema per kappa database, so several can share a server database.
    pub schema: String,
    /// Most connections open at once (default 8).
    pub pool_size: usize,
    /// How long connecting may take (default 10 s).
    pub connect_timeout: Duration,
    /// How long to wait for any answer of the server before the connection is
    /// taken for dead (default 120 s): a server whose host vanished without
    /// closing the connection is then retried like one that is down.
    pub read_timeout: Duration,
    /// How long an operation keeps retrying while the server is unreachable
    /// before it fails with a `StoreErrorKind::Unavailable` error (default 5 s).
    pub retry_for: Duration,
    /// Sent to the server as `application_name` (default `kappa-rs`).
    pub application_name: String,
    /// TLS over TCP (`sslmode`; default [`SslMode::Prefer`]). Unix-domain
    /// sockets never use TLS.
    pub ssl_mode: SslMode,
    /// The trusted root certificates (PEM) for `verify-ca` and `verify-full`
    /// (`sslrootcert`; default `~/.postgresql/root.crt`, as libpq).
    pub ssl_root_cert: Option<PathBuf>,
    /// Whether a password may go to the server in the clear or as an MD5 hash
    /// over TCP without TLS (`insecure_password=allow`; default no: such a
    /// login fails, naming the setting). SCRAM never sends the password and is
    /// always allowed; so is a Unix-domain socket.
    pub insecure_password: bool,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("hosts", &self.hosts)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("dbname", &self.dbname)
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Reads `postgres://[user[:password]@][host][:port][/dbname][?param=value&…]`
    /// (`postgresql://` too). Parameters: `host` (a path starting with `/` is a
    /// Unix-socket directory), `port`, `user`, `password`, `dbname`, `schema`,
    /// `pool_size`, `connect_timeout`, `read_timeout` and `retry_for` (seconds),
    /// `application_name`, `sslmode` (`disable`, `allow`/`prefer`, `require`,
    /// `verify-ca`, `verify-full`), `sslrootcert` (a PEM file) and
    /// `insecure_password=allow`. Percent-escapes are decoded. The user defaults to
    /// `$USER` (else `postgres`), the database to the user's name.
    pub fn from_url(url: &str) -> Result<Config, PgError> {
        let bad = |why: &str| PgError::Url(format!("{why} in {}", redact(url)));
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .ok_or_else(|| bad("expected postgres:// or postgresql://"))?;
        let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = main.split_once('/').unwrap_or((main, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let mut user = None;
        let mut password = None;
        if let Some(u) = userinfo {
            let (name, pw) = u.split_once(':').map_or((u, None), |(a, b)| (a, Some(b)));
            user = Some(decode(name).map_err(|e| bad(&e))?).filter(|s| !s.is_empty());
            password = pw.map(decode).transpose().map_err(|e| bad(&e))?;
        }
        // `h1:5432,h2:5433`: several hosts, each with its port or not.
        let mut names = Vec::new();
        let mut ports = Vec::new();
        for hp in hostport.split(',') {
            let (h, p) = split_host_port(hp).map_err(|e| bad(&e))?;
            names.push(h);
            ports.push(p);
        }
        let mut dbname = Some(decode(path).map_err(|e| bad(&e))?).filter(|s| !s.is_empty());
        let mut schema = "kappa".to_owned();
        let mut pool_size = 8;
        let mut connect_timeout = Duration::from_secs(10);
        let mut retry_for = Duration::from_secs(5);
        let mut read_timeout = Duration::from_secs(120);
        let mut application_name = "kappa-rs".to_owned();
        let mut ssl_mode = SslMode::Prefer;
        let mut target_session_attrs = SessionAttrs::Any;
        let mut ssl_root_cert = None;
        let mut insecure_password = false;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = decode(v).map_err(|e| bad(&e))?;
            let secs = |v: &str| {
                v.parse::<f64>()
                    .ok()
                    .and_then(|s| Duration::try_from_secs_f64(s).ok())
                    .ok_or_else(|| bad(&format!("{k}={v} is not a number of seconds")))
            };
            let positive = |d: Duration| {
                if d.is_zero() {
                    Err(bad(&format!("{k} must be more than 0 seconds")))
                } else {
                    Ok(d)
                }
            };
            match k {
                "host" => names = v.split(',').map(|h| Some(h.to_owned())).collect(),
                "port" => {
                    ports = v
                        .split(',')
                        .map(|p| p.parse().map(Some).map_err(|_| bad(&format!("port {p:?} is not a port"))))
                        .collect::<Result<_, _>>()?
                }
                "target_session_attrs" => {
                    target_session_attrs = match v.as_str() {
                        "any" => SessionAttrs::Any,
                        "read-write" => SessionAttrs::ReadWrite,
                        "read-only" => SessionAttrs::ReadOnly,
                        "primary" => SessionAttrs::Primary,
                        "standby" => SessionAttrs::Standby,
                        other => return Err(bad(&format!("unknown target_session_attrs {other:?}"))),
                    }
                }
                "user" => user = Some(v),
                "password" => password = Some(v),
                "dbname" => dbname = Some(v),
                "schema" => schema = v,
                "pool_size" => {
                    pool_size = v
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| bad(&format!("pool_size={v} is not a positive number")))?
                }
                "connect_timeout" => connect_timeout = positive(secs(&v)?)?,
                "read_timeout" => read_timeout = positive(secs(&v)?)?,
                "retry_for" => retry_for = secs(&v)?,
                "application_name" => application_name = v,
                "sslmode" => {
                    ssl_mode = match v.as_str() {
                        "disable" => SslMode::Disable,
                        "allow" | "prefer" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        "verify-ca" => SslMode::VerifyCa,
                        "verify-full" => SslMode::VerifyFull,
                        other => return Err(bad(&format!("unknown sslmode {other:?}"))),
                    }
                }
                "sslrootcert" => ssl_root_cert = Some(PathBuf::from(v)),
                "insecure_password" => {
                    insecure_password = match v.as_str() {
                        "allow" => true,
                        "refuse" => false,
                        other => return Err(bad(&format!("insecure_password={other} (allow or refuse)"))),
                    }
                }
                other => return Err(bad(&format!("unknown parameter {other:?}"))),
            }
        }
        if schema.is_empty() || schema.len() > 40 {
            return Err(bad("the schema name must have 1 to 40 bytes"));
        }
        let user = user
            .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
            .unwrap_or_else(|| "postgres".to_owned());
        // One port for every host, or one each (libpq's rule).
        if ports.len() != 1 && ports.len() != names.len() {
            return Err(bad(&format!("{} hosts but {} ports", names.len(), ports.len())));
        }
        if names.len() > 64 {
            return Err(bad("more than 64 hosts"));
        }
        let hosts = names
            .into_iter()
            .enumerate()
            .map(|(i, name)| {
                let port = ports.get(i).or(ports.first()).copied().flatten().unwrap_or(5432);
                match name.filter(|h| !h.is_empty()) {
                    Some(h) if h.starts_with('/') => Host::Unix(h, port),
                    Some(h) => Host::Tcp(h, port),
                    None => Host::Tcp("localhost".to_owned(), port),
                }
            })
            .collect();
        Ok(Config {
            hosts,
            target_session_attrs,
            dbname: dbname.unwrap_or_else(|| user.clone()),
            user,
            password,
            schema,
            pool_size,
            connect_timeout,
            retry_for,
            read_timeout,
            application_name,
            ssl_mode,
            ssl_root_cert,
            insecure_password,
        })
    }

    /// The URL without its password, for messages.
    pub fn display(&self) -> String {
        let hosts: Vec<String> = self.hosts.iter().map(Host::display).collect();
        format!("postgres://{}@{}/{} (schema {})", self.user, hosts.join(","), self.dbname, self.schema)
    }

    /// Like [`display`](Self::display), for one of the hosts.
    pub(crate) fn display_host(&self, host: &Host) -> String {
        format!("postgres://{}@{}/{} (schema {})", self.user, host.display(), self.dbname, self.schema)
    }
}

impl Host {
    fn display(&self) -> String {
        match self {
            Host::Tcp(h, p) if h.contains(':') => format!("[{h}]:{p}"),
            Host::Tcp(h, p) => format!("{h}:{p}"),
            Host::Unix(d, p) => format!("{d}/.s.PGSQL.{p}"),
        }
    }
}

/// `url` with any password replaced by `***`.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        _ => url.to_owned(),
    }
}

fn split_host_port(s: &str) -> Result<(Option<String>, Option<u16>), String> {
    if s.is_empty() {
        return Ok((None, None));
    }
    // [v6addr]:port
    if let Some(rest) = s.strip_prefix('[') {
        let (addr, after) = rest.split_once(']').ok_or("unclosed [ in host")?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().map_err(|_| format!("port {p:?} is not a port"))?),
            None if after.is_empty() => None,
            None => return Err(format!("unexpected {after:?} after the host")),
        };
        return Ok((Some(addr.to_owned()), port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) => {
            let port = p.parse().map_err(|_| format!("port {p:?} is not a port"))?;
            Ok((Some(decode(h)?).filter(|h| !h.is_empty()), Some(port)))
        }
        None => Ok((Some(decode(s)?), None)),
    }
}

/// Decodes `%XX` escapes.
fn decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or("a cut-off % escape")?;
            let hex = std::str::from_utf8(hex).map_err(|_| "a bad % escape")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad % escape %{hex}"))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "a % escape that is not UTF-8".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let c = Config::from_url("postgresql://u%40x:p%3Aw@127.0.0.1:5433/db%20name").unwrap();
        assert_eq!(c.user, "u@x");
        assert_eq!(c.password.as_deref(), Some("p:w"));
        assert_eq!(c.hosts, [Host::Tcp("127.0.0.1".into(), 5433)]);
        assert_eq!(c.dbname, "db name");
        assert_eq!(c.schema, "kappa");
        let c = Config::from_url("postgres://u@/db?host=%2Frun%2Fpostgresql&port=5434").unwrap();
        assert_eq!(c.hosts, [Host::Unix("/run/postgresql".into(), 5434)]);
        let c = Config::from_url("postgres://[::1]:7000/x").unwrap();
        assert_eq!(c.hosts, [Host::Tcp("::1".into(), 7000)]);
        let c = Config::from_url("postgres://bob@h").unwrap();
        assert_eq!((c.dbname.as_str(), c.hosts.clone()), ("bob", vec![Host::Tcp("h".into(), 5432)]));
        let c =
            Config::from_url("postgres://u@h1:5433,h2,[::1]:7/d?target_session_attrs=read-write").unwrap();
        assert_eq!(
            c.hosts,
            [Host::Tcp("h1".into(), 5433), Host::Tcp("h2".into(), 5432), Host::Tcp("::1".into(), 7)]
        );
        assert_eq!(c.target_session_attrs, SessionAttrs::ReadWrite);
        assert_eq!(c.display(), "postgres://u@h1:5433,h2:5432,[::1]:7/d (schema kappa)");
        let c = Config::from_url("postgres://u@/d?host=a,b&port=1,2").unwrap();
        assert_eq!(c.hosts, [Host::Tcp("a".into(), 1), Host::Tcp("b".into(), 2)]);
        let c = Config::from_url("postgres://u@/d?host=a,b&port=9").unwrap();
        assert_eq!(c.hosts, [Host::Tcp("a".into(), 9), Host::Tcp("b".into(), 9)]);
        let c = Config::from_url("postgres://bob@h/d?retry_for=0.5&connect_timeout=2").unwrap();
        assert_eq!(c.retry_for, Duration::from_millis(500));
        assert_eq!(c.connect_timeout, Duration::from_secs(2));
        assert_eq!((c.ssl_mode, c.insecure_password), (SslMode::Prefer, false));
        let c = Config::from_url(
            "postgres://h/d?sslmode=verify-full&sslrootcert=%2Fca.pem&insecure_password=allow",
        )
        .unwrap();
        assert_eq!(c.ssl_mode, SslMode::VerifyFull);
        assert_eq!(c.ssl_root_cert.as_deref(), Some(std::path::Path::new("/ca.pem")));
        assert!(c.insecure_password);
        for bad in [
            "postgres://h/d?host=a,b,c&port=1,2",
            "postgres://h/d?target_session_attrs=leader",
            "postgres://h/d?sslmode=sometimes",
            "postgres://h/d?insecure_password=yes",
            "mysql://x",
            "postgres://h:notaport/d",
            "postgres://h/d?frobnicate=1",
            "postgres://h/d?pool_size=0",
            "postgres://h/d?schema=",
            "postgres://h/d?retry_for=1e300",
            "postgres://h/d?connect_timeout=0",
            "postgres://h/d?read_timeout=-1",
            "postgres://h/%zz",
            "postgres://[::1/x",
        ] {
            assert!(matches!(Config::from_url(bad), Err(PgError::Url(_))), "{bad}");
        }
    }

    #[test]
    fn passwords_stay_out_of_messages() {
        let err = Config::from_url("postgres://u:hunter2@h:bad/d").unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
        let c = Config::from_url("postgres://u:hunter2@h/d").unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!c.display().contains("hunter2"));
    }
}
