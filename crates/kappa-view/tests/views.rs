//! The [A] cases of kappa-view-kv and kappa-view-list (reference §2), adapted:
//! forks and merges, out-of-order arrival, ids with any bytes, list ranges.

use std::sync::Arc;

use futures::StreamExt;
use kappa_log::PublicKey;
use kappa_view::kv::KvView;
use kappa_view::list::{ListRange, ListView};
use kappa_view::{Entry, MemoryStore, View};
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
