//! Property test: random interleavings of appends on several feeds (forks and
//! merges included), pause/resume, reopen and version bumps. Whenever the
//! indexer is ready and not paused, the kv view equals a fresh index of every
//! entry (the model).

use std::sync::Arc;

use futures::executor::block_on;
use kappa_index::Indexer;
use kappa_multifeed::Multifeed;
use kappa_view::kv::{Head, KvView};
use kappa_view::{Entry, MemoryStore, Tx, View, ViewError, ViewStore};
use proptest::prelude::*;

/// A kv view with a chosen version.
struct Versioned(KvView, u64);

impl View for Versioned {
    fn store(&self) -> &dyn ViewStore {
        self.0.store()
    }
    fn map(&self, entries: &[Entry], tx: &mut Tx<'_>) -> Result<(), ViewError> {
        self.0.map(entries, tx)
    }
    fn version(&self) -> u64 {
        self.1
    }
    fn max_batch(&self) -> usize {
        3
    }
}

#[derive(Debug, Clone)]
enum Op {
    Append { feed: usize, key: u8, merge: bool },
    Pause,
    Resume,
    Reopen,
    Bump,
    Ready,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0usize..3, 0u8..4, any::<bool>()).prop_map(|(feed, key, merge)| Op::Append { feed, key, merge }),
        1 => Just(Op::Pause),
        1 => Just(Op::Resume),
        1 => Just(Op::Reopen),
        1 => Just(Op::Bump),
        2 => Just(Op::Ready),
    ]
}

fn table(kv: &KvView) -> Vec<(String, Vec<Head>)> {
    kv.all().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn kv_view_converges_to_the_model(ops in prop::collection::vec(op(), 1..50)) {
        let mf = Multifeed::in_memory().unwrap();
        let writers: Vec<_> = (0..3).map(|i| mf.writer(&format!("w{i}")).unwrap()).collect();
        // The model: every entry, indexed densely into a fresh view.
        let model = KvView::new(Arc::new(MemoryStore::new()));
        let store = MemoryStore::new();
        let mut version = 1;
        let start = |version: u64| {
            let view = Arc::new(Versioned(KvView::new(Arc::new(store.clone())), version));
            (Indexer::start("kv", view.clone(), &mf).unwrap(), view)
        };
        let (mut ix, mut view) = start(version);
        let mut paused = false;
        for op in ops {
            match op {
                Op::Append { feed, key, merge } => {
                    let key = format!("k{key}");
                    let links: Vec<String> = if merge {
                        model.get(&key).unwrap().into_iter().map(|h| h.id).collect()
                    } else {
                        Vec::new()
                    };
                    let value = format!("{}\n", serde_json::json!({"key": key, "links": links}));
                    let seq = writers[feed].append(value.as_bytes()).unwrap();
                    model.apply(&[Entry::new(*writers[feed].public_key(), seq, value.into_bytes())]).unwrap();
                }
                Op::Pause => {
                    block_on(ix.pause());
                    paused = true;
                }
                Op::Resume => {
                    ix.resume();
                    paused = false;
                }
                Op::Reopen => {
                    drop(ix);
                    (ix, view) = start(version);
                    paused = false;
                }
                Op::Bump => {
                    drop(ix);
                    version += 1;
                    (ix, view) = start(version);
                    paused = false;
                }
                Op::Ready => {
                    block_on(ix.ready()).unwrap();
                    if !paused {
                        prop_assert_eq!(table(&view.0), table(&model));
                    }
                }
            }
        }
        ix.resume();
        block_on(ix.ready()).unwrap();
        prop_assert_eq!(table(&view.0), table(&model));
    }
}
