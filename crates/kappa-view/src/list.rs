//! Entries sorted by a key the view extracts, as kappa-view-list, with range reads.
//!
//! Unlike kappa-view-list, two entries with the same sort key are both kept
//! (ordered by feed and sequence), not overwritten by whichever was indexed last.

use std::ops::Bound;
use std::sync::{Arc, Mutex};

use futures::channel::mpsc;
use kappa_log::PublicKey;

use crate::store::prefix_range;
use crate::{Entry, Tx, View, ViewError, ViewStore};

/// An entry in a list view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListItem {
    /// Its sort key.
    pub key: Vec<u8>,
    /// Its feed.
    pub feed: PublicKey,
    /// Its sequence number.
    pub seq: u64,
    /// Its stored bytes.
    pub value: Vec<u8>,
}

/// Bounds for [`ListView::read`] (on sort keys), like level's range options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListRange {
    /// Keys greater than this.
    pub gt: Option<Vec<u8>>,
    /// Keys greater than or equal to this.
    pub gte: Option<Vec<u8>>,
    /// Keys less than this.
    pub lt: Option<Vec<u8>>,
    /// Keys less than or equal to this.
    pub lte: Option<Vec<u8>>,
    /// At most this many items.
    pub limit: Option<usize>,
    /// Largest keys first.
    pub reverse: bool,
}

type Extract = Box<dyn Fn(&Entry) -> Vec<Vec<u8>> + Send + Sync>;

/// The list view; see the module docs.
pub struct ListView {
    store: Arc<dyn ViewStore>,
    extract: Extract,
    subscribers: Mutex<Vec<mpsc::UnboundedSender<ListItem>>>,
}

impl std::fmt::Debug for ListView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListView").finish_non_exhaustive()
    }
}

/// Escapes a sort key so that escaped keys sort like the keys and no escaped key
/// is a prefix of another: `00` becomes `00 ff`, and `00 00` ends the key.
fn encode_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 2);
    for &b in key {
        out.push(b);
        if b == 0 {
            out.push(0xff);
        }
    }
    out.extend_from_slice(&[0, 0]);
    out
}

fn decode_row(row: &[u8]) -> Option<(Vec<u8>, PublicKey, u64)> {
    let mut key = Vec::new();
    let mut i = 0;
    loop {
        let b = *row.get(i)?;
        if b == 0 {
            match row.get(i + 1)? {
                0xff => key.push(0),
                0 => break,
                _ => return None,
            }
            i += 2;
        } else {
            key.push(b);
            i += 1;
        }
    }
    let rest = row.get(i + 2..)?;
    let feed = PublicKey::try_from_slice(rest.get(..32)?).ok()?;
    let seq = u64::from_be_bytes(rest.get(32..40)?.try_into().ok()?);
    Some((key, feed, seq))
}

impl ListView {
    /// A list sorted by the key `extract` returns (`None`: the entry is not listed).
    pub fn new(
        store: Arc<dyn ViewStore>,
        extract: impl Fn(&Entry) -> Option<Vec<u8>> + Send + Sync + 'static,
    ) -> Self {
        Self::with_keys(store, move |e| extract(e).into_iter().collect())
    }

    /// A list where each entry appears under every key `extract` returns.
    pub fn with_keys(
        store: Arc<dyn ViewStore>,
        extract: impl Fn(&Entry) -> Vec<Vec<u8>> + Send + Sync + 'static,
    ) -> Self {
        ListView { store, extract: Box::new(extract), subscribers: Mutex::new(Vec::new()) }
    }

    /// Items in `range`, in sort-key order.
    pub fn read(&self, range: &ListRange) -> Result<Vec<ListItem>, ViewError> {
        let start = match (&range.gt, &range.gte) {
            (Some(k), _) => match prefix_range(&encode_key(k)).1 {
                Bound::Excluded(end) => Bound::Included(end),
                _ => return Ok(Vec::new()),
            },
            (None, Some(k)) => Bound::Included(encode_key(k)),
            (None, None) => Bound::Unbounded,
        };
        let end = match (&range.lt, &range.lte) {
            (Some(k), _) => Bound::Excluded(encode_key(k)),
            (None, Some(k)) => prefix_range(&encode_key(k)).1,
            (None, None) => Bound::Unbounded,
        };
        let rows = self.store.scan((start, end), range.reverse, range.limit)?;
        Ok(rows
            .into_iter()
            .filter_map(|(k, v)| decode_row(&k).map(|(key, feed, seq)| ListItem { key, feed, seq, value: v }))
            .collect())
    }

    /// A stream of items as they are inserted.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<ListItem> {
        let (tx, rx) = mpsc::unbounded();
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner()).push(tx);
        rx
    }
}

impl View for ListView {
    fn store(&self) -> &dyn ViewStore {
        &*self.store
    }

    fn map(&self, entries: &[Entry], tx: &mut Tx<'_>) -> Result<(), ViewError> {
        for e in entries {
            for key in (self.extract)(e) {
                let mut row = encode_key(&key);
                row.extend_from_slice(e.feed.as_bytes());
                row.extend_from_slice(&e.seq.to_be_bytes());
                tx.put(row, e.value.clone());
            }
        }
        Ok(())
    }

    fn indexed(&self, entries: &[Entry]) {
        let mut subs = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        subs.retain(|tx| !tx.is_closed());
        if subs.is_empty() {
            return;
        }
        for e in entries {
            for key in (self.extract)(e) {
                let item = ListItem { key, feed: e.feed, seq: e.seq, value: e.value.clone() };
                for tx in subs.iter() {
                    let _ = tx.unbounded_send(item.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_keys_sort_like_keys() {
        let keys: Vec<&[u8]> = vec![b"", b"\0", b"\0\0", b"\0\x01", b"a", b"a\0", b"a\0b", b"ab", b"b"];
        let mut enc: Vec<Vec<u8>> = keys.iter().map(|k| encode_key(k)).collect();
        let sorted = enc.clone();
        enc.sort();
        assert_eq!(enc, sorted);
        for k in keys {
            let mut row = encode_key(k);
            row.extend_from_slice(&[7; 32]);
            row.extend_from_slice(&9u64.to_be_bytes());
            assert_eq!(decode_row(&row).map(|r| r.0), Some(k.to_vec()));
        }
    }
}
