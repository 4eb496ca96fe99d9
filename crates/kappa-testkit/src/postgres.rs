//! Throwaway PostgreSQL clusters for tests and benchmarks.
//!
//! [`TempCluster::start`] runs `initdb` and `pg_ctl` from the machine's
//! PostgreSQL (`$KAPPA_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`, else
//! `PATH`) on a free loopback port, in a new directory under the system's temp
//! directory, and removes it all when dropped. PostgreSQL refuses to run as
//! root: as root, the cluster runs as the `postgres` user (`runuser`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// A child process, killed (and reaped) when this is dropped.
#[derive(Debug)]
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A PostgreSQL server of its own, stopped and deleted on drop.
#[derive(Debug)]
pub struct TempCluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
    /// The superuser's password, when logins need one.
    password: Option<String>,
}

/// A cluster for a test, or `None` after a loud message when none can be
/// started outside CI.
///
/// # Panics
/// Under CI (`CI` set) when no cluster can be started: `.ci/run` installs
/// PostgreSQL, so a missing server never passes silently.
pub fn cluster_or_skip(test: &str) -> Option<TempCluster> {
    match TempCluster::start() {
        Ok(c) => Some(c),
        Err(e) if std::env::var_os("CI").is_some() => panic!("{test}: cannot start PostgreSQL: {e}"),
        Err(e) => {
            eprintln!("\n*** SKIPPING {test}: cannot start a PostgreSQL server: {e} ***\n");
            None
        }
    }
}

fn find_bin() -> Result<PathBuf, String> {
    if let Some(b) = std::env::var_os("KAPPA_PG_BIN") {
        return Ok(PathBuf::from(b));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .find(|p| p.join("initdb").is_file() && p.join("pg_ctl").is_file())
        .ok_or_else(|| "no initdb found (install PostgreSQL, or set KAPPA_PG_BIN)".to_owned())
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.trim_ascii() == b"0").unwrap_or(false)
}

impl TempCluster {
    /// Initializes and starts a cluster where every login is trusted (about
    /// half a second).
    pub fn start() -> Result<TempCluster, String> {
        Self::start_with_auth("trust", None)
    }

    /// Like [`start`](Self::start), with `auth` (`scram-sha-256`, `md5`,
    /// `password`, `trust`) for every login and `password` for the `postgres`
    /// superuser.
    pub fn start_with_auth(auth: &str, password: Option<&str>) -> Result<TempCluster, String> {
        let cluster = Self::init(auth, password)?;
        cluster.start_on_a_free_port()
    }

    /// A cluster with TLS on (`ssl = on`) and only TLS logins over TCP
    /// (`hostssl`, SCRAM-SHA-256 with `password` for `postgres`), its server
    /// certificate (for the name `localhost` only) signed by a test CA made
    /// here with `openssl`. Also returns the CA's certificate file and that
    /// of another CA, which signed nothing of the server's.
    pub fn start_with_tls(password: &str) -> Result<(TempCluster, PathBuf, PathBuf), String> {
        let cluster = Self::init("scram-sha-256", Some(password))?;
        let tls = cluster.dir.join("tls");
        std::fs::create_dir_all(&tls).map_err(|e| e.to_string())?;
        let openssl = |args: &[&str]| -> Result<(), String> {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&tls)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
                .map_err(|e| format!("openssl: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
            }
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        for (name, cn) in [("ca", "kappa test CA"), ("other-ca", "another test CA")] {
            let (key, crt, subj) = (format!("{name}.key"), format!("{name}.crt"), format!("/CN={cn}"));
            let mut args = vec!["req", "-x509", "-days", "2", "-subj", &subj, "-keyout", &key, "-out", &crt];
            args.extend(ec);
            openssl(&args)?;
        }
        let mut args = vec!["req", "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr"];
        args.extend(ec);
        openssl(&args)?;
        std::fs::write(tls.join("san.ext"), "subjectAltName=DNS:localhost\n").map_err(|e| e.to_string())?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
        ])?;
        let data = cluster.data();
        for f in ["server.crt", "server.key"] {
            std::fs::copy(tls.join(f), data.join(f)).map_err(|e| format!("{f}: {e}"))?;
        }
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).map_err(|e| e.to_string())?;
        text.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        std::fs::write(&conf, text).map_err(|e| e.to_string())?;
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\nhostssl all all ::1/128 scram-sha-256\n",
        )
        .map_err(|e| e.to_string())?;
        if cluster.as_postgres {
            cluster.run(Command::new("chown").args(["-R", "postgres"]).arg(&data), false)?;
        }
        cluster.run(Command::new("chmod").arg("600").arg(data.join("server.key")), false)?;
        let (ca, other) = (tls.join("ca.crt"), tls.join("other-ca.crt"));
        Ok((cluster.start_on_a_free_port()?, ca, other))
    }

    /// A hot standby of this (running) cluster: `pg_basebackup -R` of it into
    /// a new directory, started on a port of its own, streaming from it.
    pub fn standby(&self) -> Result<TempCluster, String> {
        let cluster = Self::new_dir(self.bin.clone(), self.as_postgres, self.password.clone())?;
        let mut backup = cluster.pg("pg_basebackup");
        backup
            .env("PGPASSWORD", self.password.as_deref().unwrap_or(""))
            .arg("-D")
            .arg(cluster.data())
            .args(["-R", "-X", "stream", "-h", "127.0.0.1", "-U", "postgres", "-p", &self.port.to_string()]);
        cluster.run(&mut backup, true)?;
        cluster.start_on_a_free_port()
    }

    /// Promotes a standby to a primary, waiting until it is one.
    pub fn promote(&self) -> Result<(), String> {
        self.run(self.pg("pg_ctl").arg("-D").arg(self.data()).args(["-w", "-t", "60", "promote"]), true)
    }

    /// A new, empty cluster directory (owned by `postgres` when run as root).
    fn new_dir(bin: PathBuf, as_postgres: bool, password: Option<String>) -> Result<TempCluster, String> {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kappa-pg-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let cluster = TempCluster { dir, bin, port: 0, as_postgres, password };
        if as_postgres {
            cluster.run(Command::new("chown").args(["-R", "postgres"]).arg(&cluster.dir), false)?;
        }
        Ok(cluster)
    }

    /// `initdb` a new cluster (not started).
    fn init(auth: &str, password: Option<&str>) -> Result<TempCluster, String> {
        let bin = find_bin()?;
        let cluster = Self::new_dir(bin, is_root(), password.map(str::to_owned))?;
        let pwfile = cluster.dir.join("pwfile");
        std::fs::write(&pwfile, password.unwrap_or("")).map_err(|e| e.to_string())?;
        if cluster.as_postgres {
            cluster.run(Command::new("chown").args(["-R", "postgres"]).arg(&cluster.dir), false)?;
        }
        let data = cluster.data();
        let mut initdb = cluster.pg("initdb");
        initdb.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "-A",
            auth,
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ]);
        if password.is_some() {
            initdb.arg("--pwfile").arg(&pwfile);
        }
        cluster.run(&mut initdb, true)?;
        Ok(cluster)
    }

    fn start_on_a_free_port(mut self) -> Result<TempCluster, String> {
        let mut last = String::new();
        for _ in 0..5 {
            self.port = free_port()?;
            match self.start_again() {
                Ok(()) => return Ok(self),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn pg(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn run(&self, cmd: &mut Command, quiet: bool) -> Result<(), String> {
        if quiet {
            cmd.stdout(Stdio::null());
        }
        let out = cmd.stderr(Stdio::piped()).output().map_err(|e| format!("{cmd:?}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim()))
        }
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for the `postgres` database as the `postgres` superuser, with the
    /// views in `schema`.
    pub fn url(&self, schema: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres?schema={schema}", self.port)
    }

    /// The server's log so far (its standard error: every error it reported
    /// to a client is in it, written before the client got the answer).
    pub fn log(&self) -> String {
        std::fs::read(self.dir.join("log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Runs SQL with `psql` (for setting up odd states in tests).
    pub fn psql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .env("PGPASSWORD", self.password.as_deref().unwrap_or(""))
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres"])
            .args(["-p", &self.port.to_string(), "-d", "postgres", "-c", sql])
            .output()
            .map_err(|e| format!("psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Runs SQL with `psql` in a child process, in the background (killed
    /// when the returned guard is dropped).
    pub fn psql_in_background(&self, sql: &str) -> Result<KillOnDrop, String> {
        let child = Command::new(self.bin.join("psql"))
            .env("PGPASSWORD", self.password.as_deref().unwrap_or(""))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres"])
            .args(["-p", &self.port.to_string(), "-d", "postgres", "-c", sql])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("psql: {e}"))?;
        Ok(KillOnDrop(child))
    }

    /// Stops the server at once, as a crash would (`pg_ctl stop -m immediate`).
    pub fn kill(&self) -> Result<(), String> {
        self.run(self.pg("pg_ctl").arg("-D").arg(self.data()).args(["-m", "immediate", "stop"]), true)
    }

    /// Starts the (stopped) server again on the same port, waiting until it
    /// accepts connections.
    pub fn start_again(&self) -> Result<(), String> {
        let opts = format!("-p {} -k {} -c listen_addresses=127.0.0.1", self.port, self.dir.display());
        self.run(
            self.pg("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .arg("-l")
                .arg(self.dir.join("log"))
                .args(["-w", "-t", "60", "-o", &opts, "start"]),
            true,
        )
    }

    /// The cluster's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        let _ = self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("finding a free port: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}
