//! The seed's example view: a running sum of numbers.

use std::sync::Arc;

use crate::{Entry, Tx, View, ViewError, ViewStore};

const KEY: &[u8] = b"sum";

type Extract = Box<dyn Fn(&Entry) -> Option<f64> + Send + Sync>;

/// Sums a number per entry: the entry's JSON value if it is a number, or the
/// number a custom function extracts (`None` adds nothing).
///
/// ```
/// use std::sync::Arc;
/// use kappa_view::{Entry, MemoryStore, View, sum::SumView};
/// let view = SumView::new(Arc::new(MemoryStore::new()));
/// let e = |seq, v: &str| Entry::new([0; 32].into(), seq, v.as_bytes().to_vec());
/// view.apply(&[e(0, "1\n"), e(1, "2.5\n"), e(2, "\"x\"\n")])?;
/// assert_eq!(view.get()?, 3.5);
/// # Ok::<(), kappa_view::ViewError>(())
/// ```
pub struct SumView {
    store: Arc<dyn ViewStore>,
    extract: Extract,
}

impl std::fmt::Debug for SumView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SumView").finish_non_exhaustive()
    }
}

impl SumView {
    /// Sums entries that are JSON numbers.
    pub fn new(store: Arc<dyn ViewStore>) -> Self {
        Self::with(store, |e| e.json::<serde_json::Value>().ok().and_then(|v| v.as_f64()))
    }

    /// Sums what `extract` returns for each entry.
    pub fn with(
        store: Arc<dyn ViewStore>,
        extract: impl Fn(&Entry) -> Option<f64> + Send + Sync + 'static,
    ) -> Self {
        SumView { store, extract: Box::new(extract) }
    }

    /// The current sum.
    pub fn get(&self) -> Result<f64, ViewError> {
        Ok(decode(self.store.get(KEY)?))
    }
}

fn decode(v: Option<Vec<u8>>) -> f64 {
    v.and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok()).map(f64::from_be_bytes).unwrap_or(0.0)
}

impl View for SumView {
    fn store(&self) -> &dyn ViewStore {
        &*self.store
    }

    fn map(&self, entries: &[Entry], tx: &mut Tx<'_>) -> Result<(), ViewError> {
        let add: f64 = entries.iter().filter_map(|e| (self.extract)(e)).sum();
        if add != 0.0 {
            let sum = decode(tx.get(KEY)?) + add;
            tx.put(KEY, sum.to_be_bytes().to_vec());
        }
        Ok(())
    }
}
