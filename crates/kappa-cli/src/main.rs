#![doc = include_str!("../README.md")]
#![warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cli;
mod commands;
mod db;
mod demo;
mod error;
mod net;
mod output;
mod policy;
mod progress;
mod repair;
mod status;
mod sync_check;
mod trace;

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use futures::channel::mpsc;
use kappa_core::protocol::Selection;
use serde_json::{json, Value};

use crate::cli::{Cli, Command};
use crate::db::{Db, Views};
use crate::error::{CliError, Result};
use crate::output::Out;

fn main() -> ExitCode {
    // Usage errors exit 2 (clap's convention, and ours); --help and --version 0.
    let cli = Cli::parse();
    let out = Out { json: cli.json };
    trace::init(cli.verbose);
    // redb panics on some damaged view files; kappa-view-redb catches that and
    // the view file is moved aside and rebuilt (with a warning): no panic report.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !info.location().is_some_and(|l| l.file().contains("redb-")) {
            report(info);
        }
    }));
    // Commands that touch no network run on this thread alone: async-std's
    // runtime (its executor and I/O threads) starts only for those that do.
    let networked = match &cli.command {
        Command::Demo | Command::Serve { .. } | Command::Sync { .. } => true,
        Command::Get { from, .. } | Command::Repair { from, .. } => from.is_some(),
        _ => false,
    };
    let done = if networked {
        async_std::task::block_on(run(cli, out))
    } else {
        futures::executor::block_on(run(cli, out))
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !matches!(e, CliError::BrokenPipe) {
                let mut err = std::io::stderr().lock();
                let _ = if out.json {
                    writeln!(
                        err,
                        "{}",
                        output::json_text(
                            &json!({"error": e.to_string(), "kind": e.kind(), "code": e.code()})
                        )
                    )
                } else {
                    writeln!(err, "kappa: error: {}", output::escape(&e.to_string()))
                };
            }
            ExitCode::from(e.code())
        }
    }
}

/// Runs `f` on the open database, then closes it (also after an error).
async fn with_db<F, Fut>(cli: &Cli, views: Views, f: F) -> Result<()>
where
    F: FnOnce(Db) -> Fut,
    Fut: std::future::Future<Output = (Db, Result<()>)>,
{
    let db = db::open_with(&cli.dir, cli.shared_key, views, cli.views.as_deref())?;
    let (db, result) = f(db).await;
    let threads = thread_count();
    let views_written = db.kappa.views_open_for_writing();
    let closed = db.close();
    report_io(threads, views_written);
    result.and(closed)
}

/// The threads of this process now (Linux; `None` elsewhere).
fn thread_count() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|n| n.trim().parse().ok())
}

/// With `KAPPA_IO_COUNTS` set, reports on standard error what the command cost
/// the feeds' files (positioned writes, `fdatasync`s, files opened for
/// writing), whether the view file was opened for writing, and how many
/// threads ran when the command was done, so tests can hold read-only
/// commands to writing nothing.
fn report_io(threads: Option<u64>, views_written: bool) {
    if std::env::var_os("KAPPA_IO_COUNTS").is_none() {
        return;
    }
    let c = kappa_core::storage::io_counts();
    eprintln!(
        "kappa-io: writes={} syncs={} opened_for_writing={} views_opened_for_writing={} threads={}",
        c.writes,
        c.syncs,
        c.opened_for_writing,
        u8::from(views_written),
        threads.map_or_else(|| "?".to_owned(), |t| t.to_string())
    );
}

/// A channel that yields once per Ctrl-C; a second Ctrl-C exits at once.
fn interrupts() -> Option<mpsc::UnboundedReceiver<()>> {
    static ONCE: AtomicBool = AtomicBool::new(false);
    let (tx, rx) = mpsc::unbounded();
    let set = ctrlc::set_handler(move || {
        if ONCE.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        let _ = tx.unbounded_send(());
    });
    set.ok().map(|()| rx)
}

async fn run(cli: Cli, out: Out) -> Result<()> {
    match &cli.command {
        Command::Demo => demo::run(&out).await,
        Command::Put { key, value } => {
            let (key, value) = (key.clone(), value.clone());
            with_db(&cli, Views::Stored, |db| async move {
                let r = commands::put(&db, &out, &key, &value).await;
                (db, r)
            })
            .await
        }
        Command::Get { key, from, newest, connect_timeout_ms } => {
            let key = key.clone();
            // Connect first: an unreachable peer changes nothing here.
            let peer = match from {
                Some(addr) => Some((
                    net::connect(addr, Duration::from_millis(*connect_timeout_ms)).await?,
                    addr.clone(),
                )),
                None => None,
            };
            let newest = *newest;
            with_db(&cli, Views::Stored, |db| async move {
                let fetched = match peer {
                    Some((stream, addr)) => net::sync_stream(
                        &db.kappa,
                        stream,
                        &addr,
                        Selection::Newest(newest),
                        net::PeerLimits::default(),
                        out.bars(),
                    )
                    .await
                    .and_then(|report| {
                        if !out.json {
                            let line = format!("fetched from {addr}: {}", net::report_summary(&report));
                            eprintln!("{}", output::escape(&line));
                        }
                        match sync_check::incomplete(&db.kappa, &addr, &report) {
                            Some(e) => Err(e),
                            None => Ok(()),
                        }
                    }),
                    None => Ok(()),
                };
                let r = match fetched {
                    Ok(()) => commands::get(&db, &out, &key).await,
                    Err(e) => Err(e),
                };
                (db, r)
            })
            .await
        }
        Command::Table => {
            with_db(&cli, Views::Stored, |db| async move {
                let r = commands::table(&db, &out).await;
                (db, r)
            })
            .await
        }
        Command::Append { entry } => {
            // Parsed before the database is opened: bad input changes nothing.
            let entries = commands::parse_entries(entry)?;
            with_db(&cli, Views::None, |db| async move {
                let r = commands::append(&db, &out, entries);
                (db, r)
            })
            .await
        }
        Command::Log { feed } => {
            let feed = feed.clone();
            with_db(&cli, Views::None, |db| async move {
                let r = commands::log(&db, &out, feed.as_deref());
                (db, r)
            })
            .await
        }
        Command::Feeds => {
            with_db(&cli, Views::None, |db| async move {
                let r = commands::feeds(&db, &out);
                (db, r)
            })
            .await
        }
        Command::Block { feed }
        | Command::Unblock { feed }
        | Command::Hide { feed }
        | Command::Unhide { feed } => {
            let change = match &cli.command {
                Command::Block { .. } => policy::Change::Block,
                Command::Unblock { .. } => policy::Change::Unblock,
                Command::Hide { .. } => policy::Change::Hide,
                _ => policy::Change::Unhide,
            };
            let feed = feed.clone();
            with_db(&cli, Views::Stored, |db| async move {
                let r = policy::change(&db, &out, change, &feed).await;
                (db, r)
            })
            .await
        }
        Command::Clear { feed, from, to } => {
            let (feed, from, to) = (feed.clone(), *from, *to);
            with_db(&cli, Views::Stored, |db| async move {
                let r = policy::clear(&db, &out, &feed, from, to).await;
                (db, r)
            })
            .await
        }
        Command::Du => {
            with_db(&cli, Views::None, |db| async move {
                let r = policy::du(&db, &out);
                (db, r)
            })
            .await
        }
        Command::Check => {
            with_db(&cli, Views::None, |db| async move {
                let r = repair::check(&db, &out);
                (db, r)
            })
            .await
        }
        Command::Repair { from, accept_loss, connect_timeout_ms } => {
            let peer = match from {
                Some(addr) => Some((
                    net::connect(addr, Duration::from_millis(*connect_timeout_ms)).await?,
                    addr.clone(),
                )),
                None => None,
            };
            let accept_loss = *accept_loss;
            with_db(&cli, Views::None, |db| async move {
                let r = repair::repair(&db, &out, peer, accept_loss).await;
                (db, r)
            })
            .await
        }
        Command::Views { no_wait } => {
            let no_wait = *no_wait;
            with_db(&cli, Views::Stored, |db| async move {
                let r = commands::views(&db, &out, no_wait).await;
                (db, r)
            })
            .await
        }
        Command::Status => status::run(&cli.dir, cli.shared_key, cli.views.as_deref(), &out),
        Command::Key => {
            with_db(&cli, Views::None, |db| async move {
                let r = commands::key(&db, &out);
                (db, r)
            })
            .await
        }
        Command::Serve {
            listen,
            max_peers,
            exit_when_idle_ms,
            max_connections,
            max_per_address,
            peer_timeout_ms,
            wire,
            discover,
            dht,
            no_views,
        } => {
            let addrs = net::resolve(listen)?;
            let finding = net::Finding::new(*discover, dht)?;
            let loopback_only = addrs.iter().all(|a| a.ip().is_loopback());
            if loopback_only && finding.dht.iter().any(|b| !b.ip().is_loopback()) {
                return Err(CliError::Usage(format!(
                    "--dht announces the listening port to the DHT, but {listen} is reachable only from \
                     this machine: listen on 0.0.0.0:PORT or an address the DHT's peers can reach"
                )));
            }
            if *discover && loopback_only {
                return Err(CliError::Usage(format!(
                    "--discover announces the listening port to the LAN, but {listen} is reachable only from \
                     this machine: listen on 0.0.0.0:PORT or a LAN address"
                )));
            }
            let limits = net::ServeLimits {
                max_peers: *max_peers,
                idle: exit_when_idle_ms.map(Duration::from_millis),
                caps: kappa_core::ServeOptions::default()
                    .max_connections(*max_connections)
                    .max_per_address(*max_per_address)
                    .timeout(Duration::from_millis(*peer_timeout_ms))
                    .wire(*wire),
            };
            let listen = listen.clone();
            let no_views = *no_views;
            let views = if no_views { Views::Off } else { Views::Stored };
            with_db(&cli, views, |db| async move {
                // Keep the kv view indexed as entries arrive (not in seed mode).
                let kv = if no_views { Ok(None) } else { db.kv().map(Some) };
                let r = match kv.and_then(|kv| Ok((kv, db.kappa.writer(db::WRITER)?))) {
                    Ok(_in_use) => {
                        let status_file = status::path(&db.dir);
                        net::serve(
                            db.kappa.clone(),
                            &out,
                            &listen,
                            limits,
                            interrupts(),
                            &finding,
                            &status_file,
                        )
                        .await
                    }
                    Err(e) => Err(e),
                };
                (db, r)
            })
            .await
        }
        Command::Sync {
            addr: None,
            newest,
            connect_timeout_ms,
            wire,
            discover_timeout_ms,
            peer_timeout_ms,
            discover,
            dht,
            ..
        } => {
            let finding = net::Finding::new(*discover, dht)?;
            let selection = newest.map_or(Selection::All, Selection::Newest);
            let (wire, connect) = (*wire, Duration::from_millis(*connect_timeout_ms));
            let limit = Duration::from_millis(*discover_timeout_ms);
            let peer = net::PeerLimits { wire, timeout: Duration::from_millis(*peer_timeout_ms) };
            with_db(&cli, Views::None, |db| async move {
                let r = match net::discover_one(&db.kappa, &out, &finding, limit, connect).await {
                    Ok((stream, addr)) => sync(&db, &out, stream, &addr, selection, peer).await,
                    Err(e) => Err(e),
                };
                (db, r)
            })
            .await
        }
        Command::Sync { addr: Some(addr), newest, connect_timeout_ms, wire, peer_timeout_ms, .. } => {
            // Connect first: an unreachable peer changes nothing here.
            let stream = net::connect(addr, Duration::from_millis(*connect_timeout_ms)).await?;
            let addr = addr.clone();
            let selection = newest.map_or(Selection::All, Selection::Newest);
            let peer = net::PeerLimits { wire: *wire, timeout: Duration::from_millis(*peer_timeout_ms) };
            with_db(&cli, Views::None, |db| async move {
                let r = sync(&db, &out, stream, &addr, selection, peer).await;
                (db, r)
            })
            .await
        }
    }
}

async fn sync(
    db: &Db,
    out: &Out,
    stream: async_std::net::TcpStream,
    addr: &str,
    selection: Selection,
    peer: net::PeerLimits,
) -> Result<()> {
    let report = net::sync_stream(&db.kappa, stream, addr, selection, peer, out.bars()).await?;
    for w in &report.warnings {
        eprintln!("kappa: warning: {}", output::escape(w));
    }
    let incomplete = sync_check::incomplete(&db.kappa, addr, &report);
    let verb = if incomplete.is_some() { "incomplete sync" } else { "synced" };
    out.emit(format!("{verb} with {addr}: {}", net::report_summary(&report)), || {
        let mut v = net::report_json(&db.kappa, &report);
        v["peer"] = json!(addr);
        if let (Some(v), Value::Object(x)) = (v.as_object_mut(), sync_check::exchange_json(&report)) {
            v.extend(x);
        }
        v["complete"] = json!(incomplete.is_none());
        v
    })?;
    for line in net::report_feed_lines(&db.kappa, &report) {
        out.text(line)?;
    }
    match incomplete {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
