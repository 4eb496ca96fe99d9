//! Partial replication and tip-first indexing (issue: use the newest data before
//! the whole history arrives).

use std::sync::{Arc, Mutex};

use async_std::os::unix::net::UnixStream;
use kappa_core::protocol::Selection;
use kappa_core::view::kv::KvView;
use kappa_core::view::{Entry, Tx, View, ViewError, ViewStore};
use kappa_core::{Kappa, ReplicateOptions};
use serde_json::json;

const N: u64 = 100_000;
const KEYS: u64 = 100;
const SHARED: [u8; 32] = [0x11; 32];

/// A peer whose writer updated KEYS registers N times in turn, each update
/// linking the previous head of its key.
fn full_peer() -> Kappa {
    let core = Kappa::builder().shared_key(SHARED).open().unwrap();
    let w = core.writer("local").unwrap();
    let hex = w.key().to_hex();
    let mut batch = Vec::with_capacity(1000);
    for i in 0..N {
        let links: Vec<String> = if i >= KEYS { vec![format!("{hex}@{}", i - KEYS)] } else { vec![] };
        batch.push(json!({"key": format!("k{}", i % KEYS), "value": i, "links": links}));
        if batch.len() == 1000 {
            w.append_batch(&batch).unwrap();
            batch.clear();
        }
    }
    core
}

async fn sync(a: &Kappa, b: &Kappa, selection: Selection) -> u64 {
    let (s1, s2) = UnixStream::pair().unwrap();
    let mut ob = ReplicateOptions::new(false);
    ob.selection = selection;
    let (ra, rb) =
        futures::future::join(a.replicate(s1, ReplicateOptions::new(true)), b.replicate(s2, ob)).await;
    ra.unwrap();
    rb.unwrap().blocks_received()
}

fn table(kv: &KvView) -> Vec<(String, Vec<String>)> {
    kv.all().unwrap().into_iter().map(|(k, heads)| (k, heads.into_iter().map(|h| h.id).collect())).collect()
}

#[async_std::test]
async fn a_sparse_peer_answers_from_the_newest_entries_then_equals_the_dense_table() {
    let a = full_peer();
    let kv_a = a.use_view("kv", 1, KvView::new).unwrap();
    kv_a.ready().await.unwrap();

    let b = Kappa::builder().shared_key(SHARED).open().unwrap();
    let kv_b = b.use_view("kv", 1, KvView::new).unwrap();
    let moved = sync(&a, &b, Selection::Newest(1000)).await;
    assert_eq!(moved, 1000, "only the newest 1,000 entries travel");
    // The view indexes what is present; the missing history does not stall it.
    kv_b.ready().await.unwrap();
    let st = kv_b.state();
    assert_eq!((st.indexed, st.total), (1000, 1000));
    // Every key's newest entry is among them: every answer is already right.
    for k in 0..KEYS {
        let key = format!("k{k}");
        let want: Vec<String> = kv_a.get(&key).unwrap().into_iter().map(|h| h.id).collect();
        let got: Vec<String> = kv_b.get(&key).unwrap().into_iter().map(|h| h.id).collect();
        assert_eq!(got, want, "{key}");
    }
    // The history arrives later: the table equals the dense one.
    let moved = sync(&a, &b, Selection::All).await;
    assert_eq!(moved, N - 1000);
    kv_b.ready().await.unwrap();
    assert_eq!(table(&kv_b), table(&kv_a));
    assert_eq!(kv_b.state().indexed, N);
}

/// Records the sequence numbers of each map call.
struct TipFirst {
    store: Arc<dyn ViewStore>,
    calls: Arc<Mutex<Vec<Vec<u64>>>>,
}

impl View for TipFirst {
    fn store(&self) -> &dyn ViewStore {
        &*self.store
    }
    fn map(&self, entries: &[Entry], _tx: &mut Tx<'_>) -> Result<(), ViewError> {
        self.calls.lock().unwrap().push(entries.iter().map(|e| e.seq).collect());
        Ok(())
    }
    fn newest_first(&self) -> bool {
        true
    }
}

#[async_std::test]
async fn tip_first_indexing_starts_at_the_newest_entries() {
    let a = full_peer();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let c = calls.clone();
    let view = a.use_view("tip", 1, move |store| TipFirst { store, calls: c }).unwrap();
    view.ready().await.unwrap();
    let calls = calls.lock().unwrap();
    assert_eq!(calls[0], ((N - 100)..N).collect::<Vec<_>>(), "the first batch is the tip, ascending");
    assert!(calls[1][0] < calls[0][0], "then history, walking back");
    assert_eq!(calls.iter().map(Vec::len).sum::<usize>() as u64, N);
}

#[async_std::test]
async fn on_demand_get_fetches_a_missing_entry_from_a_connected_peer() {
    let a = Kappa::builder().shared_key(SHARED).open().unwrap();
    let w = a.writer("local").unwrap();
    let values: Vec<serde_json::Value> = (0..1000).map(|i| json!({"n": i})).collect();
    w.append_batch(&values).unwrap();
    let b = Kappa::builder().shared_key(SHARED).open().unwrap();
    let (s1, s2) = UnixStream::pair().unwrap();
    let (fa, _ha) = a.replicate_session(s1, ReplicateOptions::new(true).live(true)).unwrap();
    let mut ob = ReplicateOptions::new(false).live(true);
    ob.selection = Selection::Newest(5);
    let (fb, hb) = b.replicate_session(s2, ob).unwrap();
    let ta = async_std::task::spawn(fa);
    let tb = async_std::task::spawn(fb);
    let key = w.key();
    // The tip arrives by itself; entry 100 is not part of the selection.
    for _ in 0..200 {
        if b.feed(&key).is_some_and(|f| f.has(999)) {
            break;
        }
        async_std::task::sleep(std::time::Duration::from_millis(10)).await;
    }
    let feed = b.feed(&key).unwrap();
    assert!(feed.has(999) && !feed.has(100));
    let got = b.get(&key, 100, std::time::Duration::from_secs(5)).await.unwrap();
    assert_eq!(got, Some(b"{\"n\":100}\n".to_vec()));
    assert!(feed.has(100), "verified and stored");
    assert!(!feed.has(101), "only what was asked for");
    feed.lock().verify().unwrap();
    // Past the end: nobody has it, so the wait times out.
    let none = b.get(&key, 5000, std::time::Duration::from_millis(200)).await.unwrap();
    assert_eq!(none, None);
    hb.close();
    let _ = (ta.await, tb.await);
}
