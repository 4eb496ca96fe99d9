//! A view for rebuild tests: one row per entry, holding the view version
//! and how many times the entry was applied in that generation; and a
//! reader that checks, through a rebuild and its swap, that it only ever
//! sees one whole generation.

use std::ops::Bound::Unbounded;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use kappa_log::PublicKey;
use kappa_view::{Entry, Tx, View, ViewError, ViewStore};

/// One row per entry (`feed:seq`): the view version and how many times the
/// entry was applied (1, when indexing is exactly-once).
pub struct Generations {
    /// Where the rows go.
    pub store: Arc<dyn ViewStore>,
    /// The view version (written into every row).
    pub version: u64,
}

fn row_key(feed: &PublicKey, seq: u64) -> Vec<u8> {
    let mut k = feed.as_bytes()[..8].to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn row_value(version: u64, count: u64) -> Vec<u8> {
    let mut v = version.to_be_bytes().to_vec();
    v.extend_from_slice(&count.to_be_bytes());
    v
}

/// (version, count) of a row; panics on a row of another view.
fn parse(v: &[u8]) -> (u64, u64) {
    let word = |r: std::ops::Range<usize>| {
        let b: [u8; 8] =
            v.get(r).and_then(|b| b.try_into().ok()).unwrap_or_else(|| panic!("not a row: {v:?}"));
        u64::from_be_bytes(b)
    };
    (word(0..8), word(8..16))
}

impl View for Generations {
    fn store(&self) -> &dyn ViewStore {
        &*self.store
    }
    fn map(&self, entries: &[Entry], tx: &mut Tx<'_>) -> Result<(), ViewError> {
        let keys: Vec<Vec<u8>> = entries.iter().map(|e| row_key(&e.feed, e.seq)).collect();
        tx.prefetch(keys.iter().map(Vec::as_slice))?;
        for key in keys {
            let n = tx.get(&key)?.map_or(0, |v| parse(&v).1);
            tx.put(key, row_value(self.version, n + 1));
        }
        Ok(())
    }
    fn version(&self) -> u64 {
        self.version
    }
}

/// The whole view, as a reader sees it in one scan: its version (`None` for
/// an empty view) and its rows. Panics if the rows mix versions or an entry
/// was applied other than once.
pub fn snapshot(store: &dyn ViewStore) -> (Option<u64>, usize) {
    let rows = store.scan((Unbounded, Unbounded), false, None).unwrap_or_else(|e| panic!("scan: {e}"));
    let mut version = None;
    for (k, v) in &rows {
        let (ver, count) = parse(v);
        assert_eq!(count, 1, "entry {k:02x?} applied {count} times");
        match version {
            None => version = Some(ver),
            Some(v) => assert_eq!(v, ver, "a reader saw rows of versions {v} and {ver} at once"),
        }
    }
    (version, rows.len())
}

/// Runs `during` (which starts a rebuild and waits until it is done) while a
/// reader in another thread scans `store` in a loop, and checks that every
/// scan saw the whole old view (`old`: version and rows) until the first one
/// that saw the whole new view (`new`), and only the new one from then on:
/// never a blank, partial or mixed view. Returns how many old and new views
/// the reader saw (each at least one).
pub fn reader_sees_one_whole_view(
    store: Arc<dyn ViewStore>,
    old: (u64, usize),
    new: (u64, usize),
    during: impl FnOnce(),
) -> (u32, u32) {
    assert_eq!(snapshot(&*store), (Some(old.0), old.1), "the old view, before");
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let store = store.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut olds, mut news) = (0u32, 0u32);
            loop {
                let last = stop.load(Ordering::SeqCst);
                let (v, n) = snapshot(&*store);
                if v == Some(old.0) && n == old.1 && news == 0 {
                    olds += 1;
                } else if v == Some(new.0) && n == new.1 {
                    news += 1;
                } else {
                    panic!(
                        "a reader saw version {v:?} with {n} rows (after {olds} old and {news} new views)"
                    );
                }
                if last {
                    return (olds, news);
                }
            }
        })
    };
    during();
    stop.store(true, Ordering::SeqCst);
    let (olds, news) = reader.join().unwrap_or_else(|_| panic!("the reader failed (see above)"));
    assert!(olds >= 1 && news >= 1, "the reader ran through the swap ({olds} old, {news} new views)");
    assert_eq!(snapshot(&*store), (Some(new.0), new.1), "the new view, after");
    (olds, news)
}
