//! A bounded pool of connections, and retrying while the server is away.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::error::PgError;
use crate::wire::Conn;

struct State {
    idle: Vec<Conn>,
    /// Connections in existence (idle or lent out).
    open: usize,
}

/// At most `cfg.pool_size` connections, made on demand and reused.
pub(crate) struct Pool {
    cfg: Config,
    state: Mutex<State>,
    returned: Condvar,
}

impl Pool {
    pub(crate) fn new(cfg: Config) -> Pool {
        Pool { cfg, state: Mutex::new(State { idle: Vec::new(), open: 0 }), returned: Condvar::new() }
    }

    pub(crate) fn config(&self) -> &Config {
        &self.cfg
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on a pooled connection (once; see [`retrying`]).
    pub(crate) fn with_conn<T>(&self, f: impl FnOnce(&mut Conn) -> Result<T, PgError>) -> Result<T, PgError> {
        let mut conn = self.take()?;
        let result = f(&mut conn);
        self.give_back(conn);
        result
    }

    fn take(&self) -> Result<Conn, PgError> {
        let mut st = self.lock();
        loop {
            if let Some(c) = st.idle.pop() {
                return Ok(c);
            }
            if st.open < self.cfg.pool_size {
                st.open += 1;
                drop(st);
                return Conn::connect(&self.cfg).inspect_err(|_| {
                    self.lock().open -= 1;
                    self.returned.notify_one();
                });
            }
            st = self.returned.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn give_back(&self, conn: Conn) {
        let mut st = self.lock();
        if conn.is_broken() || conn.status() != b'I' {
            // A broken connection usually means the server went away: the idle
            // ones are most likely dead too, so they are dropped as well.
            st.open -= 1 + st.idle.len();
            st.idle.clear();
            drop(conn);
        } else {
            st.idle.push(conn);
        }
        self.returned.notify_all();
    }
}

/// Runs `op` until it succeeds, fails for good, or `retry_for` has passed since
/// the first failure while the server is unreachable (backing off from 20 ms to
/// 1 s between tries).
pub(crate) fn retrying<T>(
    retry_for: Duration,
    mut op: impl FnMut() -> Result<T, PgError>,
) -> Result<T, PgError> {
    let mut started: Option<Instant> = None;
    let mut delay = Duration::from_millis(20);
    loop {
        match op() {
            Err(e) if e.is_transient() => {
                let now = Instant::now();
                let waited = now.duration_since(*started.get_or_insert(now));
                if waited >= retry_for {
                    return Err(e);
                }
                std::thread::sleep(delay.min(retry_for - waited));
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            r => return r,
        }
    }
}
