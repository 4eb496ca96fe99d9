//! Local writers: appending values to this database's feeds.

use serde::Serialize;

use kappa_log::encoding::ValueEncoding;
use kappa_log::{PublicKey, SharedFeed};

use crate::{Kappa, KappaError};

/// A local writer: a feed of this database that this process can append to.
#[derive(Clone, Debug)]
pub struct Writer {
    feed: SharedFeed,
    encoding: ValueEncoding,
}

impl Writer {
    /// Appends one value, encoded with the database's value encoding (JSON:
    /// compact `JSON.stringify` form plus a newline, as JS writes it). Returns
    /// its sequence number.
    pub fn append<T: Serialize + ?Sized>(&self, value: &T) -> Result<u64, KappaError> {
        let bytes = encode(self.encoding, value)?;
        Ok(self.feed.append(bytes)?)
    }

    /// Appends several values in one signed batch.
    pub fn append_batch<T: Serialize>(&self, values: &[T]) -> Result<std::ops::Range<u64>, KappaError> {
        let encoded: Result<Vec<Vec<u8>>, KappaError> =
            values.iter().map(|v| encode(self.encoding, v)).collect();
        Ok(self.feed.append_batch(encoded?)?)
    }

    /// Appends blocks already encoded under this database's value encoding (see
    /// [`encoding`](Self::encoding)), as they are, in one signed batch: for
    /// JSON text from outside, [`ValueEncoding::encode_json_text`] makes them
    /// without building a value tree.
    ///
    /// ```
    /// # async_std::task::block_on(async {
    /// let kappa = kappa_core::Kappa::builder().open()?; // in memory
    /// let w = kappa.writer("local")?;
    /// let block = w.encoding().encode_json_text(r#"{ "key": "k", "value": 1.0 }"#)?;
    /// assert_eq!(w.append_encoded_batch(vec![block])?, 0..1);
    /// assert_eq!(w.feed().get(0)?, Some(b"{\"key\":\"k\",\"value\":1}\n".to_vec()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub fn append_encoded_batch(&self, blocks: Vec<Vec<u8>>) -> Result<std::ops::Range<u64>, KappaError> {
        Ok(self.feed.append_batch_owned(blocks)?)
    }

    /// [`append_encoded_batch`](Self::append_encoded_batch) for blocks packed
    /// in one buffer (a large import: no allocation per block, no copy).
    ///
    /// ```
    /// # async_std::task::block_on(async {
    /// let kappa = kappa_core::Kappa::builder().open()?; // in memory
    /// let w = kappa.writer("local")?;
    /// let mut blocks = kappa_core::log::PackedBlocks::new();
    /// for line in [r#"{"key":"a","value":1}"#, r#"{"key":"b","value":2}"#] {
    ///     blocks.push_with(|out| w.encoding().encode_json_text_into(line, out))?;
    /// }
    /// assert_eq!(w.append_packed(blocks)?, 0..2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub fn append_packed(&self, blocks: kappa_log::PackedBlocks) -> Result<std::ops::Range<u64>, KappaError> {
        Ok(self.feed.append_packed(blocks)?)
    }

    /// The value encoding [`append`](Self::append) uses.
    pub fn encoding(&self) -> ValueEncoding {
        self.encoding
    }

    /// Appends raw bytes, as they are.
    pub fn append_raw(&self, bytes: impl AsRef<[u8]>) -> Result<u64, KappaError> {
        Ok(self.feed.append(bytes)?)
    }

    /// The feed.
    pub fn feed(&self) -> &SharedFeed {
        &self.feed
    }

    /// The public key.
    pub fn key(&self) -> PublicKey {
        *self.feed.public_key()
    }
}

/// `value` as block bytes under `encoding` (see [`ValueEncoding::encode`]).
fn encode<T: Serialize + ?Sized>(encoding: ValueEncoding, value: &T) -> Result<Vec<u8>, KappaError> {
    encoding.encode(value).map_err(|e| match e {
        kappa_log::LogError::Encoding(reason) => KappaError::Encoding(reason),
        other => KappaError::Log(other),
    })
}

impl Kappa {
    /// The local writer called `name`, created if needed (the same feed for the
    /// same name, also across restarts and concurrent calls).
    pub fn writer(&self, name: &str) -> Result<Writer, KappaError> {
        self.check_open()?;
        Ok(Writer { feed: self.inner.mf.writer(name)?, encoding: self.inner.encoding })
    }
}
