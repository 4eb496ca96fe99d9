use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use kappa_view::{range_is_empty, Batch, KeyRange, Row, StoreError, ViewStore};
use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, TableError};

use crate::error::{guarded, store_err};
use crate::handle::Handle;
use crate::views::{ROWS_PREFIX, SHADOW_PREFIX, SHADOW_STATE, STATE};

/// How a [`RedbStore`] commits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// Each commit is on disk (fsync'd) when `commit` returns. The default.
    #[default]
    Immediate,
    /// Commits are visible to readers at once but reach the disk only with the
    /// next durable commit of the same database (any view's, or
    /// [`RedbStore::sync`]) or when the database is closed cleanly. A crash
    /// loses every commit since the last durable one, whole batches at a time:
    /// the database goes back to an earlier consistent state, rows and indexing
    /// state together.
    ///
    /// Pages that non-durable commits free are reused only after the next
    /// durable commit, so a long run of them that overwrites rows grows the file
    /// (a `sync` every few thousand batches bounds that).
    ///
    /// Meant for bulk rebuilds: several times faster per small batch. An indexer
    /// that uses it keeps exactly-once semantics only if it ends with a durable
    /// commit (or `sync`) and treats nothing as done before that returns; after a
    /// crash it simply re-indexes from the last durable state.
    None,
}

/// The [`ViewStore`] of one view in a [`RedbViews`](crate::RedbViews) database.
///
/// Rows live in the table `rows/<view name>`, the indexing state under the view's
/// name in the database's shared state table; [`commit`](ViewStore::commit) and
/// [`clear`](ViewStore::clear) each change both in one write transaction, and
/// reads run in read transactions (snapshots), so readers never see half a
/// batch. Write transactions of all the views in a database take turns.
///
/// Its [`shadow`](ViewStore::shadow) keeps its rows in `shadow/<view name>`
/// and its state in a table of its own, so the database lists it as no view;
/// [`promote_shadow`](ViewStore::promote_shadow) drops the live rows table and
/// renames the shadow's in one write transaction.
///
/// Clones share the view and the [`Durability`] setting.
#[derive(Debug, Clone)]
pub struct RedbStore {
    db: Arc<Handle>,
    view: Arc<str>,
    rows_table: Arc<str>,
    non_durable: Arc<AtomicBool>,
    /// Whether this is the view's shadow.
    is_shadow: bool,
}

impl RedbStore {
    pub(crate) fn new(db: Arc<Handle>, view: &str) -> Self {
        Self {
            db,
            view: view.into(),
            rows_table: format!("{ROWS_PREFIX}{view}").into(),
            non_durable: Arc::new(AtomicBool::new(false)),
            is_shadow: false,
        }
    }

    fn state_def(&self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        if self.is_shadow {
            SHADOW_STATE
        } else {
            STATE
        }
    }

    /// The view's name.
    pub fn view_name(&self) -> &str {
        &self.view
    }

    /// Sets how later commits and clears through this store (and its clones) are
    /// made; see [`Durability`].
    pub fn set_durability(&self, durability: Durability) {
        self.non_durable.store(durability == Durability::None, Ordering::SeqCst);
    }

    /// How commits are made.
    pub fn durability(&self) -> Durability {
        if self.non_durable.load(Ordering::SeqCst) {
            Durability::None
        } else {
            Durability::Immediate
        }
    }

    /// Makes every commit so far durable (those of other views of the database
    /// too): call it at the end of a rebuild made with [`Durability::None`].
    pub fn sync(&self) -> Result<(), StoreError> {
        guarded(|| crate::views::sync(&self.db))
    }

    fn rows_def(&self) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
        TableDefinition::new(&self.rows_table)
    }

    fn begin_write(&self) -> Result<redb::WriteTransaction, StoreError> {
        let mut tx = self.db.begin_write()?;
        if self.durability() == Durability::None {
            tx.set_durability(redb::Durability::None).map_err(store_err)?;
        }
        Ok(tx)
    }
}

impl RedbStore {
    fn get_(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.read(|tx| {
            let table = match tx.open_table(self.rows_def()) {
                Ok(t) => t,
                Err(TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(store_err(e)),
            };
            let value = ReadableTable::get(&table, key).map_err(store_err)?.map(|v| v.value().to_vec());
            Ok(value)
        })
    }

    fn get_many_(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        self.db.read(|tx| {
            let table = match tx.open_table(self.rows_def()) {
                Ok(t) => t,
                Err(TableError::TableDoesNotExist(_)) => return Ok(vec![None; keys.len()]),
                Err(e) => return Err(store_err(e)),
            };
            keys.iter()
                .map(|k| Ok(ReadableTable::get(&table, *k).map_err(store_err)?.map(|v| v.value().to_vec())))
                .collect()
        })
    }

    fn scan_(&self, range: KeyRange, reverse: bool, limit: Option<usize>) -> Result<Vec<Row>, StoreError> {
        let limit = limit.unwrap_or(usize::MAX);
        // redb has returned wrong results for inverted ranges in the past (fixed
        // in 3.0.1): empty ranges never reach it.
        if limit == 0 || range_is_empty(&range) {
            return Ok(Vec::new());
        }
        self.db.read(|tx| {
            let table = match tx.open_table(self.rows_def()) {
                Ok(t) => t,
                Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(store_err(e)),
            };
            let bounds: (Bound<&[u8]>, Bound<&[u8]>) = (as_ref(&range.0), as_ref(&range.1));
            // The trait's range (not ReadOnlyTable's inherent one) borrows the table.
            let iter = ReadableTable::range::<&[u8]>(&table, bounds).map_err(store_err)?;
            let row = |entry: redb::Result<(Guard<'_>, Guard<'_>)>| {
                entry.map(|(k, v)| (k.value().to_vec(), v.value().to_vec())).map_err(store_err)
            };
            if reverse {
                iter.rev().take(limit).map(row).collect()
            } else {
                iter.take(limit).map(row).collect()
            }
        })
    }

    fn commit_(&self, batch: Batch) -> Result<(), StoreError> {
        let tx = self.begin_write()?;
        if !batch.ops.is_empty() {
            let mut rows = tx.open_table(self.rows_def()).map_err(store_err)?;
            for (k, v) in &batch.ops {
                match v {
                    Some(v) => {
                        rows.insert(k.as_slice(), v.as_slice()).map_err(store_err)?;
                    }
                    None => {
                        rows.remove(k.as_slice()).map_err(store_err)?;
                    }
                }
            }
        }
        if let Some(state) = &batch.state {
            let mut table = tx.open_table(self.state_def()).map_err(store_err)?;
            table.insert(&*self.view, state.as_slice()).map_err(store_err)?;
        }
        // Dropping `tx` on an error above aborts it: nothing of the batch lands.
        tx.commit().map_err(store_err)
    }

    fn state_(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.read(|tx| {
            let table = match tx.open_table(self.state_def()) {
                Ok(t) => t,
                Err(TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(store_err(e)),
            };
            let state =
                ReadableTable::get(&table, &*self.view).map_err(store_err)?.map(|v| v.value().to_vec());
            Ok(state)
        })
    }

    fn clear_(&self) -> Result<(), StoreError> {
        let tx = self.begin_write()?;
        tx.delete_table(self.rows_def()).map_err(store_err)?;
        {
            let mut table = tx.open_table(self.state_def()).map_err(store_err)?;
            table.remove(&*self.view).map_err(store_err)?;
        }
        tx.commit().map_err(store_err)
    }

    fn shadow_store(&self) -> RedbStore {
        RedbStore {
            db: self.db.clone(),
            view: self.view.clone(),
            rows_table: format!("{SHADOW_PREFIX}{}", self.view).into(),
            non_durable: self.non_durable.clone(),
            is_shadow: true,
        }
    }

    fn promote_shadow_(&self) -> Result<(), StoreError> {
        if self.is_shadow {
            return Err(StoreError::from_message(
                kappa_view::StoreErrorKind::Backend,
                "a shadow has no shadow to promote",
            ));
        }
        let shadow = self.shadow_store();
        // Always durable: the swap is what a restart must find.
        let tx = self.db.begin_write()?;
        tx.delete_table(self.rows_def()).map_err(store_err)?;
        // (Opening a table in a write transaction makes it if need be.)
        let empty = {
            let t = tx.open_table(shadow.rows_def()).map_err(store_err)?;
            let len = ReadableTableMetadata::len(&t).map_err(store_err)?;
            len == 0
        };
        if empty {
            tx.delete_table(shadow.rows_def()).map_err(store_err)?;
        } else {
            tx.rename_table(shadow.rows_def(), self.rows_def()).map_err(store_err)?;
        }
        let state = {
            let mut table = tx.open_table(SHADOW_STATE).map_err(store_err)?;
            let state = table.remove(&*self.view).map_err(store_err)?.map(|v| v.value().to_vec());
            state
        };
        {
            let mut table = tx.open_table(STATE).map_err(store_err)?;
            match &state {
                Some(st) => {
                    table.insert(&*self.view, st.as_slice()).map_err(store_err)?;
                }
                None => {
                    table.remove(&*self.view).map_err(store_err)?;
                }
            }
        }
        tx.commit().map_err(store_err)
    }
}

// redb panics on some kinds of damage to a file (an `unreachable!` on a page of
// unknown type, and debug assertions that release builds turn into
// `StorageError::Corrupted`): every operation turns such a panic into an error.
// redb supports catching panics out of its transactions (an unwound write
// transaction is aborted).
impl ViewStore for RedbStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        guarded(|| self.get_(key))
    }

    /// All in one read transaction.
    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        guarded(|| self.get_many_(keys))
    }

    /// Yes: each [`get`](ViewStore::get) begins a read transaction and opens
    /// the table, which costs more than the lookup; a batch's reads share one.
    fn batch_reads(&self) -> bool {
        true
    }

    fn scan(&self, range: KeyRange, reverse: bool, limit: Option<usize>) -> Result<Vec<Row>, StoreError> {
        guarded(|| self.scan_(range, reverse, limit))
    }

    fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        guarded(|| self.commit_(batch))
    }

    fn state(&self) -> Result<Option<Vec<u8>>, StoreError> {
        guarded(|| self.state_())
    }

    fn clear(&self) -> Result<(), StoreError> {
        guarded(|| self.clear_())
    }

    fn shadow(&self) -> Result<Option<Arc<dyn ViewStore>>, StoreError> {
        if self.is_shadow {
            return Ok(None);
        }
        Ok(Some(Arc::new(self.shadow_store())))
    }

    fn promote_shadow(&self) -> Result<(), StoreError> {
        guarded(|| self.promote_shadow_())
    }
}

type Guard<'a> = redb::AccessGuard<'a, &'static [u8]>;

fn as_ref(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(k) => Bound::Included(k.as_slice()),
        Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}
