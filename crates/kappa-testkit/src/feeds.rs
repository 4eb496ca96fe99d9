//! Feeds written elsewhere, for tests that replicate them in by hand.

use kappa_log::{Feed, KeyPair, SharedFeed};
use kappa_storage::MemoryProvider;

/// A writer in memory, its key pair from `seed`, holding `values` (appended
/// in batches of 5,000).
///
/// ```
/// let w = kappa_testkit::feeds::writer(7, (0..3).map(|i| i.to_string()));
/// assert_eq!(w.len(), 3);
/// ```
pub fn writer<V: AsRef<[u8]>>(seed: u8, values: impl IntoIterator<Item = V>) -> SharedFeed {
    let open = Feed::builder(MemoryProvider::new()).key_pair(KeyPair::from_seed(&[seed; 32])).open();
    let w = SharedFeed::new(open.unwrap_or_else(|e| unreachable!("a feed in memory opens: {e}")));
    let values: Vec<Vec<u8>> = values.into_iter().map(|v| v.as_ref().to_vec()).collect();
    for chunk in values.chunks(5_000) {
        if let Err(e) = w.append_batch(chunk.iter().map(Vec::as_slice)) {
            unreachable!("appending to a feed in memory: {e}");
        }
    }
    w
}

/// Copies every block of `from` into `to`, a replica of the same feed, with
/// its proof, as a sync would.
///
/// ```
/// use kappa_testkit::feeds::{copy_all, writer};
/// let w = writer(7, ["a", "b"]);
/// let r = kappa_log::SharedFeed::new(
///     kappa_log::Feed::builder(kappa_storage::MemoryProvider::new()).public_key(*w.public_key()).open()?,
/// );
/// copy_all(&w, &r);
/// assert_eq!(r.get(1)?, Some(b"b".to_vec()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn copy_all(from: &SharedFeed, to: &SharedFeed) {
    for i in 0..from.len() {
        let digest = to.lock().digest(i);
        let proof = from.lock().proof(i, digest, false);
        let copied = proof
            .and_then(|proof| Ok((from.get(i)?.unwrap_or_default(), proof)))
            .and_then(|(value, proof)| to.put(i, &value, &proof));
        if let Err(e) = copied {
            unreachable!("copying block {i} into a replica: {e}");
        }
    }
}
