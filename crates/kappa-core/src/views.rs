//! Views in use: [`ViewHandle`], starting, listing, pausing and resuming views.

use std::any::Any;
use std::ops::Deref;
use std::sync::Arc;

use kappa_index::{IndexState, Indexer};
use kappa_view::{Entry, Tx, View, ViewError, ViewStore};

use crate::status::{self, FeedsStatus, FilesStatus, KappaStatus, MemoryStatus, ViewRebuild, ViewStatus};
use crate::{lock, Kappa, KappaError, MovedAside};

pub(crate) struct UsedView {
    pub(crate) indexer: Arc<Indexer>,
    pub(crate) view: Arc<dyn Any + Send + Sync>,
}

/// A view in use: derefs to the view, so its query methods are at hand (the Rust
/// form of `core.api.<name>`).
pub struct ViewHandle<V> {
    view: Arc<Versioned<V>>,
    indexer: Arc<Indexer>,
    name: String,
}

impl<V> Clone for ViewHandle<V> {
    fn clone(&self) -> Self {
        ViewHandle { view: self.view.clone(), indexer: self.indexer.clone(), name: self.name.clone() }
    }
}

impl<V> std::fmt::Debug for ViewHandle<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewHandle").field("name", &self.name).field("state", &self.indexer.state()).finish()
    }
}

impl<V> Deref for ViewHandle<V> {
    type Target = V;
    fn deref(&self) -> &V {
        &self.view.view
    }
}

impl<V> ViewHandle<V> {
    /// The view's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Resolves when this view has indexed everything stored locally.
    pub async fn ready(&self) -> Result<(), KappaError> {
        Ok(self.indexer.ready().await?)
    }

    /// The view's indexing state (for progress bars).
    pub fn state(&self) -> IndexState {
        self.indexer.state()
    }

    /// Why the view was cleared at start and is being rebuilt from the logs
    /// although its version matched: it held entries the logs do not (after a
    /// crash of the machine, or a feed's files lost). `None` if it was not.
    pub fn rebuilt_because(&self) -> Option<&str> {
        self.indexer.rebuilt_because()
    }
}

/// A view with the version it was used with.
struct Versioned<V> {
    view: V,
    version: u64,
}

impl<V: View> View for Versioned<V> {
    fn store(&self) -> &dyn ViewStore {
        self.view.store()
    }
    fn map(&self, entries: &[Entry], tx: &mut Tx<'_>) -> Result<(), ViewError> {
        self.view.map(entries, tx)
    }
    fn map_batches(&self, batches: &[&[Entry]], tx: &mut Tx<'_>) -> Result<(), ViewError> {
        self.view.map_batches(batches, tx)
    }
    fn version(&self) -> u64 {
        self.version
    }
    fn max_batch(&self) -> usize {
        self.view.max_batch()
    }
    fn indexed(&self, entries: &[Entry]) {
        self.view.indexed(entries)
    }
    fn newest_first(&self) -> bool {
        self.view.newest_first()
    }
    fn forget(
        &self,
        feeds: &[kappa_log::PublicKey],
        read: &mut kappa_view::ReadEntry<'_>,
        tx: &mut Tx<'_>,
    ) -> Result<bool, ViewError> {
        self.view.forget(feeds, read, tx)
    }
}

impl Kappa {
    /// Set if the redb view file could not be used when the database opened
    /// (damaged, cut short, not a view database): it was moved aside (kept, as
    /// `views.redb.damaged-<unix time>`, for a bug report) and a new, empty one
    /// took its place, so every view rebuilds from the logs. Worth telling the
    /// user; nothing is lost (the logs are the truth).
    pub fn views_moved_aside(&self) -> Option<&MovedAside> {
        self.inner.views_moved_aside.as_ref()
    }

    /// Whether the database was opened in seed mode
    /// ([`KappaBuilder::seed_mode`](crate::KappaBuilder::seed_mode)): replicating, with no views.
    pub fn is_seed(&self) -> bool {
        self.inner.views.is_none()
    }

    /// Whether the view file has been opened for writing. A `views.redb` that
    /// a clean close sealed opens read-only, and stays so until a view commits
    /// (see `kappa_view_redb`): a command that only reads current views writes
    /// and syncs nothing. `false` for views that are not in a redb file (what
    /// [`ViewBackend::is_open_for_writing`](crate::ViewBackend::is_open_for_writing)
    /// says, for a custom backend).
    pub fn views_open_for_writing(&self) -> bool {
        self.inner.views.as_ref().is_some_and(|v| v.is_open_for_writing())
    }

    /// The store a view called `name` should keep its rows in (in the database's
    /// view storage).
    pub fn view_store(&self, name: &str) -> Result<Arc<dyn ViewStore>, KappaError> {
        let views = self.inner.views.as_ref().ok_or(KappaError::SeedMode)?;
        Ok(views.open_store(name)?)
    }

    /// Starts using a view: `make` builds it over its store; it is indexed in the
    /// background from then on, rebuilt if `version` differs from the one its rows
    /// were made with.
    ///
    /// ```
    /// use kappa_core::{Kappa, view::sum::SumView};
    /// let core = Kappa::in_memory()?;
    /// let sum = core.use_view("sum", 1, SumView::new)?;
    /// core.writer("local")?.append(&5)?;
    /// futures::executor::block_on(sum.ready())?;
    /// assert_eq!(sum.get()?, 5.0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn use_view<V: View>(
        &self,
        name: &str,
        version: u64,
        make: impl FnOnce(Arc<dyn ViewStore>) -> V,
    ) -> Result<ViewHandle<V>, KappaError> {
        self.check_open()?;
        if lock(&self.inner.used).contains_key(name) {
            return Err(KappaError::ViewExists(name.to_owned()));
        }
        let view = Arc::new(Versioned { view: make(self.view_store(name)?), version });
        let indexer = Arc::new(Indexer::start(name, view.clone(), &self.inner.mf)?);
        lock(&self.inner.used)
            .insert(name.to_owned(), UsedView { indexer: indexer.clone(), view: view.clone() });
        Ok(ViewHandle { view, indexer, name: name.to_owned() })
    }

    /// The view called `name`, if it is in use with type `V`.
    pub fn view<V: View>(&self, name: &str) -> Option<ViewHandle<V>> {
        let used = lock(&self.inner.used);
        let u = used.get(name)?;
        let view = u.view.clone().downcast::<Versioned<V>>().ok()?;
        Some(ViewHandle { view, indexer: u.indexer.clone(), name: name.to_owned() })
    }

    /// The names of the views in use, sorted.
    pub fn view_names(&self) -> Vec<String> {
        let mut names: Vec<String> = lock(&self.inner.used).keys().cloned().collect();
        names.sort();
        names
    }

    /// What the database is doing now: its feeds, every running session
    /// (its peer, what is being synced and how far), every view (entries
    /// indexed against entries available; views the view storage holds that
    /// are not in use are read from their stored progress, with status
    /// `"stopped"`, and nothing is indexed), and the process's open files and
    /// memory. Cheap enough to call every second: it locks each feed and
    /// session briefly and reads `/proc/self/status`.
    pub fn status(&self) -> Result<KappaStatus, KappaError> {
        let feeds = self.inner.mf.feeds();
        let feeds_status = FeedsStatus {
            count: feeds.len(),
            writable: feeds.iter().filter(|f| f.is_writable()).count(),
            entries: feeds.iter().map(|f| f.lock().downloaded(0..u64::MAX)).sum(),
        };
        let peers = self.inner.mf.sessions().into_iter().map(status::PeerStatus::from_session).collect();
        let mut views: Vec<ViewStatus> = self
            .view_states()
            .into_iter()
            .map(|(name, st)| ViewStatus {
                name,
                status: status::status_name(st.status).to_owned(),
                indexed: st.indexed,
                available: st.total,
                error: st.error.map(|e| e.to_string()),
                rebuild: st.rebuild.map(|r| ViewRebuild {
                    reason: r.reason,
                    live_version: r.live_version,
                    live_indexed: r.live_indexed,
                }),
            })
            .collect();
        let stored = match &self.inner.views {
            Some(views) => views.stored_views()?,
            None => Vec::new(),
        };
        let mut available = None;
        for name in stored {
            if views.iter().any(|v| v.name == name) {
                continue;
            }
            let store = self.view_store(&name)?;
            let live = store.state()?.and_then(|b| kappa_index::Progress::decode(&b));
            // A rebuild left half way in the shadow (resumed when the view is used).
            let shadow = match store.shadow()? {
                Some(shadow) => shadow.state()?.and_then(|b| kappa_index::Progress::decode(&b)),
                None => None,
            };
            let (indexed, rebuild) = match shadow {
                Some(p) => (
                    p.count(),
                    Some(ViewRebuild {
                        reason: "a rebuild was left half way; it resumes when the view is used".to_owned(),
                        live_version: live.as_ref().map(|l| l.version),
                        live_indexed: live.as_ref().map_or(0, |l| l.count()),
                    }),
                ),
                None => (live.map_or(0, |p| p.count()), None),
            };
            let available = *available.get_or_insert_with(|| {
                self.inner.mf.visible_feeds().iter().map(|f| f.lock().downloaded(0..u64::MAX)).sum()
            });
            views.push(ViewStatus {
                name,
                status: "stopped".to_owned(),
                indexed,
                available,
                error: None,
                rebuild,
            });
        }
        Ok(KappaStatus {
            seed: self.is_seed(),
            feeds: feeds_status,
            peers,
            views,
            files: FilesStatus::now(),
            memory: MemoryStatus::now(),
        })
    }

    /// The state of every view in use.
    pub fn view_states(&self) -> Vec<(String, IndexState)> {
        let used = lock(&self.inner.used);
        let mut v: Vec<(String, IndexState)> =
            used.iter().map(|(n, u)| (n.clone(), u.indexer.state())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn indexers(&self, names: &[&str]) -> Result<Vec<Arc<Indexer>>, KappaError> {
        let used = lock(&self.inner.used);
        if names.is_empty() {
            return Ok(used.values().map(|u| u.indexer.clone()).collect());
        }
        names
            .iter()
            .map(|n| {
                used.get(*n)
                    .map(|u| u.indexer.clone())
                    .ok_or_else(|| KappaError::UnknownView((*n).to_owned()))
            })
            .collect()
    }

    /// Resolves when the named views (all, if none named) have indexed every
    /// entry stored locally. A view in the error state returns its error.
    pub async fn ready(&self, views: &[&str]) -> Result<(), KappaError> {
        for ix in self.indexers(views)? {
            ix.ready().await?;
        }
        Ok(())
    }

    /// Pauses the named views (all, if none named): resolves once no `map` runs.
    pub async fn pause(&self, views: &[&str]) -> Result<(), KappaError> {
        for ix in self.indexers(views)? {
            ix.pause().await;
        }
        Ok(())
    }

    /// Resumes the named views (all, if none named), also after an error.
    pub fn resume(&self, views: &[&str]) -> Result<(), KappaError> {
        for ix in self.indexers(views)? {
            ix.resume();
        }
        Ok(())
    }
}
