//! The feed policy commands (`block`, `unblock`, `hide`, `unhide`) and `du`.

use kappa_core::multifeed::MultifeedError;
use kappa_core::{FeedPolicy, KappaError, PolicyError, PublicKey};
use serde_json::json;

use crate::db::Db;
use crate::error::{CliError, Result};
use crate::output::{columns, escape, Out};
use crate::progress;

/// A change of a feed's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// `kappa block`.
    Block,
    /// `kappa unblock`.
    Unblock,
    /// `kappa hide`.
    Hide,
    /// `kappa unhide`.
    Unhide,
}

/// The key FEED names: a local name, a full key (also one this database
/// never held: a feed can be blocked before it arrives), or a unique prefix
/// of a known key (a feed of the set, or one the policy names).
pub(crate) fn resolve_key(db: &Db, spec: &str) -> Result<PublicKey> {
    let mf = db.kappa.multifeed();
    let infos = mf.feed_infos();
    if let Some((_, _, f)) = infos.iter().find(|(_, name, _)| name.as_deref() == Some(spec)) {
        return Ok(*f.public_key());
    }
    let lower = spec.to_ascii_lowercase();
    if lower.is_empty() || !lower.bytes().all(|b| b.is_ascii_hexdigit()) || lower.len() > 64 {
        return Err(CliError::Usage(format!(
            "unknown feed {spec:?}: not a local feed name nor a hex key (see `kappa feeds`)"
        )));
    }
    if lower.len() == 64 {
        return PublicKey::from_hex(&lower)
            .map_err(|e| CliError::Usage(format!("bad feed key {spec:?}: {e}")));
    }
    let mut known: Vec<PublicKey> = infos.iter().map(|(_, _, f)| *f.public_key()).collect();
    known.extend(mf.policy().iter().map(|(k, _)| *k));
    known.sort();
    known.dedup();
    let matches: Vec<&PublicKey> = known.iter().filter(|k| k.to_hex().starts_with(&lower)).collect();
    match matches.as_slice() {
        [k] => Ok(**k),
        [] => Err(CliError::Usage(format!(
            "unknown feed {spec:?}: no feed's key starts with it (see `kappa feeds`; a feed this database \
             never held takes its whole key)"
        ))),
        many => Err(CliError::Usage(format!(
            "ambiguous feed {spec:?}: {} feeds' keys start with it; give more digits",
            many.len()
        ))),
    }
}

/// Refusals of the policy are the user's to fix (exit 2); the rest is a
/// runtime failure.
fn policy_error(e: KappaError) -> CliError {
    match e {
        KappaError::Multifeed(MultifeedError::Policy(
            p @ (PolicyError::LocalWriter { .. } | PolicyError::Blocked { .. }),
        )) => CliError::Usage(p.to_string()),
        other => CliError::from(other),
    }
}

/// `kappa block|unblock|hide|unhide FEED`: changes the policy, then brings the
/// kv view up to date (a block or hide rebuilds it without the feed).
pub(crate) async fn change(db: &Db, out: &Out, change: Change, spec: &str) -> Result<()> {
    let key = resolve_key(db, spec)?;
    let hex = key.to_hex();
    // Refused before the views are touched: bad input changes nothing.
    let local =
        db.kappa.multifeed().name_of(&key).is_some() || db.kappa.feed(&key).is_some_and(|f| f.is_writable());
    if change == Change::Block && local {
        return Err(CliError::Usage(PolicyError::LocalWriter { key: hex }.to_string()));
    }
    // In use before the change, so the view follows it now rather than at
    // the next command.
    let kv = db.kv()?;
    let k = &db.kappa;
    let (changed, human, freed, dir) = match change {
        Change::Block => {
            let b = k.block(&key).map_err(policy_error)?;
            let human = if !b.changed {
                format!("{hex} was blocked already")
            } else {
                let removed = match b.dir {
                    Some(dir) => format!("removed its entries ({} bytes, folder {dir})", b.freed),
                    None => "this database never held it".to_owned(),
                };
                format!(
                    "blocked {hex}: {removed}; it is never offered, accepted nor shown here again \
                     (`kappa unblock` undoes this; peers keep their copies)"
                )
            };
            (b.changed, human, Some(b.freed), b.dir)
        }
        Change::Unblock => {
            let changed = k.unblock(&key).map_err(policy_error)?;
            let human = if changed {
                format!("unblocked {hex}: the next sync with a peer that holds it brings it back")
            } else {
                format!("{hex} was not blocked")
            };
            (changed, human, None, None)
        }
        Change::Hide => {
            let changed = k.hide(&key).map_err(policy_error)?;
            let human = if changed {
                format!("hid {hex}: the views leave it out (it is still kept and replicated)")
            } else {
                format!("{hex} was hidden already")
            };
            (changed, human, None, None)
        }
        Change::Unhide => {
            let changed = k.unhide(&key).map_err(policy_error)?;
            let human = if changed {
                format!("unhid {hex}: the views show it again")
            } else {
                format!("{hex} was not hidden")
            };
            (changed, human, None, None)
        }
    };
    if let Err(e) = progress::index(&kv, out.bars()).await {
        eprintln!(
            "kappa: warning: the policy changed, but updating the {} view failed: {}",
            crate::db::KV_VIEW,
            escape(&e.to_string())
        );
    }
    let policy = k.policy().get(&key);
    out.emit(human, || {
        let mut v = json!({
            "key": hex,
            "policy": policy.map_or("none", FeedPolicy::as_str),
            "changed": changed,
        });
        if let Some(freed) = freed {
            v["freed"] = json!(freed);
            v["dir"] = json!(dir);
        }
        v
    })
}

/// `kappa clear FEED [--from SEQ] [--to SEQ]`: clears the entries, then
/// brings the kv view up to date (a rebuild without them, beside the live
/// view).
pub(crate) async fn clear(db: &Db, out: &Out, spec: &str, from: Option<u64>, to: Option<u64>) -> Result<()> {
    let key = resolve_key(db, spec)?;
    let hex = key.to_hex();
    let Some(feed) = db.kappa.feed(&key) else {
        return Err(CliError::Usage(format!("feed {hex} is not in this database")));
    };
    if feed.is_writable() || db.kappa.multifeed().name_of(&key).is_some() {
        // Its entries would be gone for every peer that has not got them yet,
        // and `kappa check` would call them lost.
        return Err(CliError::Usage(format!(
            "feed {hex} is a local writer of this database: its entries exist nowhere else for sure, so              they are not cleared (hide it to keep it out of the views)"
        )));
    }
    let len = feed.len();
    let (start, end) = (from.unwrap_or(0), to.unwrap_or(len));
    if start > end {
        return Err(CliError::Usage(format!("--from {start} is after --to {end}")));
    }
    if end > len {
        return Err(CliError::Usage(format!("--to {end} is past the feed's length ({len})")));
    }
    // In use before the clear, so the view follows it now.
    let kv = db.kv()?;
    let before = allocated_of(db, &key)?;
    let cleared = db
        .kappa
        .multifeed()
        .clear(&key, start..end)
        .map_err(|e| CliError::Runtime(format!("clearing {hex} {start}..{end}: {e}")))?;
    let after = allocated_of(db, &key)?;
    let freed = before.zip(after).map(|(b, a)| b.saturating_sub(a));
    if let Err(e) = progress::index(&kv, out.bars()).await {
        eprintln!(
            "kappa: warning: the entries were cleared, but updating the {} view failed: {}",
            crate::db::KV_VIEW,
            escape(&e.to_string())
        );
    }
    let disk = match (freed, cleared.released) {
        (Some(f), true) => format!("{f} bytes of disk freed"),
        (_, true) => "their disk space given back".to_owned(),
        (_, false) if cleared.blocks > 0 => {
            "this file system cannot punch holes: the bytes were zeroed, the space stays used".to_owned()
        }
        _ => "nothing to free".to_owned(),
    };
    let human = format!(
        "cleared {} entries ({} bytes) of {hex} in {start}..{end}; {disk}; the views leave them out          (a sync may download them again)",
        cleared.blocks, cleared.bytes
    );
    out.emit(human, || {
        json!({
            "key": hex, "from": start, "to": end, "entries": cleared.blocks, "bytes": cleared.bytes,
            "released": cleared.released, "freed": freed,
        })
    })
}

/// What feed `key`'s files take on disk, holes left out.
fn allocated_of(db: &Db, key: &kappa_core::PublicKey) -> Result<Option<u64>> {
    let usage = db
        .kappa
        .multifeed()
        .disk_usage()
        .map_err(|e| CliError::Runtime(format!("measuring {}: {e}", db.dir.display())))?;
    Ok(usage.iter().find(|u| u.key.as_ref() == Some(key)).and_then(|u| u.allocated))
}

/// `kappa du`: bytes per feed folder, the view file, the total.
pub(crate) fn du(db: &Db, out: &Out) -> Result<()> {
    let usage = db
        .kappa
        .multifeed()
        .disk_usage()
        .map_err(|e| CliError::Runtime(format!("measuring {}: {e}", db.dir.display())))?;
    let views_path = db.dir.join(kappa_core::VIEWS_FILE);
    let views = std::fs::metadata(&views_path).map(|m| m.len()).unwrap_or(0);
    let mut rows = vec![vec![
        "BYTES".into(),
        "ON DISK".into(),
        "CLEARABLE".into(),
        "FOLDER".into(),
        "KEY".into(),
        "NAME".into(),
        "POLICY".into(),
    ]];
    let mut total = views;
    let known = |n: Option<u64>| n.map_or("?".to_owned(), |n| n.to_string());
    for u in &usage {
        total += u.bytes;
        let key = u.key.map(|k| k.to_hex());
        let policy = u.policy.map_or("-", FeedPolicy::as_str);
        out.json_line(&json!({
            "dir": u.dir, "key": key, "name": u.name, "policy": u.policy.map(FeedPolicy::as_str), "bytes": u.bytes,
            "allocated": u.allocated, "clearable": u.data_allocated,
        }))?;
        rows.push(vec![
            u.bytes.to_string(),
            known(u.allocated),
            known(u.data_allocated),
            u.dir.to_string(),
            key.unwrap_or_else(|| "(damaged)".into()),
            u.name.as_deref().map(|n| escape(n).into_owned()).unwrap_or_else(|| "-".into()),
            policy.into(),
        ]);
    }
    out.json_line(&json!({"views": kappa_core::VIEWS_FILE, "bytes": views}))?;
    out.json_line(&json!({"total": total}))?;
    let dash = || "-".to_owned();
    rows.push(vec![views.to_string(), dash(), dash(), dash(), kappa_core::VIEWS_FILE.into(), dash(), dash()]);
    rows.push(vec![total.to_string(), dash(), dash(), dash(), "(total)".into(), dash(), dash()]);
    for line in columns(&rows) {
        out.text(line)?;
    }
    Ok(())
}
