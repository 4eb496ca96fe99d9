//! After a sync: did what the peer offered arrive?

use kappa_core::{Kappa, SyncReport};
use serde_json::{json, Value};

use crate::error::CliError;

/// The offered, requested and missing feeds, for the JSON report.
pub(crate) fn exchange_json(r: &SyncReport) -> Value {
    let hex = |keys: &[kappa_core::PublicKey]| keys.iter().map(|k| k.to_hex()).collect::<Vec<_>>();
    json!({
        "offered": hex(&r.offered),
        "requested": hex(&r.requested),
        "missing": hex(&r.missing),
        "refused": hex(&r.refused),
    })
}

/// An error naming the feeds the peer offered that did not arrive, if any: a
/// sync that left feeds behind did not do its job (exit 1).
pub(crate) fn incomplete(kappa: &Kappa, peer: &str, r: &SyncReport) -> Option<CliError> {
    if r.is_complete() {
        return None;
    }
    let feeds: Vec<String> = r
        .missing
        .iter()
        .map(|k| {
            let have = kappa.multifeed().feed(k).map(|f| {
                let f = f.lock();
                (f.len(), f.downloaded(0..f.len()))
            });
            match have {
                Some((len, n)) if len > 0 => format!("{} ({n} of {len} entries here)", k.to_hex()),
                _ => format!("{} (nothing received)", k.to_hex()),
            }
        })
        .collect();
    Some(CliError::Runtime(format!(
        "sync with {peer} incomplete: the peer offered {} feed(s), {} of those we asked for did not arrive: {} \
         (the session ended early; run the sync again)",
        r.offered.len(),
        r.missing.len(),
        feeds.join(", ")
    )))
}
