//! `kappa status`, and the status file a running `kappa serve` publishes.
//!
//! A database is locked while `kappa serve` runs, so another process cannot
//! open it to ask. Instead, `serve` rewrites `DIR/kappa-status.json` every
//! second (and once before it prints its listening address): its pid, when
//! it was written, the address it listens on and [`KappaStatus`]. Each
//! rewrite is crash-safe (a temporary file, fsync, rename, directory fsync),
//! so a reader sees a whole file or the previous one; `serve` removes the
//! file when it stops. `kappa status` uses the file while the process that
//! wrote it is alive and wrote it within the last [`FRESH`]; otherwise it
//! opens the database itself and reports what is stored (no peers; views
//! from their stored progress, nothing indexed).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kappa_core::{Kappa, KappaStatus};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{CliError, Result};
use crate::output::{columns, escape, short_id, Out};

/// The status file, in the database directory.
pub(crate) const STATUS_FILE: &str = "kappa-status.json";

/// How often `serve` rewrites the status file.
pub(crate) const EVERY: Duration = Duration::from_secs(1);

/// A status file older than this is not trusted (its writer hangs or died).
pub(crate) const FRESH: Duration = Duration::from_secs(10);

/// What the status file holds.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Published {
    /// The serving process.
    pub(crate) pid: u32,
    /// When the file was written (Unix milliseconds).
    pub(crate) written_at_ms: u64,
    /// Where it listens.
    pub(crate) listening: String,
    /// The database's status.
    pub(crate) status: KappaStatus,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Writes `bytes` to `path` crash-safely: temporary file, fsync, rename,
/// directory fsync.
fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Writes the status file of a serving database.
pub(crate) fn publish(kappa: &Kappa, path: &Path, listening: &str) -> Result<()> {
    let status = kappa.status()?;
    let p = Published {
        pid: std::process::id(),
        written_at_ms: now_ms(),
        listening: listening.to_owned(),
        status,
    };
    let bytes = serde_json::to_vec(&p).map_err(|e| CliError::Runtime(format!("status: {e}")))?;
    replace_file(path, &bytes).map_err(|e| CliError::Runtime(format!("writing {}: {e}", path.display())))
}

/// Removes the status file (when `serve` stops).
pub(crate) fn unpublish(path: &Path) {
    let _ = std::fs::remove_file(path);
}

/// The status a live `kappa serve` published for `dir`, if one does.
fn published(dir: &Path) -> Option<(Published, u64)> {
    let bytes = std::fs::read(dir.join(STATUS_FILE)).ok()?;
    let p: Published = serde_json::from_slice(&bytes).ok()?;
    let age = now_ms().saturating_sub(p.written_at_ms);
    let alive = Path::new(&format!("/proc/{}", p.pid)).exists() && p.pid != std::process::id();
    (alive && age <= FRESH.as_millis() as u64).then_some((p, age))
}

/// Where `kappa status` got its figures.
enum Source {
    /// From a running server's status file.
    Serving { pid: u32, listening: String, age_ms: u64 },
    /// From the database, opened by this command.
    Opened,
}

/// `kappa status`.
pub(crate) fn run(dir: &Path, key: Option<[u8; 32]>, views_url: Option<&str>, out: &Out) -> Result<()> {
    let (status, source) = match published(dir) {
        Some((p, age_ms)) => (p.status, Source::Serving { pid: p.pid, listening: p.listening, age_ms }),
        None => {
            // Open the view file only if there is one (nothing is created for a
            // status), and index nothing: stored views report their progress.
            let views = if views_url.is_some() || dir.join(kappa_core::VIEWS_FILE).exists() {
                crate::db::Views::Stored
            } else {
                crate::db::Views::None
            };
            let db = crate::db::open_with(dir, key, views, views_url).map_err(|e| match e {
                CliError::Unavailable(m) if m.contains("in use by another process") => CliError::Unavailable(
                    format!("{m} (it publishes no status: only a running `kappa serve` does)"),
                ),
                other => other,
            })?;
            let status = db.kappa.status();
            let closed = db.close();
            let status = status?;
            closed?;
            (status, Source::Opened)
        }
    };
    print(dir, &status, &source, out)
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn print(dir: &Path, s: &KappaStatus, source: &Source, out: &Out) -> Result<()> {
    if out.json {
        let mut v = serde_json::to_value(s).map_err(|e| CliError::Runtime(format!("status: {e}")))?;
        v["serving"] = match source {
            Source::Serving { pid, listening, age_ms } => {
                json!({"pid": pid, "listening": listening, "age_ms": age_ms})
            }
            Source::Opened => Value::Null,
        };
        return out.json_line(&v);
    }
    let mode = if s.seed { ", seed mode (views off)" } else { "" };
    out.text(match source {
        Source::Serving { pid, listening, age_ms } => format!(
            "database {}: served by pid {pid} on {listening}{mode} (as of {:.1}s ago)",
            escape(&dir.display().to_string()),
            *age_ms as f64 / 1000.0
        ),
        Source::Opened => format!("database {}: not being served", escape(&dir.display().to_string())),
    })?;
    out.text(format!(
        "feeds: {} ({} writable), {} entries",
        s.feeds.count, s.feeds.writable, s.feeds.entries
    ))?;
    if s.peers.is_empty() {
        out.text("peers: none connected")?;
    } else {
        let mut rows =
            vec![["PEER", "WIRE", "CONNECTED", "FEEDS", "RECEIVED", "SENT", "BUFFERED", "SYNCING"]
                .map(String::from)
                .to_vec()];
        for p in &s.peers {
            let syncing = if p.syncing.is_empty() {
                if p.verified {
                    "up to date".to_owned()
                } else {
                    "handshake".to_owned()
                }
            } else {
                p.syncing
                    .iter()
                    .take(3)
                    .map(|f| {
                        let k = f.key.as_deref().map_or_else(|| "?".to_owned(), short_id);
                        format!("{k} {}/{}", f.ours, f.theirs)
                    })
                    .chain((p.syncing.len() > 3).then(|| format!("+{} more", p.syncing.len() - 3)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            rows.push(vec![
                escape(p.peer.as_deref().unwrap_or("?")).into_owned(),
                p.wire.map_or_else(|| "-".to_owned(), |w| w.to_string()),
                format!("{:.1}s", p.connected_ms as f64 / 1000.0),
                p.feeds.to_string(),
                format!("{} blocks", p.blocks_received),
                format!("{} blocks", p.blocks_sent),
                bytes(p.buffered_bytes),
                syncing,
            ]);
        }
        out.text(format!("peers: {}", s.peers.len()))?;
        for line in columns(&rows) {
            out.text(format!("  {line}"))?;
        }
    }
    if s.views.is_empty() {
        out.text(if s.seed { "views: off (seed mode)" } else { "views: none" })?;
    } else {
        let mut rows = vec![["VIEW", "STATUS", "INDEXED", "ERROR"].map(String::from).to_vec()];
        for v in &s.views {
            let pct = v.indexed.saturating_mul(100).checked_div(v.available).unwrap_or(100);
            let status = match &v.rebuild {
                None => v.status.clone(),
                Some(r) => format!(
                    "{}, rebuilding beside the live rows (version {}, {} entries): {}",
                    v.status,
                    r.live_version.map_or("?".to_owned(), |n| n.to_string()),
                    r.live_indexed,
                    r.reason
                ),
            };
            rows.push(vec![
                escape(&v.name).into_owned(),
                status,
                format!("{}/{} ({pct}%)", v.indexed, v.available),
                v.error.clone().unwrap_or_default(),
            ]);
        }
        out.text("views:")?;
        for line in columns(&rows) {
            out.text(format!("  {line}"))?;
        }
    }
    let fds = s.files.descriptors.map(|d| format!(", {d} descriptors in all")).unwrap_or_default();
    out.text(format!(
        "open files: {} feed files of {} allowed (peak {}, {} closed to make room){fds}",
        s.files.open, s.files.capacity, s.files.peak_open, s.files.evicted
    ))?;
    let mem = match (s.memory.rss_bytes, s.memory.peak_rss_bytes) {
        (Some(r), Some(p)) => format!("memory: {} resident (peak {})", bytes(r), bytes(p)),
        (Some(r), None) => format!("memory: {} resident", bytes(r)),
        _ => "memory: unknown on this system".to_owned(),
    };
    out.text(mem)
}

/// The path of the status file of `dir`.
pub(crate) fn path(dir: &Path) -> PathBuf {
    dir.join(STATUS_FILE)
}
