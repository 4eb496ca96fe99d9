//! Multi-head registers with links, as kappa-view-kv: a map from key to the set
//! of current heads.
//!
//! Each entry `{key, links}` writes one register: its id (`<feed hex>@<seq>`)
//! becomes a head of `key` unless something already links to it, and every id in
//! `links` stops being a head. Concurrent writes without links are several heads
//! (a fork); an entry linking all of them merges. The result does not depend on
//! the order entries arrive in. Ids may contain any bytes (kappa-view-kv wedges on
//! a comma).

use std::sync::{Arc, Mutex};

use futures::channel::mpsc;
use serde::Deserialize;

use crate::{Entry, Tx, View, ViewError, ViewStore};

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
        if self.store.batch_reads() {
            // Every "is it linked already?" read of all the batches in one
            // store call: one round trip per commit on a networked store.
            let linked: Vec<Vec<u8>> = ops.iter().map(|(op, _, _)| linked_row(&op.id)).collect();
            tx.prefetch(linked.iter().map(Vec::as_slice))?;
        }
        for (op, b, i) in ops {
            for link in &op.links {
                tx.delete(head_row(&op.key, link));
                tx.put(linked_row(link), Vec::new());
            }
            if tx.get(&linked_row(&op.id))?.is_none() {
                tx.put(head_row(&op.key, &op.id), batches[b][i].value.clone());
            }
        }
        Ok(())
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
