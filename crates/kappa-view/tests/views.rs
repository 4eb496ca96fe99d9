//! The [A] cases of kappa-view-kv and kappa-view-list (reference §2), adapted:
//! forks and merges, out-of-order arrival, ids with any bytes, list ranges.

use std::sync::Arc;

use futures::StreamExt;
use kappa_log::PublicKey;
use kappa_view::kv::KvView;
use kappa_view::list::{ListRange, ListView};
use kappa_view::{Entry, MemoryStore, View, ViewStore};
use serde_json::json;

fn e(feed: u8, seq: u64, v: serde_json::Value) -> Entry {
    Entry::new(PublicKey::from_bytes([feed; 32]), seq, format!("{v}\n").into_bytes())
}

fn id(feed: u8, seq: u64) -> String {
    format!("{}@{seq}", PublicKey::from_bytes([feed; 32]).to_hex())
}

#[test]
fn kv_create_then_data_linking_replaces() {
    let kv = KvView::new(Arc::new(MemoryStore::new()));
    assert!(kv.get("foo").unwrap().is_empty());
    kv.apply(&[e(1, 0, json!({"key": "foo", "value": "bax", "links": []}))]).unwrap();
    kv.apply(&[e(1, 1, json!({"key": "foo", "value": "bax", "links": [id(1, 0)]}))]).unwrap();
    let heads = kv.get("foo").unwrap();
    assert_eq!(heads.iter().map(|h| h.id.clone()).collect::<Vec<_>>(), vec![id(1, 1)]);
}

#[test]
fn kv_forks_and_merges() {
    let kv = KvView::new(Arc::new(MemoryStore::new()));
    kv.apply(&[e(1, 0, json!({"key": "k", "value": 1}))]).unwrap();
    kv.apply(&[e(2, 0, json!({"key": "k", "value": 2}))]).unwrap();
    let ids: Vec<String> = kv.get("k").unwrap().into_iter().map(|h| h.id).collect();
    assert_eq!(ids.len(), 2, "a fork has two heads");
    kv.apply(&[e(1, 1, json!({"key": "k", "value": 3, "links": ids}))]).unwrap();
    let heads = kv.get("k").unwrap();
    assert_eq!(heads.len(), 1);
    assert_eq!(heads[0].json::<serde_json::Value>().unwrap()["value"], 3);
}

#[test]
fn kv_converges_in_any_order() {
    let entries = vec![
        e(1, 0, json!({"key": "k", "v": "a"})),
        e(2, 0, json!({"key": "k", "v": "b", "links": [id(1, 0)]})),
        e(3, 0, json!({"key": "k", "v": "c", "links": [id(1, 0)]})),
        e(1, 1, json!({"key": "k", "v": "d", "links": [id(2, 0)]})),
        e(4, 0, json!({"key": "other"})),
    ];
    let reference = {
        let kv = KvView::new(Arc::new(MemoryStore::new()));
        kv.apply(&entries).unwrap();
        kv.all().unwrap()
    };
    assert_eq!(reference[0].1.len(), 2, "heads c and d");
    // Every permutation of one-entry batches gives the same table.
    let mut order: Vec<usize> = (0..entries.len()).collect();
    for _ in 0..120 {
        let kv = KvView::new(Arc::new(MemoryStore::new()));
        for &i in &order {
            kv.apply(std::slice::from_ref(&entries[i])).unwrap();
        }
        assert_eq!(kv.all().unwrap(), reference, "order {order:?}");
        next_permutation(&mut order);
    }
}

fn next_permutation(v: &mut [usize]) {
    let Some(i) = (1..v.len()).rev().find(|&i| v[i - 1] < v[i]) else {
        v.reverse();
        return;
    };
    let j = (i..v.len()).rev().find(|&j| v[j] > v[i - 1]).unwrap();
    v.swap(i - 1, j);
    v[i..].reverse();
}

#[test]
fn kv_ids_may_contain_commas_and_anything() {
    let kv = KvView::with_mapper(Arc::new(MemoryStore::new()), |entry| {
        let v: serde_json::Value = entry.json()?;
        Ok(vec![kappa_view::kv::KvOp {
            key: v["key"].as_str().unwrap_or_default().into(),
            id: v["id"].as_str().unwrap_or_default().into(),
            links: vec![],
        }])
    });
    kv.apply(&[e(1, 0, json!({"key": "k", "id": "a,b\u{0}c"}))]).unwrap();
    kv.apply(&[e(1, 1, json!({"key": "k", "id": "d"}))]).unwrap();
    let ids: Vec<String> = kv.get("k").unwrap().into_iter().map(|h| h.id).collect();
    assert_eq!(ids, vec!["a,b\u{0}c".to_string(), "d".to_string()]);
}

#[test]
fn kv_subscriptions() {
    let kv = KvView::new(Arc::new(MemoryStore::new()));
    let mut all = kv.subscribe();
    let mut only_b = kv.subscribe_key("b");
    kv.apply(&[e(1, 0, json!({"key": "a"})), e(1, 1, json!({"key": "b"}))]).unwrap();
    let got: Vec<String> = futures::executor::block_on(all.by_ref().take(2).map(|u| u.key).collect());
    assert_eq!(got, vec!["a", "b"]);
    let b = futures::executor::block_on(only_b.next()).unwrap();
    assert_eq!(b.head.id, id(1, 1));
}

fn list_view() -> ListView {
    ListView::new(Arc::new(MemoryStore::new()), |entry| {
        entry.json::<serde_json::Value>().ok().and_then(|v| v["t"].as_u64()).map(|t| t.to_be_bytes().to_vec())
    })
}

#[test]
fn list_sorted_ranges_limits_reverse() {
    let list = list_view();
    let times = [5u64, 1, 9, 3, 7, 3];
    let entries: Vec<Entry> =
        times.iter().enumerate().map(|(i, t)| e(1, i as u64, json!({"t": t}))).collect();
    list.apply(&entries).unwrap();
    let read = |r: ListRange| -> Vec<u64> {
        list.read(&r).unwrap().iter().map(|i| u64::from_be_bytes(i.key.clone().try_into().unwrap())).collect()
    };
    assert_eq!(read(ListRange::default()), vec![1, 3, 3, 5, 7, 9], "equal keys are both kept");
    assert_eq!(read(ListRange { reverse: true, limit: Some(2), ..Default::default() }), vec![9, 7]);
    let k = |t: u64| Some(t.to_be_bytes().to_vec());
    assert_eq!(read(ListRange { gt: k(3), lt: k(9), ..Default::default() }), vec![5, 7]);
    assert_eq!(read(ListRange { gte: k(3), lte: k(7), ..Default::default() }), vec![3, 3, 5, 7]);
    assert_eq!(
        read(ListRange { gte: k(3), lte: k(7), reverse: true, limit: Some(3), ..Default::default() }),
        vec![7, 5, 3]
    );
    assert_eq!(read(ListRange { gt: k(9), ..Default::default() }), Vec::<u64>::new());
}

#[test]
fn list_insert_notifications() {
    let list = list_view();
    let mut inserts = list.subscribe();
    list.apply(&[e(2, 0, json!({"t": 4})), e(2, 1, json!({"nope": 1}))]).unwrap();
    let first = futures::executor::block_on(inserts.next()).unwrap();
    assert_eq!((first.seq, first.feed), (0, PublicKey::from_bytes([2; 32])));
}

/// A memory store that says reads are expensive (as a networked store does),
/// so the kv view prefetches, and counts the `get_many` calls.
#[derive(Default)]
struct Networked {
    inner: MemoryStore,
    get_many_calls: std::sync::atomic::AtomicUsize,
}

impl kappa_view::ViewStore for Networked {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, kappa_view::StoreError> {
        self.inner.get(key)
    }
    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, kappa_view::StoreError> {
        self.get_many_calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.get_many(keys)
    }
    fn batch_reads(&self) -> bool {
        true
    }
    fn scan(
        &self,
        range: kappa_view::KeyRange,
        reverse: bool,
        limit: Option<usize>,
    ) -> Result<Vec<kappa_view::Row>, kappa_view::StoreError> {
        self.inner.scan(range, reverse, limit)
    }
    fn commit(&self, batch: kappa_view::Batch) -> Result<(), kappa_view::StoreError> {
        self.inner.commit(batch)
    }
    fn state(&self) -> Result<Option<Vec<u8>>, kappa_view::StoreError> {
        self.inner.state()
    }
    fn clear(&self) -> Result<(), kappa_view::StoreError> {
        self.inner.clear()
    }
}

fn all_rows(s: &dyn kappa_view::ViewStore) -> Vec<kappa_view::Row> {
    s.scan((std::ops::Bound::Unbounded, std::ops::Bound::Unbounded), false, None).unwrap()
}

proptest::proptest! {
    /// The kv view's `map_batches` (one prefetch for all batches) writes what
    /// mapping the batches one by one writes, into a store that already holds
    /// rows, whatever the links (to earlier, later or unknown ids) and the split.
    #[test]
    fn kv_map_batches_equals_mapping_one_by_one(
        ops in proptest::collection::vec((1u8..4, 0u8..3, proptest::collection::vec((1u8..4, 0u64..12), 0..3)), 1..40),
        cuts in proptest::collection::vec(0usize..40, 0..6),
        before in 0usize..40,
    ) {
        let mut seqs = [0u64; 4];
        let entries: Vec<Entry> = ops
            .iter()
            .map(|(feed, key, links)| {
                let seq = seqs[*feed as usize];
                seqs[*feed as usize] += 1;
                let links: Vec<String> = links.iter().map(|(f, s)| id(*f, *s)).collect();
                e(*feed, seq, json!({"key": format!("k{key}"), "value": seq, "links": links}))
            })
            .collect();
        // Some entries are committed before, so that reads find rows.
        let before = before.min(entries.len());
        let (old, new) = entries.split_at(before);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(new.len())).collect();
        cuts.push(0);
        cuts.push(new.len());
        cuts.sort_unstable();
        cuts.dedup();
        let batches: Vec<&[Entry]> = cuts.windows(2).map(|w| &new[w[0]..w[1]]).collect();

        let one_by_one = KvView::new(Arc::new(MemoryStore::new()));
        one_by_one.apply(old).unwrap();
        let mut tx = kappa_view::Tx::new(one_by_one.store());
        for b in &batches {
            one_by_one.map(b, &mut tx).unwrap();
        }
        one_by_one.store().commit(tx.into_batch(None)).unwrap();

        let store = Arc::new(Networked::default());
        let together = KvView::new(store.clone());
        together.apply(old).unwrap();
        let calls_before = store.get_many_calls.load(std::sync::atomic::Ordering::SeqCst);
        let mut tx = kappa_view::Tx::new(together.store());
        together.map_batches(&batches, &mut tx).unwrap();
        together.store().commit(tx.into_batch(None)).unwrap();
        let calls = store.get_many_calls.load(std::sync::atomic::Ordering::SeqCst) - calls_before;

        proptest::prop_assert_eq!(all_rows(together.store()), all_rows(one_by_one.store()));
        proptest::prop_assert!(calls <= 1, "{} get_many calls for {} batches", calls, batches.len());
        proptest::prop_assert_eq!(calls, usize::from(!new.is_empty()));
    }
}

/// Maps `entries` into a new kv view, in batches of up to `per` entries.
fn kv_of(entries: &[&Entry], per: usize, store: Arc<dyn kappa_view::ViewStore>) -> KvView {
    let kv = KvView::new(store);
    let owned: Vec<Entry> = entries.iter().map(|e| (*e).clone()).collect();
    for batch in owned.chunks(per.max(1)) {
        kv.apply(batch).unwrap();
    }
    kv
}

/// `rows` with each `r` row (the records of a run of entries, as the kv
/// view's module docs describe them) split into one row per entry (the feed
/// and seq as key, the rest as value), in order; the format row kept if
/// `format`.
fn per_entry(rows: Vec<kappa_view::Row>, format: bool) -> Vec<kappa_view::Row> {
    let mut out = Vec::new();
    for (k, v) in rows {
        if k.first() != Some(&b'r') {
            if format || k.as_slice() != b"f" {
                out.push((k, v));
            }
            continue;
        }
        let mut at = 0;
        let take = |at: &mut usize, n: usize| {
            *at += n;
            v[*at - n..*at].to_vec()
        };
        while at < v.len() {
            let seq = take(&mut at, 8);
            let n = u32::from_be_bytes(take(&mut at, 4).try_into().unwrap());
            let mut rest = Vec::new();
            for _ in 0..=n {
                let len = take(&mut at, 4);
                let text = take(&mut at, u32::from_be_bytes(len.clone().try_into().unwrap()) as usize);
                rest.extend(len);
                rest.extend(text);
            }
            out.push(([&k[..33], &seq[..]].concat(), rest));
        }
    }
    out.sort();
    out
}

/// Forgets `feeds` from `kv`, reading entries from `all`; whether it could.
fn forget(kv: &KvView, feeds: &[PublicKey], all: &[Entry]) -> bool {
    let mut read =
        |f: &PublicKey, s: u64| Ok(all.iter().find(|e| e.feed == *f && e.seq == s).map(|e| e.value.clone()));
    let mut tx = kappa_view::Tx::new(kv.store());
    let done = kv.forget(feeds, &mut read, &mut tx).unwrap();
    if done {
        kv.store().commit(tx.into_batch(None)).unwrap();
    }
    done
}

proptest::proptest! {
    /// Forgetting feeds leaves the rows (heads, links, records) a view made
    /// from the other feeds' entries alone would hold, whatever the links
    /// (within a key or across keys, to entries of any feed, earlier, later,
    /// unknown or not ids at all); mapping the forgotten entries again
    /// afterwards gives the rows of a view that had them all along.
    #[test]
    fn kv_forget_equals_mapping_without_the_feeds(
        ops in proptest::collection::vec((1u8..5, 0u8..3, proptest::collection::vec((0u8..6, 0u64..10), 0..3)), 1..50),
        forgotten in proptest::collection::btree_set(1u8..5, 1..3),
        per in 1usize..8,
    ) {
        let mut seqs = [0u64; 5];
        let entries: Vec<Entry> = ops
            .iter()
            .map(|(feed, key, links)| {
                let seq = seqs[*feed as usize];
                seqs[*feed as usize] += 1;
                let links: Vec<String> = links
                    .iter()
                    .map(|(f, s)| match f {
                        0 => format!("not an id {s}"),
                        5 => id(1, *s).to_uppercase(),
                        f => id(*f, *s),
                    })
                    .collect();
                e(*feed, seq, json!({"key": format!("k{key}"), "value": seq, "links": links}))
            })
            .collect();
        let feeds: Vec<PublicKey> = forgotten.iter().map(|f| PublicKey::from_bytes([*f; 32])).collect();
        let (gone, kept): (Vec<&Entry>, Vec<&Entry>) = entries.iter().partition(|e| feeds.contains(&e.feed));
        let all: Vec<&Entry> = entries.iter().collect();
        // Stores run the same conformance suite: the memory store stands
        // for all (the indexer's tests forget on redb and PostgreSQL).
        let store = |_: &str| -> Arc<dyn kappa_view::ViewStore> { Arc::new(MemoryStore::new()) };

        // The rows but the format row (which stays when every entry went),
        // with the records (`r` rows, one per run of a batch) per entry.
        let content = |kv: &KvView| -> Vec<kappa_view::Row> { per_entry(all_rows(kv.store()), false) };
        let kv = kv_of(&all, per, store("forgot"));
        proptest::prop_assert!(forget(&kv, &feeds, &entries));
        let without = kv_of(&kept, per, store("without"));
        proptest::prop_assert_eq!(content(&kv), content(&without));
        proptest::prop_assert_eq!(kv.all().unwrap(), without.all().unwrap());

        // Unhidden: the forgotten entries are mapped again.
        let owned: Vec<Entry> = gone.iter().map(|e| (*e).clone()).collect();
        for batch in owned.chunks(per) {
            kv.apply(batch).unwrap();
        }
        let order: Vec<&Entry> = kept.iter().chain(gone.iter()).copied().collect();
        let again = kv_of(&order, per, store("again"));
        proptest::prop_assert_eq!(per_entry(all_rows(kv.store()), true), per_entry(all_rows(again.store()), true));
        proptest::prop_assert_eq!(kv.all().unwrap(), again.all().unwrap());
    }
}

#[test]
fn kv_forget_needs_the_records() {
    // Rows made without the format row (an older kappa-view): forget says it
    // cannot, so the indexer rebuilds.
    let store = Arc::new(MemoryStore::new());
    store
        .commit(kappa_view::Batch {
            ops: vec![(b"h\0\0\0\x01kold".to_vec(), Some(b"{}".to_vec()))],
            state: None,
        })
        .unwrap();
    let kv = KvView::new(store.clone());
    let a = e(1, 0, json!({"key": "k", "value": 1}));
    kv.apply(std::slice::from_ref(&a)).unwrap();
    assert!(!forget(&kv, &[a.feed], std::slice::from_ref(&a)));
    // A custom mapping keeps no records either.
    let custom = KvView::with_mapper(Arc::new(MemoryStore::new()), kappa_view::kv::standard_ops);
    custom.apply(std::slice::from_ref(&a)).unwrap();
    assert!(!forget(&custom, &[a.feed], std::slice::from_ref(&a)));
    // The standard mapping into an empty store does.
    let fresh = KvView::new(Arc::new(MemoryStore::new()));
    fresh.apply(std::slice::from_ref(&a)).unwrap();
    assert!(forget(&fresh, &[a.feed], &[a]));
    assert!(fresh.all().unwrap().is_empty());
}

#[test]
fn kv_forget_gives_up_when_a_head_to_restore_cannot_be_read() {
    let kv = KvView::new(Arc::new(MemoryStore::new()));
    let a = e(1, 0, json!({"key": "k", "value": 1}));
    let b = e(2, 0, json!({"key": "k", "value": 2, "links": [id(1, 0)]}));
    kv.apply(&[a.clone(), b.clone()]).unwrap();
    // The log cannot give a's entry: forget fails, and the indexer rebuilds.
    let mut tx = kappa_view::Tx::new(kv.store());
    let mut broken = |_: &PublicKey, _: u64| Err(kappa_view::ViewError::Map("the log is gone".into()));
    assert!(kv.forget(&[b.feed], &mut broken, &mut tx).is_err());
    drop(tx);
    assert_eq!(kv.get("k").unwrap()[0].id, b.id(), "nothing was committed");
    assert!(forget(&kv, &[b.feed], std::slice::from_ref(&a)));
    assert_eq!(kv.get("k").unwrap().iter().map(|h| h.id.clone()).collect::<Vec<_>>(), vec![a.id()]);
}
