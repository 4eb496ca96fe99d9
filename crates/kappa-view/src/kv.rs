//! Multi-head registers with links, as kappa-view-kv: a map from key to the set
//! of current heads.
//!
//! Each entry `{key, links}` writes one register: its id (`<feed hex>@<seq>`)
//! becomes a head of `key` unless an entry already links to it from the same
//! key, and every id in `links` stops being a head of `key`. Concurrent writes
//! without links are several heads (a fork); an entry linking all of them
//! merges. The result does not depend on the order entries arrive in. Ids may
//! contain any bytes (kappa-view-kv wedges on a comma).
//!
//! A link names a value of its own register: one to an id of another key
//! changes nothing there. (kappa-view-kv remembers linked ids without their
//! key, so such a link hides the value if it arrives first and not if it
//! arrives second; rows this crate made before the format row, below, keep
//! that rule until they are rebuilt.)
//!
//! With the standard mapping the view also records, per entry, the key and
//! links it wrote, and per linked id how many entries link it. That lets it
//! [`forget`](View::forget) a blocked or hidden feed without a rebuild: the
//! feed's heads go, and a value that only the feed's entries had replaced is
//! a head again. Rows made before these records existed (no format row) are
//! rebuilt instead, once.
//!
//! Rows, with `K` a key as its length (u32, big-endian) and bytes, `id` an
//! id's bytes and `E` an entry as its feed's key and sequence number (u64,
//! big-endian):
//! - `h K id`: a head, valued with its entry's stored bytes;
//! - `l K id`: entries link `id` from key `K`, valued with how many (u32,
//!   big-endian; rows before the format row: `l id`, empty, linked from any
//!   key);
//! - `r E`: the key and links of each entry of the run of one feed's entries
//!   in a `map` batch that `E` began (a row per batch, as the indexer gives
//!   each batch one feed);
//! - `f`: the rows' format (`kv2`).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use futures::channel::mpsc;
use serde::Deserialize;

use kappa_log::PublicKey;

use crate::{Entry, ReadEntry, Tx, View, ViewError, ViewStore};

/// One write to a register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvOp {
    /// The register.
    pub key: String,
    /// The id of this value (unique per entry).
    pub id: String,
    /// The ids this value replaces.
    pub links: Vec<String>,
}

/// A current head of a register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The register.
    pub key: String,
    /// The head's id.
    pub id: String,
    /// The stored bytes of the entry that wrote it.
    pub value: Vec<u8>,
}

impl Head {
    /// The entry's value decoded as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ViewError> {
        serde_json::from_slice(&self.value)
            .map_err(|e| ViewError::Decode { id: self.id.clone(), reason: e.to_string() })
    }
}

/// A change to a register, sent to subscribers after its batch committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvUpdate {
    /// The register.
    pub key: String,
    /// The value written (a head unless something already links to it).
    pub head: Head,
}

type Mapper = Box<dyn Fn(&Entry) -> Result<Vec<KvOp>, ViewError> + Send + Sync>;

/// The kv view; see the module docs.
pub struct KvView {
    store: Arc<dyn ViewStore>,
    /// `None`: the standard mapping, with a fast path.
    mapper: Option<Mapper>,
    subscribers: Mutex<Vec<(Option<String>, mpsc::UnboundedSender<KvUpdate>)>>,
}

impl std::fmt::Debug for KvView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvView").finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum KeyField<'a> {
    #[serde(borrow)]
    Str(std::borrow::Cow<'a, str>),
    Num(serde_json::Number),
    Other(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct Standard<'a> {
    #[serde(borrow)]
    key: Option<KeyField<'a>>,
    #[serde(default, borrow)]
    links: Vec<std::borrow::Cow<'a, str>>,
}

/// The key and links of a standard entry, or `None` if it is not one.
fn standard_parts(value: &[u8]) -> Option<(String, Vec<String>)> {
    let s: Standard<'_> = serde_json::from_slice(value).ok()?;
    let key = match s.key? {
        KeyField::Str(k) => k.into_owned(),
        KeyField::Num(n) => n.to_string(),
        KeyField::Other(_) => return None,
    };
    Some((key, s.links.into_iter().map(std::borrow::Cow::into_owned).collect()))
}

/// The standard mapping: a JSON object with a `key` (string or number) and
/// optional `links`; the id is the entry's `<feed hex>@<seq>`. Other entries are
/// skipped.
pub fn standard_ops(entry: &Entry) -> Result<Vec<KvOp>, ViewError> {
    Ok(standard_parts(&entry.value)
        .map(|(key, links)| vec![KvOp { key, id: entry.id(), links }])
        .unwrap_or_default())
}

fn head_prefix(key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(5 + key.len());
    k.push(b'h');
    k.extend_from_slice(&(key.len() as u32).to_be_bytes());
    k.extend_from_slice(key.as_bytes());
    k
}

fn head_row(key: &str, id: &str) -> Vec<u8> {
    let mut k = head_prefix(key);
    k.extend_from_slice(id.as_bytes());
    k
}

fn linked_row(id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + id.len());
    k.push(b'l');
    k.extend_from_slice(id.as_bytes());
    k
}

/// The row naming the format of the view's rows; [`FORMAT`] if they carry
/// the records [`View::forget`] needs.
const FORMAT_ROW: &[u8] = b"f";
const FORMAT: &[u8] = b"kv2";

fn record_prefix(feed: &PublicKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(41);
    k.push(b'r');
    k.extend_from_slice(feed.as_bytes());
    k
}

fn records_row(feed: &PublicKey, first: u64) -> Vec<u8> {
    let mut k = record_prefix(feed);
    k.extend_from_slice(&first.to_be_bytes());
    k
}

/// `id` is linked from `key` (rows with records): `l` + the head row's
/// suffix.
fn linked_in_row(key: &str, id: &str) -> Vec<u8> {
    let mut k = head_row(key, id);
    k[0] = b'l';
    k
}

/// The count in a linked row with records: how many entries link the id
/// from the key (0 for a row that says nothing).
fn link_count(value: Option<Vec<u8>>) -> u32 {
    value.and_then(|v| <[u8; 4]>::try_from(v).ok()).map_or(0, u32::from_be_bytes)
}

/// `links` without repeats, in their order.
fn distinct(links: &[String]) -> Vec<String> {
    let mut seen = HashSet::with_capacity(links.len());
    links.iter().filter(|l| seen.insert(l.as_str())).cloned().collect()
}

/// One entry's record: its sequence number, the key and the links it wrote.
type Record = (u64, String, Vec<String>);

fn put_str(v: &mut Vec<u8>, s: &str) {
    v.extend_from_slice(&(s.len() as u32).to_be_bytes());
    v.extend_from_slice(s.as_bytes());
}

/// The records of a batch: per entry, its sequence number (u64), the count
/// of its links (u32), then its key and links as length (u32) and bytes.
fn encode_records(records: &[Record]) -> Vec<u8> {
    let mut v = Vec::new();
    for (seq, key, links) in records {
        v.extend_from_slice(&seq.to_be_bytes());
        v.extend_from_slice(&(links.len() as u32).to_be_bytes());
        put_str(&mut v, key);
        for link in links {
            put_str(&mut v, link);
        }
    }
    v
}

/// The records of a batch; `None` if `v` is not what
/// [`encode_records`] writes.
fn decode_records(mut v: &[u8]) -> Option<Vec<Record>> {
    fn take<'a>(v: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (v.get(..n)?, v.get(n..)?);
        *v = rest;
        Some(head)
    }
    fn string(v: &mut &[u8]) -> Option<String> {
        let len = u32::from_be_bytes(take(v, 4)?.try_into().ok()?) as usize;
        Some(std::str::from_utf8(take(v, len)?).ok()?.to_owned())
    }
    let mut out = Vec::new();
    while !v.is_empty() {
        let seq = u64::from_be_bytes(take(&mut v, 8)?.try_into().ok()?);
        let n = u32::from_be_bytes(take(&mut v, 4)?.try_into().ok()?) as usize;
        let key = string(&mut v)?;
        let links = (0..n).map(|_| string(&mut v)).collect::<Option<Vec<_>>>()?;
        out.push((seq, key, links));
    }
    Some(out)
}

/// The entry whose standard id is `id` (`<feed hex>@<seq>`, as
/// [`Entry::id`] writes it); `None` for any other text.
fn parse_id(id: &str) -> Option<(PublicKey, u64)> {
    let (hex, seq) = id.split_once('@')?;
    let feed = PublicKey::from_hex(hex).ok()?;
    let seq: u64 = seq.parse().ok()?;
    // Only the text `Entry::id` writes: no upper-case hex, no leading zero.
    (format!("{}@{seq}", feed.to_hex()) == id).then_some((feed, seq))
}

fn parse_head_row(row: &[u8], value: Vec<u8>) -> Option<Head> {
    let len = u32::from_be_bytes(row.get(1..5)?.try_into().ok()?) as usize;
    let key = std::str::from_utf8(row.get(5..5 + len)?).ok()?.to_owned();
    let id = std::str::from_utf8(row.get(5 + len..)?).ok()?.to_owned();
    Some(Head { key, id, value })
}

impl KvView {
    /// A kv view with the standard mapping ([`standard_ops`]).
    pub fn new(store: Arc<dyn ViewStore>) -> Self {
        KvView { store, mapper: None, subscribers: Mutex::new(Vec::new()) }
    }

    /// A kv view whose registers `mapper` extracts from each entry.
    pub fn with_mapper(
        store: Arc<dyn ViewStore>,
        mapper: impl Fn(&Entry) -> Result<Vec<KvOp>, ViewError> + Send + Sync + 'static,
    ) -> Self {
        KvView { store, mapper: Some(Box::new(mapper)), subscribers: Mutex::new(Vec::new()) }
    }

    /// The current heads of `key`, by id (empty if the key was never written).
    pub fn get(&self, key: &str) -> Result<Vec<Head>, ViewError> {
        let rows = self.store.scan_prefix(&head_prefix(key), false, None)?;
        Ok(rows.into_iter().filter_map(|(k, v)| parse_head_row(&k, v)).collect())
    }

    /// Every register with its heads, in key order.
    pub fn all(&self) -> Result<Vec<(String, Vec<Head>)>, ViewError> {
        let rows = self.store.scan_prefix(b"h", false, None)?;
        let mut out: Vec<(String, Vec<Head>)> = Vec::new();
        for head in rows.into_iter().filter_map(|(k, v)| parse_head_row(&k, v)) {
            match out.last_mut() {
                Some((k, heads)) if *k == head.key => heads.push(head),
                _ => out.push((head.key.clone(), vec![head])),
            }
        }
        // Row order is by key length first; present keys in string order.
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// A stream of updates of every key.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<KvUpdate> {
        self.subscribe_inner(None)
    }

    /// A stream of updates of `key`.
    pub fn subscribe_key(&self, key: &str) -> mpsc::UnboundedReceiver<KvUpdate> {
        self.subscribe_inner(Some(key.to_owned()))
    }

    fn subscribe_inner(&self, key: Option<String>) -> mpsc::UnboundedReceiver<KvUpdate> {
        let (tx, rx) = mpsc::unbounded();
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner()).push((key, tx));
        rx
    }
}

impl View for KvView {
    fn store(&self) -> &dyn ViewStore {
        &*self.store
    }

    fn map(&self, entries: &[Entry], tx: &mut Tx<'_>) -> Result<(), ViewError> {
        self.map_batches(&[entries], tx)
    }

    fn map_batches(&self, batches: &[&[Entry]], tx: &mut Tx<'_>) -> Result<(), ViewError> {
        let mut ops = Vec::new();
        for (b, entries) in batches.iter().enumerate() {
            ops.extend(self.ops(entries)?.into_iter().map(|(op, i)| (op, b, i)));
        }
        if ops.is_empty() {
            return Ok(());
        }
        if self.store.batch_reads() {
            // Every "is it linked already?" read of all the batches in one
            // store call: one round trip per commit on a networked store.
            // (Rows without records are read key by key.)
            let mut reads: Vec<Vec<u8>> = Vec::with_capacity(2 * ops.len() + 1);
            for (op, _, _) in &ops {
                reads.push(linked_in_row(&op.key, &op.id));
                reads.extend(op.links.iter().map(|link| linked_in_row(&op.key, link)));
            }
            reads.push(FORMAT_ROW.to_vec());
            tx.prefetch(reads.iter().map(Vec::as_slice))?;
        }
        let records = self.records(tx)?;
        // The records, per run of entries of one feed in one batch.
        let mut written: Vec<(usize, PublicKey, Vec<Record>)> = Vec::new();
        for (op, b, i) in ops {
            let entry = &batches[b][i];
            if !records {
                // Rows from before records: an id linked from any key is
                // no head (kappa-view-kv's rule, which depends on the order
                // when a link crosses keys).
                for link in &op.links {
                    tx.delete(head_row(&op.key, link));
                    tx.put(linked_row(link), Vec::new());
                }
                if tx.get(&linked_row(&op.id))?.is_none() {
                    tx.put(head_row(&op.key, &op.id), entry.value.clone());
                }
                continue;
            }
            let links = distinct(&op.links);
            for link in &links {
                tx.delete(head_row(&op.key, link));
                let row = linked_in_row(&op.key, link);
                let count = link_count(tx.get(&row)?).saturating_add(1);
                tx.put(row, count.to_be_bytes().to_vec());
            }
            if tx.get(&linked_in_row(&op.key, &op.id))?.is_none() {
                tx.put(head_row(&op.key, &op.id), entry.value.clone());
            }
            match written.last_mut() {
                Some((run_b, feed, run)) if *run_b == b && *feed == entry.feed => {
                    run.push((entry.seq, op.key, links))
                }
                _ => written.push((b, entry.feed, vec![(entry.seq, op.key, links)])),
            }
        }
        for (_, feed, run) in &written {
            tx.put(records_row(feed, run[0].0), encode_records(run));
        }
        Ok(())
    }

    fn forget(
        &self,
        feeds: &[PublicKey],
        read: &mut ReadEntry<'_>,
        tx: &mut Tx<'_>,
    ) -> Result<bool, ViewError> {
        if self.mapper.is_some() || tx.get(FORMAT_ROW)?.as_deref() != Some(FORMAT) {
            // No records of who wrote and linked what: only a rebuild knows.
            return Ok(false);
        }
        let store = tx.store();
        let forgotten: HashSet<&PublicKey> = feeds.iter().collect();
        // Per (key, id) linked by forgotten entries, how many of them.
        let mut unlinked: BTreeMap<(String, String), u32> = BTreeMap::new();
        for feed in feeds {
            let hex = feed.to_hex();
            for (row, value) in store.scan_prefix(&record_prefix(feed), false, None)? {
                let Some(records) = decode_records(&value) else { return Ok(false) };
                for (seq, key, links) in records {
                    tx.delete(head_row(&key, &format!("{hex}@{seq}")));
                    for link in links {
                        *unlinked.entry((key.clone(), link)).or_default() += 1;
                    }
                }
                tx.delete(row);
            }
        }
        // The ids that no kept entry links from their key any more: heads
        // again, if a kept entry wrote them there.
        let rows: Vec<Vec<u8>> = unlinked.keys().map(|(key, link)| linked_in_row(key, link)).collect();
        tx.prefetch(rows.iter().map(Vec::as_slice))?;
        let mut restore = Vec::new();
        for (((key, link), gone), row) in unlinked.into_iter().zip(rows) {
            let left = link_count(tx.get(&row)?).saturating_sub(gone);
            if left > 0 {
                tx.put(row, left.to_be_bytes().to_vec());
                continue;
            }
            tx.delete(row);
            match parse_id(&link) {
                Some((feed, seq)) if !forgotten.contains(&feed) => restore.push((key, link, feed, seq)),
                // Not an entry's id, or one of a forgotten feed.
                _ => {}
            }
        }
        for (key, id, feed, seq) in restore {
            // Not indexed (or never written): when it is, nothing links it.
            let Some(value) = read(&feed, seq)? else { continue };
            // Written under another key: the link never hid it.
            if standard_parts(&value).is_some_and(|(written, _)| written == key) {
                tx.put(head_row(&key, &id), value);
            }
        }
        Ok(true)
    }

    fn indexed(&self, entries: &[Entry]) {
        let mut subs = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        subs.retain(|(_, tx)| !tx.is_closed());
        if subs.is_empty() {
            return;
        }
        // Recompute the batch's writes (as kappa-view-kv does): map may have run
        // for several batches before one commit.
        let Ok(ops) = self.ops(entries) else { return };
        for (op, i) in ops {
            let u = KvUpdate {
                key: op.key.clone(),
                head: Head { key: op.key, id: op.id, value: entries[i].value.clone() },
            };
            for (key, tx) in subs.iter() {
                if key.as_ref().is_none_or(|k| *k == u.key) {
                    let _ = tx.unbounded_send(u.clone());
                }
            }
        }
    }
}

impl KvView {
    /// Whether the rows carry the records [`View::forget`] needs, as the
    /// format row says; an empty store is given the format row now. Rows a
    /// custom mapping writes have no records (its ids need not name entries).
    fn records(&self, tx: &mut Tx<'_>) -> Result<bool, ViewError> {
        if self.mapper.is_some() {
            return Ok(false);
        }
        match tx.get(FORMAT_ROW)? {
            Some(format) => Ok(format == FORMAT),
            // Rows before the format row existed, or none at all.
            None if tx.is_empty() && tx.store().scan_prefix(b"", false, Some(1))?.is_empty() => {
                tx.put(FORMAT_ROW, FORMAT);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The ops of `entries`, each with the index of its entry.
    fn ops(&self, entries: &[Entry]) -> Result<Vec<(KvOp, usize)>, ViewError> {
        let mut out = Vec::with_capacity(entries.len());
        match &self.mapper {
            Some(m) => {
                for (i, e) in entries.iter().enumerate() {
                    out.extend(m(e)?.into_iter().map(|op| (op, i)));
                }
            }
            None => {
                // The standard mapping, with each feed's hex computed once.
                let mut hex_of: Option<(kappa_log::PublicKey, String)> = None;
                for (i, e) in entries.iter().enumerate() {
                    let Some((key, links)) = standard_parts(&e.value) else { continue };
                    let hex = match &hex_of {
                        Some((k, h)) if *k == e.feed => h.clone(),
                        _ => {
                            let h = e.feed.to_hex();
                            hex_of = Some((e.feed, h.clone()));
                            h
                        }
                    };
                    out.push((KvOp { key, id: format!("{hex}@{}", e.seq), links }, i));
                }
            }
        }
        Ok(out)
    }
}
