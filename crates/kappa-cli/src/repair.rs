//! `kappa check` and `kappa repair`: find damage in a database's feeds, and
//! mend it from the feeds' own files, from a peer, or (only when asked) by
//! giving up what cannot be proven.

use kappa_core::log::{CheckReport, SharedFeed};
use kappa_core::multifeed::DamagedFeed;
use kappa_core::protocol::Selection;
use serde_json::{json, Value};

use crate::db::{Db, WRITER};
use crate::error::{CliError, Result};
use crate::output::{escape, Out};

/// One feed's findings.
struct Finding {
    dir: u64,
    name: Option<String>,
    key: String,
    writer: bool,
    report: CheckReport,
    repaired: Vec<String>,
}

impl Finding {
    fn healthy(&self) -> bool {
        self.report.is_healthy(self.writer)
    }

    /// What is wrong, in words, and what would fix it.
    fn problems(&self) -> Vec<String> {
        let r = &self.report;
        let mut out = Vec::new();
        if r.secret_key_lost {
            out.push("its secret key is missing or damaged: it can no longer take writes (read-only)".into());
        }
        if r.signed_length > r.length {
            out.push(format!(
                "it signed {} entries but its files prove only {}: appends are refused until a peer restores \
                 them (`kappa repair --from ADDR`) or the loss is accepted (`kappa repair --accept-loss`)",
                r.signed_length, r.length
            ));
        }
        if self.writer && r.missing > 0 {
            out.push(format!(
                "{} of its {} entries are lost (holes); `kappa repair --from ADDR` fetches them from a peer",
                r.missing, r.length
            ));
        }
        if r.damaged_block_count > 0 {
            out.push(format!(
                "{} entries are damaged (first: {:?}); `kappa repair` turns them into holes or rebuilds their nodes",
                r.damaged_block_count,
                &r.damaged_blocks[..r.damaged_blocks.len().min(5)]
            ));
        }
        if r.damaged_node_count > 0 {
            out.push(format!(
                "{} tree nodes are damaged; `kappa repair` rebuilds or drops them",
                r.damaged_node_count
            ));
        }
        if !r.damaged_signatures.is_empty() {
            out.push(format!(
                "{} older signatures are damaged; `kappa repair` restores them",
                r.damaged_signatures.len()
            ));
        }
        if !r.signature_ok {
            out.push("the newest signature does not verify".into());
        }
        out
    }

    fn json(&self) -> Value {
        let r = &self.report;
        json!({
            "dir": self.dir, "name": self.name, "key": self.key, "writable": self.writer,
            "healthy": self.healthy(), "length": r.length, "signed_length": r.signed_length,
            "intact": r.intact, "missing": r.missing, "damaged_blocks": r.damaged_block_count,
            "damaged_nodes": r.damaged_node_count, "damaged_signatures": r.damaged_signatures.len(),
            "secret_key_lost": r.secret_key_lost, "repaired_at_open": self.repaired,
            "problems": self.problems(),
        })
    }
}

fn feed_name(name: &Option<String>) -> String {
    name.as_deref().map(|n| escape(n).into_owned()).unwrap_or_else(|| "-".into())
}

fn check_feeds(db: &Db) -> Result<Vec<Finding>> {
    let mut out = Vec::new();
    for (dir, name, feed) in db.kappa.multifeed().feed_infos() {
        out.push(check_feed(dir, name, &feed)?);
    }
    Ok(out)
}

fn check_feed(dir: u64, name: Option<String>, feed: &SharedFeed) -> Result<Finding> {
    let mut f = feed.lock();
    let report = f.check().map_err(|e| CliError::Runtime(format!("checking feed {dir}: {e}")))?;
    let writer = f.is_writable() || f.recovery().secret_key.is_some();
    Ok(Finding {
        dir,
        name,
        key: feed.public_key().to_hex(),
        writer,
        report,
        repaired: f.recovery().repaired.clone(),
    })
}

fn print_damaged(out: &Out, d: &DamagedFeed) -> Result<()> {
    out.emit(
        format!("feed {} ({}): DAMAGED, cannot be opened: {}", d.dir, feed_name(&d.name), d.error),
        || json!({"dir": d.dir, "name": d.name, "healthy": false, "error": d.error.to_string()}),
    )
}

fn print_finding(out: &Out, f: &Finding) -> Result<()> {
    let r = &f.report;
    let state = if f.healthy() { "ok" } else { "DAMAGED" };
    out.emit(
        format!(
            "feed {} ({}) {}: {state}: length {}, {} intact, {} missing{}",
            f.dir,
            feed_name(&f.name),
            &f.key[..16],
            r.length,
            r.intact,
            r.missing,
            if f.writer { "" } else { " (a replica: holes are normal)" }
        ),
        || f.json(),
    )?;
    if !out.json {
        for note in &f.repaired {
            out.text(format!("  repaired on open: {note}"))?;
        }
        for p in f.problems() {
            out.text(format!("  {p}"))?;
        }
    }
    Ok(())
}

/// `kappa check`: every feed verified; exits non-zero on damage.
pub(crate) fn check(db: &Db, out: &Out) -> Result<()> {
    let damaged = db.kappa.multifeed().damaged_feeds();
    for d in &damaged {
        print_damaged(out, d)?;
    }
    let findings = check_feeds(db)?;
    for f in &findings {
        print_finding(out, f)?;
    }
    let bad = damaged.len() + findings.iter().filter(|f| !f.healthy()).count();
    if bad > 0 {
        return Err(CliError::Damaged(format!(
            "{bad} damaged feed(s) in {}; `kappa repair` mends what the files can, `kappa repair --from ADDR` \
             fetches the rest from a peer",
            db.dir.display()
        )));
    }
    if findings.is_empty() && !out.json {
        out.text("(no feeds)")?;
    }
    Ok(())
}

/// `kappa repair`: mend from the feeds' own files, then from `from` if given,
/// then give up what cannot be proven if `accept_loss`. Exits non-zero if
/// anything is still damaged.
pub(crate) async fn repair(
    db: &Db,
    out: &Out,
    from: Option<(async_std::net::TcpStream, String)>,
    accept_loss: bool,
) -> Result<()> {
    let mf = db.kappa.multifeed();
    let still =
        mf.reopen_damaged().map_err(|e| CliError::Runtime(format!("reopening damaged feeds: {e}")))?;
    // A writer whose name was lost gets the local writer's name back if that
    // name is free (there is then no other candidate for it).
    if mf.writer_exists(WRITER).is_none() {
        if let Some((dir, _, _)) =
            mf.feed_infos().into_iter().find(|(_, n, f)| n.is_none() && f.is_writable())
        {
            mf.set_local_name(dir, WRITER)
                .map_err(|e| CliError::Runtime(format!("naming feed {dir}: {e}")))?;
            out.text(format!("feed {dir}: its lost local name restored as {WRITER:?}"))?;
        }
    }
    for (dir, _, feed) in mf.feed_infos() {
        let mut f = feed.lock();
        let report = f.check().map_err(|e| CliError::Runtime(format!("checking feed {dir}: {e}")))?;
        let changed =
            f.repair(&report).map_err(|e| CliError::Runtime(format!("repairing feed {dir}: {e}")))?;
        if changed > 0 {
            out.text(format!(
                "feed {dir}: {changed} damaged entries, nodes or signatures mended from its own files"
            ))?;
        }
    }
    if let Some((stream, addr)) = from {
        let report = crate::net::sync_stream(
            &db.kappa,
            stream,
            &addr,
            Selection::All,
            crate::net::PeerLimits::default(),
            out.bars(),
        )
        .await?;
        out.text(format!("fetched from {addr}: {}", crate::net::report_summary(&report)))?;
    }
    if accept_loss {
        for (dir, _, feed) in mf.feed_infos() {
            let lost =
                feed.lock().accept_loss().map_err(|e| CliError::Runtime(format!("feed {dir}: {e}")))?;
            if lost > 0 {
                out.text(format!(
                    "feed {dir}: gave up {lost} signed entries that could not be restored; peers that hold them \
                     will refuse this feed's new entries"
                ))?;
            }
        }
    }
    mf.sync_all().map_err(|e| CliError::Runtime(e.to_string()))?;
    let findings = check_feeds(db)?;
    for d in &still {
        print_damaged(out, d)?;
    }
    for f in &findings {
        print_finding(out, f)?;
    }
    let bad = still.len() + findings.iter().filter(|f| !f.healthy()).count();
    if bad > 0 {
        return Err(CliError::Damaged(format!(
            "{bad} feed(s) still damaged; fetch from a peer that holds them with `kappa repair --from ADDR`"
        )));
    }
    out.text("repaired: every feed verifies")?;
    Ok(())
}
